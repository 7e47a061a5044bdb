"""The executor service: consume the gate's classifications and grants from the log, run the
calls they release against Kubernetes, record results."""

from __future__ import annotations

import asyncio

from nats.js.errors import NotFoundError

from schemas import subjects as S
from services.executor import domain
from services.executor.handlers import Executor
from services.executor.kube import Kube
from services.executor.settings import ExecutorSettings
from services.runtime.bus import SESSIONS_AT_ONCE, Bus
from services.runtime.errors import ConfigError


async def run(settings: ExecutorSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "executor")
    bus.not_acted_upon(domain.NOT_ACTED_UPON)
    executor = Executor(bus, settings, Kube(settings.kubeconfig, settings.allowed_contexts,
                                           settings.call_timeout_s))
    try:
        await _check_consumer(bus, settings)
        await bus.consume(settings.consumer, executor.handle, stop,
                          sessions_at_once=SESSIONS_AT_ONCE, select=executor.acts_on,
                          on_poison=executor.on_poison)
    finally:
        await bus.close()


async def _check_consumer(bus: Bus, settings: ExecutorSettings) -> None:
    """Fails at start, clearly, when the role's consumer was not provisioned (a `read` or
    `write` executor needs INTERLOCK_EXECUTOR_CONSUMERS=split in the provisioning job)."""
    stream, _ = S.CONSUMER_FILTERS[settings.consumer]
    try:
        await bus.js.consumer_info(stream, settings.consumer, timeout=10)
    except NotFoundError as exc:
        layout = next(n for n, ds in S.EXECUTOR_LAYOUTS.items() if settings.consumer in ds)
        raise ConfigError(
            f"executor role {settings.role!r} binds the consumer {settings.consumer!r}, which "
            f"is not provisioned: provision with INTERLOCK_EXECUTOR_CONSUMERS={layout}") from exc


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("executor", lambda stop: run(ExecutorSettings.from_env(), stop))
