"""/mcp over real HTTP against a real gateway and nats-server: who may speak MCP at all, and the
transport's rules, before any tool runs (tests/e2e/test_mcp*.py run the tools on the stack)."""

from __future__ import annotations

import json
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from schemas import catalogue
from tests.integration.gateway.conftest import Gateway, token_of

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {}}}}
WIRE = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}


async def post(gateway: Gateway, role: str | None, headers: dict[str, str] | None = None,
               body: Any = LIST) -> tuple[int, str]:
    auth = {"Authorization": f"Bearer {token_of(role)}"} if role else {}
    async with gateway.http.post(f"{gateway.url}/mcp", data=json.dumps(body),
                                 headers={**WIRE, **auth, **(headers or {})}) as r:
        return r.status, await r.text()


async def test_only_operators_speak_mcp(gateway: Gateway) -> None:
    assert (await post(gateway, None))[0] == 401
    status, text = await post(gateway, "viewer")
    assert status == 403
    assert "operator" in text
    status, text = await post(gateway, "operator")
    assert status == 200, text
    names = {t["name"] for t in json.loads(text)["result"]["tools"]}
    assert set(catalogue.TOOLS) < names


async def test_a_browser_page_of_another_origin_is_refused(gateway: Gateway) -> None:
    # DNS rebinding: a page elsewhere that got hold of a token still may not drive /mcp.
    status, text = await post(gateway, "operator", {"Origin": "http://evil.example"})
    assert status == 403
    assert "forbidden_origin" in text
    status, _ = await post(gateway, "operator", {"Origin": gateway.url})
    assert status == 200


async def test_no_stream_and_no_session_to_delete(gateway: Gateway) -> None:
    for method in ("GET", "DELETE"):
        async with gateway.http.request(method, f"{gateway.url}/mcp", headers={
                "Authorization": f"Bearer {token_of('operator')}"}) as r:
            assert r.status == 405
            assert r.headers["Allow"] == "POST"


async def test_a_malformed_session_header_is_a_400(gateway: Gateway) -> None:
    status, text = await post(gateway, "operator", {"Interlock-Session": "../../x"})
    assert status == 400
    assert "invalid_id" in text


async def test_the_official_client_lists_the_catalogue_with_hints(gateway: Gateway) -> None:
    # The client's httpx client is the caller's to close (left to the garbage collector, its
    # socket's ResourceWarning may fire inside a later ast.parse and break it on Python 3.11).
    async with create_mcp_http_client(headers={
            "Authorization": f"Bearer {token_of('operator')}"}) as http, \
            Client(streamable_http_client(f"{gateway.url}/mcp", http_client=http)) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    for name, tool in catalogue.TOOLS.items():
        hints = tools[name].annotations
        assert hints is not None
        assert hints.read_only_hint is (tool.access == "read"), name
        assert hints.destructive_hint is (tool.access == "write"), name
    assert tools["interlock_approval_status"].annotations.read_only_hint  # type: ignore[union-attr]
    assert not any("approve" in n or "decide" in n or "decision" in n for n in tools)
