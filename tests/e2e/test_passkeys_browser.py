"""Passkeys in the Command Center (issue 18), in a real headless Chromium with a virtual
authenticator (CDP `WebAuthn.addVirtualAuthenticator`), against the whole stack as processes:
an approver registers a passkey in the page, an admin enrols it, and one click on Approve signs
the decision with it; another principal's passkey cannot sign for the approver; without the
authenticator, approving is impossible and the card says so.

The page is opened at http://localhost:<port>: a passkey belongs to a host name (browsers
refuse an IP address as its relying party)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from schemas.approval import ApprovalDecided
from schemas.approvers import ApproverKey, Signature
from services.runtime import approvers
from services.runtime.bus import Bus
from services.runtime.settings import NatsSettings
from tests.e2e.conftest import CHROMIUM, replicas
from tests.support import Client

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is absent: apt-get install -y chromium "
                              "(`make test` does it when run as root)"),
]
playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="the playwright package is not installed")
WAIT_MS = 30_000
INTERLOCK = str(Path(sys.prefix, "bin", "interlock"))
AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True,
                 "automaticPresenceSimulation": True}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pk_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("passkeys"), http_port=free_port(),
                          admin_token="p" * 32))
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


def _token(stack: Stack, who: str) -> str:
    return stack.cfg.admin_token if who == "admin" else str(stack.tokens[who]["token"])


def _client(stack: Stack, http: aiohttp.ClientSession, who: str) -> Client:
    return Client(http, stack.url, _token(stack, who))


def _local(stack: Stack) -> str:
    return f"http://localhost:{stack.cfg.http_port}"


async def add_authenticator(page: Any) -> str:
    """A virtual platform authenticator (user verification on, presence automatic) for the
    page; its id, to remove it again through `page.cdp`."""
    page.cdp = await page.context.new_cdp_session(page)
    await page.cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await page.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    page.authenticator = str(added["authenticatorId"])
    return page.authenticator


async def signing_passkey(page: Any, stack: Stack, who: str, label: str = "browser") -> str:
    """Makes the page (opened at http://localhost:<port>) able to sign for `who`: a virtual
    authenticator, a passkey registered in the page, enrolled with the stack's admin key.
    Returns its fingerprint."""
    await add_authenticator(page)
    key_id, request_id = await _register(page, label)
    async with aiohttp.ClientSession() as http:
        await _enrol(stack, _client(stack, http, "admin"), who, request_id)
    return key_id


async def _open(browser: Any, stack: Stack, who: str, width: int = 1440,
                height: int = 900) -> Any:
    """The Command Center as `who`, with a virtual authenticator of its own."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    decisions: list[str] = []  # every decision the page POSTed
    page.on("request", lambda r: decisions.append(r.url)
            if r.method == "POST" and r.url.endswith("/decision") else None)
    page.decisions = decisions
    await page.goto(f"{_local(stack)}/#token={_token(stack, who)}")
    await page.wait_for_selector("body[data-ready]")
    await add_authenticator(page)
    return page


async def _register(page: Any, label: str) -> tuple[str, str]:
    """Registers a passkey in the page; its fingerprint and the request id the page shows."""
    box = page.locator("#passkeys")
    if not await box.evaluate("e => e.open"):
        await page.click("#passkeys-summary")
    await page.fill("#passkey-label", label)
    await page.click("#passkey-register")
    done = page.locator("#passkey-result .registered")
    await done.wait_for()
    key_id = (await done.locator("code.fingerprint").inner_text()).strip()
    command = (await done.locator("code.enrol-command").inner_text()).strip()
    request_id = str(await done.get_attribute("data-request-id"))
    assert command == f"interlock keys enroll --request {request_id}", command
    # This device holds it already: registering again makes no second one.
    await page.click("#passkey-register")
    await page.locator("#passkey-result .error", has_text="already holds").wait_for()
    assert key_id.startswith("SHA256:"), key_id
    return key_id, request_id


async def _enrol(stack: Stack, admin: Client, principal: str, request_id: str) -> ApproverKey:
    """What `interlock keys enroll --request ID` does: the admin signs the registered
    passkey's enrolment with the stack's admin key."""
    status, body = await admin.call("GET", "/v1/approvers")
    assert status == 200, body
    [reg] = [r for r in body["registered"] if r["request_id"] == request_id]
    assert reg["principal"] == principal
    key = msgspec.convert(reg["credential"], ApproverKey)
    admin_key = approvers.load_private_key(stack.person_key("admin"))
    sig = approvers.sign_statement(approvers.enrol_statement(principal, key), admin_key)
    status, body = await admin.call("POST", "/v1/approvers", {
        "principal": principal, "credential": msgspec.to_builtins(key),
        "admin": msgspec.to_builtins(sig)})
    assert status == 201, body
    return key


async def _interlock(stack: Stack, home: Path, *args: str) -> tuple[int, str, str]:
    """The `interlock` CLI as the admin runs it: their token, the admin key `interlock up`
    made, a config dir of their own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTERLOCK_KEY", "INTERLOCK_ADMIN_KEY", "XDG_CONFIG_HOME")}
    env.update(INTERLOCK_URL=stack.url, INTERLOCK_TOKEN=_token(stack, "admin"),
               INTERLOCK_ADMIN_KEY=str(stack.person_key("admin")), XDG_CONFIG_HOME=str(home))
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def _pending(operator: Client, command: str) -> tuple[str, dict[str, Any]]:
    sid = await operator.new_session()
    await operator.say(sid, command)
    seen = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=120)
    return sid, dict(seen[-1].data)


async def _events(stack: Stack, sid: str) -> list[Any]:
    bus = await Bus.connect(stack.nats_settings("admin"), "admin")
    try:
        return [s.event for s in await bus.session(sid)]
    finally:
        await bus.close()


def _count(events: list[Any], kind: str) -> int:
    return sum(1 for e in events if e.type == kind)


async def _card(page: Any, approval_id: str) -> Any:
    card = page.locator(f".approval-card[data-approval-id='{approval_id}']")
    await card.wait_for()
    return card


async def test_a_passkey_registered_in_the_page_approves_with_one_click(
        pk_stack: Stack, browser: Any, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    stack = pk_stack
    operator, admin = _client(stack, http, "operator"), _client(stack, http, "admin")
    page = await _open(browser, stack, "approver")
    assert "No passkey enrolled for approver" in await page.inner_text("#passkeys-summary")
    key_id, request_id = await _register(page, "laptop")
    # Registered is not enrolled: the page says an admin must, with the command...
    waiting = page.locator("#passkey-list li.waiting", has_text=key_id)
    await waiting.wait_for()
    command = (await waiting.locator("code", has_text="interlock keys enroll").inner_text())
    assert command == f"interlock keys enroll --request {request_id}", command
    # This device holds it already: registering again makes no second one.
    await page.click("#passkey-register")
    await page.locator("#passkey-result .error", has_text="already holds").wait_for()
    # ...which the admin runs as shown, with the admin key `interlock up` made.
    code, out, err = await _interlock(stack, tmp_path, *command.split()[1:])
    assert code == 0, (out, err)
    assert key_id in out, out
    status, listing = await admin.call("GET", "/v1/approvers")
    assert status == 200, listing
    [key] = [k for k in listing["approvers"] if k["key_id"] == key_id]
    assert (key["principal"], key["kind"], key["rp_id"], key["label"], key["revoked"]) == \
        ("approver", "passkey", "localhost", "laptop", False)

    before = replicas(stack)
    sid, req = await _pending(operator, f"kubectl scale deploy/web --replicas={before + 1} "
                                        "-n shop")
    card = await _card(page, req["approval_id"])
    await card.locator(".actions button.approve").click()  # one click, one touch
    await card.locator(".card-status", has_text="Approved").wait_for()
    got = await operator.wait_for(sid, lambda e: e.event in ("tool.result", "command.refused"))
    assert got[-1].event == "tool.result", got[-1].data
    assert replicas(stack) == before + 1  # the cluster says so, not Interlock

    events = await _events(stack, sid)
    assert _count(events, "tool.result") == 1
    assert _count(events, "approval.granted") == 1
    assert _count(events, "decision.rejected") == 0
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert decided.approver == "approver"
    assert decided.signed is not None
    assert decided.signed.key_id == key_id
    statement = json.loads(decided.signed.statement)
    assert statement == {
        "interlock": "decision/v1", "approval_id": req["approval_id"], "session_id": sid,
        "approver": "approver", "decision": "approve", "reason": "",
        "call_hashes": [c["call_hash"] for c in req["calls"]],
        "expires_at": req["expires_at"], "edits": None}
    # The assertion answered the statement's hash, on this origin.
    client_data = json.loads(base64.urlsafe_b64decode(
        decided.signed.client_data_json + "=" * (-len(decided.signed.client_data_json) % 4)))
    assert client_data["type"] == "webauthn.get"
    assert client_data["origin"] == _local(stack)
    assert client_data["challenge"] == base64.urlsafe_b64encode(hashlib.sha256(
        decided.signed.statement.encode()).digest()).decode().rstrip("=")
    assert page.decisions == [f"{_local(stack)}/v1/approvals/{req['approval_id']}/decision"]

    # Modify and Deny sign the same way: the edits and the reason are in what was signed.
    now = replicas(stack)
    sid, req = await _pending(operator, f"kubectl scale deploy/web --replicas={now + 5} -n shop")
    card = await _card(page, req["approval_id"])
    await card.locator(".actions button", has_text="Modify").click()
    edits = {**req["calls"][0]["args"], "replicas": now + 4}
    await card.locator("textarea.modify-args").fill(json.dumps(edits))
    await card.locator("button.confirm-modify").click()
    await card.locator(".card-status", has_text="Approved with changes").wait_for()
    seen = await operator.wait_for(sid, lambda e: e.event == "approval.requested"
                                   and e.data["approval_id"] != req["approval_id"])
    modified = seen[-1].data
    assert modified["calls"][0]["args"]["replicas"] == now + 4
    card = await _card(page, modified["approval_id"])
    await card.locator(".actions button", has_text="Deny").click()
    await card.locator("input.deny-reason").fill("not today")
    await card.locator("button.confirm-deny").click()
    await card.locator(".card-status", has_text="Denied").wait_for()
    await operator.wait_for(sid, lambda e: e.event == "approval.denied")
    events = await _events(stack, sid)
    signed = {e.approval_id: json.loads(e.signed.statement) for e in events
              if isinstance(e, ApprovalDecided) and e.signed is not None}
    assert signed[req["approval_id"]]["edits"] == edits
    assert signed[modified["approval_id"]]["decision"] == "deny"
    assert signed[modified["approval_id"]]["reason"] == "not today"
    assert _count(events, "decision.rejected") == 0
    assert _count(events, "tool.result") == 0
    assert replicas(stack) == now
    assert len(page.decisions) == 3
    sw, vw = await page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert sw <= vw, (sw, vw)
    assert page.errors == []
    await page.close()


async def test_another_principals_passkey_cannot_sign_for_the_approver(
        pk_stack: Stack, browser: Any, http: aiohttp.ClientSession) -> None:
    stack = pk_stack
    operator, admin = _client(stack, http, "operator"), _client(stack, http, "admin")
    approver = _client(stack, http, "approver")
    # The admin (who may approve too) registers a passkey of their own; it is enrolled.
    page = await _open(browser, stack, "admin")
    admin_key_id, request_id = await _register(page, "admin's key")
    admin_key = await _enrol(stack, admin, "admin", request_id)

    before = replicas(stack)
    sid, req = await _pending(operator, f"kubectl scale deploy/web --replicas={before + 2} "
                                        "-n shop")
    statement = json.dumps({
        "interlock": "decision/v1", "approval_id": req["approval_id"], "session_id": sid,
        "approver": "approver", "decision": "approve", "reason": "",
        "call_hashes": [c["call_hash"] for c in req["calls"]],
        "expires_at": req["expires_at"], "edits": None})
    # The admin's authenticator signs a decision naming "approver" (the page's own helpers
    # encode the bytes).
    signed = await page.evaluate(
        """async ([statement, credentialId]) => {
             const challenge = await crypto.subtle.digest("SHA-256",
                 new TextEncoder().encode(statement));
             const a = await navigator.credentials.get({ publicKey: { challenge,
                 rpId: location.hostname, userVerification: "preferred",
                 allowCredentials: [{ type: "public-key", id: unb64url(credentialId) }] } });
             return { signature: b64url(a.response.signature),
                      authenticator_data: b64url(a.response.authenticatorData),
                      client_data_json: b64url(a.response.clientDataJSON),
                      credential_id: b64url(a.rawId) };
           }""", [statement, admin_key.credential_id])
    sig = Signature(statement=statement, key_id=admin_key_id, **signed)

    # Over HTTP, as the approver: the gateway's early check refuses it.
    status, body = await approver.call(
        "POST", f"/v1/approvals/{req['approval_id']}/decision",
        {"decision": "approve", "signature": msgspec.to_builtins(sig)})
    assert status == 403, body
    assert body["error"]["code"] == "bad_signature", body
    # With the gateway's own NATS identity (a compromised gateway): the gate rejects it.
    gw = await Bus.connect(NatsSettings.from_env("gateway", stack.env_for("gateway")),
                           "gateway")
    try:
        await gw.append(ApprovalDecided(
            session_id=sid, approval_id=req["approval_id"], decision="approve",
            approver="approver", actor="approver", signed=sig))
    finally:
        await gw.close()
    got = await operator.wait_for(sid, lambda e: e.event in (
        "decision.rejected", "approval.granted", "tool.result"))
    assert got[-1].event == "decision.rejected", got[-1].data
    # Nothing ran, and the approval still waits for its approver.
    status, body = await admin.call("GET", "/v1/approvals?state=pending")
    assert req["approval_id"] in {a["approval_id"] for a in body["approvals"]}
    events = await _events(stack, sid)
    assert _count(events, "approval.granted") == 0
    assert _count(events, "tool.started") + _count(events, "tool.result") == 0
    assert replicas(stack) == before

    # In the approver's page, on a device holding only the admin's passkey, Approve signs
    # nothing and sends nothing.
    held = await page.cdp.send("WebAuthn.getCredentials",
                               {"authenticatorId": page.authenticator})
    mine = await _open(browser, stack, "approver")
    await mine.cdp.send("WebAuthn.removeVirtualAuthenticator",
                        {"authenticatorId": mine.authenticator})
    other = await mine.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    for cred in held["credentials"]:
        await mine.cdp.send("WebAuthn.addCredential",
                            {"authenticatorId": other["authenticatorId"], "credential": cred})
    card = await _card(mine, req["approval_id"])
    # On the card, the rejected decision counts for nothing: no approval, no signature.
    assert (await card.locator("dd.count").inner_text()).strip() == "0 of 1"
    assert await card.locator("dd.signed").is_hidden()
    await card.locator(".actions button.approve").click()
    status_line = card.locator(".card-status.error")
    await status_line.wait_for()
    text = await status_line.inner_text()
    assert "No passkey on this device can sign for approver" in text, text
    assert mine.decisions == []
    assert page.errors == []
    assert mine.errors == []
    await mine.close()
    await page.close()


async def test_without_the_authenticator_approving_is_impossible(
        pk_stack: Stack, browser: Any, http: aiohttp.ClientSession) -> None:
    stack = pk_stack
    operator, admin = _client(stack, http, "operator"), _client(stack, http, "admin")
    # On a phone: the approver's passkey on this device is registered and enrolled...
    page = await _open(browser, stack, "approver", 390, 844)
    _, request_id = await _register(page, "phone")
    await _enrol(stack, admin, "approver", request_id)
    before = replicas(stack)
    sid, req = await _pending(operator, f"kubectl scale deploy/web --replicas={before + 3} "
                                        "-n shop")
    # ...and then the authenticator is gone: the phone's passkeys were wiped (a new, empty
    # authenticator answers at once that it holds none of them; with none at all the browser
    # would wait out the page's 60 s WebAuthn timeout and end the same way).
    await page.cdp.send("WebAuthn.removeVirtualAuthenticator",
                        {"authenticatorId": page.authenticator})
    await page.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    card = await _card(page, req["approval_id"])
    await card.scroll_into_view_if_needed()
    await card.locator(".actions button.approve").click()
    # No passkey answers the browser's request: the card says so.
    status_line = card.locator(".card-status.error")
    await status_line.wait_for()
    text = await status_line.inner_text()
    assert "No passkey on this device can sign for approver" in text, text
    assert f"interlock approve {req['approval_id']}" in text, text
    # Nothing was posted; the approval still waits; the buttons work again.
    assert page.decisions == []
    assert await card.locator(".actions button.approve").is_enabled()
    _, body = await admin.call("GET", "/v1/approvals?state=pending")
    assert req["approval_id"] in {a["approval_id"] for a in body["approvals"]}
    events = await _events(stack, sid)
    assert _count(events, "approval.decided") == 0
    assert replicas(stack) == before
    # The message is inside the card at 390 px; nothing scrolls sideways.
    box, cbox = await status_line.bounding_box(), await card.bounding_box()
    assert box["x"] + box["width"] <= cbox["x"] + cbox["width"] + 0.5, (box, cbox)
    sw, vw = await page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert sw <= vw, (sw, vw)
    assert page.errors == []
    await page.close()
