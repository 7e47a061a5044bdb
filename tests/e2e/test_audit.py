"""Who proposed, who approved, what ran — provable from the log (issue 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.stack import Stack
from schemas import chain
from schemas.approvers import REGISTRY_SESSION
from schemas.ids import new_call_id
from schemas.planning import ToolProposed
from services.runtime import approvers, audit, audit_signers, identity
from tests.e2e.conftest import bus_as, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def _links(stack: Stack, sid: str) -> list[chain.Link]:
    bus = await bus_as(stack, "admin")
    try:
        return [chain.Link(s.seq, s.subject, s.raw, s.signature)
                for s in await bus.session(sid)]
    finally:
        await bus.close()


def _keyring(stack: Stack) -> identity.Keyring:
    return identity.load_keyring(stack.keys / identity.KEYRING_FILE)


def _admin_keys(stack: Stack) -> Path:
    """The admin trust root `interlock up` writes (issue 18)."""
    return stack.keys / "admins.pub"


async def _approvers(stack: Stack) -> tuple[audit_signers.Approvers, list[chain.Link]]:
    """The approver registry as the log holds it, trusted with the stack's admin keys."""
    links = await _links(stack, REGISTRY_SESSION)
    return audit_signers.Approvers(approvers.load_admin_keys(_admin_keys(stack)), links,
                           _keyring(stack)), links


async def _write(stack: Stack, api: Client, decider: Client, sid: str, tool: str,
                 args: dict[str, Any], decision: dict[str, Any], after: int) -> int:
    bus = await bus_as(stack, "planner")
    try:
        await bus.append(ToolProposed(
            session_id=sid, call_id=new_call_id(), tool=tool, args=args, source="llm",
            requested_by="operator", evidence=(f"evidence for {tool}",),
            rationale=f"why {tool}"))
    finally:
        await bus.close()
    got = await api.wait_for(sid, lambda e: e.event == "approval.requested", after=after)
    req = got[-1].data
    status, body = await decider.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                      decision)
    assert status == 202, body
    want = "tool.result" if decision["decision"] == "approve" else "approval.denied"
    got = await api.wait_for(sid, lambda e: e.event == want, after=got[-1].id)
    return int(got[-1].id or 0)


async def test_seed_scenarios_audit_names_requester_approver_diff_and_result(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl get pods -n production")
    got = await operator.wait_for(sid, lambda e: e.event == "turn.completed")
    seq = got[-1].id or 0
    seq = await _write(stack, operator, approver, sid, "set_resources",
                       {"name": "payment-service", "namespace": "production",
                        "limits": {"memory": "512Mi"}}, {"decision": "approve"}, seq)
    seq = await _write(stack, operator, approver, sid, "rollout_restart",
                       {"name": "auth-service", "namespace": "staging"},
                       {"decision": "approve"}, seq)
    seq = await _write(stack, operator, approver, sid, "delete",
                       {"kind": "persistentvolumeclaim", "name": "data-orders-db-0",
                        "namespace": "staging"},
                       {"decision": "deny", "reason": "orders-db still needs it"}, seq)
    seq = await _write(stack, operator, approver, sid, "scale",
                       {"name": "order-service", "namespace": "production", "replicas": 4},
                       {"decision": "approve"}, seq)

    import services.runtime.signing as signing

    links = await _links(stack, sid)
    people, registry = await _approvers(stack)
    report = audit.audit(sid, links, signing.load_public(stack.data / "gate.pub"),
                         _keyring(stack), people)
    assert report.ok, (report.chain.breaks, report.problems)
    # Every decision shows who signed it with which key, and that the signature counts.
    enrolled = {e.principal: e.key for e in people.at(10**12).active()}
    assert [(d.approver, d.key_id, d.kind, d.verdict, d.counted) for d in report.decisions] == [
        ("approver", enrolled["approver"].key_id, "ed25519", "valid", c)
        for c in ("granted", "granted", "denied", "granted")]
    text = report.render()
    assert "operator asked: kubectl get pods -n production" in text
    writes = {w.tool: w for w in report.writes}
    assert set(writes) == {"set_resources", "rollout_restart", "delete", "scale"}
    for w in report.writes:
        assert w.requested_by == "operator"
        assert w.approvers == ["approver"]
        assert w.evidence == [f"evidence for {w.tool}"]
        assert w.diff
    assert any("resources.limits.memory: '256Mi' → '512Mi'" in d
               for d in writes["set_resources"].diff)
    assert writes["scale"].diff == ["spec.replicas: 6 → 4"]
    assert writes["delete"].decision == "denied"
    assert writes["delete"].reason == "orders-db still needs it" and writes["delete"].result == ""
    for tool in ("set_resources", "rollout_restart", "scale"):
        assert writes[tool].decision == "approved" and writes[tool].result == "ok", writes[tool]
    assert "approver approved" in text and "approver denied" in text
    assert f"· signed by approver with ed25519 key {enrolled['approver'].key_id}" in text

    # Export, verify clean; alter one event in the file, verify points at it.
    exported = tmp_path / "audit.jsonl"
    exported.write_text(audit.export_lines(links + registry))
    admins = approvers.load_admin_keys(_admin_keys(stack))
    [clean, reg] = audit.audit_file(exported.read_text(), keyring=_keyring(stack), admins=admins)
    assert clean.ok, clean.problems
    assert reg.session_id == REGISTRY_SESSION
    assert reg.ok, reg.problems
    lines = exported.read_text().splitlines()
    victim = next(i for i, line in enumerate(lines) if '"approval.decided"' in line)
    lines[victim] = lines[victim].replace('\\"approver\\":\\"approver\\"',
                                          '\\"approver\\":\\"mallory\\"')
    assert "mallory" in lines[victim]
    [bad, _] = audit.audit_file("\n".join(lines) + "\n", keyring=_keyring(stack),
                                admins=admins)
    assert not bad.ok
    victim_seq = links[victim].seq
    assert [b["seq"] for b in bad.chain.breaks] == [victim_seq]
    assert any(p["seq"] == victim_seq for p in bad.problems)  # readable copy differs too


async def test_audit_endpoints(stack: Stack, http: aiohttp.ClientSession) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sid = await operator.new_session()
    await _write(stack, operator, approver, sid, "scale",
                 {"name": "web", "namespace": "shop", "replicas": 2}, {"decision": "approve"}, 0)
    status, body = await operator.call("GET", f"/v1/sessions/{sid}/audit")
    assert status == 200, body
    assert body["integrity"]["ok"] is True
    assert body["integrity"]["chain"]["checked"] == len(body["timeline"])
    [w] = body["writes"]
    assert (w["requested_by"], w["approvers"], w["diff"], w["result"]) == (
        "operator", ["approver"], ["spec.replicas: 3 → 2"], "ok")
    async with http.get(f"{stack.url}/v1/sessions/{sid}/audit?format=text",
                        headers=operator.headers) as r:
        text = await r.text()
    assert r.status == 200 and "approver approved" in text and "Integrity: intact" in text
    [signer] = body["decisions"]
    assert (signer["approver"], signer["kind"], signer["verdict"], signer["counted"]) == (
        "approver", "ed25519", "valid", "granted")
    assert w["signatures"] == [{"principal": "approver", "key_id": signer["key_id"],
                                "kind": "ed25519", "verdict": "valid"}]
    [decided] = [e for e in body["timeline"] if e["type"] == "approval.decided"]
    assert decided["signature"]["key_id"] == signer["key_id"]
    assert f"· signed by approver with ed25519 key {signer['key_id']}" in text
    async with http.get(f"{stack.url}/v1/sessions/{sid}/audit?format=jsonl",
                        headers=operator.headers) as r:
        [report, registry] = audit.audit_file(
            await r.text(), keyring=_keyring(stack),
            admins=approvers.load_admin_keys(_admin_keys(stack)))
    assert report.ok, report.problems
    assert report.writes[0].result == "ok"
    assert registry.session_id == REGISTRY_SESSION
    status, body = await operator.call("GET", "/v1/audit?namespace=shop&approver=approver")
    assert status == 200
    assert any(x["session_id"] == sid for x in body["writes"])
    status, body = await operator.call("GET", "/v1/audit?namespace=nowhere")
    assert status == 200 and body["writes"] == []
    status, body = await operator.call("GET", "/v1/audit?since=yesterday")
    assert status == 400 and body["error"]["code"] == "invalid_time"


async def test_audit_flags_a_grant_the_gate_did_not_sign(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """Someone holding the gate's NATS identity but not its key writes a grant: the audit says so."""
    from datetime import UTC, datetime, timedelta

    from schemas.approval import ApprovalGranted, Grant
    from services.runtime import signing

    operator = Client(http, stack.url, token(stack, "operator"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=7 -n shop")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    call = req["calls"][0]
    forged = signing.sign(Grant(call_id=call["call_id"], call_hash=call["call_hash"],
                                approval_id=req["approval_id"], approver="approver",
                                not_after=datetime.now(UTC) + timedelta(minutes=5)),
                          signing.Ed25519PrivateKey.generate())
    bus = await bus_as(stack, "gate")
    try:
        await bus.append(ApprovalGranted(session_id=sid, approval_id=req["approval_id"],
                                         approver="approver", grants=(forged,)))
    finally:
        await bus.close()
    status, body = await operator.call("GET", f"/v1/sessions/{sid}/audit")
    assert status == 200
    assert body["integrity"]["ok"] is False
    assert body["integrity"]["chain"]["ok"] is True
    [problem] = body["integrity"]["problems"]
    assert "invalid gate signature" in problem["problem"]


async def test_cli_audit_export_verify_and_search(stack: Stack, http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys
    from datetime import UTC, datetime

    began = datetime.now(UTC).isoformat()
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sid = await operator.new_session()
    await _write(stack, operator, approver, sid, "scale",
                 {"name": "web", "namespace": "shop", "replicas": 3}, {"decision": "approve"}, 0)
    exe = str(Path(sys.prefix, "bin", "interlock"))
    env = {**os.environ, "INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": token(stack, "viewer")}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "audit", *argv], env=env, capture_output=True, text=True,
                              timeout=60)

    shown = cli(sid)
    assert shown.returncode == 0, shown.stderr
    assert "approver approved" in shown.stdout and "Integrity: intact" in shown.stdout
    exported = tmp_path / "s.jsonl"
    assert cli(sid, "--export", str(exported)).returncode == 0
    ring = str(stack.keys / identity.KEYRING_FILE)
    admins = str(_admin_keys(stack))
    ok = cli("--verify", str(exported), "--gate-key", str(stack.data / "gate.pub"),
             "--keyring", ring, "--admin-keys", admins)
    assert ok.returncode == 0 and f"{sid}: intact" in ok.stdout, ok.stdout + ok.stderr
    assert "approvers: intact" in ok.stdout
    assert re.search(r"approval a_\w+: approve by approver \(#\d+, granted\) · signed by "
                     r"approver with ed25519 key SHA256:", ok.stdout), ok.stdout
    unchecked = cli("--verify", str(exported), "--keyring", ring)  # no admin keys given
    assert unchecked.returncode == 1
    assert "decision signatures were not checked" in unchecked.stdout
    lines = exported.read_text().splitlines()
    lines[1] = lines[1].replace("operator", "mallory")  # both copies edited consistently
    exported.write_text("\n".join(lines) + "\n")
    bad = cli("--verify", str(exported), "--keyring", ring)
    assert bad.returncode == 1 and "BROKEN" in bad.stdout and "altered" in bad.stdout, bad.stdout
    found = cli("--namespace", "shop", "--approver", "approver", "--since", began)
    assert found.returncode == 0, found.stdout + found.stderr
    assert "scale" in found.stdout and "asked by operator; approved by approver" in found.stdout


async def test_verify_fails_on_an_export_whose_human_signature_was_forged(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A real export verifies offline; the same file with a decision's human signature replaced
    — and the event re-signed with the gateway's own key, so that only the human signature is
    wrong — fails, with a line naming the approval and why."""
    import base64
    import json
    import os
    import subprocess
    import sys

    import msgspec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from schemas import events as E
    from schemas.approval import ApprovalDecided

    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sid = await operator.new_session()
    await _write(stack, operator, approver, sid, "scale",
                 {"name": "web", "namespace": "shop", "replicas": 5}, {"decision": "approve"}, 0)
    exe = str(Path(sys.prefix, "bin", "interlock"))
    env = {**os.environ, "INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": token(stack, "viewer")}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "audit", *argv], env=env, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)

    exported = tmp_path / "real.jsonl"
    assert cli(sid, "--export", str(exported)).returncode == 0
    keys = ("--keyring", str(stack.keys / identity.KEYRING_FILE),
            "--admin-keys", str(_admin_keys(stack)))
    ok = cli("--verify", str(exported), *keys)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{sid}: intact" in ok.stdout

    lines = exported.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"approval.decided"' in line)
    row = json.loads(lines[i])
    ev = E.decode(row["raw"].encode())
    assert isinstance(ev, ApprovalDecided)
    assert ev.signed is not None
    other = Ed25519PrivateKey.generate().sign(ev.signed.statement.encode())
    forged = msgspec.structs.replace(ev, signed=msgspec.structs.replace(
        ev.signed, signature=base64.b64encode(other).decode()))
    raw = E.encode(forged)
    gateway = identity.load_signer(stack.keys / "gateway.key", "gateway")
    row.update(raw=raw.decode(), event=json.loads(raw),
               signature=gateway.sign(row["subject"], raw))
    lines[i] = json.dumps(row)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    bad = cli("--verify", str(tampered), *keys)
    assert bad.returncode == 1, bad.stdout
    assert f"{sid}: BROKEN" in bad.stdout
    line = f"  #{row['seq']}: approval {ev.approval_id} was granted on a decision by approver " \
           f"that does not count: the signature by {ev.signed.key_id} does not verify"
    assert line in bad.stdout, bad.stdout
    # The writer's signature holds (it is the gateway's): the chain and the human signature
    # are what say it was altered.
    assert "NOT SIGNED BY ITS WRITER" not in bad.stdout
    assert "signed with another service's key" not in bad.stdout
