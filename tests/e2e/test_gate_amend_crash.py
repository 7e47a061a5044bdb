"""An approver's modified call survives a gate killed at any append of its path (issue 17).

The gate is a real process, stopped as abruptly as a SIGKILL right after it stored each event
of the modified-args path in turn (services/gate/crashpoint.py): the denial-by-modification, the
amended call, its classification, its approval request. After a restart the amended call is
classified, previewed and decidable, every event of the path is recorded once, and only the
amended call ever runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from launcher.stack import Stack
from services.gate import crashpoint
from tests.e2e.conftest import bus_as, replicas, start_stack, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]

# A killed gate's unacknowledged decision comes back after this long.
ACK_WAIT_S = 2.0
POINTS = ("approval.denied", "tool.amended", "tool.classified", "approval.requested")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory, ack_wait_s=ACK_WAIT_S)
    try:
        yield s
    finally:
        await s.stop()


async def _exited(stack: Stack, timeout: float = 30.0) -> int | None:
    proc = stack.procs["gate"]
    for _ in range(int(timeout / 0.05)):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    return None


@pytest.mark.parametrize("point", POINTS)
async def test_a_gate_killed_on_the_modified_args_path_finishes_it(
    stack: Stack, http: aiohttp.ClientSession, point: str
) -> None:
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    before = replicas(stack)
    wanted = 5 if before != 5 else 6
    sid = await operator.new_session()
    await operator.say(sid, "kubectl scale deploy/web --replicas=9 -n shop")
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested")
    first = got[-1].data

    # The next gate exits right after it stores the first `point` event.
    await stack.stop_service("gate")
    stack.cfg.extra_env[crashpoint.ENV] = point
    try:
        stack.start_service("gate")
    finally:
        del stack.cfg.extra_env[crashpoint.ENV]
    status, body = await approver.call("POST", f"/v1/approvals/{first['approval_id']}/decision",
                                       {"decision": "approve", "args": {"replicas": wanted},
                                        "reason": "9 is too many"})
    assert status == 202, body
    code = await _exited(stack)
    assert code == crashpoint.EXIT_CODE, (code, stack.log_tail("gate"))
    stack.start_service("gate")

    # The amended call: classified, previewed, and its approval decidable.
    got = await operator.wait_for(
        sid, lambda e: e.event == "approval.requested"
        and e.data["approval_id"] != first["approval_id"], after=got[-1].id, timeout=60)
    second = got[-1].data
    call = second["calls"][0]
    assert call["args"]["replicas"] == wanted
    assert call["diff"] == [{"path": "spec.replicas", "before": before, "after": wanted}]
    status, body = await approver.call("POST", f"/v1/approvals/{second['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    done = await operator.wait_for(sid, lambda e: e.event == "tool.result"
                                   and e.data["call_id"] == call["call_id"], after=got[-1].id,
                                   timeout=60)
    assert done[-1].data["status"] == "ok"
    assert replicas(stack) == wanted

    bus = await bus_as(stack, "admin")
    try:
        evs = [s.event for s in await bus.session(sid)]
    finally:
        await bus.close()
    types = [e.type for e in evs]
    amended = [e for e in evs if e.type == "tool.amended"]
    assert len(amended) == 1
    assert amended[0].call_id == call["call_id"]
    denied = [e for e in evs if e.type == "approval.denied"]
    assert len(denied) == 1
    assert getattr(denied[0], "superseded_by", "") == call["call_id"]
    assert types.count("approval.requested") == 2
    assert types.count("approval.granted") == 1
    assert [getattr(e, "call_id", "") for e in evs if e.type == "tool.classified"] == [
        first["calls"][0]["call_id"], call["call_id"]]
    assert [getattr(e, "call_id", "") for e in evs if e.type == "tool.started"] == [
        call["call_id"]]  # the original (9 replicas) never ran
    assert "decision.rejected" not in types
