"""The planner's handler: fold the session, decide the next step, append it exactly once."""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from services.planner import domain
from services.runtime.bus import Bus, decode_stored
from services.runtime.errors import ConcurrencyConflict

log = logging.getLogger(__name__)
OCC_ATTEMPTS = 20


class Planner:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def handle(self, msg: Msg) -> None:
        trigger = decode_stored(msg.subject, msg.data)
        for _ in range(OCC_ATTEMPTS):
            stored = await self.bus.session(trigger.session_id)
            events = [s.event for s in stored]
            seen = {e.event_id for e in events}
            todo = [e for e in domain.decide(trigger, events) if e.event_id not in seen]
            if not todo:
                return
            try:
                # Optimistic concurrency on the whole session: of several planner instances,
                # exactly one takes the next step; the others fold again and find it done.
                await self.bus.append(todo[0], expect_session_seq=stored[-1].seq)
            except ConcurrencyConflict:
                continue
            for event in todo[1:]:
                await self.bus.append(event)
            log.info("step taken", extra={"session_id": trigger.session_id, "tag": todo[0].type})
            return
        raise ConcurrencyConflict(f"no step for {trigger.event_id}: session too busy")
