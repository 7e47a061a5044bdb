"""Fault tests: each module runs its own stack against an in-process sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from sandbox.server import Sandbox
from tests.chaos.support import WatchedSandbox

FAST = 0.02  # the sandbox's pods start and become ready within tens of milliseconds


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[WatchedSandbox]:
    sandbox = Sandbox(["baseline"], time_scale=FAST)
    await sandbox.start()
    try:
        yield WatchedSandbox(sandbox)
    finally:
        await sandbox.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
