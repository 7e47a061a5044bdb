"""The approval a human sees for the essay's failures, on the sandbox's incident scenarios: the
exact field diff, the target, the evidence and the risk flags the gate computes itself."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes import client

from launcher.stack import Stack
from schemas.ids import new_call_id, new_id
from schemas.planning import ToolProposed
from tests.e2e.conftest import bus_as, kube, replicas, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


async def _propose(stack: Stack, api: Client, sid: str, *calls: tuple[str, dict[str, Any]],
                   evidence: tuple[str, ...] = (), rationale: str = "",
                   after: int = 0) -> dict[str, Any]:
    """Proposes calls as the planner would (one model step), returns the approval request."""
    batch = new_id("b") if len(calls) > 1 else ""
    bus = await bus_as(stack, "planner")
    try:
        for tool, args in calls:
            await bus.append(ToolProposed(
                session_id=sid, call_id=new_call_id(), tool=tool, args=args, source="llm",
                rationale=rationale, evidence=evidence, requested_by="operator",
                expected_outcome="the incident stops", batch_id=batch, batch_size=len(calls)))
    finally:
        await bus.close()
    got = await api.wait_for(sid, lambda e: e.event == "approval.requested", after=after)
    return {**got[-1].data, "seq": got[-1].id}


@pytest.fixture
def api(stack: Stack, http: aiohttp.ClientSession) -> Client:
    return Client(http, stack.url, token(stack, "operator"))


async def test_payment_memory_limit_in_production(stack: Stack, api: Client) -> None:
    sid = await api.new_session()
    evidence = ("payment-service-… Last State: Terminated, Reason: OOMKilled (3 times in 20m)",
                "memory usage 251Mi of a 256Mi limit")
    req = await _propose(stack, api, sid, ("set_resources", {
        "name": "payment-service", "namespace": "production", "limits": {"memory": "512Mi"}}),
        evidence=evidence, rationale="OOMKilled at its memory limit")
    [call] = req["calls"]
    assert call["target"]["namespace"] == "production"
    assert call["target"]["name"] == "payment-service"
    mem = [d for d in call["diff"] if d["path"].endswith("resources.limits.memory")]
    assert [(d["before"], d["after"]) for d in mem] == [("256Mi", "512Mi")], call["diff"]
    assert req["evidence"] == list(evidence)
    assert req["rationale"] == "OOMKilled at its memory limit"
    assert "production-like namespace 'production'" in req["risk_flags"]
    assert call["blast_radius"]["production_like"] is True
    assert call["blast_radius"]["pods_affected"]  # a template change restarts its pods
    assert req["forbidden_approvers"] == ["operator"]


async def test_restart_auth_service_in_production_while_staging_has_one(
    stack: Stack, api: Client
) -> None:
    sid = await api.new_session()
    req = await _propose(stack, api, sid, ("rollout_restart", {
        "name": "auth-service", "namespace": "production"}))
    [call] = req["calls"]
    assert call["target"]["namespace"] == "production"
    assert call["blast_radius"]["same_name_namespaces"] == ["staging"]
    flags = req["risk_flags"]
    assert any("also exists in staging" in f and "(production)" in f for f in flags), flags
    assert "production-like namespace 'production'" in flags
    assert any(d["path"].endswith("kubectl.kubernetes.io/restartedAt") for d in call["diff"])


async def test_staging_cleanup_batch_shows_what_unused_really_means(
    stack: Stack, api: Client
) -> None:
    core = client.CoreV1Api(kube(stack))
    worker = next(p.metadata.name for p in core.list_namespaced_pod("staging").items
                  if p.metadata.name.startswith("report-generator-"))
    sid = await api.new_session()
    req = await _propose(
        stack, api, sid,
        ("delete", {"kind": "persistentvolumeclaim", "name": "data-orders-db-0",
                    "namespace": "staging"}),
        ("delete", {"kind": "service", "name": "orders-db", "namespace": "staging"}),
        ("delete", {"kind": "pod", "name": worker, "namespace": "staging"}),
        rationale="clean up unused resources in staging")
    assert len(req["calls"]) == 3 and req["batch_id"]  # one decision for the batch
    assert len({c["call_hash"] for c in req["calls"]}) == 3  # each call still hashed
    flags = "\n".join(req["risk_flags"])
    assert "deletes PVC data-orders-db-0 that is still referenced by statefulset/orders-db " \
           "(replicas 0)" in flags
    assert "deletes headless service orders-db" in flags
    assert f"pod/{worker} is owned by Job/" in flags and "CronJob/report-generator" in flags
    for call in req["calls"]:
        assert call["diff"][0]["after"] == "deleted"
    # Nothing was deleted by asking.
    assert core.read_namespaced_persistent_volume_claim("data-orders-db-0", "staging")


async def test_third_consecutive_scale_up_of_order_service(stack: Stack, api: Client,
                                                           http: aiohttp.ClientSession) -> None:
    approver = Client(http, stack.url, token(stack, "admin"))
    sid = await api.new_session()
    seen: list[tuple[int, int]] = []
    last = 0
    for step in range(3):
        current = replicas(stack, "order-service", "production")
        req = await _propose(stack, api, sid, ("scale", {
            "name": "order-service", "namespace": "production", "replicas": current * 2}),
            after=last)
        last = req["seq"]
        radius = req["calls"][0]["blast_radius"]
        seen.append((radius["replicas_before"], radius["replicas_after"]))
        loops = [f for f in req["risk_flags"] if "consecutive scale-up" in f]
        assert [f.split()[0] for f in loops] == ([], ["second"], ["third"])[step]
        if step < 2:
            status, body = await approver.call(
                "POST", f"/v1/approvals/{req['approval_id']}/decision", {"decision": "approve"})
            assert status == 202, body
            call_id = req["calls"][0]["call_id"]
            got = await api.wait_for(sid, lambda e, c=call_id: e.event == "tool.result"
                                     and e.data["call_id"] == c, after=req["seq"])
            last = got[-1].id or last
    flag = next(f for f in req["risk_flags"] if "consecutive scale-up" in f)
    (b1, a1), (b2, a2), (b3, a3) = seen
    assert flag.startswith("third consecutive scale-up of deployment/order-service in ")
    assert f"{b1}→{a1}, {b2}→{a2}, now {b3}→{a3}" in flag, flag
    assert len(req["history"]) == 2
