"""The one ack policy, on a real JetStream consumer: retryable failures back off and, on the
last delivery, are terminated and recorded; a read made while handling an event, given its
sequence, includes it."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from schemas import subjects as S
from schemas.ids import new_session_id
from schemas.session import SessionStarted, UserMessage
from services.runtime import bus as B
from services.runtime import consume
from services.runtime.delivery import Delivery, Poisoned
from services.runtime.errors import RetryableError
from tests.conftest import NatsEnv


async def _consumer(env: NatsEnv, sid: str, max_deliver: int) -> tuple[nats.NATS, object]:
    admin = await nats.connect(env.url, user="admin", password=env.credentials["admin"])
    js = admin.jetstream()
    name = f"t{sid[-8:]}"
    await js.add_consumer(S.EVENTS_STREAM, ConsumerConfig(
        durable_name=name, filter_subject=S.session_filter(sid), ack_policy=AckPolicy.EXPLICIT,
        max_deliver=max_deliver, ack_wait=30))
    return admin, await js.pull_subscribe_bind(name, stream=S.EVENTS_STREAM)


async def test_a_retryable_failure_is_recorded_and_terminated_on_the_last_delivery(
    nats_env: NatsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consume, "MAX_DELIVER", 2)
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    sid = new_session_id()
    await gw.append(SessionStarted(session_id=sid, actor="alice"))
    admin, psub = await _consumer(nats_env, sid, 2)
    attempts: list[int] = []
    recorded: list[str] = []

    async def handler(d: Delivery[Any]) -> None:
        attempts.append(d.delivered)
        raise RetryableError("the cluster is away")

    async def on_poison(p: Poisoned[Any]) -> None:
        assert p.event is not None  # decoded: the event the failure is recorded for
        recorded.append(str(p.error))

    try:
        for _ in range(2):
            [msg] = await psub.fetch(1, timeout=5)  # type: ignore[attr-defined]
            await B.handle_with_policy(msg, handler, on_poison)
        assert attempts == [1, 2]
        assert recorded and "still failing after 2 deliveries" in recorded[0]
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=1.5)  # type: ignore[attr-defined]  # terminated: gone
    finally:
        await admin.close()
        await gw.close()


async def test_a_read_while_handling_an_event_includes_it(nats_env: NatsEnv) -> None:
    """The handler says what its read must include (the handled event's sequence): no state
    set by the ack policy changes what a read returns."""
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    pl = await B.Bus.connect(nats_env.settings("planner"), "planner")
    sid = new_session_id()
    await gw.append(SessionStarted(session_id=sid, actor="alice"))
    seq = await gw.append(UserMessage(session_id=sid, text="hi", actor="alice"))
    admin, psub = await _consumer(nats_env, sid, 5)
    seen: list[int] = []

    async def handler(d: Delivery[Any]) -> None:
        stored = await pl.session(sid, at_least=d.seq)
        seen.append(stored[-1].seq)

    try:
        msgs = await psub.fetch(2, timeout=5)  # type: ignore[attr-defined]
        for msg in msgs:
            await B.handle_with_policy(msg, handler)
        assert seen[-1] == seq
        # Asked for more than the log holds, the read waits, then says the log is behind.
        with pytest.raises(RetryableError, match="behind"):
            await asyncio.wait_for(pl.session(sid, at_least=seq + 100), 10)
    finally:
        await admin.close()
        await gw.close()
        await pl.close()
