"""The gateway service: HTTP + SSE in front of the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from services.gateway.auth import TokenStore
from services.gateway.oidc import Verifier
from services.gateway.ratelimit import Limits, RateLimiter
from services.gateway.routes import Api, make_app
from services.gateway.settings import GatewaySettings
from services.gateway.sse import Connection
from services.runtime.bus import Bus

log = logging.getLogger(__name__)
# How often the gateway looks at how full the log is (and on every /metrics scrape).
LOG_CHECK_S = 60.0


async def run(settings: GatewaySettings, stop: asyncio.Event,
              started: asyncio.Event | None = None) -> None:
    tokens = TokenStore.load(settings.tokens_file, settings.admin_token)
    connection = Connection()
    bus = await Bus.connect(settings.nats, "gateway", disconnected_cb=connection.changed,
                            reconnected_cb=connection.changed)
    api = Api(bus, tokens, settings.heartbeat_s,
              sse_per_principal=settings.sse_streams_per_principal,
              admin_keys_file=settings.admin_keys_file,
              oidc=Verifier(settings.oidc) if settings.oidc is not None else None)
    api.connection = connection
    api.slack = settings.slack
    api.clusters = settings.clusters
    app = make_app(api, limits=Limits.default(
        RateLimiter(settings.rate_per_s, settings.rate_burst),
        RateLimiter(settings.auth_failure_rate_per_s, settings.auth_failure_burst),
        settings.trusted_proxies))
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening on http://%s:%d", settings.host, settings.port)
    watcher = asyncio.create_task(api.watch_log_usage(LOG_CHECK_S, stop))
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await runner.cleanup()
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("gateway", lambda stop: run(GatewaySettings.from_env(), stop))
