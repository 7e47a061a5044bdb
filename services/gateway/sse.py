"""Resumable Server-Sent Events over the log.

`id:` is the JetStream sequence. The live tail is the server-side republish of EVENTS (no
consumer needed): subscribe first, then replay the stored gap with Direct Get, then forward live
messages whose sequence is past the last one sent — no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from nats.aio.msg import Msg

from schemas import subjects as S
from services.runtime.bus import Bus

log = logging.getLogger(__name__)
RETRY_MS = 2000


def frame(seq: int, event_type: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event_type.encode(), data)


async def stream_session(
    request: web.Request, bus: Bus, session_id: str, after: int, heartbeat_s: float
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await bus.nc.subscribe(
        S.live_filter(session_id), cb=queue.put, pending_msgs_limit=1_000_000
    )
    request.app["sse_clients"] = request.app.get("sse_clients", 0) + 1
    try:
        await resp.prepare(request)
        await resp.write(b"retry: %d\n\n" % RETRY_MS)
        last = after
        if after > 0 and after > await bus.last_sequence():
            # The client's id is from another log (restored or replaced): start over, say so.
            await resp.write(b'event: reset\ndata: {"reason": "unknown event id"}\n\n')
            last = 0
        async for stored in bus.read(S.session_filter(session_id), last + 1):
            await resp.write(frame(stored.seq, stored.event.type, stored.raw))
            last = stored.seq
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), heartbeat_s)
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            hdrs = msg.headers or {}
            seq = int(hdrs.get("Nats-Sequence", "0"))
            if seq <= last:
                continue
            _, _, tag, _ = S.parse_event_subject(msg.subject)
            await resp.write(frame(seq, tag, msg.data))
            last = seq
    except (ConnectionResetError, asyncio.CancelledError):
        # A client going away never stops the run; only this stream ends.
        pass
    finally:
        request.app["sse_clients"] -= 1
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return resp
