"""`/mcp` on the gateway, with the MCP SDK loaded off the start-up path: importing it costs about
a second of CPU, which every gateway start (a restart after a crash too) would otherwise pay
before it answers /readyz. It is loaded in a thread as soon as the gateway serves; a request that
comes first waits for it."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from services.gateway.mcp import McpServer


class McpMount:
    def __init__(self, api: Any) -> None:
        self.api = api
        self._loaded: asyncio.Future[McpServer] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _load(self) -> McpServer:
        module = await asyncio.to_thread(importlib.import_module, "services.gateway.mcp")
        server: McpServer = module.McpServer(self.api)
        ready = asyncio.Event()
        self._task = asyncio.create_task(server.run(ready, self._stop))
        await ready.wait()
        return server

    def server(self) -> asyncio.Future[McpServer]:
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        return self._loaded

    async def handle(self, request: web.Request) -> web.StreamResponse:
        server = await asyncio.shield(self.server())
        return await server.handle(request)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self.server()  # start loading now; answer /readyz meanwhile
        yield
        self._stop.set()
        if self._task is not None:
            await self._task
        elif self._loaded is not None:
            self._loaded.cancel()


def install(app: web.Application, api: Any) -> McpMount:
    mount = McpMount(api)
    app.router.add_post("/mcp", mount.handle)
    app.router.add_route("GET", "/mcp", _not_allowed)
    app.router.add_route("DELETE", "/mcp", _not_allowed)
    app.cleanup_ctx.append(mount.lifespan)
    return mount


async def _not_allowed(request: web.Request) -> web.Response:
    # 2026-07-28: no GET stream and no session to delete (subscriptions/listen is a POST).
    return web.json_response({"error": "method_not_allowed", "message": (
        "POST JSON-RPC requests to /mcp; there is no GET stream or session to delete")},
        status=405, headers={"Allow": "POST"})
