"""The notifier service: webhooks for approvals. One durable consumer shared by every instance,
so N instances send each notification once."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from services.notifier.handlers import Notifier
from services.notifier.settings import NotifierSettings
from services.runtime.bus import Bus

log = logging.getLogger(__name__)


async def run(settings: NotifierSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "notifier")
    try:
        async with aiohttp.ClientSession() as http:
            log.info("notifying %d webhook(s)", len(settings.webhooks))
            await bus.consume("notifier", Notifier(bus, http, settings).handle, stop)
    finally:
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("notifier", lambda stop: run(NotifierSettings.from_env(), stop))
