"""Policy only tightens: a forbidden tool is refused, a namespace can require two approvers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.stack import Stack
from schemas.approval import ApprovalDecided
from tests.e2e.conftest import bus_as, record_as, replicas, start_stack, token
from tests.support import Client, decision_signature

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def strict(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text("forbid_tools: [delete]\n"
                      "two_approvers: {namespaces: [shop]}\n"
                      "protected_namespaces: [production, shop]\n")
    s = await start_stack(tmp_path_factory, extra_env={"INTERLOCK_POLICY_FILE": str(policy)})
    try:
        yield s
    finally:
        await s.stop()


async def test_forbidden_tool_is_refused(strict: Stack, http: aiohttp.ClientSession) -> None:
    api = Client(http, strict.url, token(strict, "operator"))
    sid = await api.new_session()
    await api.say(sid, "kubectl delete deploy/web -n shop")
    got = await api.wait_for(sid, lambda e: e.event in ("tool.refused", "command.rejected"))
    assert got[-1].event == "tool.refused", [e.event for e in got]
    assert "policy forbids" in got[-1].data["reason"]


async def test_two_approvers_and_separation_of_duties(strict: Stack,
                                                     http: aiohttp.ClientSession) -> None:
    operator = Client(http, strict.url, token(strict, "operator"))
    approver = Client(http, strict.url, token(strict, "approver"))
    admin = Client(http, strict.url, token(strict, "admin"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=5 -n shop")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    assert req["required_approvals"] == 2 and req["forbidden_approvers"] == ["operator"]
    path = f"/v1/approvals/{req['approval_id']}/decision"
    status, body = await approver.call("POST", path, {"decision": "approve"})
    assert status == 202 and body["approvals"] == 1 and body["required_approvals"] == 2, body
    status, body = await approver.call("POST", path, {"decision": "approve"})
    assert status == 409, body  # the same person twice is not two approvers
    status, body = await operator.call("POST", path, {"decision": "approve"})
    assert status == 403, body
    assert replicas(strict) == 3
    status, body = await admin.call("POST", path, {"decision": "approve"})
    assert status == 202 and body["approvals"] == 2, body
    done = await operator.wait_for(sid, lambda e: e.event == "tool.result", after=got[-1].id)
    assert done[-1].data["status"] == "ok"
    granted = next(e.data for e in done if e.event == "approval.granted")
    assert granted["approver"] == "approver+admin"
    assert replicas(strict) == 5
    bus = await bus_as(strict, "admin")
    try:
        evs = [s.event.type for s in await bus.session(sid)]
    finally:
        await bus.close()
    assert evs.count("approval.granted") == 1 and evs.count("tool.started") == 1


async def test_two_approvers_count_only_valid_signatures(strict: Stack,
                                                         http: aiohttp.ClientSession) -> None:
    """Issue 18: the gateway's identity appending a second approval by an invented approver
    (signed with a key of its own) and an unsigned one by a real approver makes no second
    approver; a real approver's signature does."""
    operator = Client(http, strict.url, token(strict, "operator"))
    approver = Client(http, strict.url, token(strict, "approver"))
    admin = Client(http, strict.url, token(strict, "admin"))
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=6 -n shop")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    req = got[-1].data
    path = f"/v1/approvals/{req['approval_id']}/decision"
    status, body = await approver.call("POST", path, {"decision": "approve"})
    assert status == 202, body
    forged = [
        ApprovalDecided(session_id=sid, approval_id=req["approval_id"], decision="approve",
                        approver="nobody@example.com", actor="nobody@example.com",
                        signed=decision_signature(req, "nobody@example.com",
                                                  {"decision": "approve"},
                                                  Ed25519PrivateKey.generate())),
        ApprovalDecided(session_id=sid, approval_id=req["approval_id"], decision="approve",
                        approver="admin", actor="admin"),
    ]
    await record_as(strict, "gateway", *forged)
    rejected = await operator.wait_for(
        sid, lambda e: e.event == "decision.rejected"
        and e.data["causation_id"] == forged[-1].event_id, after=got[-1].id)
    assert not [e for e in rejected if e.event == "approval.granted"]
    assert sum(e.event == "decision.rejected" for e in rejected) == 2
    before = replicas(strict)
    status, body = await admin.call("POST", path, {"decision": "approve"})
    assert status == 202, body
    assert body["approvals"] == 2, body
    done = await operator.wait_for(sid, lambda e: e.event == "tool.result", after=got[-1].id)
    granted = next(e.data for e in done if e.event == "approval.granted")
    assert granted["approver"] == "approver+admin"
    assert replicas(strict) == 6 != before
