"""Waiting for what a session records next without polling the log: the log's live feed (the one
SSE follows) wakes a waiter, which then reads the log itself (the feed is a hint, the log the
record)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from schemas import subjects as S
from schemas.base import Event
from services.runtime.bus import Bus

POLL_S = 0.5  # the longest a waiter goes without reading the log again


@contextlib.asynccontextmanager
async def news(bus: Bus, sid: str) -> AsyncIterator[asyncio.Event]:
    """Set whenever session `sid` gets an event: a waiter reads the log again at once instead
    of at its next poll."""
    heard_it = asyncio.Event()

    async def heard(msg: Any) -> None:
        heard_it.set()

    sub = await bus.nc.subscribe(S.live_filter(sid), cb=heard)
    try:
        yield heard_it
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def first(bus: Bus, sid: str, start: int, wait_s: float,
                match: Callable[[Event], bool]) -> Event | None:
    """The first event of session `sid` from `start` that `match`es, within `wait_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with news(bus, sid) as woken:
        heard = False
        while True:
            woken.clear()
            before = start
            for s in await bus.session(sid, start_seq=start):
                start = s.seq + 1
                ev: Event = s.event
                if match(ev):
                    return ev
            left = deadline - loop.time()
            if left <= 0:
                return None
            # News the read did not show yet (a replica behind the leader whose feed woke us):
            # read again soon; otherwise wait for news, reading again now and then.
            lagging = heard and start == before
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(left, 0.02 if lagging else POLL_S))
            heard = woken.is_set()
