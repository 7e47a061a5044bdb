"""Signing in to the Command Center with the company's identity provider (issue 20), end to end: a
real OpenID Provider (tests/oidc_op.py: panva's oidc-provider on Node), the whole stack as
processes with INTERLOCK_OIDC_* given to its gateway, and a real headless Chromium going through
the provider's login form.

alice (group sre-approvers → approver) signs in, the page shows her; with her ID token and the
Ed25519 key an admin enrolled for `oidc:alice` she approves a held write, which runs once, and
the log records her as `oidc:alice` (her provider's readable name beside it, never instead).
bob (group sre → operator) signs in on a phone-sized page and may not decide. After the provider
rotates its signing key, a new sign-in's token (new kid) is accepted without restarting anything.
No ID token, refresh token or client secret is in the stored log, the services' logs, or any
service but the gateway."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from schemas import subjects as S
from services.runtime import approvers
from services.runtime.bus import Bus
from tests.e2e.conftest import CHROMIUM, replicas
from tests.oidc_op import Op, browser_sign_in, start_op
from tests.support import Client

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent"),
]
pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
WAIT_MS = 30_000
ADMIN = "o" * 32


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def op_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Op, Stack]]:
    # The gateway's port first: the provider registers its redirect URI before either starts.
    port = free_port()
    op = start_op(tmp_path_factory.mktemp("op"), f"http://127.0.0.1:{port}")
    stack = Stack(StackConfig(
        data_dir=tmp_path_factory.mktemp("oidc"), http_port=port, admin_token=ADMIN,
        extra_env={**op.gateway_env(), "INTERLOCK_OIDC_JWKS_REFRESH_MIN": "1"}))
    try:
        await stack.start()
        yield op, stack
    finally:
        await stack.stop()
        op.stop()


async def sign_in(browser: Any, stack: Stack, login: str, width: int = 1280,
                  height: int = 900) -> tuple[Any, Any]:
    """A fresh browser (no provider session) signing in to the Command Center as `login`
    through the provider's form; (context, page) once the page is ready."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(stack.url + "/")
    button = page.locator("#login-oidc-button")
    await button.wait_for()
    issuer_host = stack.cfg.extra_env["INTERLOCK_OIDC_ISSUER"].removeprefix("http://")
    assert await button.inner_text() == f"Sign in with {issuer_host}"
    # The static-token field stays beside it, and the set-up help names this redirect URI.
    assert await page.locator("#login-token").is_visible()
    assert await page.text_content("#help-redirect") == f"{stack.url}/v1/auth/callback"
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    await button.click()
    await browser_sign_in(page, login)
    await page.wait_for_selector("body[data-ready]")
    # Back home (a session opened, maybe), the callback out of the address bar.
    assert page.url.split("#")[0] == stack.url + "/", page.url
    return context, page


async def id_token(page: Any) -> str:
    return str(await page.evaluate("sessionStorage.getItem('interlock.token')"))


def kid(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


async def enrol(stack: Stack, http: aiohttp.ClientSession, principal: str, path: Path) -> None:
    """What `interlock keys enroll` does: the admin signs an enrolment of the person's key."""
    approvers.write_private_key(path, Ed25519PrivateKey.generate())
    key = approvers.ed25519_key(approvers.load_private_key(path).public_key())
    admin_key = approvers.load_private_key(stack.person_key("admin"))
    body = {"principal": principal, "credential": msgspec.to_builtins(key),
            "admin": msgspec.to_builtins(approvers.sign_statement(
                approvers.enrol_statement(principal, key), admin_key))}
    async with http.post(f"{stack.url}/v1/approvers", json=body,
                         headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 201, await r.text()


async def held(operator: Client, command: str) -> tuple[str, dict[str, Any]]:
    sid = await operator.new_session()
    await operator.say(sid, command)
    seen = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=120)
    return sid, dict(seen[-1].data)


async def stored_events(stack: Stack) -> list[Any]:
    bus = await Bus.connect(stack.nats_settings("admin"), "admin")
    try:
        return [s.event async for s in bus.read(f"{S.EVENTS_PREFIX}.>", 1)]
    finally:
        await bus.close()


async def test_people_sign_in_with_the_provider_and_decide_by_their_groups(
        op_stack: tuple[Op, Stack], browser: Any, tmp_path: Path) -> None:
    op, stack = op_stack
    async with aiohttp.ClientSession() as http:
        operator = Client(http, stack.url, str(stack.tokens["operator"]["token"]))
        await enrol(stack, http, "oidc:alice", tmp_path / "alice.key")

        # alice signs in; the page shows her readable name and the principal she acts as.
        alice_ctx, page = await sign_in(browser, stack, "alice")
        assert await page.inner_text("#who") == "Alice Approver (approver)"
        assert await page.inner_text("#who-id") == "oidc:alice"
        alice_token = await id_token(page)
        [refresh] = [c for c in await alice_ctx.cookies() if c["name"] == "interlock_refresh"]
        assert (refresh["httpOnly"], refresh["path"], refresh["sameSite"]) == \
            (True, "/v1/auth/", "Strict")
        # The page's script never sees the refresh token; it gets new ID tokens with it before
        # the one it holds expires (told it expires in 3 s, the page renews it by itself).
        assert await page.evaluate("document.cookie") == ""
        await page.evaluate("sessionStorage.setItem('interlock.expires', "
                            "String(Date.now() / 1000 + 3)); scheduleRefresh()")
        await page.wait_for_function(
            "t => sessionStorage.getItem('interlock.token') !== t", arg=alice_token)
        refreshed = await id_token(page)
        assert int(await page.evaluate("sessionStorage.getItem('interlock.expires')")) > \
            time.time() + 60
        alice = Client(http, stack.url, refreshed, key=tmp_path / "alice.key")
        assert (await alice.call("GET", "/v1/whoami"))[1] == {
            "principal": "oidc:alice", "name": "Alice Approver", "roles": ["approver"],
            "via": "oidc"}

        # A held write; alice approves it with her ID token and her enrolled key: it runs once.
        sid, req = await held(operator, "kubectl scale deploy/web --replicas=4 -n shop")
        card = page.locator(f".approval-card[data-approval-id='{req['approval_id']}']")
        await card.wait_for()  # her page shows the card, with a Approve she may use
        status, body = await alice.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                        {"decision": "approve"})
        assert status == 202, body
        done = await operator.wait_for(sid, lambda e: e.event == "tool.result")
        assert done[-1].data["status"] == "ok"
        assert replicas(stack) == 4

        # bob (operator) signs in on a phone; he may not decide.
        bob_ctx, bob_page = await sign_in(browser, stack, "bob", width=390, height=844)
        assert await bob_page.inner_text("#who") == "Bob Operator (operator)"
        assert await bob_page.inner_text("#who-id") == "oidc:bob"
        assert await bob_page.evaluate("document.documentElement.scrollWidth") <= 390
        bob = Client(http, stack.url, await id_token(bob_page))
        _sid2, req2 = await held(operator, "kubectl scale deploy/web --replicas=5 -n shop")
        status, body = await bob.call("POST", f"/v1/approvals/{req2['approval_id']}/decision",
                                      {"decision": "approve"})
        assert (status, body["error"]["message"]) == (403, "oidc:bob lacks the approver role")
        assert bob_page.errors == []
        assert page.errors == []

        # The provider rotates its signing key: a new sign-in's token, signed with the new key,
        # is accepted by the running gateway (one JWKS refetch, no restart).
        new_kid = op.rotate()
        assert kid(alice_token) != new_kid
        again_ctx, again = await sign_in(browser, stack, "alice")
        rotated = await id_token(again)
        assert kid(rotated) == new_kid
        assert await again.inner_text("#who-id") == "oidc:alice"
        status, body = await Client(http, stack.url, rotated).call("GET", "/v1/approvals")
        assert status == 200, body
        tokens = [alice_token, refreshed, await id_token(bob_page), rotated,
                  refresh["value"]] + [c["value"] for ctx in (bob_ctx, again_ctx)
                                       for c in await ctx.cookies()
                                       if c["name"] == "interlock_refresh"]
        for ctx in (alice_ctx, bob_ctx, again_ctx):
            await ctx.close()

    # The log records who acted as oidc:<sub>, never a display name; the provider's readable
    # name is recorded beside it, and the audit says both.
    events = await stored_events(stack)
    decided = [e for e in events if e.type == "approval.decided"]
    assert [(e.approver, e.actor, e.actor_name) for e in decided] == [
        ("oidc:alice", "oidc:alice", "Alice Approver")]
    async with aiohttp.ClientSession() as http:
        viewer = Client(http, stack.url, str(stack.tokens["operator"]["token"]))
        status, audit = await viewer.call("GET", f"/v1/sessions/{sid}/audit")
    assert status == 200, audit
    said = f"oidc:alice (Alice Approver) approved {req['approval_id']}"
    assert any(e["actor"] == "oidc:alice" and e["text"].startswith(said)
               for e in audit["timeline"]), audit["timeline"]
    granted = [e for e in events if e.type == "approval.granted"]
    assert [e.approver for e in granted] == ["oidc:alice"]
    assert sum(1 for e in events if e.type == "tool.result" and e.session_id == sid) == 1

    # No ID token, refresh token or client secret in the stored log (its files on disk), the
    # services' logs, or the environment of any service but the gateway.
    secret = op.web_client_secret
    assert len(tokens) == 7
    assert all(len(t) > 20 for t in tokens)
    needles = [t.encode() for t in [*tokens, secret]]
    assert_nowhere(stack, needles)
    assert holders_of(stack, secret) == {"gateway"}


def assert_nowhere(stack: Stack, needles: list[bytes]) -> None:
    """None of `needles` in any file of the stack's data dir: the log's store (JetStream's
    files), the services' logs, their keys and settings."""
    files = [p for p in stack.data.rglob("*") if p.is_file()]
    # (the store is plain bytes: who acted is there to be read)
    assert any(b"oidc:alice" in p.read_bytes() for p in files if "jetstream" in str(p))
    assert any(p.name == "gateway.log" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not [n for n in needles if n in data], path


def holders_of(stack: Stack, secret: str) -> set[str]:
    """The stack's processes whose environment holds `secret`."""
    return {name for name, proc in stack.procs.items()
            if secret.encode() in Path(f"/proc/{proc.pid}/environ").read_bytes()}
