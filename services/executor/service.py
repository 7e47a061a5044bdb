"""The executor service: consume the gate's classifications and grants from the log, run the
calls they release against Kubernetes, record results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from importlib import metadata

from nats.js.errors import NotFoundError

from schemas import subjects as S
from services.executor import domain
from services.executor.handlers import Executor
from services.executor.kube import Kube
from services.executor.settings import ExecutorSettings
from services.runtime import identity, presence
from services.runtime.bus import SESSIONS_AT_ONCE, Bus
from services.runtime.errors import ConfigError

log = logging.getLogger(__name__)


async def run(settings: ExecutorSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "executor")
    if bus.signer is not None and bus.keyring is not None:
        problem = identity.executor_key_problem(bus.keyring, bus.signer.kid, settings.cluster)
        if problem is not None and problem[0]:
            await bus.close()
            raise ConfigError(f"executor: {problem[1]}")
        if problem is not None:
            log.warning("executor: %s", problem[1])
    bus.not_acted_upon(domain.NOT_ACTED_UPON)
    kube = Kube(settings.kubeconfig, settings.allowed_contexts, settings.call_timeout_s,
                cluster=settings.cluster)
    executor = Executor(bus, settings, kube)
    beating = asyncio.create_task(_beat(bus, settings, kube, stop))
    try:
        await _check_consumer(bus, settings)
        await bus.consume(settings.consumer, executor.handle, stop,
                          sessions_at_once=SESSIONS_AT_ONCE, select=executor.acts_on,
                          on_poison=executor.on_poison)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        await bus.close()


def _version() -> str:
    try:
        return metadata.version("interlock")
    except metadata.PackageNotFoundError:
        return "dev"


async def _beat(bus: Bus, settings: ExecutorSettings, kube: Kube, stop: asyncio.Event) -> None:
    """This executor's presence (issue 21): its cluster (or, in legacy mode, the contexts it
    allows) put in the CLUSTERS bucket every interval, so the gate refuses a call for a
    cluster nobody serves before any card, and `interlock clusters` lists it. A beat that
    fails (the hub out of reach, a bucket not provisioned) is retried on the next tick."""
    started = datetime.now(UTC)
    contexts = settings.allowed_contexts
    if not settings.cluster and not contexts:
        current = kube.context_name("")
        contexts = (current,) if current else ()
    while not stop.is_set():
        status = presence.ClusterStatus(
            cluster=settings.cluster, role=settings.role, version=_version(),
            contexts=tuple(contexts), started_at=started, seen_at=datetime.now(UTC))
        try:
            await presence.beat(bus, status)
        except Exception as exc:  # noqa: BLE001 - never stops the executor: the next tick retries
            log.debug("presence beat failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.presence_interval_s)


async def _check_consumer(bus: Bus, settings: ExecutorSettings) -> None:
    """Fails at start, clearly, when the role's consumer was not provisioned (a `read` or
    `write` executor needs INTERLOCK_EXECUTOR_CONSUMERS=split in the provisioning job)."""
    consumer = settings.consumer
    stream = S.EVENTS_STREAM
    try:
        await bus.js.consumer_info(stream, consumer, timeout=10)
    except NotFoundError as exc:
        if settings.cluster:
            raise ConfigError(
                f"executor for cluster {settings.cluster!r} (role {settings.role!r}) binds the "
                f"consumer {consumer!r}, which is not provisioned: is {settings.cluster!r} in "
                "the hub's INTERLOCK_CLUSTERS?") from exc
        layout = next(n for n, ds in S.EXECUTOR_LAYOUTS.items() if consumer in ds)
        raise ConfigError(
            f"executor role {settings.role!r} binds the consumer {consumer!r}, which "
            f"is not provisioned: provision with INTERLOCK_EXECUTOR_CONSUMERS={layout}") from exc


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("executor", lambda stop: run(ExecutorSettings.from_env(), stop))
