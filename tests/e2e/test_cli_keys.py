"""Issue 18, "Done when" 3: the CLI's keys against the whole stack, as a person runs them.

`interlock keys init && interlock keys enroll` (the admin key is the one `interlock up` made)
then `interlock approve ID` runs the write, once — the cluster, read with the official
kubernetes client, says so. A revoked key's decision is refused by the gateway (403) and, sent
past the gateway with the gateway's own NATS identity, recorded by the gate as
`decision.rejected`, with zero executions. An SSH key (`ssh-keygen -t ed25519`) imported with
`--from-ssh` signs as well, under the fingerprint `ssh-keygen -l` prints. Without a key,
nothing is posted and the person is told how to get one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from launcher.stack import Stack
from schemas.approval import ApprovalDecided
from schemas.approvers import REGISTRY_SESSION, ApproverKey, PasskeyRegistered, Signature
from services.runtime import approvers
from tests.e2e.conftest import (
    bus_as,
    pending_scale,
    record_as,
    replicas,
    run_cli,
    session_events,
    token,
)
from tests.e2e.test_cli_chat import Terminal
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
INTERLOCK = str(Path(sys.prefix, "bin", "interlock"))
# The CLI finds keys in these; the test's own environment must not leak one in.
KEY_ENV = ("INTERLOCK_KEY", "INTERLOCK_ADMIN_KEY", "INTERLOCK_TOKEN", "INTERLOCK_URL",
           "XDG_CONFIG_HOME")


def _env(stack: Stack, who: str, home: Path, **extra: str) -> dict[str, str]:
    """A person's shell: their token, their config dir (where `keys init` puts the key)."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_ENV}
    return {**env, "INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": token(stack, who),
            "XDG_CONFIG_HOME": str(home), "TERM": "dumb", **extra}


async def _sh(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    """A shell line as a person types it, `interlock` on its PATH."""
    env = {**env, "PATH": f"{Path(INTERLOCK).parent}:{env.get('PATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def _interlock(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The installed `interlock`, as a person runs it."""
    return await run_cli(env, *args, exe=INTERLOCK)


def _fingerprint(out: str) -> str:
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("fingerprint")]
    return line.split()[-1]


def _admin(stack: Stack, home: Path) -> dict[str, str]:
    """The admin's shell, with the admin key `interlock up` made and printed."""
    return _env(stack, "admin", home, INTERLOCK_ADMIN_KEY=str(stack.person_key("admin")))


def _executions(evs: list[Any], call_id: str) -> int:
    """The executor's claim (written before it touches the cluster) and its result."""
    return sum(1 for e in evs if e.type in ("tool.started", "tool.result")
               and getattr(e, "call_id", None) == call_id)


async def _barrier(operator: Client, sid: str) -> None:
    """A read through the executor; once its turn completed, anything released before it
    (the executor handles a session's events in order) would have run."""
    status, body = await operator.call("GET", f"/v1/sessions/{sid}")
    after = int(body["last_seq"]) if status == 200 else 0
    await operator.say(sid, "kubectl get deploy -n shop")
    await operator.wait_for(sid, lambda e: e.event == "turn.completed", after=after)


@pytest.fixture
def operator(stack: Stack, http: aiohttp.ClientSession) -> Client:
    return Client(http, stack.url, token(stack, "operator"))


async def test_keys_init_and_enroll_then_approve_runs_the_write_once(
        stack: Stack, operator: Client, tmp_path: Path) -> None:
    home = tmp_path / "admin-home"
    admin = _admin(stack, home)
    # The README's two commands: the admin's own new key, enrolled for the token's principal.
    code, out, err = await _sh("interlock keys init && interlock keys enroll", admin)
    assert code == 0, (out, err)
    key_file = home / "interlock" / "key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    fp = _fingerprint(out)
    assert f"enrolled {fp} (ed25519) for admin; signed by the admin key SHA256:" in out

    code, out, err = await _interlock(_env(stack, "viewer", home), "keys", "list")
    assert code == 0, err
    [row] = [ln for ln in out.splitlines() if fp in ln]
    assert row.split()[:2] == ["admin", "ed25519"], row
    assert "active" in row

    sid = await operator.new_session()
    before = replicas(stack)
    req = await pending_scale(operator, sid, before + 2)
    assert replicas(stack) == before  # held
    code, out, err = await _interlock(admin, "approve", req["approval_id"])
    assert code == 0, (out, err)
    assert f"approved {req['approval_id']} (1 of 1 approvals" in out
    assert f"signed with {fp}" in out
    call_id = req["calls"][0]["call_id"]
    got = await operator.wait_for(
        sid, lambda e: e.event == "tool.result" and e.data["call_id"] == call_id,
        after=int(req["seq"]))
    assert got[-1].data["status"] == "ok", got[-1].data
    assert replicas(stack) == before + 2
    await _barrier(operator, sid)
    evs = await session_events(stack, sid)
    assert _executions(evs, call_id) == 2  # one claim, one result: once
    [decided] = [e for e in evs if isinstance(e, ApprovalDecided)]
    assert decided.approver == "admin"
    assert decided.signed is not None
    assert decided.signed.key_id == fp
    assert not any(e.type == "decision.rejected" for e in evs)


async def test_without_a_key_nothing_is_posted(stack: Stack, operator: Client,
                                               tmp_path: Path) -> None:
    sid = await operator.new_session()
    req = await pending_scale(operator, sid, replicas(stack) + 1)
    code, out, err = await _interlock(_env(stack, "approver", tmp_path / "empty"), "approve",
                                req["approval_id"])
    assert code == 1, (out, err)
    assert f"no signing key at {tmp_path / 'empty' / 'interlock' / 'key'}" in err
    assert "interlock keys init" in err
    assert "interlock keys enroll" in err
    code, out, err = await _interlock(_env(stack, "approver", tmp_path / "empty"), "deny",
                                req["approval_id"], "--reason", "no")
    assert code == 1, (out, err)
    assert "no signing key" in err
    await _barrier(operator, sid)
    evs = await session_events(stack, sid)
    assert not any(e.type in ("approval.decided", "decision.rejected") for e in evs)
    _, body = await operator.call("GET", "/v1/approvals?state=pending")
    assert req["approval_id"] in [a["approval_id"] for a in body["approvals"]]


async def test_a_revoked_keys_decision_is_rejected_by_gateway_and_gate(
        stack: Stack, operator: Client, tmp_path: Path) -> None:
    home = tmp_path / "approver-home"
    approver = _env(stack, "approver", home)
    code, out, err = await _interlock(approver, "keys", "init")
    assert code == 0, (out, err)
    fp = _fingerprint(out)
    admin = _admin(stack, tmp_path / "admin-home")
    code, out, err = await _interlock(admin, "keys", "enroll", "--principal", "approver", "--key",
                                str(home / "interlock" / "key"), "--label", "laptop")
    assert code == 0, (out, err)
    assert f"enrolled {fp} (ed25519) for approver" in out
    code, out, err = await _interlock(_env(stack, "viewer", home), "keys", "list")
    [row] = [ln for ln in out.splitlines() if fp in ln]
    assert row.split()[:2] == ["approver", "ed25519"], row
    assert "laptop" in row
    code, out, err = await _interlock(admin, "keys", "revoke", fp)
    assert code == 0, (out, err)
    assert f"revoked {fp} of approver" in out
    code, out, err = await _interlock(_env(stack, "viewer", home), "keys", "list")
    [row] = [ln for ln in out.splitlines() if fp in ln]
    assert "REVOKED" in row

    sid = await operator.new_session()
    before = replicas(stack)
    req = await pending_scale(operator, sid, before + 3)
    # The gateway's early check: 403, nothing recorded.
    code, out, err = await _interlock(approver, "approve", req["approval_id"])
    assert code == 1, (out, err)
    assert "403 bad_signature" in err
    assert "revoked" in err
    # Past the gateway: the same signed body, recorded with the gateway's NATS identity.
    code, out, err = await _interlock(approver, "keys", "sign-decision", req["approval_id"],
                                "approve")
    assert code == 0, err
    assert f"signed with {fp}" in err
    body = json.loads(out)
    assert body["signature"]["key_id"] == fp
    forged = ApprovalDecided(session_id=sid, approval_id=req["approval_id"], decision="approve",
                             approver="approver", actor="approver",
                             signed=msgspec.convert(body["signature"], Signature))
    bus = await bus_as(stack, "gateway")
    try:
        await bus.append(forged)
    finally:
        await bus.close()
    evs = await operator.wait_for(sid, lambda e: e.event == "decision.rejected",
                                  after=int(req["seq"]))
    assert "revoked" in evs[-1].data["reason"], evs[-1].data
    await _barrier(operator, sid)
    call_id = req["calls"][0]["call_id"]
    evs_all = await session_events(stack, sid)
    assert _executions(evs_all, call_id) == 0
    assert not any(e.type == "approval.granted" for e in evs_all)
    assert replicas(stack) == before
    _, pending = await operator.call("GET", "/v1/approvals?state=pending")
    assert req["approval_id"] in [a["approval_id"] for a in pending["approvals"]]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
async def test_an_ssh_key_imported_with_from_ssh_signs(stack: Stack, operator: Client,
                                                       tmp_path: Path) -> None:
    ssh = tmp_path / "id_ed25519"
    code, _, err = await _sh(f"ssh-keygen -q -t ed25519 -N '' -C approver@laptop -f {ssh}",
                             dict(os.environ))
    assert code == 0, err
    code, out, err = await _sh(f"ssh-keygen -lf {ssh}.pub", dict(os.environ))
    fp = out.split()[1]
    home = tmp_path / "approver-home"
    approver = _env(stack, "approver", home)
    code, out, err = await _interlock(approver, "keys", "init", "--from-ssh", str(ssh))
    assert code == 0, (out, err)
    assert _fingerprint(out) == fp
    # The admin enrols the public line the approver sent (the .pub file's line).
    code, out, err = await _interlock(_admin(stack, tmp_path / "admin-home"), "keys", "enroll",
                                "--principal", "approver", "--public-key",
                                (tmp_path / "id_ed25519.pub").read_text().strip())
    assert code == 0, (out, err)
    assert f"enrolled {fp} (ed25519) for approver" in out

    sid = await operator.new_session()
    before = replicas(stack)
    req = await pending_scale(operator, sid, before + 1)
    code, out, err = await _interlock(approver, "approve", req["approval_id"])
    assert code == 0, (out, err)
    assert f"signed with {fp}" in out
    call_id = req["calls"][0]["call_id"]
    got = await operator.wait_for(
        sid, lambda e: e.event == "tool.result" and e.data["call_id"] == call_id,
        after=int(req["seq"]))
    assert got[-1].data["status"] == "ok", got[-1].data
    assert replicas(stack) == before + 1
    code, out, err = await _interlock(_env(stack, "viewer", home), "keys", "list")
    [row] = [ln for ln in out.splitlines() if fp in ln]
    assert "approver@laptop" in row  # the .pub line's comment is its label


async def test_chat_without_a_key_says_so_and_sends_nothing(stack: Stack, operator: Client,
                                                            tmp_path: Path) -> None:
    term = Terminal([INTERLOCK, "chat", "--title", "no key"],
                    _env(stack, "approver", tmp_path / "empty"))
    try:
        sid = (await term.expect(r"Session (s_\w+) as approver \(approver\)")).group(1)
        await term.expect(r"you cannot sign decisions here: no signing key at "
                          r"\S+/empty/interlock/key: create one with `interlock keys init`")
        await term.expect(r"> ")
        term.send(f"kubectl scale deploy/web --replicas={replicas(stack) + 4} -n shop")
        card = await term.expect(r"APPROVAL (a_\w+)(?s:.*?)Approve\? \[y\]es / \[n\]o / \[s\]kip: ")
        term.send("y")
        await term.expect(r"decision not sent: you cannot sign decisions here: no signing key")
        term.send("/quit")
        assert await term.exit_code() == 0
    finally:
        term.close()
    await _barrier(operator, sid)
    evs = await session_events(stack, sid)
    assert not any(e.type in ("approval.decided", "decision.rejected") for e in evs)
    _, pending = await operator.call("GET", "/v1/approvals?state=pending")
    assert card.group(1) in [a["approval_id"] for a in pending["approvals"]]


async def test_enroll_request_enrols_exactly_the_registered_passkey(
        stack: Stack, tmp_path: Path) -> None:
    """`keys enroll --request ID`: the passkey a person registered in the Command Center (here
    its `approver.registered` event, recorded with the gateway's identity as the registration
    route records it), shown with its fingerprint, enrolled as it is; a registration whose
    fingerprint does not match its key is refused."""
    cose = os.urandom(77)  # what the registry binds: the COSE key's bytes and where it signs
    key_id = approvers.fingerprint_of("passkey", cose)
    good = ApproverKey(key_id=key_id, kind="passkey", public_key=base64.b64encode(cose).decode(),
                       credential_id="Y3JlZC1pZC0x", rp_id="127.0.0.1",
                       origin=stack.url, label="yubikey")
    lying = msgspec.structs.replace(good, key_id="SHA256:" + "A" * 43,
                                    credential_id="Y3JlZC1pZC0y")
    regs = [PasskeyRegistered(session_id=REGISTRY_SESSION, principal="approver", credential=c,
                              registration="{}", nonce=f"n-{i}")
            for i, c in enumerate((good, lying))]
    await record_as(stack, "gateway", *regs)
    viewer = _env(stack, "viewer", tmp_path / "viewer-home")
    code, out, err = await _interlock(viewer, "keys", "list")
    assert code == 0, err
    assert "passkeys waiting to be enrolled (interlock keys enroll --request ID):" in out
    [row] = [ln for ln in out.splitlines() if regs[0].key() in ln]
    assert row.split()[1:4] == ["approver", key_id, "yubikey"], row

    admin = _admin(stack, tmp_path / "admin-home")
    code, out, err = await _interlock(admin, "keys", "enroll", "--request", regs[1].key())
    assert code == 2, (out, err)
    assert "its key's fingerprint is" in err
    assert "not enrolled" in err
    code, out, err = await _interlock(admin, "keys", "enroll", "--request", regs[0].key(),
                                "--principal", "admin")
    assert code == 2, (out, err)
    assert f"registration {regs[0].key()} is approver's, not admin's" in err
    code, out, err = await _interlock(admin, "keys", "enroll", "--request", regs[0].key())
    assert code == 0, (out, err)
    assert "passkey of approver, registered " in out
    assert key_id in out.splitlines()[0]
    assert f"enrolled {key_id} (passkey) for approver" in out

    code, out, err = await _interlock(viewer, "keys", "list", "--json")
    listing = json.loads(out)
    [held] = [a for a in listing["approvers"] if a["key_id"] == key_id]
    assert (held["principal"], held["kind"], held["revoked"]) == ("approver", "passkey", False)
    assert regs[0].key() not in [r["request_id"] for r in listing["registered"]]


async def test_approve_with_modified_args_signs_the_edits(stack: Stack, operator: Client,
                                                          tmp_path: Path) -> None:
    """`interlock approve ID --args …`: the edits are part of what is signed; the gate takes
    them as a new proposal, which the same key then approves."""
    approver = _env(stack, "approver", tmp_path / "home",
                    INTERLOCK_KEY=str(stack.person_key("approver")))
    sid = await operator.new_session()
    before = replicas(stack)
    first = await pending_scale(operator, sid, before + 7)
    code, out, err = await _interlock(approver, "approve", first["approval_id"], "--args",
                                json.dumps({"replicas": before + 1}), "--reason", "fewer")
    assert code == 0, (out, err)
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested",
                                  after=int(first["seq"]))
    second = got[-1].data
    assert second["calls"][0]["diff"] == [
        {"path": "spec.replicas", "before": before, "after": before + 1}]
    code, out, err = await _interlock(approver, "approve", second["approval_id"])
    assert code == 0, (out, err)
    call_id = second["calls"][0]["call_id"]
    await operator.wait_for(sid, lambda e: e.event == "tool.result"
                            and e.data["call_id"] == call_id, after=got[-1].id)
    assert replicas(stack) == before + 1
    evs = await session_events(stack, sid)
    [modified] = [e for e in evs if isinstance(e, ApprovalDecided)
                  and e.approval_id == first["approval_id"]]
    assert modified.edits == {"replicas": before + 1}
    assert modified.signed is not None
    assert json.loads(modified.signed.statement)["edits"] == {"replicas": before + 1}
    assert not any(e.type == "decision.rejected" for e in evs)
