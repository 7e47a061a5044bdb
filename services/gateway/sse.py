"""Resumable Server-Sent Events over the log.

`id:` is the JetStream sequence. The live tail is the server-side republish of EVENTS (no
consumer needed): subscribe first, then replay the stored gap with Direct Get, then forward live
messages whose sequence is past the last one sent — no gap, no duplicate.

The republish is core NATS, so a reconnect of the gateway's connection (or a dropped message)
could leave a hole in the live tail. The stream therefore re-reads the log from the last id it
sent whenever the connection changed and on every heartbeat: the log, not the live copy, is the
source of truth, and ids only ever increase on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11
from nats.aio.msg import Msg

from schemas import events as E
from schemas import subjects as S
from services.gateway.errors import HttpError
from services.gateway.metrics import Metrics
from services.runtime.bus import TRANSIENT, Bus, decode_stored
from services.runtime.errors import PoisonMessage, RetryableError
from services.runtime.identity import SIGNATURE_HEADER

log = logging.getLogger(__name__)
RETRY_MS = 2000
MAX_SEQ_DIGITS = 19


def frame(seq: int, event_type: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event_type.encode(), data)


def event_frame(seq: int, event: E.AnyEvent) -> bytes:
    """The frame of a decoded event. Never the stored bytes: JSON may hold raw newlines
    between its tokens, and a stored body that is not an event may hold anything — written
    as they are, they end the frame and start one of the writer's making (another type, a
    huge id that makes a client drop every later event). The encoder escapes every control
    character, so the frame is one `data:` line; its id is the stream sequence alone."""
    return frame(seq, event.type, E.encode(event))


def parse_after(request: web.Request) -> int:
    """The last id the client has: Last-Event-ID (a reconnecting EventSource), `?after=` or
    `?last_event_id=` (a new EventSource cannot set headers). Malformed ids are a 400."""
    raw = (request.headers.get("Last-Event-ID") or request.query.get("after")
           or request.query.get("last_event_id") or "0").strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > MAX_SEQ_DIGITS:
        raise HttpError(400, "invalid_event_id",
                        "Last-Event-ID, after and last_event_id must be a sequence number")
    return int(raw)


class Connection:
    """Counts the NATS connection's disconnects, so a stream knows when to re-read the log, and
    wakes every stream that waits idle for live frames: events stored while the connection was
    down are never republished to it, so an idle client would otherwise hear of them only at its
    next heartbeat (up to 15 s later)."""

    def __init__(self) -> None:
        self.generation = 0
        self.followers: weakref.WeakSet[Follower] = weakref.WeakSet()

    async def changed(self) -> None:
        self.generation += 1
        for f in list(self.followers):
            if f.direct:
                f.hand_over()  # its task sees the new generation and reads the log again


Live = tuple[int, bytes]  # (stream sequence, the SSE frame)
MAX_PENDING = 1000  # live frames held for a client that is catching up; past it, the log


def chunked(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (what aiohttp's writer would add around it)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Follower:
    """One SSE client of a followed session.

    While it owes the client nothing (`direct`), the hub writes each live frame straight to its
    transport: the same bytes object for every client, no queue, no task wake-up and no timer
    per event. Anything else — catching up from the log, a full socket buffer, a reconnect of
    the NATS connection, a gone client — hands the client back to its own task (`wake`), and
    the hub keeps what arrives meanwhile in `pending` for it."""

    __slots__ = ("__weakref__", "chunked", "connection", "direct", "generation", "high_water",
                 "last", "metrics", "pending", "reread", "sent_at", "transport", "wake")

    def __init__(self, transport: asyncio.Transport, is_chunked: bool, metrics: Metrics,
                 connection: Connection | None) -> None:
        self.transport = transport
        self.chunked = is_chunked
        self.metrics = metrics
        self.connection = connection
        self.generation = connection.generation if connection else 0
        if connection is not None:
            connection.followers.add(self)
        self.high_water = transport.get_write_buffer_limits()[1]
        self.last = 0  # the last id written to the client
        self.direct = False
        self.pending: list[Live] = []
        self.reread = False  # the log must be read again from `last` (pending overflowed)
        self.sent_at = 0.0  # loop time of the last write, for the heartbeat
        self.wake: asyncio.Future[None] | None = None

    def encode(self, data: bytes) -> bytes:
        return chunked(data) if self.chunked else data

    def hand_over(self) -> None:
        self.direct = False
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def hold(self, batch: list[Live]) -> None:
        if self.reread:
            return
        self.pending.extend(batch)
        if len(self.pending) > MAX_PENDING:
            self.pending.clear()
            self.reread = True

    def offer(self, batch: list[Live], whole: _Batch, now: float) -> None:
        if not self.direct:
            self.hold(batch)
            return
        last = self.last
        if batch[-1][0] <= last:
            return
        transport = self.transport
        conn = self.connection
        if transport.is_closing() or (conn is not None and conn.generation != self.generation):
            self.hold(batch)
            self.hand_over()
            return
        if batch[0][0] > last:
            data, sent = whole.encoded(self.chunked), len(batch)
        else:  # the log read that caught this client up went past part of the batch
            rest = [f for seq, f in batch if seq > last]
            data, sent = self.encode(b"".join(rest)), len(rest)
        transport.write(data)
        self.last = batch[-1][0]
        self.sent_at = now
        self.metrics.sse_events_sent += sent
        if transport.get_write_buffer_size() > self.high_water:
            self.hand_over()  # a slow reader: its task waits for the socket to drain


class _Batch:
    """The frames that arrived in one pass of the loop, joined and encoded once for all."""

    __slots__ = ("_chunked", "_raw", "frames")

    def __init__(self, frames: list[Live]) -> None:
        self.frames = frames
        self._raw: bytes | None = None
        self._chunked: bytes | None = None

    def encoded(self, is_chunked: bool) -> bytes:
        if self._raw is None:
            self._raw = b"".join(f for _, f in self.frames)
        if not is_chunked:
            return self._raw
        if self._chunked is None:
            self._chunked = chunked(self._raw)
        return self._chunked


class LiveHub:
    """One NATS subscription per followed session, shared by all of its SSE clients.

    With a subscription per client, every live event crossed the NATS connection and was
    parsed once per client (1,000 clients: 1,000 copies); the hub receives it once, frames it
    once and writes the same bytes to each client that is caught up. Ordering, dedupe and gap
    repair stay per client."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._entries: dict[str, _Followers] = {}
        self._bounds: asyncio.Future[tuple[int, int]] | None = None
        self._fetches: set[asyncio.Task[None]] = set()

    async def bounds(self) -> tuple[int, int]:
        """(first, last) sequence of the log. The streams that ask before the request goes out
        share it — a storm of 5,000 (re)connecting clients was 5,000 stream-info requests — and
        none gets an answer to a request sent before it asked."""
        fut = self._bounds
        if fut is None:
            fut = self._bounds = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._fetch_bounds(fut))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)
        return await asyncio.shield(fut)

    async def _fetch_bounds(self, fut: asyncio.Future[tuple[int, int]]) -> None:
        self._bounds = None  # whoever asks from now on gets the next request
        try:
            info = await self.bus.js.stream_info(S.EVENTS_STREAM)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - not swallowed: each asker raises it
            fut.set_exception(exc)
            fut.exception()  # retrieved here: the askers may all have gone
        else:
            fut.set_result((int(info.state.first_seq), int(info.state.last_seq)))

    async def join(self, session_id: str, follower: Follower) -> None:
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.followers.add(follower)
            await entry.ready.wait()
            if entry.sub is None:  # its subscribe failed: try again on a fresh entry
                entry.followers.discard(follower)
                await self.join(session_id, follower)
            return
        entry = _Followers(self.bus)
        entry.followers.add(follower)
        self._entries[session_id] = entry
        try:
            entry.sub = await self.bus.nc.subscribe(
                S.live_filter(session_id), cb=entry.deliver, pending_msgs_limit=1_000_000
            )
        except BaseException:
            if self._entries.get(session_id) is entry:
                del self._entries[session_id]
            raise
        finally:
            entry.ready.set()

    async def leave(self, session_id: str, follower: Follower) -> None:
        entry = self._entries.get(session_id)
        if entry is None:
            return
        entry.followers.discard(follower)
        if not entry.followers:
            del self._entries[session_id]
            await entry.ready.wait()
            if entry.sub is not None:
                await entry.sub.unsubscribe()

    def followed(self) -> int:
        return len(self._entries)


class _Followers:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.followers: set[Follower] = set()
        self.sub: Any = None
        self.ready = asyncio.Event()
        self._batch: list[Live] = []

    async def deliver(self, msg: Msg) -> None:
        try:
            headers = msg.headers or {}
            seq = int(headers.get("Nats-Sequence", "0"))
            if seq < 1:
                raise ValueError(f"no stream sequence ({seq})")
            # What a person sees live is what a read would show: an event that decodes, on
            # the subject it belongs on (decode_stored), signed by its emitter. Checked once
            # here for every client of the session. The signature covers the stored subject,
            # which the republish renames.
            stored = S.EVENTS_PREFIX + msg.subject[len(S.LIVE_PREFIX):]
            event = decode_stored(stored, msg.data)
            # Even the gateway's own events: anyone who can publish on the live subjects could
            # put something there that the stream never stored.
            self.bus.verify(seq, stored, msg.data, headers.get(SIGNATURE_HEADER),
                            trust_own=False)
        except (ValueError, S.SubjectMismatch, PoisonMessage) as exc:
            log.warning("skipping a live message: %s", exc, extra={"subject": msg.subject})
            return
        # Written once the subscription's queue is empty: messages that arrived together go
        # out together, one write per client instead of one per message.
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append((seq, event_frame(seq, event)))

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        whole = _Batch(batch)
        now = asyncio.get_running_loop().time()
        for follower in self.followers:
            try:
                follower.offer(batch, whole, now)
            except Exception:  # one broken transport must not cost the others this batch
                log.exception("sse fan-out to a client failed; its task takes over")
                follower.hold(batch)
                follower.hand_over()


_hubs: weakref.WeakKeyDictionary[Bus, LiveHub] = weakref.WeakKeyDictionary()


def hub_for(bus: Bus) -> LiveHub:
    hub = _hubs.get(bus)
    if hub is None:
        hub = _hubs[bus] = LiveHub(bus)
    return hub


async def stream_session(
    request: web.Request, bus: Bus, session_id: str, after: int, heartbeat_s: float,
    metrics: Metrics, connection: Connection | None = None,
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # Frames go straight to the transport (see Follower), so the framing is fixed here rather
    # than left to aiohttp's writer: chunked on HTTP/1.1, bare bytes until close on HTTP/1.0.
    is_chunked = request.version >= HttpVersion11
    if is_chunked:
        resp.enable_chunked_encoding()
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client has gone")
    loop = asyncio.get_running_loop()
    f = Follower(transport, is_chunked, metrics, connection)
    hub = hub_for(bus)
    await hub.join(session_id, f)
    metrics.sse_clients += 1
    metrics.sse_connections += 1
    f.last = after
    try:
        # Before the 200 goes out: a bus failure here is still a clean 503 for the client.
        first_seq, last_seq = await hub.bounds()
        writer = await resp.prepare(request)  # sends the headers
        assert writer is not None

        async def send(data: bytes) -> None:
            if transport.is_closing():
                raise ConnectionResetError("the client has gone")
            transport.write(f.encode(data))
            f.sent_at = loop.time()
            if transport.get_write_buffer_size() > f.high_water:
                await writer.drain()

        await send(b"retry: %d\n\n" % RETRY_MS)
        if after > last_seq or (0 < after < first_seq - 1):
            # The id is from another log (restored or replaced) or older than what is kept:
            # say so, then start over from the beginning of what the log holds.
            await send(b'event: reset\ndata: {"reason": "unknown event id", '
                       b'"last_event_id": %d}\n\n' % after)
            f.last = 0

        async def read_gap() -> None:
            async for stored in bus.read(S.session_filter(session_id), f.last + 1):
                if stored.seq > f.last:
                    await send(event_frame(stored.seq, stored.event))
                    metrics.sse_events_sent += 1
                    f.last = stored.seq

        async def catch_up() -> None:
            # Once the stream has started, a bus outage (a reconnect, a stream electing a
            # leader) must not leave the client on a silent open connection: keep the stream
            # alive and read the gap again until the log answers.
            delay = 0.2
            while True:
                try:
                    await read_gap()
                    return
                except (RetryableError, *TRANSIENT) as exc:
                    log.warning("sse catch-up failed, retrying: %s", exc,
                                extra={"session_id": session_id, "seq": f.last})
                    await send(b": the log is unavailable for a moment\n\n")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

        f.reread = True
        while True:
            # The client is ours (not direct): settle what it is owed, in order.
            if connection is not None and connection.generation != f.generation:
                f.generation = connection.generation
                f.reread = True
            if f.reread:
                f.reread = False
                await catch_up()
                continue
            if f.pending:
                items, f.pending = f.pending, []
                for seq, data in items:
                    if seq > f.last:
                        await send(data)
                        metrics.sse_events_sent += 1
                        f.last = seq
                continue
            if transport.is_closing():
                raise ConnectionResetError("the client has gone")
            if transport.get_write_buffer_size() > f.high_water:
                await writer.drain()
                if f.pending or f.reread:
                    continue
            # Owed nothing: the hub writes to this client until it hands it back. The timer
            # is re-armed only when it expires, not per event.
            f.direct = True
            while f.direct:
                f.wake = loop.create_future()
                try:
                    async with asyncio.timeout_at(f.sent_at + heartbeat_s):
                        await f.wake
                except TimeoutError:
                    if f.direct and loop.time() >= f.sent_at + heartbeat_s:
                        f.direct = False
                        await send(b": ping\n\n")
                        f.reread = True
    except ConnectionResetError:
        # A client going away never stops the run; only this stream ends.
        log.debug("sse client gone", extra={"session_id": session_id, "seq": f.last})
    finally:
        f.direct = False
        metrics.sse_clients -= 1
        with contextlib.suppress(Exception):
            await hub.leave(session_id, f)
    return resp
