"""An ASGI application served from an aiohttp route: the official MCP SDK's Streamable HTTP
transport is an ASGI app, the gateway is aiohttp. The request is read by aiohttp (its body limit
and middleware apply: authentication, rate limits, errors); the app's response is streamed back
as it comes (JSON, or an SSE stream of progress then the result)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Message = MutableMapping[str, Any]
AsgiApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


def scope_of(request: web.Request, body_state: dict[str, Any]) -> dict[str, Any]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": request.scheme,
        "path": request.path, "raw_path": request.raw_path.split("?")[0].encode(),
        "query_string": request.query_string.encode(), "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
        "state": body_state,
    }


async def serve(request: web.Request, app: AsgiApp, state: dict[str, Any]) -> web.StreamResponse:
    """Runs `app` for this request; `state` becomes the ASGI scope's state (what the gateway
    proved about the caller, for the app's handlers)."""
    body = await request.read()
    finished = asyncio.Event()
    delivered = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for k, v in message.get("headers", ()):
                response.headers.add(k.decode("latin-1"), v.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body" and response is not None:
            data = message.get("body", b"")
            if data:
                await response.write(data)
            if not message.get("more_body", False):
                await response.write_eof()
                finished.set()

    try:
        await app(scope_of(request, state), receive, send)
    finally:
        finished.set()
    if response is None:
        return web.json_response({"error": "no_response", "message": "the MCP transport did "
                                  "not answer"}, status=502)
    return response
