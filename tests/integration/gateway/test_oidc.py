"""ID tokens as bearer credentials (services/gateway/oidc.py) against a real gateway over real
HTTP, and an issuer of our own on loopback: a discovery document and a JWKS served by aiohttp,
tokens signed with joserfc. Each forgery a client could try is refused with a 401 saying why;
a rotated key is picked up without a restart; roles come from the claim → role map."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from launcher.nats import free_port
from services.gateway.oidc import OidcSettings, RoleMap, Verifier
from tests.integration.gateway.conftest import GatewayFactory, token_of
from tests.support import Client

ROLES = "groups:sre-approvers=approver,groups:sre=operator,groups:*=viewer"
WEB, CLI = "interlock-web", "interlock-cli"


@dataclass
class Issuer:
    """A minimal OpenID Provider: discovery + JWKS on loopback, and tokens it signs."""

    url: str = ""
    keys: list[Any] = field(default_factory=list)  # published, the first one signs
    jwks_hits: int = 0
    # The token endpoint: every form it was sent (with the client's Basic credentials), and
    # what it answers next (the test sets it).
    token_requests: list[dict[str, str]] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)

    def sign(self, sub: str, *, groups: tuple[str, ...] = (), key: Any = None,
             alg: str = "RS256", header: dict[str, Any] | None = None,
             **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.url, "sub": sub, "aud": WEB, "iat": now, "exp": now + 300,
                "name": f"{sub.title()} Example", "groups": list(groups), **claims}
        return jwt.encode({"alg": alg, "kid": key.kid, **(header or {})}, body, key,
                          algorithms=[alg])

    def rotate(self) -> RSAKey:
        new = RSAKey.generate_key(2048, parameters={"kid": f"k{len(self.keys) + 1}",
                                                    "use": "sig"})
        self.keys.insert(0, new)
        return new


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    out = Issuer(keys=[RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})])

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": out.url, "jwks_uri": f"{out.url}/jwks",
            "authorization_endpoint": f"{out.url}/auth", "token_endpoint": f"{out.url}/token"})

    async def jwks(request: web.Request) -> web.Response:
        out.jwks_hits += 1
        return web.json_response({"keys": [k.as_dict(private=False) for k in out.keys]})

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        out.token_requests.append({**{k: str(v) for k, v in form.items()},
                                   "authorization": request.headers.get("Authorization", "")})
        return web.json_response(out.answer, status=200 if "id_token" in out.answer else 400)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    out.url = f"http://127.0.0.1:{port}"
    try:
        yield out
    finally:
        await runner.cleanup()


def settings(issuer: Issuer, refresh_min_s: float = 0.0) -> OidcSettings:
    return OidcSettings(issuer=issuer.url, client_id=WEB, client_secret="s3cret-web-client",
                        cli_client_id=CLI, roles=RoleMap.parse(ROLES),
                        jwks_refresh_min_s=refresh_min_s)


async def get(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_an_id_token_proves_oidc_sub_with_the_roles_its_groups_map_to(
        gateway_factory: GatewayFactory, issuer: Issuer) -> None:
    gw = await gateway_factory(oidc=Verifier(settings(issuer)))
    who = f"{gw.url}/v1/whoami"
    status, body = await get(gw.http, who, issuer.sign("alice", groups=("sre-approvers",)))
    assert (status, body) == (200, {"principal": "oidc:alice", "name": "Alice Example",
                                    "roles": ["approver", "viewer"], "via": "oidc"})
    # The CLI's client is an audience too (a list naming it, with azp).
    cli = issuer.sign("bob", groups=("sre",), aud=[CLI], azp=CLI)
    status, body = await get(gw.http, who, cli)
    assert (status, body["principal"], body["roles"]) == (200, "oidc:bob",
                                                          ["operator", "viewer"])
    # What bob does is recorded as oidc:bob — never the name his token carries.
    bob = Client(gw.http, gw.url, cli)
    sid = await bob.new_session()
    started = (await gw.bus.session(sid))[0].event
    assert started.actor == "oidc:bob"
    # Matching no rule: signed in, no role → 403 on everything that needs one.
    nobody = issuer.sign("carol", groups=())
    status, body = await get(gw.http, who, nobody)
    assert (status, body["roles"]) == (200, [])
    status, body = await get(gw.http, f"{gw.url}/v1/me", nobody)
    assert (status, body["error"]["message"]) == (403, "oidc:carol lacks the viewer role")
    # Static tokens still work beside ID tokens.
    status, body = await get(gw.http, who, token_of("approver"))
    assert (status, body) == (200, {"principal": "alice", "name": "",
                                    "roles": ["approver", "operator"], "via": "token"})
    status, body = await get(gw.http, f"{gw.url}/v1/auth/config", "")
    assert body == {"oidc": {"issuer": issuer.url, "client_id": WEB, "cli_client_id": CLI,
                             "scopes": "openid profile email groups offline_access"},
                    "static_tokens": True}


async def test_forged_expired_and_misdirected_tokens_are_refused_saying_why(
        gateway_factory: GatewayFactory, issuer: Issuer) -> None:
    gw = await gateway_factory(oidc=Verifier(settings(issuer, refresh_min_s=3600)))
    me = f"{gw.url}/v1/me"
    now = int(time.time())
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # the same kid, not the key
    public = issuer.keys[0].as_dict(private=False)
    cases = {
        "expired": (issuer.sign("alice", groups=("sre",), iat=now - 900, exp=now - 600),
                    "the token has expired; sign in again (or refresh)"),
        "wrong audience": (issuer.sign("alice", groups=("sre",), aud="someone-else"),
                           "wrong audience: the token is for 'someone-else', not for "
                           "interlock-web or interlock-cli"),
        "wrong azp": (issuer.sign("alice", groups=("sre",), aud=[WEB, "x"], azp="x"),
                      "wrong audience: the token was issued to 'x'"),
        "wrong issuer": (issuer.sign("alice", groups=("sre",), iss="https://evil.example"),
                         "wrong issuer: the token was issued by 'https://evil.example', not "
                         f"{issuer.url}"),
        "not yet": (issuer.sign("alice", groups=("sre",), nbf=now + 600),
                    "the token is not valid yet (nbf)"),
        "bad signature": (issuer.sign("alice", groups=("sre",), key=stranger),
                          "bad signature"),
        # HS256 keyed with the published RSA key's modulus (public knowledge): the classic
        # algorithm confusion. The key decides the algorithm, never the header.
        "hmac with the public key": (issuer.sign(
            "alice", groups=("sre",), alg="HS256",
            key=OctKey.import_key(public["n"], parameters={"kid": "k1"})),
            "the token's algorithm 'HS256' is not its key's (RS256, RS384, RS512, PS256, "
            "PS384, PS512)"),
        "unknown key": (issuer.sign("alice", groups=("sre",), key=ECKey.generate_key(
            "P-256", parameters={"kid": "nope"}), alg="ES256"),
            "the token is signed with a key the identity provider does not publish "
            "(unknown key id 'nope')"),
    }
    unsigned = issuer.sign("alice", groups=("sre",)).rsplit(".", 1)[0]
    header = '{"alg":"none","kid":"k1"}'
    import base64
    none_alg = (base64.urlsafe_b64encode(header.encode()).rstrip(b"=").decode() + "."
                + unsigned.split(".")[1] + ".")
    for what, (token, message) in cases.items():
        status, body = await get(gw.http, me, token)
        assert (status, body["error"]["message"]) == (401, message), what
    # alg=none has no signature at all: not even JWT-shaped for us, an unknown token.
    status, body = await get(gw.http, me, none_alg)
    assert (status, body["error"]["message"]) == (401, "unknown token")
    # All of them together fetched the keys once: an unknown kid refetches at most once per
    # INTERLOCK_OIDC_JWKS_REFRESH_MIN (here an hour), whatever a client sends.
    assert issuer.jwks_hits == 1
    # No rejection carries the token back.
    for token, _ in cases.values():
        async with gw.http.get(me, headers={"Authorization": f"Bearer {token}"}) as r:
            assert token.split(".")[2] not in await r.text()


async def test_a_rotated_key_is_picked_up_and_an_unknown_kid_refused_without_restart(
        gateway_factory: GatewayFactory, issuer: Issuer) -> None:
    gw = await gateway_factory(oidc=Verifier(settings(issuer)))
    me = f"{gw.url}/v1/me"
    assert (await get(gw.http, me, issuer.sign("alice", groups=("sre",))))[0] == 200
    assert issuer.jwks_hits == 1
    issuer.rotate()  # the provider publishes k2 (first) and still k1
    status, body = await get(gw.http, me, issuer.sign("alice", groups=("sre",)))
    assert (status, body["name"]) == (200, "oidc:alice")
    assert issuer.jwks_hits == 2
    # The old key still verifies while published, from the cache.
    old = issuer.sign("bob", groups=("sre",), key=issuer.keys[1])
    assert (await get(gw.http, me, old))[0] == 200
    assert issuer.jwks_hits == 2
    # Dropped at the provider, a token of a kid it never published is refused after one look.
    issuer.keys.pop()
    ghost = RSAKey.generate_key(2048, parameters={"kid": "k9"})
    status, body = await get(gw.http, me, issuer.sign("bob", groups=("sre",), key=ghost))
    assert (status, body["error"]["message"]) == (
        401, "the token is signed with a key the identity provider does not publish (unknown "
             "key id 'k9')")
    assert issuer.jwks_hits == 3


async def test_an_operator_may_not_decide_and_an_approver_reaches_the_decision_checks(
        gateway_factory: GatewayFactory, issuer: Issuer) -> None:
    gw = await gateway_factory(oidc=Verifier(settings(issuer)))
    operator = gw.client("operator")
    sid = await operator.new_session()
    req = await gw.request_approval(sid)
    path = f"/v1/approvals/{req.approval_id}/decision"
    bob = Client(gw.http, gw.url, issuer.sign("bob", groups=("sre",)))
    status, body = await bob.call("POST", path, {"decision": "approve"})
    assert (status, body["error"]["message"]) == (403, "oidc:bob lacks the approver role")
    alice = Client(gw.http, gw.url, issuer.sign("alice", groups=("sre-approvers",)))
    status, body = await alice.call("POST", path, {"decision": "approve"})
    assert (status, body["error"]["code"]) == (400, "signature_required")
    # Static tokens still decide as before.
    status, body = await gw.client("approver").call("POST", path, {"decision": "approve"})
    assert status == 202, body


def cookie(resp: aiohttp.ClientResponse, name: str) -> Any:
    return resp.cookies[name]


async def test_the_command_center_sign_in_checks_state_nonce_and_audience(
        gateway_factory: GatewayFactory, issuer: Issuer) -> None:
    gw = await gateway_factory(oidc=Verifier(settings(issuer)))
    http = gw.http
    async with http.get(f"{gw.url}/v1/auth/login", allow_redirects=False) as r:
        assert r.status == 302
        where = urlsplit(r.headers["Location"])
        q = dict(parse_qsl(where.query))
        jar = cookie(r, "interlock_signin")
    assert f"{where.scheme}://{where.netloc}{where.path}" == f"{issuer.url}/auth"
    assert {k: q[k] for k in ("response_type", "client_id", "redirect_uri", "scope",
                              "code_challenge_method")} == {
        "response_type": "code", "client_id": WEB,
        "redirect_uri": f"{gw.url}/v1/auth/callback",
        "scope": "openid profile email groups offline_access", "code_challenge_method": "S256"}
    assert (jar["httponly"], jar["samesite"], jar["path"]) == (True, "Lax", "/v1/auth/")
    assert int(jar["max-age"]) <= 600
    signin = {"interlock_signin": jar.value}
    callback = f"{gw.url}/v1/auth/callback"

    async def back(state: str, cookies: dict[str, str] | None = None) -> tuple[int, str, Any]:
        sent = signin if cookies is None else cookies
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in sent.items())}
        async with http.get(callback, params={"code": "c0de", "state": state},
                            headers=headers) as resp:
            return resp.status, await resp.text(), resp.cookies

    # Another sign-in's state (a login CSRF), or no cookie at all: nothing is exchanged.
    status, text, _ = await back("someone-elses-state")
    assert (status, "the sign-in&#x27;s state does not match" in text) == (400, True)
    status, text, _ = await back(q["state"], {})
    assert (status, "start again" in text) == (400, True)
    assert issuer.token_requests == []

    # An ID token minted for another sign-in (its nonce), or for the CLI's client: refused.
    issuer.answer = {"id_token": issuer.sign("alice", groups=("sre",), nonce="other"),
                     "refresh_token": "rt-0123456789"}
    status, text, cookies = await back(q["state"])
    assert (status, "nonce is not this sign-in" in text) == (401, True)
    assert "interlock_refresh" not in cookies
    issuer.answer = {"id_token": issuer.sign("alice", groups=("sre",), nonce=q["nonce"],
                                             aud=CLI)}
    status, text, _ = await back(q["state"])
    assert (status, "wrong audience" in text) == (401, True)

    # The real thing: the code is exchanged with the client's secret and the PKCE verifier.
    good = issuer.sign("alice", groups=("sre-approvers",), nonce=q["nonce"])
    issuer.answer = {"id_token": good, "refresh_token": "rt-0123456789"}
    status, text, cookies = await back(q["state"])
    assert status == 200, text
    sent = issuer.token_requests[-1]
    assert sent["authorization"] == "Basic " + base64.b64encode(
        f"{WEB}:s3cret-web-client".encode()).decode()
    assert (sent["grant_type"], sent["code"], sent["redirect_uri"]) == (
        "authorization_code", "c0de", callback)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(sent["code_verifier"].encode()).digest()).rstrip(b"=").decode()
    assert challenge == q["code_challenge"]
    assert json.dumps(good) in text
    assert '<script src="/static/signin.js">' in text
    kept = cookies["interlock_refresh"]
    assert (kept.value, kept["httponly"], kept["samesite"], kept["path"]) == (
        "rt-0123456789", True, "Strict", "/v1/auth/")

    # Refresh: a new ID token for the cookie; without it, 401.
    issuer.answer = {"id_token": issuer.sign("alice", groups=("sre-approvers",))}
    async with http.post(f"{gw.url}/v1/auth/refresh",
                         headers={"Cookie": "interlock_refresh=rt-0123456789"}) as r:
        body = await r.json()
        assert (r.status, body["principal"], body["name"]) == (200, "oidc:alice",
                                                               "Alice Example")
    assert issuer.token_requests[-1]["grant_type"] == "refresh_token"
    assert issuer.token_requests[-1]["refresh_token"] == "rt-0123456789"
    async with http.post(f"{gw.url}/v1/auth/refresh") as r:
        assert (r.status, (await r.json())["error"]["code"]) == (401, "no_refresh_token")
    async with http.post(f"{gw.url}/v1/auth/logout",
                         headers={"Cookie": "interlock_refresh=rt-0123456789"}) as r:
        assert r.status == 200
        assert r.cookies["interlock_refresh"].value == ""
