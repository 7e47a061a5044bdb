"""The bus itself fails: the EVENTS stream's leader is SIGKILLed in a 3-node JetStream cluster
(three times, during sessions), and a single nats-server is killed and restarted as a whole. The
services reconnect and carry on; the audit holds (notes/nats.md §1: a leader loss stalls writes
for a few seconds until a new leader is elected from the replicas)."""

from __future__ import annotations

import asyncio
import functools
import time

import aiohttp
import pytest

from schemas import subjects as S
from tests.chaos.support import (
    Driver,
    WatchedSandbox,
    Witness,
    admin_bus,
    audit,
    create_targets,
    log_grows,
    start_stack,
    wait_until,
    workload,
)

pytestmark = [
    pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600),
]
# These stalled until two causes were fixed: an ack that timed out while NATS was away ended
# the consume loop (test_consume_survives_bus_loss.py), and an SSE stream whose catch-up met a
# bus outage after its 200 went silent instead of retrying.


WORKERS = 3


async def test_three_stream_leader_kills_in_a_three_node_cluster(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    names = [f"leader-{i}" for i in range(WORKERS)]
    await create_targets(cluster.sandbox.url, names)
    stack = await start_stack(tmp_path_factory.mktemp("leader"), cluster.sandbox, nats_cluster=3)
    assert stack.cluster is not None
    witness = Witness()
    await witness.follow(stack)
    driver = Driver(http, stack, witness, timeout=180)
    expected: dict[str, tuple[str, int]] = {}
    done = asyncio.Event()
    killed: list[str] = []
    try:
        bus = await admin_bus(stack)
        info = await bus.js.stream_info(S.EVENTS_STREAM)
        assert info.config.num_replicas == 3

        async def killer() -> None:
            try:
                for _ in range(3):
                    # Let the workload run before each kill: the kill lands mid-session.
                    await log_grows(bus.last_sequence, await bus.last_sequence(), 15,
                                    "the workload to progress")
                    leader = await _leader(bus)
                    assert stack.cluster is not None
                    stack.cluster.kill(leader)
                    killed.append(leader)
                    print(f"[chaos] killed stream leader {leader} "
                          f"at {time.monotonic() - began:.1f}s")
                    last = functools.partial(_retrying, bus.last_sequence)
                    await log_grows(last, await last(), 10, f"progress without {leader}")
                    new_leader = await _leader(bus)
                    assert new_leader != leader
                    await stack.cluster.restart(leader)
                    await wait_until(lambda: _all_current(bus), 120, f"{leader} to catch up")
                    print(f"[chaos] {leader} restarted and current at "
                          f"{time.monotonic() - began:.1f}s")
            finally:
                done.set()

        await asyncio.gather(killer(), workload(driver, cluster, names, expected, done))
        await bus.close()
        report = await audit(stack, driver, cluster, expected)
        print(report.line("stream leader kills", killed=killed, stale_404s=driver.stale_reads,
                          seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
        assert len(killed) == 3
    finally:
        await witness.close()
        await stack.stop()


async def test_the_whole_nats_server_killed_and_restarted(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    names = [f"restart-{i}" for i in range(WORKERS)]
    await create_targets(cluster.sandbox.url, [*names, "restart-held"])
    stack = await start_stack(tmp_path_factory.mktemp("restart"), cluster.sandbox)
    assert stack.nats is not None
    witness = Witness()
    await witness.follow(stack)
    driver = Driver(http, stack, witness, timeout=180)
    expected: dict[str, tuple[str, int]] = {}
    done = asyncio.Event()
    try:
        # An approval pending across the outage.
        held = await driver.start_session("kubectl scale deploy/restart-held --replicas=4 -n chaos")
        events = await driver.wait_for(held, lambda e: e.event == "approval.requested")
        held_approval = events[-1].data["approval_id"]

        async def outage() -> None:
            try:
                for _ in range(2):
                    bus = await admin_bus(stack)
                    await log_grows(bus.last_sequence, await bus.last_sequence(), 15,
                                    "the workload to progress")
                    await bus.close()
                    assert stack.nats is not None
                    stack.nats.kill()  # SIGKILL: nothing is flushed on the way out
                    await stack.nats.start()
                bus = await admin_bus(stack)
                await log_grows(bus.last_sequence, await bus.last_sequence(), 15,
                                "the workload to resume")
                await bus.close()
            finally:
                done.set()

        await asyncio.gather(outage(), workload(driver, cluster, names, expected, done))
        # The approval held across both restarts is still pending, and still works.
        await driver.decide(held_approval, {"decision": "approve"})
        driver.decided[held_approval] = "approve"
        expected[held_approval] = ("restart-held", 4)
        await driver.wait_for(held, lambda e: e.event == "tool.result", after=events[-1].id or 0)
        assert cluster.replicas("restart-held") == 4

        report = await audit(stack, driver, cluster, expected)
        print(report.line("whole NATS server SIGKILLed and restarted twice",
                          seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
    finally:
        await witness.close()
        await stack.stop()


async def _retrying(fn, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await fn()
        except Exception:  # no leader yet
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _leader(bus) -> str:  # type: ignore[no-untyped-def]
    async def get() -> str:
        info = await bus.js.stream_info(S.EVENTS_STREAM)
        assert info.cluster is not None
        assert info.cluster.leader
        return str(info.cluster.leader)

    return str(await _retrying(get))


async def _all_current(bus) -> bool:  # type: ignore[no-untyped-def]
    try:
        info = await bus.js.stream_info(S.EVENTS_STREAM)
    except Exception:  # noqa: BLE001
        return False
    replicas = (info.cluster.replicas if info.cluster else None) or []
    return len(replicas) == 2 and all(r.current for r in replicas)
