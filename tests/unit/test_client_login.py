"""`interlock login`'s parts alone: the credentials store (per gateway URL, 0600, refused when
others may read it, no token in a repr), when an ID token is renewed, the device flow's answers
from the token endpoint (RFC 8628: authorization_pending, slow_down, expired_token,
access_denied, the code's expiry), and the renewal by refresh token — against a small identity
provider on loopback that answers as the script says (the real one runs in the e2e test)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from clients import credentials as C
from clients import login as L
from clients.http import ApiError, Gateway


def jwt_like(exp: float, iat: float) -> str:
    """A token shaped like a JWT with these times (its signature is nobody's: the CLI never
    checks one, the gateway does)."""
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256'})}.{part({'sub': 'alice', 'exp': exp, 'iat': iat})}.c2ln"


def creds(exp: float = 2e9, iat: float = 1e9, refresh: str = "rt-1") -> C.Credentials:
    return C.Credentials(issuer="http://idp", client_id="cli", id_token=jwt_like(exp, iat),
                         refresh_token=refresh, expires_at=exp)


# -- the store ---------------------------------------------------------------------------------

def test_the_store_keeps_one_sign_in_per_gateway_readable_by_its_owner_alone(
        tmp_path: Path) -> None:
    store = C.Store(tmp_path / "cfg" / "credentials.json")
    assert store.get("http://a:8080") is None
    a, b = creds(refresh="rt-a"), creds(refresh="rt-b")
    store.put("http://a:8080/", a)
    store.put("http://b:8080", b)
    assert store.get("http://a:8080") == a  # a trailing slash names the same gateway
    assert store.get("http://b:8080/") == b
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.remove("http://a:8080") == a
    assert store.get("http://a:8080") is None
    assert store.get("http://b:8080") == b
    assert store.remove("http://a:8080") is None
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_credentials_file_others_may_read_is_refused(tmp_path: Path) -> None:
    store = C.Store(tmp_path / "credentials.json")
    store.put("http://a", creds())
    store.path.chmod(0o644)
    with pytest.raises(C.LoginError, match=r"may be read by others \(mode 0644\).*chmod 600"):
        store.get("http://a")


def test_a_damaged_file_says_to_log_in_again(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(C.LoginError, match="interlock login"):
        C.Store(path).get("http://a")


def test_no_token_in_a_repr() -> None:
    c = creds(refresh="rt-secret")
    assert c.id_token not in repr(c)
    assert "rt-secret" not in repr(c)


def test_config_dir() -> None:
    assert C.config_dir({"INTERLOCK_CONFIG_DIR": "/x/y"}) == Path("/x/y")
    assert C.config_dir({"XDG_CONFIG_HOME": "/h"}) == Path("/h/interlock")


# -- when to renew -----------------------------------------------------------------------------

def test_an_id_token_is_renewed_when_expired_or_near_expiry() -> None:
    now = 1_000_000.0
    hour = creds(exp=now + 3600, iat=now)
    assert not C.needs_refresh(hour, now, now=now)
    assert not C.needs_refresh(hour, now, now=now + 3600 - 61)
    assert C.needs_refresh(hour, now, now=now + 3600 - 59)  # within the minute
    assert C.needs_refresh(hour, now, now=now + 3601)  # expired
    # A short-lived token: a fifth of its life, not a whole minute.
    short = creds(exp=now + 100, iat=now)
    assert not C.needs_refresh(short, now, now=now + 50)
    assert C.needs_refresh(short, now, now=now + 81)


def test_an_unreadable_expiry_means_renew_before_use() -> None:
    assert C.id_token_times("not-a-jwt") == (0.0, 0.0)
    c = C.from_token_response("http://idp", "cli", {"id_token": "a.b.c", "refresh_token": "r"})
    assert c.expires_at == 0.0
    assert C.needs_refresh(c)


def test_a_token_response_without_an_id_token_is_refused() -> None:
    with pytest.raises(C.LoginError, match=r"no ID token.*openid"):
        C.from_token_response("http://idp", "cli", {"access_token": "x"})


# -- a scripted identity provider --------------------------------------------------------------

Script = list[tuple[int, dict[str, Any]]]


class Idp:
    def __init__(self) -> None:
        self.token_answers: Script = []
        self.token_forms: list[dict[str, str]] = []
        self.url = ""

    def app(self) -> web.Application:
        async def meta(_: web.Request) -> web.Response:
            return web.json_response({
                "issuer": self.url, "token_endpoint": f"{self.url}/token",
                "device_authorization_endpoint": f"{self.url}/device/auth",
                "authorization_endpoint": f"{self.url}/auth"})

        async def token(request: web.Request) -> web.Response:
            self.token_forms.append(dict(await request.post()))  # type: ignore[arg-type]
            status, body = self.token_answers.pop(0)
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", meta)
        app.router.add_post("/token", token)
        return app


@pytest_asyncio.fixture
async def idp() -> AsyncIterator[Idp]:
    server = Idp()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def pending(error: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": error, "error_description": f"{error} said the IdP"}


class Clock:
    """Sleeps that take no time: recorded, and advancing the clock the poll reads."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


async def poll(idp: Idp, device: dict[str, Any], clock: Clock) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        meta = await C.discover(http, idp.url)
        return await L.poll_device(http, meta, "cli", {"device_code": "dc", **device},
                                   sleep=clock.sleep, clock=clock)


async def test_the_device_flow_waits_while_pending_and_slows_down_when_told(idp: Idp) -> None:
    good = {"id_token": jwt_like(2e9, 1e9), "refresh_token": "rt"}
    idp.token_answers = [pending("authorization_pending"), pending("slow_down"),
                         pending("authorization_pending"), (200, good)]
    clock = Clock()
    assert await poll(idp, {"interval": 2, "expires_in": 600}, clock) == good
    assert clock.slept == [2, 2, 7, 7]  # slow_down: 5 s more from then on
    assert all(f == {"grant_type": L.DEVICE_GRANT, "device_code": "dc", "client_id": "cli"}
               for f in idp.token_forms)


async def test_the_device_flow_without_an_interval_polls_every_5_seconds(idp: Idp) -> None:
    idp.token_answers = [pending("authorization_pending"), (200, {"id_token": "a.b.c"})]
    clock = Clock()
    await poll(idp, {}, clock)
    assert clock.slept == [5, 5]


@pytest.mark.parametrize(("error", "says"), [
    ("expired_token", "the sign-in code expired before it was used: run `interlock login`"),
    ("access_denied", "the sign-in was refused at the identity provider"),
    ("invalid_grant", "the identity provider ended the sign-in: invalid_grant: invalid_grant "
                      "said the IdP"),
])
async def test_the_device_flow_ends_on_an_error(idp: Idp, error: str, says: str) -> None:
    idp.token_answers = [pending("authorization_pending"), pending(error)]
    with pytest.raises(C.LoginError) as caught:
        await poll(idp, {"interval": 1}, Clock())
    assert says in str(caught.value)
    assert not idp.token_answers  # nothing asked after the error


async def test_the_device_flow_stops_when_the_code_expires(idp: Idp) -> None:
    idp.token_answers = [pending("authorization_pending")] * 10
    clock = Clock()
    with pytest.raises(C.LoginError, match="code expired"):
        await poll(idp, {"interval": 3, "expires_in": 10}, clock)
    assert clock.slept == [3, 3, 3]  # never past the code's life
    assert clock.now <= 10


# -- renewal -------------------------------------------------------------------------------------

async def source(idp: Idp, tmp_path: Path, stored: C.Credentials
                 ) -> tuple[C.TokenSource, C.Store, aiohttp.ClientSession]:
    store = C.Store(tmp_path / "credentials.json")
    stored.issuer = idp.url
    store.put("http://gw", stored)
    http = aiohttp.ClientSession()
    return C.TokenSource(http, "http://gw", store), store, http


async def test_an_expired_id_token_is_renewed_and_stored(idp: Idp, tmp_path: Path) -> None:
    new = jwt_like(2e9, 1.9e9)
    idp.token_answers = [(200, {"id_token": new})]  # no new refresh token: the old one stays
    src, store, http = await source(idp, tmp_path, creds(exp=1.0, iat=0.5, refresh="rt-old"))
    async with http:
        assert await src.token() == new
        assert await src.token() == new  # fresh now: no second request
    assert idp.token_forms == [{"grant_type": "refresh_token", "refresh_token": "rt-old",
                                "client_id": "cli"}]
    kept = store.get("http://gw")
    assert kept is not None
    assert kept.refresh_token == "rt-old"
    assert kept.expires_at == 2e9
    assert src.refreshed == 1


async def test_a_refused_refresh_says_to_log_in_again(idp: Idp, tmp_path: Path) -> None:
    idp.token_answers = [(400, {"error": "invalid_grant",
                                "error_description": "grant request is invalid"})]
    src, _, http = await source(idp, tmp_path, creds(exp=1.0, iat=0.5))
    async with http:
        with pytest.raises(C.LoginError, match=r"could not be renewed.*interlock login"):
            await src.token()
        gw = Gateway(http, "http://gw", "", src)
        idp.token_answers = [(400, {"error": "invalid_grant"})]
        with pytest.raises(ApiError) as caught:
            await gw.call("GET", "/v1/me")
    assert caught.value.status == 401
    assert "interlock login" in caught.value.message


async def test_a_401_renews_once_and_retries(idp: Idp, tmp_path: Path) -> None:
    """The gateway refuses a token the CLI thought fresh (clocks differ): one renewal, one
    retry; a second 401 is the answer."""
    fresh = jwt_like(2e9, 1.9e9)
    idp.token_answers = [(200, {"id_token": fresh, "refresh_token": "rt-2"})]
    seen: list[str] = []

    async def me(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] != f"Bearer {fresh}":
            return web.json_response({"error": {"code": "unauthenticated",
                                                "message": "token expired"}}, status=401)
        return web.json_response({"name": "oidc:alice"})

    gw_app = web.Application()
    gw_app.router.add_get("/v1/me", me)
    runner = web.AppRunner(gw_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        store = C.Store(tmp_path / "credentials.json")
        stale = creds()
        stale.issuer = idp.url
        store.put(url, stale)
        async with aiohttp.ClientSession() as http:
            gw = Gateway(http, url, "", C.TokenSource(http, url, store))
            assert await gw.call("GET", "/v1/me") == {"name": "oidc:alice"}
    finally:
        await runner.cleanup()
    assert seen == [f"Bearer {stale.id_token}", f"Bearer {fresh}"]
    kept = store.get(url)
    assert kept is not None
    assert kept.refresh_token == "rt-2"


def test_without_a_token_or_a_sign_in_the_cli_says_how(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERLOCK_TOKEN", raising=False)
    monkeypatch.setenv("INTERLOCK_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ApiError, match=r"set INTERLOCK_TOKEN .*or sign in to "
                                       r"http://gw with `interlock login`"):
        Gateway.from_env(None, "http://gw/")  # type: ignore[arg-type]


def test_the_gateway_without_a_provider_says_so() -> None:
    with pytest.raises(C.LoginError, match=r"no identity provider configured.*INTERLOCK_TOKEN"):
        L._oidc({"oidc": None, "static_tokens": True}, "http://gw")
    assert L._oidc({"oidc": {"issuer": "http://idp", "client_id": "web",
                             "cli_client_id": None, "scopes": "openid"}}, "http://gw") == (
        "http://idp", "web", "openid")


def test_pkce_challenge_is_s256_of_the_verifier() -> None:
    import hashlib

    verifier, challenge = L.pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()



def test_a_gateway_cannot_send_a_person_to_another_provider_unasked() -> None:
    before = creds()  # signed in at http://idp
    L.check_issuer("http://idp", None, before, "http://gw")
    L.check_issuer("http://idp", None, None, "http://gw")
    with pytest.raises(C.LoginError, match=r"now names the identity provider http://evil; your "
                                           r"last sign-in there was with http://idp"):
        L.check_issuer("http://evil", None, before, "http://gw")
    L.check_issuer("http://new", "http://new", before, "http://gw")  # asked for: accepted
    with pytest.raises(C.LoginError, match=r"names the identity provider http://evil, not "
                                           r"http://idp \(--issuer\)"):
        L.check_issuer("http://evil", "http://idp", None, "http://gw")


# -- the loopback redirect (--browser) ---------------------------------------------------------

async def browser_answers(idp: Idp, *answers: dict[str, str]) -> tuple[list[int], Any]:
    """Runs browser_login against the scripted IdP; each answer is sent to its loopback
    callback as a redirect would (with the flow's own state unless the answer names one).
    Returns the callback's statuses and the flow's outcome (Credentials or the LoginError)."""
    import asyncio
    from urllib.parse import parse_qs, urlsplit

    printed: asyncio.Queue[str] = asyncio.Queue()
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        flow = asyncio.create_task(L.browser_login(
            http, idp.url, "cli", "openid", printed.put_nowait, open_browser=False, wait_s=10))
        url = ""
        while not url.startswith(idp.url):
            url = await asyncio.wait_for(printed.get(), 10)
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert q["code_challenge_method"] == "S256"
        assert q["redirect_uri"].startswith("http://127.0.0.1:")
        for answer in answers:
            async with http.get(q["redirect_uri"], params={"state": q["state"], **answer}) as r:
                statuses.append(r.status)
        try:
            outcome: Any = await asyncio.wait_for(flow, 10)
        except C.LoginError as exc:
            outcome = exc
    return statuses, outcome


async def test_a_callback_with_another_state_is_ignored(idp: Idp) -> None:
    idp.token_answers = [(200, {"id_token": jwt_like(2e9, 1e9), "refresh_token": "rt"})]
    statuses, outcome = await browser_answers(
        idp, {"state": "forged", "code": "attacker's"}, {"code": "c-1"})
    assert statuses == [400, 200]
    assert isinstance(outcome, C.Credentials)
    [form] = idp.token_forms
    assert form["code"] == "c-1"  # never the forged one
    assert form["grant_type"] == "authorization_code"
    assert len(form["code_verifier"]) >= 43


async def test_an_answer_from_another_issuer_or_an_error_ends_the_sign_in(idp: Idp) -> None:
    _, outcome = await browser_answers(idp, {"code": "c", "iss": "http://evil"})
    assert isinstance(outcome, C.LoginError)
    assert "another issuer" in str(outcome)
    _, outcome = await browser_answers(idp, {"error": "access_denied"})
    assert isinstance(outcome, C.LoginError)
    assert "access_denied" in str(outcome)
    assert idp.token_forms == []  # no code was exchanged


async def test_two_commands_renewing_at_once_spend_the_refresh_token_once(
        idp: Idp, tmp_path: Path) -> None:
    """A provider that rotates refresh tokens takes a reused one as theft and revokes the sign-
    in: two commands finding the same expired token must not both spend it."""
    import asyncio

    new = jwt_like(2e9, 1.9e9)
    idp.token_answers = [(200, {"id_token": new, "refresh_token": "rt-2"})]  # one answer only
    src, store, http = await source(idp, tmp_path, creds(exp=1.0, iat=0.5, refresh="rt-1"))
    other = C.TokenSource(http, "http://gw", store)  # another process's view of the same file
    async with http:
        got = await asyncio.gather(src.token(), other.token())
    assert got == [new, new]
    assert [f["refresh_token"] for f in idp.token_forms] == ["rt-1"]
    kept = store.get("http://gw")
    assert kept is not None
    assert kept.refresh_token == "rt-2"
