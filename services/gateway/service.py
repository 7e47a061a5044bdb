"""The gateway service: HTTP + SSE in front of the log."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.app import Api, make_app
from services.gateway.auth import TokenStore
from services.gateway.settings import GatewaySettings
from services.runtime.bus import Bus

log = logging.getLogger(__name__)


async def run(settings: GatewaySettings, stop: asyncio.Event) -> None:
    tokens = TokenStore.load(settings.tokens_file, settings.admin_token)
    bus = await Bus.connect(settings.nats, "gateway")
    runner = web.AppRunner(make_app(Api(bus, tokens, settings.heartbeat_s)),
                           shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening on http://%s:%d", settings.host, settings.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("gateway", lambda stop: run(GatewaySettings.from_env(), stop))
