"""How a service takes work off its consumer (Bus._fetch_loop and its Dispatcher), on a real
JetStream consumer: messages are handled as they arrive, a slow session never holds up another,
one session's messages stay in order, and a stop lets held messages finish. Also the session
cache: a service folding a session again reads only what is new."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from schemas import subjects as S
from schemas.ids import new_session_id
from schemas.session import SessionStarted, UserMessage
from services.runtime import bus as B
from services.runtime.delivery import Delivery
from services.runtime.sessions import SessionCache
from tests.conftest import NatsEnv

WAIT = 20.0  # a bound for a hang, never a performance assertion


async def _consumer(env: NatsEnv, name: str, subject: str) -> tuple[nats.NATS, object]:
    admin = await nats.connect(env.url, user="admin", password=env.credentials["admin"])
    js = admin.jetstream()
    await js.add_consumer(S.EVENTS_STREAM, ConsumerConfig(
        durable_name=name, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
        max_deliver=5, ack_wait=30))
    return admin, await js.pull_subscribe_bind(name, stream=S.EVENTS_STREAM)


async def _until(condition: object) -> None:
    """Polls a condition on the event loop, bounded so that a hang fails instead of waiting."""
    for _ in range(int(WAIT * 100)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def _text(d: Delivery[Any]) -> str:
    event = d.event
    return getattr(event, "text", event.type)


async def test_a_slow_session_does_not_hold_up_work_that_arrives_later(
        nats_env: NatsEnv) -> None:
    """A1 is still being handled when B1 is appended; B1 must be fetched and handled meanwhile
    (when a fetched batch had to finish before the next fetch, B1 waited behind A1)."""
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    a, b = new_session_id(), new_session_id()
    admin, psub = await _consumer(nats_env, "slowfast", "evt.>")
    a1_started, b1_done = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handler(d: Delivery[Any]) -> None:
        text = _text(d)
        if text == "a1":
            a1_started.set()
            await asyncio.wait_for(b1_done.wait(), WAIT)  # TimeoutError: B1 was held up
        handled.append(text)
        if text == "b1":
            b1_done.set()

    stop = asyncio.Event()
    loop = asyncio.create_task(gw._fetch_loop(psub, handler, stop, 32, None, 16))
    try:
        await gw.append(UserMessage(session_id=a, text="a1", actor="alice"))
        await asyncio.wait_for(a1_started.wait(), WAIT)
        await gw.append(UserMessage(session_id=b, text="b1", actor="bob"))
        await asyncio.wait_for(b1_done.wait(), WAIT)
        await _until(lambda: "a1" in handled)
        assert handled == ["b1", "a1"]
    finally:
        stop.set()
        await asyncio.wait_for(loop, WAIT)
        await admin.close()
        await gw.close()


async def test_one_sessions_messages_are_handled_in_order_and_a_stop_lets_them_finish(
        nats_env: NatsEnv) -> None:
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    a, b = new_session_id(), new_session_id()
    admin, psub = await _consumer(nats_env, "ordered", "evt.>")
    release = asyncio.Event()
    a1_started = asyncio.Event()
    handled: list[str] = []

    async def handler(d: Delivery[Any]) -> None:
        text = _text(d)
        if text == "a1":
            a1_started.set()
            await release.wait()
        handled.append(text)

    stop = asyncio.Event()
    loop = asyncio.create_task(gw._fetch_loop(psub, handler, stop, 32, None, 16))
    try:
        await gw.append(UserMessage(session_id=a, text="a1", actor="alice"))
        await asyncio.wait_for(a1_started.wait(), WAIT)
        for text in ("a2", "a3"):
            await gw.append(UserMessage(session_id=a, text=text, actor="alice"))
        await gw.append(UserMessage(session_id=b, text="b1", actor="bob"))
        await _until(lambda: "b1" in handled)  # b1 runs while a1 is still held
        assert handled == ["b1"]
        # Wait until a2 and a3 have been fetched (held behind a1), then stop: held messages
        # are finished, in order, before the loop ends.
        info = None
        for _ in range(2000):
            info = await psub.consumer_info()  # type: ignore[attr-defined]
            if info.num_pending == 0 and info.num_ack_pending == 3:
                break
            await asyncio.sleep(0.01)
        assert info is not None and info.num_ack_pending == 3
        stop.set()
        release.set()
        await asyncio.wait_for(loop, WAIT)
        assert handled == ["b1", "a1", "a2", "a3"]
        info = await psub.consumer_info()  # type: ignore[attr-defined]
        assert info.num_ack_pending == 0  # every one acked
    finally:
        release.set()
        stop.set()
        await admin.close()
        await gw.close()


async def test_a_cached_session_read_asks_the_log_only_for_new_events(
        nats_env: NatsEnv) -> None:
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    pl = await B.Bus.connect(nats_env.settings("planner"), "planner")
    pl.cache_sessions(1 << 20)
    sid = new_session_id()
    starts: list[int] = []
    read = pl.read

    def counting_read(subject_filter: str, start_seq: int = 1, **kw: object):  # type: ignore[no-untyped-def]
        starts.append(start_seq)
        return read(subject_filter, start_seq, **kw)  # type: ignore[arg-type]

    pl.read = counting_read  # type: ignore[method-assign]
    try:
        first = await gw.append(SessionStarted(session_id=sid, actor="alice"))
        await gw.append(UserMessage(session_id=sid, text="one", actor="alice"))
        once = await pl.session(sid)
        last = await gw.append(UserMessage(session_id=sid, text="two", actor="alice"))
        twice = await pl.session(sid)
        assert [s.seq for s in twice] == [s.seq for s in once] + [last]
        assert starts == [1, once[-1].seq + 1]  # the second read starts after what it knew
        uncached = await gw.session(sid)
        assert [(s.seq, s.raw) for s in uncached] == [(s.seq, s.raw) for s in twice]
        assert twice[0].seq == first
        # A returned list is the caller's own: changing it changes nothing cached.
        twice.clear()
        assert len(await pl.session(sid)) == 3
    finally:
        await gw.close()
        await pl.close()


def test_the_session_cache_keeps_within_its_budget() -> None:
    class Ev:
        def __init__(self, seq: int, size: int) -> None:
            self.seq, self.raw = seq, b"x" * size

    cache: SessionCache[Ev] = SessionCache(1000)
    cache.keep("a", [Ev(1, 100), Ev(2, 100)])
    cache.keep("b", [Ev(3, 200)])
    assert cache.size == (2, 400)
    assert [e.seq for e in cache.prefix("a")] == [1, 2]  # a is now the most recently used
    cache.keep("c", [Ev(4, 200)])
    cache.keep("d", [Ev(5, 200)])
    cache.keep("e", [Ev(6, 200)])
    cache.keep("f", [Ev(7, 200)])  # over budget: the least recently used (b) goes first
    assert cache.prefix("b") == []
    assert cache.prefix("a") != []
    assert cache.size[1] <= 1000
    cache.keep("huge", [Ev(8, 600)])  # more than a quarter of the budget: not kept
    assert cache.prefix("huge") == []
    cache.forget("a")
    assert cache.prefix("a") == []
