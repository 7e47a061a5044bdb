"""Streams and durable consumers, created once with the admin identity (never by a service)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from schemas import subjects as S
from services.runtime.errors import ConfigError
from services.runtime.natsconf import MAX_PAYLOAD

log = logging.getLogger(__name__)

# The command stream of the versions before issue 17 (commands are events now): only ever
# looked at to retire it (_retire_exec).
EXEC_STREAM = "EXEC"
ACK_WAIT_S = 30.0
# Deliveries of one message: enough for a retryable failure (the bus or the cluster away) to be
# retried with backoff for minutes; an unexpected failure gives up (recorded) much sooner.
MAX_DELIVER = 20
UNEXPECTED_ATTEMPTS = 5


@dataclass(frozen=True)
class StreamLimits:
    """The most each stream may hold. A full stream refuses writes (discard NEW) and never
    evicts history; no identity can grow the log past this, however it tries.

    EVENTS: 4 GiB is some millions of events, yet well within one machine's disk (nats-server
    reserves a stream's max_bytes against its store when the stream is created)."""

    events_max_bytes: int = 4 << 30
    # The largest stored message: no client may publish more than MAX_PAYLOAD anyway, and the
    # schemas do not bound an event more tightly (an approval may carry several calls, each with
    # a body of up to 256 KiB), so a smaller limit could refuse a legitimate event.
    max_msg_size: int = MAX_PAYLOAD
    # SEALED holds secret values of proposed writes until the executor needs them: a day
    # outlasts any approval's expiry; a blob older than that fails its write cleanly.
    sealed_max_age_s: float = 24 * 3600
    sealed_max_bytes: int = 256 << 20

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamLimits:
        """INTERLOCK_EVENTS_MAX_BYTES (bytes), or the default. (INTERLOCK_EXEC_MAX_BYTES, the
        limit of the EXEC stream that no longer exists, is ignored: an old deployment's
        environment still starts.)"""
        default = cls()
        limits = cls(
            events_max_bytes=int(env.get("INTERLOCK_EVENTS_MAX_BYTES")
                                 or default.events_max_bytes),
            sealed_max_age_s=float(env.get("INTERLOCK_SEALED_MAX_AGE_S")
                                   or default.sealed_max_age_s),
        )
        if limits.events_max_bytes < limits.max_msg_size:
            raise ValueError(f"a stream's max bytes must be at least {limits.max_msg_size}")
        return limits


def events_stream(replicas: int = 1, limits: StreamLimits | None = None) -> StreamConfig:
    limits = limits or StreamLimits()
    return StreamConfig(
        name=S.EVENTS_STREAM,
        description="Interlock's event log: the system of record",
        subjects=[f"{S.EVENTS_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        # Never silently evict history: hitting a limit rejects writes instead.
        discard=DiscardPolicy.NEW,
        max_bytes=limits.events_max_bytes,
        max_msg_size=limits.max_msg_size,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        duplicate_window=120.0,
        num_replicas=replicas,
        # Every stored event is republished with its stream sequence for live SSE tails, so the
        # gateway needs no consumer (and no consumer-create permission) to follow a session.
        republish=RePublish(src=f"{S.EVENTS_PREFIX}.>", dest=f"{S.LIVE_PREFIX}.>"),
    )


def sealed_stream(replicas: int = 1, limits: StreamLimits | None = None) -> StreamConfig:
    """Secret values of proposed writes, sealed to the executor (services/runtime/sealing/).
    Outside EVENTS so that the log never holds them; one blob per subject for good (a second
    put is refused, so not even its sealer can swap it), and none outlives `sealed_max_age_s`."""
    limits = limits or StreamLimits()
    return StreamConfig(
        name=S.SEALED_STREAM,
        description="Secret values of proposed writes, sealed to the executor (not the log)",
        subjects=[f"{S.SEALED_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs_per_subject=1,
        max_age=limits.sealed_max_age_s,
        max_bytes=limits.sealed_max_bytes,
        max_msg_size=limits.max_msg_size,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        num_replicas=replicas,
    )


# Presence (issue 21): a key not refreshed for this long is gone; the executors put theirs every
# few seconds (services/runtime/presence.py).
PRESENCE_MAX_AGE_S = 30.0


def presence_stream(replicas: int = 1) -> StreamConfig:
    """The CLUSTERS key-value bucket: each executor's latest presence (`<ctok>.<role>`), as
    nats-py's create_key_value would make it (history 1, Direct Get) — but small and bounded: a
    spoke may put only its own three keys (natsconf.spoke_permissions), none over 8 KiB."""
    return StreamConfig(
        name=S.PRESENCE_STREAM,
        description="Which executors are connected (services/runtime/presence.py)",
        subjects=[f"$KV.{S.PRESENCE_BUCKET}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=1,
        max_age=PRESENCE_MAX_AGE_S,
        max_bytes=64 << 20,
        max_msg_size=8 << 10,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
        num_replicas=replicas,
    )


class PendingCommands(ConfigError):
    """The EXEC stream of a version before issue 17 still holds commands not yet executed: this
    version must not start on it (`interlock up` says why and stops)."""


def consumer_config(durable: str, filters: tuple[str, ...],
                    ack_wait: float = ACK_WAIT_S, deliver: DeliverPolicy = DeliverPolicy.ALL,
                    start_seq: int | None = None) -> ConsumerConfig:
    cfg = ConsumerConfig(
        durable_name=durable,
        deliver_policy=deliver,
        opt_start_seq=start_seq,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=MAX_DELIVER,
        max_ack_pending=1000,
    )
    if len(filters) == 1:
        cfg.filter_subject = filters[0]
    else:
        cfg.filter_subjects = list(filters)
    return cfg


def _servers(url: str) -> list[str]:
    """INTERLOCK_NATS_URL may list several servers, comma-separated (a cluster)."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def provision(url: str, admin_user: str, admin_password: str, replicas: int = 1,
                    timeout: float = 60.0, ack_wait: float = ACK_WAIT_S,
                    executor_layout: str = "single", limits: StreamLimits | None = None,
                    clusters: tuple[str, ...] | None = None) -> None:
    """Idempotent: creates what is missing, updates what drifted (never loosens deny flags).
    An existing stream takes the new `limits` (StreamLimits) too: raising a limit is a rerun.

    `executor_layout` (S.EXECUTOR_LAYOUTS) says which executor consumers exist; the other
    layout's consumers are replaced (both would run every call), the new ones starting where
    the old ones had got to (see _executor_start).

    `clusters` (INTERLOCK_CLUSTERS; None: one executor for every context): that layout's
    durables per cluster (S.executor_consumers), each taking only its cluster's commands. A
    switch of mode is a switch of layout like any other: the executor durables of the other
    mode (the legacy `executor`, or a cluster no longer listed) are deleted and the new ones
    start where the slowest of them had got to. A command in flight at the switch whose token
    names no listed cluster (`_`, or a 6-token subject of an older version) is then taken by no
    durable: it never runs, and its call waits for its own timeout — switch modes with no
    writes pending.

    Upgrading a log written before issue 17: an empty EXEC stream (the old command queue) is
    deleted; one still holding commands stops provisioning with PendingCommands (see
    _retire_exec), never dropping them.

    Waits (up to `timeout`) for JetStream to answer: a fresh cluster has no meta leader for a
    few seconds, and a container may start before its server."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await _provision_once(url, admin_user, admin_password, replicas, ack_wait,
                                  executor_layout, limits or StreamLimits(), clusters)
            return
        except (TimeoutError, OSError, NoRespondersError, NatsTimeoutError,
                ServiceUnavailableError, nats.errors.NoServersError) as exc:
            if loop.time() > deadline:
                raise
            log.info("JetStream not ready yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(0.5)


def consumers(executor_layout: str = "single", clusters: tuple[str, ...] | None = None
              ) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The durable consumers to provision: every service's, and one layout of the executor's
    (per cluster, when `clusters` is given)."""
    if executor_layout not in S.EXECUTOR_LAYOUTS:
        raise ValueError(f"executor layout {executor_layout!r}: expected one of "
                         f"{', '.join(S.EXECUTOR_LAYOUTS)}")
    wanted = S.EXECUTOR_LAYOUTS[executor_layout] if clusters is None else ()
    out = {d: f for d, f in S.CONSUMER_FILTERS.items()
           if d not in S.EXECUTOR_CONSUMERS or d in wanted}
    if clusters is not None:
        out |= S.executor_consumers(clusters, executor_layout)
    return out


def is_executor_durable(durable: str) -> bool:
    return durable in S.EXECUTOR_CONSUMERS or S.durable_cluster(durable) is not None


def clusters_from_env(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """INTERLOCK_CLUSTERS (`a,b`, the first the default): None when unset or empty."""
    names = tuple(c.strip() for c in env.get("INTERLOCK_CLUSTERS", "").split(",") if c.strip())
    return names or None


async def _provision_once(url: str, admin_user: str, admin_password: str, replicas: int,
                          ack_wait: float, executor_layout: str,
                          limits: StreamLimits, clusters: tuple[str, ...] | None = None
                          ) -> None:
    wanted = consumers(executor_layout, clusters)
    nc = await nats.connect(_servers(url), user=admin_user, password=admin_password,
                            connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await _retire_exec(js)
        for cfg in (events_stream(replicas, limits), sealed_stream(replicas, limits),
                    presence_stream(replicas)):
            try:
                await js.stream_info(cfg.name or "")
                await js.update_stream(cfg)
            except NotFoundError:
                await js.add_stream(cfg)
        existing = [c.name for c in await js.consumers_info(S.EVENTS_STREAM)]
        start = await _executor_start(js, wanted, existing)
        for durable in existing:
            if is_executor_durable(durable) and durable not in wanted:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(S.EVENTS_STREAM, durable)
        for durable, (stream, filters) in wanted.items():
            try:
                # An existing consumer keeps where it delivers from (the server refuses to
                # change it); everything else is brought up to date.
                have = (await js.consumer_info(stream, durable)).config
                ccfg = consumer_config(durable, filters, ack_wait,
                                      have.deliver_policy or DeliverPolicy.ALL,
                                      have.opt_start_seq)
            except NotFoundError:
                ccfg = consumer_config(durable, filters, ack_wait, *start.get(
                    durable, (DeliverPolicy.ALL, None)))
            await js.add_consumer(stream, ccfg)
    finally:
        await nc.close()


async def _retire_exec(js: JetStreamContext) -> None:
    """Before issue 17 the gate published each call to run on an EXEC work queue. An empty one
    is deleted; one that still holds commands is not touched and provisioning stops: those
    calls were classified (or granted) and not yet run, and this version would never run them.
    Nothing is dropped silently."""
    try:
        info = await js.stream_info(EXEC_STREAM)
    except NotFoundError:
        return
    pending = int(info.state.messages or 0)
    if pending:
        raise PendingCommands(
            f"the {EXEC_STREAM} stream of an earlier Interlock version still holds {pending} "
            f"command(s) not yet executed; this version does not run them. Start the previous "
            f"version until its executor has drained {EXEC_STREAM} (its executor consumer "
            f"shows no pending messages), stop it, then start this version, which deletes the "
            f"empty stream.")
    log.info("deleting the empty %s stream of an earlier version (its commands are events "
             "now)", EXEC_STREAM)
    await js.delete_stream(EXEC_STREAM)


async def _executor_start(js: JetStreamContext, wanted: Mapping[str, object],
                          existing: list[str]) -> dict[str, tuple[DeliverPolicy, int | None]]:
    """Where each executor consumer to be created starts delivering. On an empty log, at the
    start. When the other layout's consumers exist (a switch single <-> split), where the
    slowest of them had got to (its ack floor + 1), so that nothing in flight is lost — a call
    delivered twice is harmless, a read's result and a write's claim are recorded once. On a
    log written before any executor consumer was on it (an upgrade: its classifications and
    grants were all run from EXEC), from new events only: the history must not run again."""
    missing = [d for d in wanted if is_executor_durable(d)]
    floors: list[int] = []
    for durable in (d for d in existing if is_executor_durable(d)):
        try:
            info = await js.consumer_info(S.EVENTS_STREAM, durable)
        except NotFoundError:
            continue
        if durable in missing:
            missing.remove(durable)
        if durable not in wanted:
            floors.append(int(info.ack_floor.stream_seq if info.ack_floor else 0))
    if not missing:
        return {}
    if floors:
        start: tuple[DeliverPolicy, int | None] = (
            DeliverPolicy.BY_START_SEQUENCE, min(floors) + 1)
    elif int((await js.stream_info(S.EVENTS_STREAM)).state.last_seq or 0) == 0:
        start = (DeliverPolicy.ALL, None)
    else:
        start = (DeliverPolicy.NEW, None)
    log.info("executor consumers %s start: %s", ", ".join(missing), start)
    return dict.fromkeys(missing, start)


def main() -> int:
    """`python -m services.runtime.provision`: the one-shot provisioning job of a deployment
    (compose, Kubernetes), run with the admin identity before any service starts."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = os.environ
    password = env.get("INTERLOCK_NATS_PASSWORD", "")
    if not password:
        log.error("INTERLOCK_NATS_PASSWORD (the admin password) is required")
        return 2
    try:
        replicas = int(env.get("INTERLOCK_STREAM_REPLICAS", "1"))
        timeout = float(env.get("INTERLOCK_PROVISION_TIMEOUT", "120"))
        layout = env.get("INTERLOCK_EXECUTOR_CONSUMERS", "single")
        clusters = clusters_from_env(env)
        consumers(layout, clusters)
        limits = StreamLimits.from_env(env)
    except ValueError as exc:
        log.error("invalid setting: %s", exc)
        return 2
    try:
        asyncio.run(provision(env.get("INTERLOCK_NATS_URL", "nats://127.0.0.1:4222"),
                              env.get("INTERLOCK_NATS_USER", "admin"), password, replicas,
                              timeout, executor_layout=layout, limits=limits,
                              clusters=clusters))
    except PendingCommands as exc:
        log.error("%s", exc)
        return 3
    log.info("streams and consumers provisioned (replicas=%d, executor consumers: %s%s, "
             "EVENTS max %d bytes)", replicas, layout,
             f" per cluster ({', '.join(clusters)})" if clusters else "",
             limits.events_max_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
