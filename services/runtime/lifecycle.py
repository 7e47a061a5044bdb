"""Service lifecycle: SIGTERM/SIGINT → stop event → drain → exit 0; and the same when the launcher
that started the service is gone (INTERLOCK_PARENT_PID, set by `interlock up`): a launcher killed
outright must not leave its services running, orphaned, holding the log and the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from services.runtime import logs
from services.runtime.errors import ConfigError

log = logging.getLogger(__name__)
PARENT_ENV = "INTERLOCK_PARENT_PID"
PARENT_POLL_S = 1.0


async def watch_parent(parent: int, stop: asyncio.Event, poll_s: float = PARENT_POLL_S) -> None:
    """Sets `stop` once this process is no longer the child of `parent` (it died, and the
    process was handed to init): the same orderly drain as a SIGTERM."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the launcher (pid %d) is gone: stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)


def run_service(name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    logs.setup(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parent = os.environ.get(PARENT_ENV, "")
        watch = asyncio.create_task(watch_parent(int(parent), stop)) if parent.isdigit() \
            else None
        log.info("starting")
        await run(stop)
        if watch is not None:
            watch.cancel()
        log.info("stopped")

    try:
        asyncio.run(main())
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        sys.exit(2)
    sys.exit(0)
