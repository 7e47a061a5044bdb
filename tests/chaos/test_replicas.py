"""Two instances of every service share one workload: they share the durable consumers, so each
step is taken once and every result arrives (issue 9, "done when" 2)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from launcher.stack import SERVICES
from tests.chaos.support import (
    Driver,
    WatchedSandbox,
    Witness,
    audit,
    create_targets,
    start_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

WORKERS = 6


async def test_two_instances_of_each_service_share_a_workload(
    cluster: WatchedSandbox, http: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()
    names = [f"two-{i}" for i in range(WORKERS)]
    await create_targets(cluster.sandbox.url, names)
    stack = await start_stack(tmp_path_factory.mktemp("replicas"), cluster.sandbox, replicas=2)
    witness = Witness()
    try:
        await witness.follow(stack)
        assert len(stack.procs) == 2 * len(SERVICES)
        assert len(stack.gateway_urls) == 2
        driver = Driver(http, stack, witness)
        expected: dict[str, tuple[str, int]] = {}

        async def worker(i: int) -> None:
            await driver.read()
            for replicas in (2, 3):
                sid, result = await driver.write(names[i], replicas)
                assert result["status"] == "ok", result
                expected[_approval_of(driver, sid)] = (names[i], replicas)
                await cluster.sandbox.wait_for(lambda: cluster.settled(names[i]), 30)
            _, denial = await driver.write(names[i], 9, decision="deny")
            assert denial["approval_id"]

        await asyncio.gather(*(worker(i) for i in range(WORKERS)))
        report = await audit(stack, driver, cluster, expected)
        print(report.line("two instances", seconds=round(time.monotonic() - began, 1)))
        report.assert_clean()
        assert all(cluster.replicas(n) == 3 for n in names)
        assert all(p.poll() is None for p in stack.procs.values()), "an instance died"
    finally:
        await witness.close()
        codes = await stack.stop()
    assert all(c == 0 for c in codes.values()), codes


def _approval_of(driver: Driver, sid: str) -> str:
    return driver.approvals_by_session[sid]
