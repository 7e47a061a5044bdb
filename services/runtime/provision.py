"""Streams and durable consumers, created once with the admin identity (never by a service)."""

from __future__ import annotations

import nats
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
from nats.js.errors import NotFoundError

from schemas import subjects as S

ACK_WAIT_S = 30.0
MAX_DELIVER = 5


def events_stream(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=S.EVENTS_STREAM,
        description="Interlock's event log: the system of record",
        subjects=[f"{S.EVENTS_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        # Never silently evict history: hitting a limit rejects writes instead.
        discard=DiscardPolicy.NEW,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        duplicate_window=120.0,
        num_replicas=replicas,
        # Every stored event is republished with its stream sequence for live SSE tails, so the
        # gateway needs no consumer (and no consumer-create permission) to follow a session.
        republish=RePublish(src=f"{S.EVENTS_PREFIX}.>", dest=f"{S.LIVE_PREFIX}.>"),
    )


def exec_stream(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=S.EXEC_STREAM,
        description="Executor commands (work queue); only the gate publishes here",
        subjects=[f"{S.EXEC_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        duplicate_window=120.0,
        num_replicas=replicas,
    )


def consumer_config(durable: str, filters: tuple[str, ...]) -> ConsumerConfig:
    cfg = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=MAX_DELIVER,
        max_ack_pending=1000,
    )
    if len(filters) == 1:
        cfg.filter_subject = filters[0]
    else:
        cfg.filter_subjects = list(filters)
    return cfg


async def provision(url: str, admin_user: str, admin_password: str, replicas: int = 1) -> None:
    """Idempotent: creates what is missing, updates what drifted (never loosens deny flags)."""
    nc = await nats.connect(url, user=admin_user, password=admin_password, connect_timeout=5)
    try:
        js = nc.jetstream()
        for cfg in (events_stream(replicas), exec_stream(replicas)):
            try:
                await js.stream_info(cfg.name or "")
                await js.update_stream(cfg)
            except NotFoundError:
                await js.add_stream(cfg)
        for durable, (stream, filters) in S.CONSUMER_FILTERS.items():
            await js.add_consumer(stream, consumer_config(durable, filters))
    finally:
        await nc.close()
