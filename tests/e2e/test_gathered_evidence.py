"""Issue 15, points 4 and 5, on the whole stack in direct mode (no model to quote anything):
the card carries evidence Interlock gathered itself from the cluster — OOMKilled restarts and
memory against the limit for payment-service, the autoscaler that owns order-service's replica
count — and an approved scale the autoscaler sets back is reported "not as approved" with the
value it saw, to the person as well as in the log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from launcher.stack import Stack
from tests.e2e.conftest import replicas, start_stack, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Pods start within tens of milliseconds, so a rollout settles quickly; the OOM cycle and
    # the scenario's ages are real time and unaffected.
    s = await start_stack(tmp_path_factory, scenarios=("payment-oom", "scaling-loop"),
                          sandbox_time_scale=0.02)
    try:
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


@pytest.fixture
def operator(stack: Stack, http: aiohttp.ClientSession) -> Client:
    return Client(http, stack.url, token(stack, "operator"))


@pytest.fixture
def admin(stack: Stack, http: aiohttp.ClientSession) -> Client:
    return Client(http, stack.url, token(stack, "admin"))


async def test_oomkilled_payment_card_shows_facts_gathered_by_interlock(
        operator: Client) -> None:
    sid = await operator.new_session()
    await operator.say(sid, "kubectl set resources deploy/payment-service -n production "
                            "--limits=memory=512Mi")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    assert req["evidence"] == []  # no model quoted anything
    facts = "\n".join(req["gathered_evidence"])
    assert "deployment/payment-service: 2 pods (2 running), restarts 6 in 2" in facts, facts
    assert "last termination OOMKilled (exit 137) on 2 of 2 pods" in facts, facts
    assert "memory 251Mi, 98% of limit 256Mi" in facts, facts
    # The pending approvals the page and the CLI read carry them too.
    status, body = await operator.call("GET", "/v1/approvals?state=pending")
    assert status == 200, body
    [card] = [a for a in body["approvals"] if a["approval_id"] == req["approval_id"]]
    assert card["gathered_evidence"] == req["gathered_evidence"]


async def test_scale_reverted_by_the_autoscaler_is_not_as_approved(
        stack: Stack, operator: Client, admin: Client) -> None:
    assert replicas(stack, "order-service", "production") == 6
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/order-service --replicas=12 -n production")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    hpa = "HorizontalPodAutoscaler/order-service (min 3, max 6, cpu 70%)"
    # Named before approval: as a risk flag and as a gathered fact.
    assert (f"deployment/order-service is scaled by {hpa}: a manual scale to 12 will be "
            "reverted by the autoscaler") in req["risk_flags"], req["risk_flags"]
    assert any(hpa in line and "12 is above its max 6" in line
               for line in req["gathered_evidence"]), req["gathered_evidence"]
    assert req["calls"][0]["blast_radius"]["autoscaler"] == hpa

    status, body = await admin.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                    {"decision": "approve"})
    assert status == 202, body
    got = await operator.wait_for(sid, lambda e: e.event == "tool.verified",
                                  after=got[-1].id or 0)
    verdict = got[-1].data
    assert verdict["outcome"] == "not_as_approved", verdict
    assert verdict["detail"].startswith(
        f"not as approved: spec.replicas is 6, approved 12 — changed back by {hpa}"), verdict
    assert verdict["observed"]["differs"] == [
        {"path": "spec.replicas", "approved": 12, "observed": 6}]
    assert replicas(stack, "order-service", "production") == 6  # the cluster agrees
    # The person hears it: the direct-mode reply after the result names the verdict.
    said = await operator.wait_for(
        sid, lambda e: e.event == "assistant.message"
        and e.data["text"].startswith("Verification of scale: NOT AS APPROVED"),
        after=got[-1].id or 0)
    assert "spec.replicas is 6, approved 12" in said[-1].data["text"]
