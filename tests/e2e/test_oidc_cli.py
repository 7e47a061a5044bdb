"""Issue 20, "Done when" 2: `interlock login` against a real OpenID Provider, then `interlock
approve` works — every step a real process over real HTTP.

The OP (panva's oidc-provider, tests/oidc_op.py) runs on loopback with a short ID token lifetime;
the stack's gateway verifies its ID tokens (INTERLOCK_OIDC_*, groups:sre-approvers → approver).
Alice runs `interlock login` (device authorization grant), enters the code at the OP as a person
would (its forms, over plain HTTP), and the CLI stores her sign-in (0600, no token printed).
Her Ed25519 key (`interlock keys init`), enrolled by the admin for `oidc:alice`, signs
`interlock approve`: the held write runs once, recorded as approved by `oidc:alice`. Once her ID
token has expired the CLI renews it with the refresh token by itself and carries on. Bob (group
sre: operator) signs in with `interlock login --browser` (authorization code + PKCE to a
loopback port) and is refused at `interlock approve`: 403, nothing recorded, nothing run; his
sign-in also serves `interlock mcp` (the official MCP SDK's client over stdio), whose session is
his. No token is in any output, log or event.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import mcp_types as types
import pytest
import pytest_asyncio
from mcp import Client as McpClient
from mcp import StdioServerParameters

from launcher.nats import free_port
from launcher.stack import Stack
from schemas.approval import ApprovalDecided
from tests.e2e.conftest import (
    pending_scale,
    replicas,
    run_cli,
    session_events,
    start_stack,
    token,
)
from tests.oidc_op import (
    Op,
    complete_authorization,
    complete_device,
    device_id_token,
    http_session,
    start_op,
)
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
# Short, so that the expiry and renewal happen within the test; longer than the few seconds a
# step takes, so that a fresh token is not already stale when it is used.
ID_TOKEN_TTL = 8
CLI_WAIT_S = 60.0  # bounds, not expectations
# The test's own environment must not hand the CLI a token, a key or a sign-in.
CLEAN = ("INTERLOCK_TOKEN", "INTERLOCK_URL", "INTERLOCK_KEY", "INTERLOCK_ADMIN_KEY",
         "INTERLOCK_CONFIG_DIR", "XDG_CONFIG_HOME")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def op_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Op, Stack]]:
    port = free_port()  # the gateway's, known before the OP is told its redirect URI
    op = start_op(tmp_path_factory.mktemp("op"), f"http://127.0.0.1:{port}",
                  id_token_ttl=ID_TOKEN_TTL)
    try:
        # No clock skew: the gateway refuses an ID token from the second its exp has passed.
        stack = await start_stack(tmp_path_factory, http_port=port,
                                  extra_env={**op.gateway_env(),
                                             "INTERLOCK_OIDC_CLOCK_SKEW": "0"})
        try:
            yield op, stack
        finally:
            codes = await stack.stop()
        assert all(c == 0 for c in codes.values()), codes
    finally:
        op.stop()


def _env(stack: Stack, home: Path, **extra: str) -> dict[str, str]:
    """A person's shell: no token; their config dir (sign-in and key) under `home`."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return {**env, "PYTHONPATH": str(ROOT), "INTERLOCK_URL": stack.url,
            "INTERLOCK_CONFIG_DIR": str(home / "interlock"), "XDG_CONFIG_HOME": str(home),
            "TERM": "dumb", **extra}


async def _login(env: dict[str, str], prompt: str, person: Any,
                 *args: str) -> tuple[int, str, str]:
    """`interlock login ARGS` as a process; once it printed a line matching `prompt`,
    `person(match)` does what the person does at the OP; then the process's outcome."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher.cli", "login", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        async def until_prompt() -> re.Match[str]:
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"login ended before asking: {printed}")
                printed.append(line)
                if m := re.search(prompt, line):
                    return m

        await person(await asyncio.wait_for(until_prompt(), CLI_WAIT_S))
        out, err = await asyncio.wait_for(proc.communicate(), CLI_WAIT_S)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return int(proc.returncode or 0), "".join(printed) + out.decode(), err.decode()


def _stored(home: Path, stack: Stack) -> dict[str, Any]:
    doc = json.loads((home / "interlock" / "credentials.json").read_text())
    return dict(doc["gateways"][stack.url])


async def _barrier(operator: Client, sid: str) -> None:
    """A read through the executor: anything released before it would have run by its end."""
    _, body = await operator.call("GET", f"/v1/sessions/{sid}")
    await operator.say(sid, "kubectl get deploy -n shop")
    await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                            after=int(body["last_seq"]))


def _no_token_in(tokens: list[str], *texts: str) -> None:
    for t in tokens:
        assert t
        assert not any(t in text for text in texts), "a token was written out"


def _logs(stack: Stack) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted((stack.data / "logs").glob("*")) if p.is_file())


@pytest.fixture
def operator(op_stack: tuple[Op, Stack], http: aiohttp.ClientSession) -> Client:
    return Client(http, op_stack[1].url, token(op_stack[1], "operator"))


async def test_login_with_a_device_code_then_approve_runs_the_write_once_and_renews(
        op_stack: tuple[Op, Stack], operator: Client, tmp_path: Path) -> None:
    op, stack = op_stack
    home = tmp_path / "alice"
    alice = _env(stack, home)

    async def at_the_op(m: re.Match[str]) -> None:
        await complete_device(op, m.group(1), "alice")

    code, out, err = await _login(alice, r"enter the code: (\S+)", at_the_op)
    assert code == 0, (out, err)
    assert f"open {op.issuer}/device" in out
    assert f"Signed in to {stack.url} as oidc:alice (Alice Approver); roles: approver" in out
    creds_file = home / "interlock" / "credentials.json"
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
    first = _stored(home, stack)
    assert first["issuer"] == op.issuer
    assert first["client_id"] == op.cli_client_id
    assert first["refresh_token"]
    assert first["id_token"].count(".") == 2
    outputs = [out, err]

    code, out, err = await run_cli(alice, "whoami")
    assert code == 0, (out, err)
    assert out.startswith("oidc:alice (Alice Approver); roles: approver"), out
    outputs += [out, err]

    # Her key, enrolled by the admin for the principal the gateway names her by.
    code, out, err = await run_cli(alice, "keys", "init")
    assert code == 0, (out, err)
    [fp] = [ln.split()[-1] for ln in out.splitlines() if ln.strip().startswith("fingerprint")]
    admin = _env(stack, tmp_path / "admin", INTERLOCK_TOKEN=token(stack, "admin"),
                 INTERLOCK_ADMIN_KEY=str(stack.person_key("admin")))
    code, out, err = await run_cli(admin, "keys", "enroll", "--principal", "oidc:alice", "--key",
                                str(home / "interlock" / "key"))
    assert code == 0, (out, err)
    assert f"enrolled {fp} (ed25519) for oidc:alice" in out

    sid = await operator.new_session()
    before = replicas(stack)
    req = await pending_scale(operator, sid, before + 2)
    assert replicas(stack) == before  # held
    code, out, err = await run_cli(alice, "approve", req["approval_id"])
    assert code == 0, (out, err)
    assert f"approved {req['approval_id']} (1 of 1 approvals" in out
    assert f"signed with {fp}" in out
    outputs += [out, err]
    call_id = req["calls"][0]["call_id"]
    got = await operator.wait_for(
        sid, lambda e: e.event == "tool.result" and e.data["call_id"] == call_id,
        after=int(req["seq"]))
    assert got[-1].data["status"] == "ok", got[-1].data
    assert replicas(stack) == before + 2
    await _barrier(operator, sid)
    evs = await session_events(stack, sid)
    assert sum(1 for e in evs if e.type == "tool.started"
               and getattr(e, "call_id", None) == call_id) == 1
    [decided] = [e for e in evs if isinstance(e, ApprovalDecided)]
    assert decided.approver == "oidc:alice"
    assert decided.signed is not None
    assert decided.signed.key_id == fp
    assert not any(e.type == "decision.rejected" for e in evs)

    # Expiry: once the stored ID token's exp has passed, the next command renews it (the
    # refresh token, rotated by the OP for a public client) and still works.
    current = _stored(home, stack)
    deadline = time.monotonic() + ID_TOKEN_TTL + 10
    while time.time() <= current["expires_at"]:
        assert time.monotonic() < deadline, "the ID token never expired"
        await asyncio.sleep(0.2)
    # The gateway itself refuses the expired ID token, with why.
    status, body = await operator.call("GET", "/v1/whoami", token=current["id_token"])
    assert status == 401, body
    assert "expired" in body["error"]["message"], body
    code, out, err = await run_cli(alice, "whoami")
    assert code == 0, (out, err)
    assert out.startswith("oidc:alice (Alice Approver); roles: approver"), out
    outputs += [out, err]
    renewed = _stored(home, stack)
    assert renewed["id_token"] != current["id_token"]
    assert renewed["expires_at"] > current["expires_at"]
    assert renewed["refresh_token"] != current["refresh_token"]
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"

    # No token in anything printed, logged or recorded.
    tokens = [t for c in (first, current, renewed) for t in (c["id_token"], c["refresh_token"])]
    _no_token_in(tokens, *outputs, _logs(stack), op.log.read_text(errors="replace"),
                 json.dumps([repr(e) for e in evs]))

    code, out, err = await run_cli(alice, "logout")
    assert code == 0, (out, err)
    assert f"signed out of {stack.url}; the refresh token is revoked" in out
    assert json.loads(creds_file.read_text())["gateways"] == {}
    code, out, err = await run_cli(alice, "whoami")
    assert code == 1
    assert "interlock login" in err


async def test_bob_signs_in_with_the_browser_flow_and_may_not_approve(
        op_stack: tuple[Op, Stack], operator: Client, tmp_path: Path) -> None:
    op, stack = op_stack
    home = tmp_path / "bob"
    bob = _env(stack, home)

    async def in_the_browser(m: re.Match[str]) -> None:
        # What a browser does with the URL: the OP's login form as bob, then the redirect
        # to the CLI's loopback port (plain HTTP follows it).
        async with http_session() as browser:
            url, body = await complete_authorization(browser, m.group(0), "bob")
        assert url.startswith("http://127.0.0.1:"), url
        assert "/callback?" in url, url
        assert "Signed in" in body, body

    code, out, err = await _login(bob, re.escape(op.issuer) + r"/auth\?\S+", in_the_browser,
                                  "--browser", "--no-open")
    assert code == 0, (out, err)
    assert f"Signed in to {stack.url} as oidc:bob (Bob Operator); roles: operator" in out
    code, out, err = await run_cli(bob, "keys", "init")
    assert code == 0, (out, err)

    sid = await operator.new_session()
    before = replicas(stack)
    req = await pending_scale(operator, sid, before + 1)
    code, out, err = await run_cli(bob, "approve", req["approval_id"])
    assert code == 1, (out, err)
    assert "oidc:bob lacks the approver role (403 forbidden)" in err, err
    await _barrier(operator, sid)
    evs = await session_events(stack, sid)
    assert not any(e.type in ("approval.decided", "decision.rejected", "tool.started")
                   for e in evs)
    assert replicas(stack) == before
    _, pending = await operator.call("GET", "/v1/approvals?state=pending")
    assert req["approval_id"] in [a["approval_id"] for a in pending["approvals"]]
    stored = _stored(home, stack)
    _no_token_in([stored["id_token"], stored["refresh_token"]], out, err)

    # The same sign-in serves `interlock mcp` (no token in its environment).
    params = StdioServerParameters(command=sys.executable, args=["-m", "launcher.cli", "mcp"],
                                   cwd=str(ROOT), env=bob)
    async with McpClient(params, client_info=types.Implementation(
            name="e2e-oidc", version="1.0")) as c:
        tools = (await asyncio.wait_for(c.list_tools(), CLI_WAIT_S)).tools
    assert tools
    _, listed = await operator.call("GET", "/v1/sessions?limit=20")
    [mine] = [x for x in listed["sessions"] if x["title"] == "MCP: e2e-oidc 1.0 (stdio)"]
    assert mine["started_by"] == "oidc:bob"


async def test_an_id_token_the_provider_issued_to_another_application_is_refused(
        op_stack: tuple[Op, Stack], operator: Client) -> None:
    """The same provider, the same person (alice, an approver), but a token issued to another of
    the company's applications: not for Interlock (wrong audience), whatever it says of her."""
    op, _ = op_stack
    other = await device_id_token(op, "other-app", "alice")
    status, body = await operator.call("GET", "/v1/whoami", token=other)
    assert status == 401, body
    assert "wrong audience" in body["error"]["message"], body
    assert other not in json.dumps(body)
    status, body = await operator.call("GET", "/v1/approvals", token=other)
    assert status == 401, body
