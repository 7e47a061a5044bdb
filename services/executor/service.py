"""The executor service: consume EXEC, run calls against Kubernetes, record results."""

from __future__ import annotations

import asyncio

from services.executor.handlers import Executor
from services.executor.kube import Kube
from services.executor.settings import ExecutorSettings
from services.runtime.bus import SESSIONS_AT_ONCE, Bus


async def run(settings: ExecutorSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "executor")
    executor = Executor(bus, settings, Kube(settings.kubeconfig, settings.allowed_contexts,
                                           settings.call_timeout_s))
    try:
        await bus.consume("executor", executor.handle, stop, sessions_at_once=SESSIONS_AT_ONCE)
    finally:
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("executor", lambda stop: run(ExecutorSettings.from_env(), stop))
