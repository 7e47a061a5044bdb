"""A slow cluster (issue 9): the executor's Kubernetes call takes longer than the consumer's
ack_wait. The target is annotated with the sandbox's slow-write hook, so every stored write to
it is answered several ack_waits late; two executor instances share the executor consumer, so a
redelivery of the grant would reach the other instance and show as a second claim, an "already
executed" log line or an "outcome unknown" result. The consume loop's in-progress heartbeat (the
only one: the executor keeps none of its own) must keep the delivery: the call runs exactly
once, on one instance, and its result is recorded."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from sandbox.apiserver.policy import SLOW_WRITE
from schemas import subjects as S
from tests.chaos.support import (
    Driver,
    WatchedSandbox,
    Witness,
    admin_bus,
    audit,
    create_targets,
    read_log,
    start_stack,
)

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]

ACK_WAIT_S = 2.0
SLOW_S = 3 * ACK_WAIT_S  # each slow write outlasts three ack_waits
TARGETS = ["slow-0", "slow-1"]


async def test_calls_longer_than_ack_wait_run_once_and_are_recorded(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    await create_targets(cluster.sandbox.url, TARGETS, annotations={SLOW_WRITE: str(SLOW_S)})
    # The consume loop beats every third of ack_wait for every message it holds.
    stack = await start_stack(tmp_path_factory.mktemp("slow"), cluster.sandbox, replicas=2,
                              ack_wait_s=ACK_WAIT_S)
    witness = Witness()
    try:
        await witness.follow(stack)
        assert stack.instances("executor") == ["executor", "executor-2"]
        admin = await admin_bus(stack)
        executor = await admin.js.consumer_info(S.EVENTS_STREAM, "executor")
        assert executor.config.ack_wait == ACK_WAIT_S
        driver = Driver(http, stack, witness, timeout=120)
        expected: dict[str, tuple[str, int]] = {}

        async def slow_write(name: str) -> None:
            sid, result = await driver.write(name, 3)
            assert result["status"] == "ok", result
            expected[driver.approvals_by_session[sid]] = (name, 3)

        # Both at once: each executor instance may be busy with one while the other waits.
        await asyncio.gather(*(slow_write(n) for n in TARGETS))
        await driver.read()  # the queue still flows

        # Exactly once: one claim, one result, one write that reached the cluster per call.
        log = await read_log(admin)
        started = [s.event for s in log if s.event.type == "tool.started"]
        results = [s.event for s in log if s.event.type == "tool.result"
                   and s.event.tool == "scale"]  # type: ignore[attr-defined]
        assert len(started) == len(TARGETS), started
        assert sorted(r.status for r in results) == ["ok"] * len(TARGETS), results  # type: ignore[attr-defined]
        assert not [s for s in log if s.event.type == "command.refused"]
        for name in TARGETS:
            assert cluster.scale_writes(name) == [3], (name, cluster.scale_writes(name))

        # Nothing was redelivered: every classification and grant was delivered once.
        info = await admin.js.consumer_info(S.EVENTS_STREAM, "executor")
        released = sum(1 for s in log if s.event.type in ("tool.classified", "approval.granted"))
        assert info.num_ack_pending == 0
        assert info.num_redelivered == 0
        assert info.delivered.consumer_seq == released, (info, released)
        await admin.close()

        # The writes took longer than ack_wait (the hook held them), and the heartbeats went out
        # from the instance that ran them: each call's claim and result come from one process.
        for s in started:
            runners = [n for n in stack.instances("executor")
                       if _logged(stack, n, s.call_id)]  # type: ignore[attr-defined]
            assert len(runners) <= 1, (s, runners)

        report = await audit(stack, driver, cluster, expected)
        print(report.line("slow cluster", ack_wait_s=ACK_WAIT_S, write_s=SLOW_S,
                          seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
    finally:
        await witness.close()
        await stack.stop()


def _logged(stack, instance: str, call_id: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether this executor instance logged anything about the call (a second instance that
    got a redelivery would log a refusal or an already-recorded result)."""
    path = stack.data / "logs" / f"{instance}.log"
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("call_id") == call_id:
            return True
    return False
