"""Decisions beyond approve/deny: modified args become a new proposal with its own dry run and
approval; a batch is decided in one action and each of its calls runs once."""

from __future__ import annotations

import aiohttp
import pytest

from launcher.stack import Stack
from schemas.ids import new_call_id, new_id
from schemas.planning import ToolProposed
from tests.e2e.conftest import bus_as, replicas, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def test_modified_args_are_a_new_proposal(stack: Stack,
                                               http: aiohttp.ClientSession) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=9 -n shop")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    first = got[-1].data
    status, body = await approver.call("POST", f"/v1/approvals/{first['approval_id']}/decision",
                                       {"decision": "approve", "args": {"replicas": 4},
                                        "reason": "9 is too many for the node pool"})
    assert status == 202, body
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested", after=got[-1].id)
    second = got[-1].data
    types = [e.event for e in got]
    assert "approval.denied" in types and "tool.amended" in types
    amended = next(e.data for e in got if e.event == "tool.amended")
    assert amended["replaces"] == first["calls"][0]["call_id"]
    assert amended["amended_by"] == "approver" and amended["args"]["replicas"] == 4
    call = second["calls"][0]
    assert call["call_id"] == amended["call_id"]
    assert call["call_hash"] != first["calls"][0]["call_hash"]
    assert call["diff"] == [{"path": "spec.replicas", "before": 3, "after": 4}]
    assert replicas(stack) == 3
    status, body = await approver.call("POST", f"/v1/approvals/{second['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    done = await operator.wait_for(sid, lambda e: e.event == "tool.result"
                                   and e.data["call_id"] == call["call_id"], after=got[-1].id)
    assert done[-1].data["status"] == "ok"
    assert replicas(stack) == 4
    # The planner told the person what happened, and finished the turn on the new call's result.
    said = [e.data["text"] for e in got if e.event == "assistant.message"]
    assert any("changed the arguments" in t for t in said), said
    assert "turn.completed" not in [e.event for e in got]
    end = await operator.wait_for(sid, lambda e: e.event == "turn.completed", after=done[-1].id)
    assert any(e.event == "assistant.message" and "Done." in e.data["text"] for e in end)
    bus = await bus_as(stack, "admin")
    try:
        evs = [s.event for s in await bus.session(sid)]
    finally:
        await bus.close()
    started = [e.call_id for e in evs if e.type == "tool.started"]
    assert started == [call["call_id"]]  # the original (9 replicas) never ran


async def test_a_batch_is_decided_once_and_each_call_runs_once(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    admin = Client(http, stack.url, token(stack, "admin"))
    sid = await operator.new_session()
    batch = new_id("b")
    calls = [("web", 2), ("coredns", 3)]
    bus = await bus_as(stack, "planner")
    try:
        for name, n in calls:
            ns = "shop" if name == "web" else "kube-system"
            await bus.append(ToolProposed(
                session_id=sid, call_id=new_call_id(), tool="scale", source="llm",
                args={"name": name, "namespace": ns, "replicas": n}, requested_by="operator",
                batch_id=batch, batch_size=len(calls)))
    finally:
        await bus.close()
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    assert [c["target"]["name"] for c in req["calls"]] == ["web", "coredns"]
    assert sum(1 for e in got if e.event == "approval.requested") == 1
    status, body = await admin.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                    {"decision": "approve"})
    assert status == 202, body
    ids = {c["call_id"] for c in req["calls"]}
    results: dict[str, str] = {}

    def all_done(e: object) -> bool:
        if getattr(e, "event", "") == "tool.result":
            data = e.data  # type: ignore[attr-defined]
            results[data["call_id"]] = data["status"]
        return ids <= results.keys()

    await operator.wait_for(sid, all_done, after=got[-1].id)
    assert results == {i: "ok" for i in ids}
    assert replicas(stack) == 2
    assert replicas(stack, "coredns", "kube-system") == 3
