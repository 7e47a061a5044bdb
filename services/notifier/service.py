"""The notifier service: webhooks and a Slack message for approvals. One durable consumer shared
by every instance, so N instances send each notification once (the Slack message's channel and
ts are kept in a state dir, which instances must share: services/notifier/messages.py)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from services.notifier.handlers import Notifier
from services.notifier.settings import NotifierSettings
from services.notifier.slack_api import SlackChannel
from services.runtime.bus import Bus

log = logging.getLogger(__name__)


async def run(settings: NotifierSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "notifier")
    try:
        async with aiohttp.ClientSession() as http:
            slack = SlackChannel(http, settings) if settings.slack.enabled else None
            if slack is None and settings.slack.bot_token:
                log.warning("INTERLOCK_SLACK_BOT_TOKEN is set but INTERLOCK_SLACK_CHANNEL is "
                            "not: no Slack approval messages")
            log.info("notifying %d webhook(s)%s", len(settings.webhooks),
                     f" and Slack channel {settings.slack.channel}" if slack else "")
            await bus.consume("notifier", Notifier(bus, http, settings, slack).handle, stop)
    finally:
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("notifier", lambda stop: run(NotifierSettings.from_env(), stop))
