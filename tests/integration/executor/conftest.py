"""Fixtures: a sandbox cluster over real HTTP, a kubeconfig for it, and the executor's adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox
from services.executor.kube import Kube

T = TypeVar("T")
FAST = 0.02  # pods start and become Ready within tens of milliseconds


# A test module may name other scenarios: SCENARIOS = [...] at its top level.
DEFAULT_SCENARIOS = ["baseline", "payment-oom"]


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Sandbox]:
    sb = Sandbox(list(getattr(request.module, "SCENARIOS", DEFAULT_SCENARIOS)), time_scale=FAST)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
def kubeconfig(cluster: Sandbox, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", cluster.url)


@pytest.fixture
def kube(kubeconfig: Path) -> Kube:
    return Kube(kubeconfig, ("sandbox",), timeout_s=10)


@pytest.fixture
def run() -> Callable[[Callable[[], T]], Any]:
    """Runs a blocking client call in a thread (the sandbox serves on this loop)."""

    async def call(fn: Callable[[], T]) -> T:
        return await asyncio.wait_for(asyncio.to_thread(fn), 30)

    return call
