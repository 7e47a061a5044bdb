"""The hub's direct fan-out (services/gateway/sse.py) with fake transports: what is written to a
caught-up client, and when a client is handed back to its own task instead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from nats.aio.msg import Msg

from schemas import events as E
from schemas import subjects as S
from schemas.session import AssistantMessage
from services.gateway import sse
from services.gateway.metrics import Metrics
from services.runtime.bus import Bus
from services.runtime.errors import RetryableError

SID = "s_fanout"
# These fakes carry no signatures: a bus that accepts every message stands in for the gateway's
# (its verification is tested in tests/integration/test_signatures.py).
UNVERIFIED = cast(Bus, SimpleNamespace(verify=lambda *_, **__: None))


class FakeTransport:
    def __init__(self, high: int = 1 << 16, keeps: bool = False) -> None:
        self.writes: list[bytes] = []
        self.high = high
        self.keeps = keeps  # the peer reads nothing: every write stays in the buffer
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.keeps:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, self.high)

    def is_closing(self) -> bool:
        return self.closing


def follower(transport: FakeTransport, metrics: Metrics, last: int = 0,
             connection: sse.Connection | None = None, direct: bool = True) -> sse.Follower:
    f = sse.Follower(cast(asyncio.Transport, transport), True, metrics, connection)
    f.last, f.direct = last, direct
    f.wake = asyncio.get_running_loop().create_future()
    return f


def said(seq: int, text: str = "hi") -> AssistantMessage:
    return AssistantMessage(session_id=SID, event_id=f"e_k{seq}", text=text,
                            occurred_at=datetime(2026, 1, 1, tzinfo=UTC))


def msg(seq: int, text: str = "hi", data: bytes | None = None) -> Msg:
    subject = f"{S.LIVE_PREFIX}.{SID}.planner.assistant.message.e_k{seq}"
    return Msg(_client=None, subject=subject, headers={"Nats-Sequence": str(seq)},  # type: ignore[arg-type]
               data=E.encode(said(seq, text)) if data is None else data)


def framed(seq: int, text: str = "hi") -> bytes:
    return sse.frame(seq, "assistant.message", E.encode(said(seq, text)))


async def deliver(entry: sse._Followers, *msgs: Msg) -> None:
    """Delivers msgs as one arrival (one pass of the loop), then lets the flush run."""
    flushed = asyncio.get_running_loop().create_future()
    for m in msgs:
        await entry.deliver(m)
    asyncio.get_running_loop().call_soon(flushed.set_result, None)  # after the flush
    await flushed


async def test_caught_up_clients_get_the_same_bytes_object_once() -> None:
    metrics = Metrics()
    ts = [FakeTransport() for _ in range(3)]
    entry = sse._Followers(UNVERIFIED)
    entry.followers.update(follower(t, metrics, last=4) for t in ts)
    await deliver(entry, msg(5))
    assert [len(t.writes) for t in ts] == [1, 1, 1]
    assert ts[0].writes[0] == sse.chunked(framed(5))
    assert ts[1].writes[0] is ts[0].writes[0]
    assert ts[2].writes[0] is ts[0].writes[0]
    assert {f.last for f in entry.followers} == {5}
    assert metrics.sse_events_sent == 3


async def test_messages_arriving_together_are_one_write_per_client() -> None:
    metrics = Metrics()
    t = FakeTransport()
    entry = sse._Followers(UNVERIFIED)
    entry.followers.add(follower(t, metrics, last=4))
    await deliver(entry, msg(5, "a"), msg(7, "b"))
    assert t.writes == [sse.chunked(framed(5, "a") + framed(7, "b"))]
    assert metrics.sse_events_sent == 2


async def test_what_the_log_read_already_sent_is_not_sent_again() -> None:
    metrics = Metrics()
    whole, part, ahead = FakeTransport(), FakeTransport(), FakeTransport()
    entry = sse._Followers(UNVERIFIED)
    entry.followers.update([follower(whole, metrics, last=4), follower(part, metrics, last=5),
                            follower(ahead, metrics, last=7)])
    await deliver(entry, msg(5, "a"), msg(7, "b"))
    assert whole.writes == [sse.chunked(framed(5, "a") + framed(7, "b"))]
    assert part.writes == [sse.chunked(framed(7, "b"))]
    assert ahead.writes == []
    assert metrics.sse_events_sent == 3


async def test_a_client_being_caught_up_gets_nothing_written_but_keeps_it() -> None:
    t = FakeTransport()
    f = follower(t, Metrics(), last=4, direct=False)
    entry = sse._Followers(UNVERIFIED)
    entry.followers.add(f)
    await deliver(entry, msg(5))
    assert t.writes == []
    assert f.pending == [(5, framed(5))]


async def test_a_full_socket_hands_the_client_to_its_task() -> None:
    t = FakeTransport(high=len(sse.chunked(framed(5))), keeps=True)
    f = follower(t, Metrics(), last=4)
    wake = f.wake
    assert wake is not None
    entry = sse._Followers(UNVERIFIED)
    entry.followers.add(f)
    await deliver(entry, msg(5))
    assert len(t.writes) == 1
    assert f.direct
    assert not wake.done()
    await deliver(entry, msg(6))
    assert len(t.writes) == 2
    assert not f.direct
    assert wake.done()
    await deliver(entry, msg(7))  # the task drains the socket, then writes what it holds
    assert len(t.writes) == 2
    assert f.pending == [(7, framed(7))]


async def test_a_gone_client_or_a_reconnect_is_handed_back_unwritten() -> None:
    gone, moved = FakeTransport(), FakeTransport()
    conn = sse.Connection()
    f_gone = follower(gone, Metrics(), last=4)
    f_moved = follower(moved, Metrics(), last=4, connection=conn)
    gone.closing = True
    await conn.changed()
    entry = sse._Followers(UNVERIFIED)
    entry.followers.update([f_gone, f_moved])
    await deliver(entry, msg(5))
    assert gone.writes == []
    assert moved.writes == []
    for f in (f_gone, f_moved):
        assert not f.direct
        assert f.wake is not None
        assert f.wake.done()
        assert f.pending == [(5, framed(5))]


async def test_too_much_held_for_a_slow_client_is_left_to_the_log(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sse, "MAX_PENDING", 2)
    f = follower(FakeTransport(), Metrics(), last=4, direct=False)
    entry = sse._Followers(UNVERIFIED)
    entry.followers.add(f)
    await deliver(entry, msg(5), msg(6))
    assert len(f.pending) == 2
    assert not f.reread
    await deliver(entry, msg(7))
    assert f.pending == []
    assert f.reread
    await deliver(entry, msg(8))
    assert f.pending == []


class BrokenTransport(FakeTransport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("Cannot call write() after write_eof()")


async def test_one_broken_transport_costs_the_others_nothing() -> None:
    metrics = Metrics()
    ok = [FakeTransport() for _ in range(3)]
    broken = follower(BrokenTransport(), metrics, last=4)
    entry = sse._Followers(UNVERIFIED)
    entry.followers.update([broken, *(follower(t, metrics, last=4) for t in ok)])
    await deliver(entry, msg(5))
    assert [t.writes for t in ok] == [[sse.chunked(framed(5))]] * 3
    assert not broken.direct
    assert broken.pending == [(5, framed(5))]
    assert broken.last == 4


class FakeJs:
    def __init__(self) -> None:
        self.calls = 0
        self.last = 10
        self.fail: Exception | None = None
        self.asked = asyncio.Event()

    async def stream_info(self, name: str) -> Any:
        self.calls += 1
        asked_with = self.last
        self.asked.set()
        await asyncio.sleep(0)  # the reply comes later
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(state=SimpleNamespace(first_seq=1, last_seq=asked_with))


def hub_with(js: FakeJs) -> sse.LiveHub:
    return sse.LiveHub(cast(Bus, SimpleNamespace(js=js)))


async def test_streams_that_ask_together_share_one_bounds_request() -> None:
    js = FakeJs()
    hub = hub_with(js)
    first = [asyncio.create_task(hub.bounds()) for _ in range(50)]
    await asyncio.wait_for(js.asked.wait(), 5)  # the request has gone out
    js.last = 11  # stored after the first request was sent
    later = asyncio.create_task(hub.bounds())
    assert await asyncio.gather(*first) == [(1, 10)] * 50
    assert await later == (1, 11)  # not the answer to a request sent before it asked
    assert js.calls == 2


async def test_a_failed_bounds_request_fails_each_stream_that_shared_it() -> None:
    js = FakeJs()
    js.fail = RetryableError("no responders")
    hub = hub_with(js)
    got = await asyncio.gather(*(hub.bounds() for _ in range(3)), return_exceptions=True)
    assert [type(g) for g in got] == [RetryableError] * 3
    assert js.calls == 1


async def test_only_decoded_events_are_framed_never_the_stored_bytes() -> None:
    """A body signed by its emitter but not an event, or an event whose bytes carry raw
    newlines between JSON tokens, or one on another session's subject: the first and last are
    not sent; the second is sent re-encoded, one `data:` line, its id the stream sequence."""
    metrics = Metrics()
    t = FakeTransport()
    entry = sse._Followers(UNVERIFIED)
    entry.followers.add(follower(t, metrics, last=4))
    injected = b'{"x": 1}\n\nid: 99999999\nevent: approval.granted\ndata: {}\n\n'
    spaced = E.encode(said(6, "two\nlines")).replace(b",", b",\n\n")
    assert E.decode(spaced) == said(6, "two\nlines")
    elsewhere = E.encode(AssistantMessage(session_id="s_other", event_id="e_k7", text="x"))
    await deliver(entry, msg(5, data=injected), msg(6, data=spaced), msg(7, data=elsewhere),
                  msg(8, data=E.encode(said(8))))
    assert t.writes == [sse.chunked(framed(6, "two\nlines") + framed(8))]
    assert framed(6, "two\nlines").count(b"\n") == 4  # id, event, data, and the blank line
