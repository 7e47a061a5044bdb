"""Issue 18, attacks: the gateway's NATS identity cannot approve anything.

The gateway records `approval.decided` — before issue 18, whatever approver it named was
believed (`approver="nobody@example.com"` got auth-service scaled in production). Now a decision
counts only with its approver's own signature, by a key an admin enrolled for them, over exactly
that approval. Each attack below appends with the gateway's own NATS identity and event key (a
compromised gateway) and must end recorded as rejected, with zero executions; then a properly
signed decision still works, so the approval was left untouched.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.stack import Stack
from schemas.approval import ApprovalDecided
from schemas.approvers import REGISTRY_SESSION, ApproverEnrolled
from schemas.base import Event
from services.runtime import approvers
from tests.e2e.conftest import record_as, replicas, token
from tests.e2e.test_gate_bypass import _barrier, _executions, _pending_scale, _types
from tests.support import Client, decision_signature

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture
def clients(stack: Stack, http: aiohttp.ClientSession) -> tuple[Client, Client]:
    return (Client(http, stack.url, token(stack, "operator")),
            Client(http, stack.url, token(stack, "approver")))


async def _as_gateway(stack: Stack, *forged: Event) -> None:
    await record_as(stack, "gateway", *forged)


def _decided(req: dict[str, Any], approver: str = "approver", **kw: Any) -> ApprovalDecided:
    return ApprovalDecided(session_id=req["session_id"], approval_id=req["approval_id"],
                           decision="approve", approver=approver, actor=approver, **kw)


async def _rejected(api: Client, req: dict[str, Any], forged: ApprovalDecided) -> str:
    """The gate's recorded rejection of `forged`: its reason."""
    evs = await api.wait_for(
        req["session_id"],
        lambda e: e.event == "decision.rejected" and e.data["causation_id"] == forged.event_id,
        after=int(req["seq"]))
    return str(evs[-1].data["reason"])


async def _nothing_ran(stack: Stack, api: Client, req: dict[str, Any], before: int) -> None:
    sid = req["session_id"]
    await _barrier(api, sid)
    evs = await _types(stack, sid)
    assert _executions(evs, req["calls"][0]["call_id"]) == 0
    assert not [e for e in evs if e.type == "approval.granted"]
    assert replicas(stack, "auth-service", "production") == before


async def test_forged_decisions_by_the_gateway_are_rejected(stack: Stack, clients: Any) -> None:
    operator, approver = clients
    sid = await operator.new_session()
    before = replicas(stack, "auth-service", "production")
    req = await _pending_scale(operator, sid, "auth-service", "production", before + 1)
    other_sid = await operator.new_session()
    other = await _pending_scale(operator, other_sid, "web", "shop", 7)
    mine = stack.person_key("approver")
    stranger = Ed25519PrivateKey.generate()
    approve = {"decision": "approve"}

    # A signature by this approver over another approval, lifted from the log: the gateway
    # sees every signed decision it carries. Recorded for the other approval, over HTTP.
    status, body = await approver.call(
        "POST", f"/v1/approvals/{other['approval_id']}/decision", approve)
    assert status == 202, body
    carried = next(e.signed for e in await _types(stack, other_sid)
                   if isinstance(e, ApprovalDecided))
    assert carried is not None

    attacks = {
        "no signature": _decided(req),
        "an invented approver": _decided(
            req, "nobody@example.com",
            signed=decision_signature(req, "nobody@example.com", approve, stranger)),
        "a key not enrolled": _decided(
            req, signed=decision_signature(req, "approver", approve, stranger)),
        "other calls": _decided(req, signed=decision_signature(
            {**req, "calls": other["calls"]}, "approver", approve, mine)),
        "another session": _decided(req, signed=decision_signature(
            {**req, "session_id": other_sid}, "approver", approve, mine)),
        "a replayed signature": _decided(req, signed=carried),
        "another decision": _decided(req, signed=decision_signature(
            req, "approver", {"decision": "deny", "reason": "no"}, mine)),
        "another approver's signature": _decided(req, "admin", signed=decision_signature(
            req, "approver", approve, mine)),
    }
    for what, forged in attacks.items():
        await _as_gateway(stack, forged)
        reason = await _rejected(operator, req, forged)
        assert "not counted" in reason, (what, reason)
    await _nothing_ran(stack, operator, req, before)

    # Untouched: the approver's own signed decision is still the first that counts.
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       approve)
    assert status == 202, body
    call_id = req["calls"][0]["call_id"]
    await operator.wait_for(sid, lambda e: e.event == "tool.result"
                            and e.data["call_id"] == call_id, after=int(req["seq"]))
    evs = await _types(stack, sid)
    assert _executions(evs, call_id) == 2  # started + result, once
    assert replicas(stack, "auth-service", "production") == before + 1


async def test_the_gateway_cannot_enrol_a_key_of_its_own(stack: Stack, clients: Any) -> None:
    """An enrolment signed by anything but an admin key counts for nothing: the gateway's own
    event key signs every event it appends, and a key of its own signs the statement."""
    operator, _ = clients
    sid = await operator.new_session()
    before = replicas(stack, "auth-service", "production")
    req = await _pending_scale(operator, sid, "auth-service", "production", before + 1)
    rogue = Ed25519PrivateKey.generate()
    key = approvers.ed25519_key(rogue.public_key())
    enrolment = ApproverEnrolled(
        session_id=REGISTRY_SESSION, principal="approver", credential=key,
        admin=approvers.sign_statement(approvers.enrol_statement("approver", key), rogue))
    forged = _decided(req, signed=decision_signature(req, "approver", {"decision": "approve"},
                                                     rogue))
    await _as_gateway(stack, enrolment, forged)
    reason = await _rejected(operator, req, forged)
    assert "is not enrolled" in reason, reason
    await _nothing_ran(stack, operator, req, before)


async def test_a_decision_must_be_signed_over_http(stack: Stack, http: aiohttp.ClientSession,
                                                   clients: Any) -> None:
    operator, _ = clients
    sid = await operator.new_session()
    req = await _pending_scale(operator, sid, "web", "shop", 6)
    # A raw client, which signs nothing by itself (tests.support.Client would sign).
    headers = {"Authorization": f"Bearer {token(stack, 'approver')}"}
    url = f"{stack.url}/v1/approvals/{req['approval_id']}/decision"
    async with http.post(url, json={"decision": "approve"}, headers=headers) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "signature_required"
    # Signed with a key nobody enrolled: a 403 that says so, and nothing recorded.
    body = {"decision": "approve", "signature": msgspec.to_builtins(decision_signature(
        req, "approver", {"decision": "approve"}, Ed25519PrivateKey.generate()))}
    async with http.post(url, json=body, headers=headers) as r:
        assert r.status == 403
        answer = await r.json()
    assert answer["error"]["code"] == "bad_signature"
    assert "is not enrolled" in answer["error"]["message"]
    assert not [e for e in await _types(stack, sid) if e.type == "approval.decided"]
