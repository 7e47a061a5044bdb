"""`interlock mcp`: Interlock's MCP server for a local client (Claude Code, Cursor, an IDE) over
stdio, bridged to the gateway's `/mcp` with the official `mcp` SDK on both sides.

Nothing is decided here: the tools, their results and every rule are the gateway's (and behind
it the planner's, the gate's, the executor's). The bridge adds one thing, the conversation: one
`interlock mcp` process is one conversation, so it opens one Interlock session (on its first
call) and names it in the `Interlock-Session` header of every request it forwards. The token is
an operator's ($INTERLOCK_TOKEN), or without one the sign-in `interlock login` stored for the
gateway (its ID token, renewed when due, set on each request); whatever its roles, no MCP tool
approves.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import aiohttp
import anyio
import anyio.abc
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client

from clients.credentials import LoginError, Store, TokenSource
from clients.http import default_url

SESSION_HEADER = "Interlock-Session"


class BridgeError(Exception):
    pass


def _client_name(ctx: Any) -> str:
    """How the local client named itself (the SDK keeps it as the connection's client_params,
    from its initialize or, 2026-07-28, from each request's _meta)."""
    params = getattr(ctx.session, "client_params", None)
    if params is None:
        return "an MCP client"
    info = params.client_info
    return f"{info.name} {info.version or ''}".strip()[:80]


class Bridge:
    def __init__(self, url: str, token: str, session: str = "", title: str = "",
                 signed_in: bool = False) -> None:
        self.url, self.token = url.rstrip("/"), token
        # Without a token: the stored sign-in, read (and renewed) before each request.
        self.signed_in = signed_in
        self.source: TokenSource | None = None
        self.session, self.title = session, title
        self.client = ""
        self._upstream: Client | None = None
        self._failed: BaseException | None = None
        self._ready: anyio.Event | None = None
        self._closing = anyio.Event()
        self._tasks: anyio.abc.TaskGroup | None = None
        self.server: Server[Any] = Server(
            "interlock", version="0.1.0", title="Interlock (stdio)",
            on_list_tools=self.list_tools, on_call_tool=self.call_tool)

    async def bearer(self) -> str:
        if self.source is not None:
            try:
                self.token = await self.source.token()
            except LoginError as exc:
                raise BridgeError(str(exc)) from None
        return f"Bearer {self.token}"

    async def _authorize(self, request: Any) -> None:
        """An httpx request hook: the current bearer credential on every request to /mcp."""
        request.headers["Authorization"] = await self.bearer()

    async def _open_session(self) -> str:
        auth = await self.bearer()
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/v1/sessions", headers={"Authorization": auth},
                json={"title": self.title or f"MCP: {self.client} (stdio)"},
                timeout=aiohttp.ClientTimeout(total=30)) as r:
            body = await r.text()
            if r.status != 201:
                raise BridgeError(f"the gateway at {self.url} did not open a session: "
                                  f"{r.status} {body[:300]}")
            return str(json.loads(body)["session_id"])

    async def _hold_upstream(self) -> None:
        """The gateway's /mcp for the whole run, in a task of its own (the SDK's client is
        entered and left in one task)."""
        assert self._ready is not None
        try:
            if not self.session:
                self.session = await self._open_session()
            http = create_mcp_http_client(headers={SESSION_HEADER: self.session})
            http.event_hooks["request"].append(self._authorize)
            async with Client(
                    streamable_http_client(f"{self.url}/mcp", http_client=http),
                    # Recorded by the gateway as "<name> <version>": "claude-code 2.1.0 via
                    # interlock mcp".
                    client_info=types.Implementation(
                        name=self.client, version="via interlock mcp")) as up:
                self._upstream = up
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:  # noqa: BLE001 - told to every request, and on stderr
            self._failed = exc
            sys.stderr.write(f"interlock mcp: cannot reach {self.url}/mcp: {exc}\n")
        finally:
            self._ready.set()

    async def upstream(self, ctx: Any) -> Client:
        """Opened on the first request, when the client has named itself."""
        if self._ready is None:
            assert self._tasks is not None
            self._ready = anyio.Event()
            self.client = _client_name(ctx)
            self._tasks.start_soon(self._hold_upstream)
        await self._ready.wait()
        if self._upstream is None:
            raise BridgeError(f"cannot reach the gateway at {self.url}: {self._failed}")
        return self._upstream

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return await (await self.upstream(ctx)).list_tools()

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        try:
            up = await self.upstream(ctx)
        except BridgeError as exc:
            return types.CallToolResult(is_error=True, content=[types.TextContent(
                type="text", text=f"interlock mcp: {exc}")])

        async def forward(progress: float, total: float | None, message: str | None) -> None:
            with contextlib.suppress(Exception):  # a courtesy; the answer still comes
                await ctx.session.report_progress(progress, total, message)

        return await up.call_tool(params.name, dict(params.arguments or {}),
                                  progress_callback=forward)

    async def serve(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self.signed_in:
                http = await stack.enter_async_context(aiohttp.ClientSession())
                self.source = TokenSource.stored(http, self.url)
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                async with stdio_server() as (read, write):
                    await self.server.run(read, write,
                                          self.server.create_initialization_options())
                self._closing.set()


def run(url: str | None, token: str | None, session: str | None, title: str | None) -> int:
    url = default_url(url)
    token = token or os.environ.get("INTERLOCK_TOKEN", "")
    if not token:
        try:
            stored = Store().get(url)
        except LoginError as exc:
            sys.stderr.write(f"interlock mcp: {exc}\n")
            return 2
        if stored is None:
            sys.stderr.write(f"interlock mcp: set INTERLOCK_TOKEN (an operator's token), pass "
                             f"--token, or sign in to {url} with `interlock login`\n")
            return 2
    bridge = Bridge(url, token, session or "", title or "", signed_in=not token)
    try:
        anyio.run(bridge.serve)
    except KeyboardInterrupt:
        return 130
    return 0
