"""Attacks on the gate, against the whole stack as processes. Every one must end with zero
executions and a recorded rejection (DESIGN.md §3).

"Zero executions" is shown three ways: no `tool.started` (the executor's claim, written before
it touches the cluster), no `tool.result` for the call, and the deployment unchanged. Before
asserting, each test pushes a harmless read of the same session through the executor and waits
for its result: the executor handles a session's events in order, so anything the attack had
managed to release would have been handled by then.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from kubernetes import client

from launcher.stack import Stack
from schemas import events
from schemas import subjects as S
from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
)
from schemas.base import Event, Target
from schemas.ids import new_call_id, new_event_id
from schemas.planning import ToolProposed
from services.runtime import signing
from tests.e2e.conftest import bus_as, kube, record_as, replicas, start_stack, token
from tests.support import Client, decision_signature

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def _types(stack: Stack, sid: str) -> list[Any]:
    bus = await bus_as(stack, "admin")
    try:
        return [s.event for s in await bus.session(sid)]
    finally:
        await bus.close()


async def _barrier(api: Client, sid: str) -> None:
    """A read through the executor; returns once its turn has completed."""
    status, body = await api.call("GET", f"/v1/sessions/{sid}")
    after = int(body["last_seq"]) if status == 200 else 0
    await api.say(sid, "kubectl get deploy -n shop")
    await api.wait_for(sid, lambda e: e.event == "turn.completed", after=after)


def _executions(evs: list[Any], call_id: str) -> int:
    return sum(1 for e in evs if e.type in ("tool.started", "tool.result")
               and getattr(e, "call_id", None) == call_id)


async def _pending_scale(api: Client, sid: str, name: str, ns: str, n: int) -> dict[str, Any]:
    await api.say(sid, f"kubectl scale deploy/{name} --replicas={n} -n {ns}")
    seen = await api.wait_for(sid, lambda e: e.event == "approval.requested")
    return {**seen[-1].data, "seq": seen[-1].id}


async def _approve_and_run(stack: Stack, api: Client, approver: Client, sid: str, name: str,
                           ns: str, n: int) -> dict[str, Any]:
    req = await _pending_scale(api, sid, name, ns, n)
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    await api.wait_for(sid, lambda e: e.event == "tool.result", after=int(req.get("seq", 0)))
    return req


def _granted(req: dict[str, Any], grant: Grant) -> ApprovalGranted:
    """The approval.granted that would release the call of `req` with this grant."""
    return ApprovalGranted(session_id=req["session_id"], approval_id=grant.approval_id,
                           approver=grant.approver, grants=(grant,))


async def _record_as_gate(stack: Stack, *released: Event) -> None:
    """Events recorded with the gate's identity and event key: a compromised gate."""
    await record_as(stack, "gate", *released)


def _grant(stack: Stack, req: dict[str, Any], *, key: Any = None, approver: str = "approver",
           not_after: datetime | None = None) -> Grant:
    call = req["calls"][0]
    g = Grant(call_id=call["call_id"], call_hash=call["call_hash"],
              approval_id=req["approval_id"], approver=approver,
              not_after=not_after or datetime.now(UTC) + timedelta(minutes=5),
              resource_version=call["resource_version"], session_id=req["session_id"],
              target=msgspec.convert(call["target"], Target), version=GRANT_VERSION)
    return signing.sign(g, key or signing.load_private(stack.data / "gate.key"))


@pytest.fixture
def clients(stack: Stack, http: aiohttp.ClientSession) -> tuple[Client, Client, Client]:
    return (Client(http, stack.url, token(stack, "operator")),
            Client(http, stack.url, token(stack, "approver")),
            Client(http, stack.url, token(stack, "admin")))


async def test_non_gate_user_cannot_publish_a_write(stack: Stack, clients: Any) -> None:
    operator, _, _ = clients
    sid = await operator.new_session()
    req = await _pending_scale(operator, sid, "web", "shop", 9)
    before = replicas(stack, "web", "shop")
    released = _granted(req, _grant(stack, req))  # even with a valid signature
    for user in ("planner", "executor", "gateway"):
        bus = await bus_as(stack, user)
        try:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await bus.js.publish(S.event_subject(released), events.encode(released),
                                     timeout=1.0)
        finally:
            await bus.close()
    await _barrier(operator, sid)
    assert _executions(await _types(stack, sid), req["calls"][0]["call_id"]) == 0
    assert replicas(stack, "web", "shop") == before


@pytest.mark.parametrize("attack", ["unsigned", "forged", "expired", "changed_args"])
async def test_bad_grants_are_refused(stack: Stack, clients: Any, attack: str) -> None:
    """A compromised gate records an approval.granted (signed with its event key, so the
    executor acts on it) whose grant is bad: the grant's own signature and binding stop it."""
    operator, _, _ = clients
    sid = await operator.new_session()
    req = await _pending_scale(operator, sid, "web", "shop", 8)
    before = replicas(stack, "web", "shop")
    recorded: list[Event] = []
    if attack == "unsigned":
        grant = msgspec.structs.replace(_grant(stack, req), signature="")
        expected = "unsigned"
    elif attack == "forged":
        other = signing.Ed25519PrivateKey.generate()
        grant = _grant(stack, req, key=other)
        expected = "invalid gate signature"
    elif attack == "expired":
        grant = _grant(stack, req, not_after=datetime.now(UTC) - timedelta(seconds=1))
        expected = "expired"
    else:
        # Other args under the approved call's hash: the gate records a request of its own
        # with them, and a valid grant of the approved hash for it.
        call = req["calls"][0]
        changed = {**req, "approval_id": req["approval_id"] + "x"}
        grant = _grant(stack, changed)
        recorded.append(ApprovalRequested(
            session_id=sid, approval_id=changed["approval_id"], calls=(ApprovalCall(
                call_id=call["call_id"], tool=call["tool"],
                args={**call["args"], "replicas": 50}, call_hash=call["call_hash"],
                target=msgspec.convert(call["target"], Target)),),
            requested_by="operator", expires_at=grant.not_after))
        expected = "hash mismatch"
    await _record_as_gate(stack, *recorded, _granted(req, grant))
    evs = await operator.wait_for(sid, lambda e: e.event == "command.refused",
                                  after=int(req["seq"]))
    assert expected in evs[-1].data["reason"]
    await _barrier(operator, sid)
    assert _executions(await _types(stack, sid), grant.call_id) == 0
    assert replicas(stack, "web", "shop") == before


async def test_a_grant_recorded_again_runs_once(stack: Stack, clients: Any) -> None:
    operator, approver, _ = clients
    sid = await operator.new_session()
    await _approve_and_run(stack, operator, approver, sid, "web", "shop", 4)
    evs = await _types(stack, sid)
    granted = next(e for e in evs if e.type == "approval.granted")
    call_id = granted.grants[0].call_id
    assert replicas(stack, "web", "shop") == 4
    # Someone scales it by hand; a replay would undo that.
    apps = client.AppsV1Api(kube(stack))
    apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 3}})
    # The same grant recorded again (as a redelivery would bring it back): nothing runs.
    await _record_as_gate(stack, msgspec.structs.replace(granted, event_id=new_event_id()))
    await _barrier(operator, sid)
    evs = await _types(stack, sid)
    assert sum(1 for e in evs if e.type == "approval.granted") == 2
    assert sum(1 for e in evs if e.type == "tool.started") == 1
    assert sum(1 for e in evs if e.type == "tool.result" and e.call_id == call_id) == 1
    assert replicas(stack, "web", "shop") == 3


async def test_non_approver_decision_is_refused(stack: Stack, clients: Any,
                                                http: aiohttp.ClientSession) -> None:
    operator, _, _ = clients
    viewer = Client(http, stack.url, token(stack, "viewer"))
    sid = await operator.new_session()
    req = await _pending_scale(operator, sid, "web", "shop", 7)
    for who in (operator, viewer):
        status, body = await who.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                      {"decision": "approve"})
        assert status == 403, body
    # Nor can a service forge the gateway's decision event on the bus.
    forged = ApprovalDecided(session_id=sid, approval_id=req["approval_id"], decision="approve",
                             approver="approver")
    bus = await bus_as(stack, "planner")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await bus.js.publish(S.event_subject(forged), events.encode(forged), timeout=1.0)
    finally:
        await bus.close()
    await _barrier(operator, sid)
    evs = await _types(stack, sid)
    assert not any(e.type in ("approval.decided", "approval.granted", "tool.started")
                   for e in evs)


async def test_self_approval_in_production_is_refused(stack: Stack, clients: Any) -> None:
    _, approver, admin = clients
    sid = await approver.new_session()
    before = replicas(stack, "payment-service", "production")
    req = await _pending_scale(approver, sid, "payment-service", "production", before + 1)
    assert req["forbidden_approvers"] == ["approver"]
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 403 and "separation of duties" in body["error"]["message"], body
    # Even if the gateway's check were skipped, the gate applies the same rule.
    # (Signed with the approver's own key: the signature is valid, the rule is what refuses.)
    bypass = ApprovalDecided(session_id=sid, approval_id=req["approval_id"], decision="approve",
                             approver="approver", actor="approver",
                             signed=decision_signature(req, "approver", {"decision": "approve"},
                                                       stack.person_key("approver")))
    bus = await bus_as(stack, "gateway")
    try:
        await bus.append(bypass)
    finally:
        await bus.close()
    evs = await approver.wait_for(sid, lambda e: e.event == "decision.rejected",
                                  after=int(req["seq"]))
    assert "separation of duties" in evs[-1].data["reason"]
    await _barrier(approver, sid)
    call_id = req["calls"][0]["call_id"]
    assert _executions(await _types(stack, sid), call_id) == 0
    assert replicas(stack, "payment-service", "production") == before
    # Someone else may approve it.
    status, body = await admin.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                    {"decision": "approve"})
    assert status == 202, body
    got = await approver.wait_for(
        sid, lambda e: e.event == "tool.result" and e.data["call_id"] == call_id,
        after=int(req["seq"]))
    assert got[-1].data["status"] == "ok", got[-1].data
    assert replicas(stack, "payment-service", "production") == before + 1


@pytest.mark.parametrize("claimed", ["", "someone-else"])
async def test_the_planner_cannot_choose_who_asked(stack: Stack, clients: Any,
                                                  claimed: str) -> None:
    """Issue 14, attack 5: a planner that writes requested_by="" (or another name) on a
    production proposal. The gate takes the requester from the user.message the gateway
    recorded, so the person who asked still may not approve it."""
    _, approver, _ = clients
    sid = await approver.new_session()
    await approver.say(sid, "payment-service needs one more replica, please")
    said = await approver.wait_for(sid, lambda e: e.event == "user.message")
    await approver.wait_for(sid, lambda e: e.event == "turn.completed")  # no model: answered
    before = replicas(stack, "payment-service", "production")
    proposal = ToolProposed(session_id=sid, call_id=new_call_id(), tool="scale",
                            args={"name": "payment-service", "namespace": "production",
                                  "replicas": before + 1},
                            source="llm", requested_by=claimed, actor="planner",
                            correlation_id=said[-1].data["event_id"])
    bus = await bus_as(stack, "planner")
    try:
        await bus.append(proposal)
    finally:
        await bus.close()
    got = await approver.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    assert req["requested_by"] == "approver"
    assert req["forbidden_approvers"] == ["approver"]
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 403, body
    assert "separation of duties: approver requested" in body["error"]["message"]
    await _barrier(approver, sid)
    assert _executions(await _types(stack, sid), proposal.call_id) == 0
    assert replicas(stack, "payment-service", "production") == before


async def test_concurrent_approvals_exactly_one_wins(stack: Stack, clients: Any) -> None:
    operator, approver, admin = clients
    sid = await operator.new_session()
    req = await _pending_scale(operator, sid, "web", "shop", 6)
    path = f"/v1/approvals/{req['approval_id']}/decision"
    results = await asyncio.gather(approver.call("POST", path, {"decision": "approve"}),
                                   admin.call("POST", path, {"decision": "approve"}))
    assert sorted(s for s, _ in results) == [202, 409], results
    await operator.wait_for(sid, lambda e: e.event == "tool.result", after=int(req["seq"]))
    await _barrier(operator, sid)
    evs = await _types(stack, sid)
    assert sum(1 for e in evs if e.type == "approval.decided") == 1
    assert sum(1 for e in evs if e.type == "approval.granted") == 1
    assert _executions(evs, req["calls"][0]["call_id"]) == 2  # one claim, one result


async def test_unknown_tool_is_refused(stack: Stack, clients: Any) -> None:
    operator, _, _ = clients
    sid = await operator.new_session()
    p = ToolProposed(session_id=sid, call_id=new_call_id(), tool="delete_namespace",
                     args={"name": "production"}, source="llm")
    bus = await bus_as(stack, "planner")
    try:
        await bus.append(p)
    finally:
        await bus.close()
    evs = await operator.wait_for(sid, lambda e: e.event == "tool.refused")
    classified = next(e for e in evs if e.event == "tool.classified")
    assert classified.data["access"] == "refused"
    assert "unknown tool" in evs[-1].data["reason"]
    await _barrier(operator, sid)
    assert _executions(await _types(stack, sid), p.call_id) == 0


async def test_malformed_direct_command_is_rejected(stack: Stack, clients: Any) -> None:
    operator, _, _ = clients
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=5 -n shop; kubectl delete ns shop")
    evs = await operator.wait_for(sid, lambda e: e.event == "turn.completed")
    types = [e.event for e in evs]
    assert "command.rejected" in types and "tool.proposed" not in types


async def test_expired_approval_cannot_be_approved(
    tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession
) -> None:
    short = await start_stack(tmp_path_factory, approval_ttl_s=1.0)
    try:
        api = Client(http, short.url, token(short, "operator"))
        approver = Client(http, short.url, token(short, "approver"))
        sid = await api.new_session()
        req = await _pending_scale(api, sid, "web", "shop", 9)
        await api.wait_for(sid, lambda e: e.event == "approval.expired", after=int(req["seq"]))
        status, body = await approver.call("POST",
                                           f"/v1/approvals/{req['approval_id']}/decision",
                                           {"decision": "approve"})
        assert status == 410, body
        evs = await _types(short, sid)
        assert _executions(evs, req["calls"][0]["call_id"]) == 0
        assert replicas(short, "web", "shop") == 3
        done = await api.wait_for(sid, lambda e: e.event == "turn.completed", after=0)
        assert "expired" in [e.event for e in done][-1:] or any(
            "expired" in str(e.data) for e in done if e.event == "assistant.message")
    finally:
        await short.stop()



async def test_a_gated_read_is_three_appends_and_no_command_stream(stack: Stack,
                                                                   clients: Any) -> None:
    """Commands are events (issue 17): a read is released by its classification, so the log
    holds exactly the proposal, the classification and the result for it — and no second
    stream of commands exists."""
    operator, _, _ = clients
    sid = await operator.new_session()
    await _barrier(operator, sid)
    evs = await _types(stack, sid)
    proposed = [e for e in evs if e.type == "tool.proposed"]
    assert len(proposed) == 1
    call_id = proposed[0].call_id
    assert [e.type for e in evs if getattr(e, "call_id", None) == call_id] == [
        "tool.proposed", "tool.classified", "tool.result"]
    classified = next(e for e in evs if e.type == "tool.classified")
    assert classified.access == "read"
    assert classified.tool == proposed[0].tool
    assert classified.args is not None  # the parsed call the executor ran
    bus = await bus_as(stack, "admin")
    try:
        streams = sorted(s.config.name for s in await bus.js.streams_info())
    finally:
        await bus.close()
    assert streams == [S.EVENTS_STREAM, S.PRESENCE_STREAM, S.SEALED_STREAM]
