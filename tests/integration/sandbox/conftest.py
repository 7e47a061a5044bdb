"""Fixtures: a sandbox per test on a random port, a kubeconfig for it, real kubectl with a
private discovery cache, and the official client configured against it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox

KUBECTL = Path(sys.prefix, "bin", "kubectl")
FAST = 0.02  # time_scale: pods start and become Ready within a few tens of milliseconds


@dataclass
class Kubectl:
    kubeconfig: Path
    cache_dir: Path

    async def __call__(
        self, *args: str, stdin: str | None = None, limit: float = 30
    ) -> tuple[int, str, str]:
        env = self.env()
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--cache-dir",
            str(self.cache_dir),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), limit
        )
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.cache_dir),
            "HOME": str(self.cache_dir.parent),
        }

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        """A long-running kubectl (watch, rollout status) the test reads line by line."""
        return await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--cache-dir",
            str(self.cache_dir),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )

    async def ok(self, *args: str, stdin: str | None = None) -> str:
        code, out, err = await self(*args, stdin=stdin)
        assert code == 0, f"kubectl {' '.join(args)} exited {code}: {err}"
        return out


async def _started(scenarios: list[str] | None) -> Sandbox:
    sandbox = Sandbox(scenarios, time_scale=FAST)
    await sandbox.start()
    return sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The baseline scenario only: namespace shop with the healthy web deployment."""
    sb = await _started(["baseline"])
    try:
        yield sb
    finally:
        await sb.stop()
    assert sb.controllers.errors == []


@pytest.fixture
async def full_sandbox() -> AsyncIterator[Sandbox]:
    """Every scenario, as `interlock up` loads them."""
    sb = await _started(None)
    try:
        yield sb
    finally:
        await sb.stop()
    assert sb.controllers.errors == []


@pytest.fixture
def kubeconfig(sandbox: Sandbox, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", sandbox.url)


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path / "kube-cache")


@pytest.fixture
def full_kubectl(full_sandbox: Sandbox, tmp_path: Path) -> Kubectl:
    return Kubectl(
        write_kubeconfig(tmp_path / "kubeconfig-full", full_sandbox.url),
        tmp_path / "kube-cache-full",
    )


def api_client_for(kubeconfig: Path) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return k8s.ApiClient(cfg)


@pytest.fixture
def api_client(kubeconfig: Path) -> k8s.ApiClient:
    return api_client_for(kubeconfig)


@pytest.fixture
def full_api_client(full_sandbox: Sandbox, tmp_path: Path) -> k8s.ApiClient:
    return api_client_for(write_kubeconfig(tmp_path / "kubeconfig-full-client", full_sandbox.url))


Call = Callable[..., Awaitable[Any]]


@pytest.fixture
def call() -> Call:
    """Runs a blocking official-client call off the event loop the sandbox serves on."""

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return run


async def eventually(check: Callable[[], Any], within: float = 10.0, interval: float = 0.02) -> Any:
    """Polls `check` until it returns a truthy value; the last failure explains a timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {within}s; last: {last!r}")
        await asyncio.sleep(interval)
