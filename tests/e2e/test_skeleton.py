"""The walking skeleton end to end: the whole stack as separate processes (nats-server, sandbox
cluster, planner, gate, executor, gateway), driven over real HTTP and SSE."""

from __future__ import annotations

import aiohttp
import pytest

from launcher.stack import Stack
from tests.e2e.conftest import replicas
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def _token(stack: Stack, who: str) -> str:
    return str(stack.tokens[who]["token"])


async def test_a_read_streams_its_result_without_approval(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    api = Client(http, stack.url, _token(stack, "operator"))
    sid = await api.new_session()
    await api.say(sid, "kubectl get pods -n shop")
    events = await api.wait_for(sid, lambda e: e.event == "tool.result")
    types = [e.event for e in events]
    assert types[:5] == ["session.started", "user.message", "tool.proposed", "tool.classified",
                         "tool.result"]
    assert events[3].data["access"] == "read"
    assert "approval.requested" not in types
    result = events[4].data
    assert result["status"] == "ok"
    pods = [i["name"] for i in result["data"]["items"]]
    assert len(pods) == 3 and all(p.startswith("web-") for p in pods)
    assert all(p in result["output"] for p in pods)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_write_waits_for_approval_then_runs_once(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    operator = Client(http, stack.url, _token(stack, "operator"))
    approver = Client(http, stack.url, _token(stack, "approver"))
    before = replicas(stack)
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=5 -n shop")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    classified = next(e for e in events if e.event == "tool.classified")
    assert classified.data["access"] == "write"
    req = events[-1].data
    call = req["calls"][0]
    assert call["diff"] == [{"path": "spec.replicas", "before": before, "after": 5}]
    assert call["target"]["namespace"] == "shop" and call["target"]["name"] == "web"
    assert replicas(stack) == before  # held: nothing changed yet

    status, pending = await approver.call("GET", "/v1/approvals?state=pending")
    assert status == 200
    assert req["approval_id"] in [a["approval_id"] for a in pending["approvals"]]
    assert replicas(stack) == before

    status, body = await approver.call(
        "POST", f"/v1/approvals/{req['approval_id']}/decision", {"decision": "approve"}
    )
    assert status == 202, body
    events = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                     after=events[-1].id or 0)
    types = [e.event for e in events]
    assert types.index("approval.decided") < types.index("approval.granted") \
        < types.index("tool.started") < types.index("tool.result")
    assert types.count("tool.result") == 1
    result = next(e for e in events if e.event == "tool.result").data
    assert result["status"] == "ok", result
    assert next(e for e in events if e.event == "approval.granted").data["approver"] == "approver"
    assert replicas(stack) == 5

    # A second decision on the same approval is refused.
    status, body = await approver.call(
        "POST", f"/v1/approvals/{req['approval_id']}/decision", {"decision": "approve"}
    )
    assert status == 409, body


async def test_a_denied_write_changes_nothing(stack: Stack, http: aiohttp.ClientSession) -> None:
    operator = Client(http, stack.url, _token(stack, "operator"))
    approver = Client(http, stack.url, _token(stack, "approver"))
    before = replicas(stack)
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl scale deploy/web --replicas={before + 4} -n shop")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    approval_id = events[-1].data["approval_id"]
    status, body = await approver.call("POST", f"/v1/approvals/{approval_id}/decision",
                                       {"decision": "deny", "reason": "not during the sale"})
    assert status == 202, body
    events = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                     after=events[-1].id or 0)
    types = [e.event for e in events]
    assert "approval.denied" in types
    assert "approval.granted" not in types and "tool.started" not in types
    assert "tool.result" not in types
    denied = next(e for e in events if e.event == "approval.denied").data
    assert denied["reason"] == "not during the sale" and denied["approver"] == "approver"
    # The planner receives the denial, with its reason, as the call's outcome.
    said = [e.data["text"] for e in events if e.event == "assistant.message"]
    assert any("not during the sale" in t for t in said), said
    assert replicas(stack) == before


async def test_operator_cannot_decide(stack: Stack, http: aiohttp.ClientSession) -> None:
    operator = Client(http, stack.url, _token(stack, "operator"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=2 -n shop")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    approval_id = events[-1].data["approval_id"]
    status, body = await operator.call("POST", f"/v1/approvals/{approval_id}/decision",
                                       {"decision": "approve"})
    assert status == 403, body
    status, body = await operator.call("GET", "/v1/approvals?state=pending", token="nope" * 8)
    assert status == 401, body


async def test_a_context_the_executor_does_not_allow_is_refused_before_any_card(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """Issue 21, one executor for every context (no INTERLOCK_CLUSTERS): it reports the
    contexts it allows, and the gate refuses a call to any other at once — a write to it got
    an approval card before (its dry run failed with Forbidden)."""
    api = Client(http, stack.url, _token(stack, "operator"))
    sid = await api.new_session()
    await api.say(sid, "kubectl scale deploy/web --replicas=4 -n shop --context prod-cluster")
    events = await api.wait_for(sid, lambda e: e.event in ("tool.refused", "approval.requested",
                                                           "command.refused"))
    assert events[-1].event == "tool.refused", events[-1].data
    assert events[-1].data["reason"] == \
        "cluster 'prod-cluster' is not allowed here (allowed: sandbox)"
    assert "preview.recorded" not in [e.event for e in events]
