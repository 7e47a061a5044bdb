"""SIGKILL every service type mid-flow, hundreds of times, while sessions read, write and get
decided; then prove nothing acknowledged was lost, no write ran twice, no approval was lost and
every session finished (issue 9, "done when" 1).

Two instances of each service run, so work goes on while one instance is down; a killed
instance's unacknowledged messages come back after ack_wait. Kills are paced by progress, not by
time: after each kill the test waits for the log to grow, so every kill lands mid-flow. A killed
instance is started again at once from a fork server (forkserver.py: a new process that has run
nothing, without a second of imports per restart, which was most of this test's time).
INTERLOCK_CHAOS_KILLS sets the number of kills (default 200)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import aiohttp
import pytest

from launcher.stack import SERVICES, Stack
from tests.chaos.forkserver import ForkServer
from tests.chaos.support import (
    Driver,
    WatchedSandbox,
    Witness,
    admin_bus,
    audit,
    create_targets,
    kill,
    log_grows,
    start_stack,
    workload,
)

pytestmark = [pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(900)]

KILLS = int(os.environ.get("INTERLOCK_CHAOS_KILLS", "200"))
WORKERS = 6
PROGRESS = 2  # new events in the log between two kills


async def test_hundreds_of_service_kills_lose_nothing_and_run_nothing_twice(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    names = [f"kill-{i}" for i in range(WORKERS)]
    await create_targets(cluster.sandbox.url, names)
    data = tmp_path_factory.mktemp("kills")
    forks = ForkServer(data)
    try:
        await forks.ready()
        stack = await start_stack(data, cluster.sandbox, replicas=2)
    except BaseException:
        forks.close()
        raise
    witness = Witness()
    await witness.follow(stack)
    driver = Driver(http, stack, witness, timeout=180)
    expected: dict[str, tuple[str, int]] = {}
    done = asyncio.Event()
    kills: Counter[str] = Counter()
    try:
        async def killer() -> None:
            bus = await admin_bus(stack)
            try:
                order = [n for s in SERVICES for n in stack.instances(s)]
                for k in range(KILLS):
                    name = order[k % len(order)]
                    before = await bus.last_sequence()
                    kill(stack, name)
                    kills[name] += 1
                    forks.start_service(stack, name)
                    await log_grows(bus.last_sequence, before, PROGRESS,
                                    f"progress after killing {name} (kill {k + 1})")
            finally:
                await bus.close()
                done.set()

        await asyncio.gather(killer(), workload(driver, cluster, names, expected, done,
                                                deny_every=7))

        report = await audit(stack, driver, cluster, expected)
        per_service = {s: sum(n for i, n in kills.items() if i.split("-")[0] == s)
                       for s in SERVICES}
        print(report.line("service kills", kills=sum(kills.values()),
                          per_service=per_service, seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
        assert sum(kills.values()) == KILLS
        assert all(n > 0 for n in per_service.values())
    finally:
        await witness.close()
        codes = await _stop(stack, forks)
    # Every instance, restarted or not, still drains and exits 0 on SIGTERM.
    assert all(c == 0 for c in codes.values()), codes


async def _stop(stack: Stack, forks: ForkServer) -> dict[str, int | None]:
    try:
        return await stack.stop()
    finally:
        forks.close()
