"""A crash point for tests: INTERLOCK_GATE_EXIT_AFTER=<event type> makes the gate exit, as
abruptly as a SIGKILL, right after it appended an event of that type. A regression test kills
the gate at each append of a path this way and proves that a restarted gate finishes the work.

Inert unless the variable is set (no deployment sets it). It only ever stops the process after
an append has been stored: it never adds, drops or reorders an event, so it cannot let a write
skip its approval — the worst it does is what a SIGKILL at that moment would do."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.base import Event
from services.runtime.bus import Bus, Link

ENV = "INTERLOCK_GATE_EXIT_AFTER"
EXIT_CODE = 86  # what a test waits for: not a code the gate exits with otherwise

log = logging.getLogger(__name__)


def install(bus: Bus, env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Wraps the bus's append (every gate append goes through `append_link`) when ENV is set."""
    point = env.get(ENV, "")
    if not point:
        return
    log.warning("crash point armed: exiting after the first %s appended", point)
    inner: Callable[..., Awaitable[Link]] = bus.append_link

    async def append_link(event: Event, *args: Any, **kwargs: Any) -> Link:
        link = await inner(event, *args, **kwargs)
        if event.type == point:
            logging.shutdown()
            os._exit(EXIT_CODE)
        return link

    # An instance attribute: Bus.append calls self.append_link, so both paths are covered.
    setattr(bus, "append_link", append_link)  # noqa: B010
