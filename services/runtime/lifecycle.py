"""Service lifecycle: SIGTERM/SIGINT → stop event → drain → exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from services.runtime import logs
from services.runtime.errors import ConfigError

log = logging.getLogger(__name__)


def run_service(name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    logs.setup(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("starting")
        await run(stop)
        log.info("stopped")

    try:
        asyncio.run(main())
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        sys.exit(2)
    sys.exit(0)
