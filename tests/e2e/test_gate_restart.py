"""A gate killed while approvals are pending loses nothing and releases nothing twice: its state
is the log."""

from __future__ import annotations

import signal

import aiohttp
import pytest

from launcher.stack import Stack
from tests.e2e.conftest import bus_as, replicas, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module")]


async def test_pending_approvals_survive_a_gate_kill(stack: Stack,
                                                    http: aiohttp.ClientSession) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    ids = []
    for n in (4, 5):
        sid = await operator.new_session()
        await operator.say(sid, f"kubectl scale deploy/web --replicas={n} -n shop")
        got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
        ids.append((sid, got[-1].data["approval_id"], got[-1].id))

    assert await stack.stop_service("gate", signal.SIGKILL) == -signal.SIGKILL
    status, body = await approver.call("GET", "/v1/approvals?state=pending")
    assert status == 200
    assert {a for _, a, _ in ids} <= {a["approval_id"] for a in body["approvals"]}

    # Decided while the gate is down: the decision waits in the log for it.
    sid0, a0, seq0 = ids[0]
    status, body = await approver.call("POST", f"/v1/approvals/{a0}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    stack.start_service("gate")
    await operator.wait_for(sid0, lambda e: e.event == "tool.result", after=seq0)
    assert replicas(stack) == 4

    # The other one is still pending and decidable after the restart.
    sid1, a1, seq1 = ids[1]
    status, body = await approver.call("POST", f"/v1/approvals/{a1}/decision",
                                       {"decision": "deny", "reason": "one change at a time"})
    assert status == 202, body
    await operator.wait_for(sid1, lambda e: e.event == "approval.denied", after=seq1)

    bus = await bus_as(stack, "admin")
    try:
        for sid in (sid0, sid1):
            evs = [s.event.type for s in await bus.session(sid)]
            assert evs.count("approval.requested") == 1
            assert evs.count("approval.granted") == (1 if sid == sid0 else 0)
            assert evs.count("tool.started") == (1 if sid == sid0 else 0)
    finally:
        await bus.close()
    assert replicas(stack) == 4
