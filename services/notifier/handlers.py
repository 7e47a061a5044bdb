"""The notifier's handler: approval events in, signed webhook posts and the Slack message out.
It publishes nothing on the bus, and the gate never waits for it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from schemas import lifecycle
from schemas import subjects as S
from schemas.approval import ApprovalDenied, ApprovalExpired, ApprovalGranted, ApprovalRequested
from schemas.events import AnyEvent
from schemas.execution import CommandRefused, ToolResult
from services.notifier import webhooks
from services.notifier.settings import NotifierSettings
from services.notifier.slack import Outcome
from services.notifier.slack_api import SlackChannel
from services.runtime.bus import Bus
from services.runtime.delivery import Delivery

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, bus: Bus, http: aiohttp.ClientSession,
                 settings: NotifierSettings, slack: SlackChannel | None = None) -> None:
        self.bus = bus
        self.http = http
        self.settings = settings
        self.slack = slack

    async def handle(self, d: Delivery[AnyEvent]) -> None:
        # Decoded and signed by the emitter its subject names: the consume loop checked it,
        # and keeps the message alive while webhooks are retried.
        event = d.event
        now = datetime.now(UTC)
        # A notifier added to an existing log, or back after a long outage, stays quiet about
        # history: nobody can act on it any more.
        if (now - event.occurred_at).total_seconds() > self.settings.max_age_s:
            return
        if isinstance(event, ToolResult | CommandRefused):
            await self.slack_ran(event)
            return
        if not isinstance(event, ApprovalRequested | ApprovalGranted | ApprovalDenied
                          | ApprovalExpired):
            return
        if isinstance(event, ApprovalRequested) and lifecycle.is_expired(event, now):
            return
        if not self.settings.webhooks and self.slack is None:
            return
        request = event if isinstance(event, ApprovalRequested) else await self.request_of(
            event.session_id, event.approval_id)
        await asyncio.gather(self.notify_webhooks(event, request),
                             self.notify_slack(event, request))

    async def notify_slack(self, event: ApprovalRequested | ApprovalGranted | ApprovalDenied
                           | ApprovalExpired, request: ApprovalRequested | None) -> None:
        if self.slack is None or request is None:
            return
        match event:
            case ApprovalRequested():
                await self.slack.requested(event)
                return
            case ApprovalGranted():
                outcome = Outcome("granted", event.occurred_at, approver=event.approver)
            case ApprovalDenied() if event.superseded_by:
                outcome = Outcome("amended", event.occurred_at, approver=event.approver)
            case ApprovalDenied():
                outcome = Outcome("denied", event.occurred_at, approver=event.approver,
                                  reason=event.reason)
            case ApprovalExpired():
                outcome = Outcome("expired", event.occurred_at)
        await self.slack.settled(request, outcome, event.type)

    async def slack_ran(self, event: ToolResult | CommandRefused) -> None:
        """A granted call ran (or was refused): its approval's message says so."""
        if self.slack is None:
            return
        status = event.status if isinstance(event, ToolResult) else f"refused: {event.reason}"
        found = self.slack.ran(event.call_id, status)
        if found is None:
            return
        approval_id, posted = found
        request = await self.request_of(event.session_id, approval_id)
        if request is not None:
            await self.slack.rewrite(request, posted, event.type)

    async def notify_webhooks(self, event: ApprovalRequested | ApprovalGranted | ApprovalDenied
                              | ApprovalExpired, request: ApprovalRequested | None) -> None:
        if not self.settings.webhooks:
            return
        data: dict[str, Any] = msgspec.to_builtins(event)
        req_data = msgspec.to_builtins(request) if request is not None else None
        p = webhooks.payload(event.type, data, req_data, self.settings.public_url)

        s = self.settings
        results = await asyncio.gather(*(
            webhooks.deliver(self.http, hook, p, s.secret, attempts=s.attempts,
                             timeout_s=s.timeout_s, backoff_s=s.backoff_s)
            for hook in s.webhooks
        ))
        log.info("notified %d of %d webhooks", sum(results), len(results),
                 extra={"approval_id": event.approval_id, "session_id": event.session_id,
                        "tag": event.type})

    async def request_of(self, session_id: str, approval_id: str) -> ApprovalRequested | None:
        stored = await self.bus.first(S.tag_filter("gate", "approval.requested",
                                                   session_id, approval_id))
        if stored is not None and isinstance(stored.event, ApprovalRequested):
            return stored.event
        return None
