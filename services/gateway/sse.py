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
from nats.aio.msg import Msg

from schemas import subjects as S
from services.gateway.errors import HttpError
from services.gateway.metrics import Metrics
from services.runtime.bus import TRANSIENT, Bus
from services.runtime.errors import RetryableError

log = logging.getLogger(__name__)
RETRY_MS = 2000
MAX_SEQ_DIGITS = 19


def frame(seq: int, event_type: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event_type.encode(), data)


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
    """Counts the NATS connection's disconnects, so a stream knows when to re-read the log."""

    def __init__(self) -> None:
        self.generation = 0

    async def changed(self) -> None:
        self.generation += 1


Live = tuple[int, bytes]  # (stream sequence, the SSE frame)


class LiveHub:
    """One NATS subscription per followed session, shared by all of its SSE clients.

    With a subscription per client, every live event crossed the NATS connection and was
    parsed once per client (1,000 clients: 1,000 copies); the hub receives it once and hands the
    same message to each client's queue, framed once. Ordering, dedupe and gap repair stay per
    client."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._entries: dict[str, _Followers] = {}

    async def join(self, session_id: str) -> asyncio.Queue[Live]:
        queue: asyncio.Queue[Live] = asyncio.Queue()
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.queues.add(queue)
            await entry.ready.wait()
            if entry.sub is None:  # its subscribe failed: try again on a fresh entry
                entry.queues.discard(queue)
                return await self.join(session_id)
            return queue
        entry = _Followers()
        entry.queues.add(queue)
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
        return queue

    async def leave(self, session_id: str, queue: asyncio.Queue[Live]) -> None:
        entry = self._entries.get(session_id)
        if entry is None:
            return
        entry.queues.discard(queue)
        if not entry.queues:
            del self._entries[session_id]
            await entry.ready.wait()
            if entry.sub is not None:
                await entry.sub.unsubscribe()

    def followed(self) -> int:
        return len(self._entries)


class _Followers:
    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[Live]] = set()
        self.sub: Any = None
        self.ready = asyncio.Event()

    async def deliver(self, msg: Msg) -> None:
        try:
            seq = int((msg.headers or {}).get("Nats-Sequence", "0"))
            _, _, tag, _ = S.parse_event_subject(msg.subject)
        except (ValueError, S.SubjectMismatch) as exc:
            log.warning("skipping a live message: %s", exc, extra={"subject": msg.subject})
            return
        item = (seq, frame(seq, tag, msg.data))
        for queue in self.queues:
            queue.put_nowait(item)


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
    hub = hub_for(bus)
    queue = await hub.join(session_id)
    metrics.sse_clients += 1
    metrics.sse_connections += 1
    last = after
    try:
        # Before the 200 goes out: a bus failure here is still a clean 503 for the client.
        info = await bus.js.stream_info(S.EVENTS_STREAM)
        first_seq, last_seq = int(info.state.first_seq), int(info.state.last_seq)
        await resp.prepare(request)
        await resp.write(b"retry: %d\n\n" % RETRY_MS)
        if after > last_seq or (0 < after < first_seq - 1):
            # The id is from another log (restored or replaced) or older than what is kept:
            # say so, then start over from the beginning of what the log holds.
            await resp.write(b'event: reset\ndata: {"reason": "unknown event id", '
                             b'"last_event_id": %d}\n\n' % after)
            last = 0

        async def read_gap() -> None:
            nonlocal last
            async for stored in bus.read(S.session_filter(session_id), last + 1):
                if stored.seq > last:
                    await resp.write(frame(stored.seq, stored.event.type, stored.raw))
                    metrics.sse_events_sent += 1
                    last = stored.seq

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
                                extra={"session_id": session_id, "seq": last})
                    await resp.write(b": the log is unavailable for a moment\n\n")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

        generation = connection.generation if connection else 0
        await catch_up()
        while True:
            if queue.empty():
                try:
                    # asyncio.timeout, not wait_for: no task per event per client.
                    async with asyncio.timeout(heartbeat_s):
                        seq, data = await queue.get()
                except TimeoutError:
                    await resp.write(b": ping\n\n")
                    await catch_up()
                    continue
            else:
                seq, data = queue.get_nowait()
            if connection is not None and connection.generation != generation:
                generation = connection.generation
                await catch_up()
            if seq <= last:
                continue
            await resp.write(data)
            metrics.sse_events_sent += 1
            last = seq
    except ConnectionResetError:
        # A client going away never stops the run; only this stream ends.
        log.debug("sse client gone", extra={"session_id": session_id, "seq": last})
    finally:
        metrics.sse_clients -= 1
        with contextlib.suppress(Exception):
            await hub.leave(session_id, queue)
    return resp
