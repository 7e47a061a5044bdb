"""A second, independent MCP client (issue 19, done-when 2): the official TypeScript SDK from npm,
run with Node against the whole stack over Streamable HTTP at /mcp with a Bearer token. It lists
the tools, reads, and asks for a write that is held until a human approves it over HTTP; then
its own status call returns the executed result.

Two clients, both pinned in tests/e2e/mcp_node/package-lock.json: `@modelcontextprotocol/sdk`
1.x (the 2025 revisions, initialize handshake) and `@modelcontextprotocol/client` 2.x pinned to
revision 2026-07-28 (server/discover, no initialize). The packages are installed with `npm ci`
into tests/e2e/mcp_node/node_modules when missing (never globally); Node >= 20 must be on PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.stack import Stack
from schemas import catalogue, ids
from schemas.tool_schema import parameters_schema
from tests.e2e.conftest import people, replicas, session_events, token
from tests.node_packages import NodeMissing, node_with

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NODE_DIR = Path(__file__).parent / "mcp_node"
STATUS_TOOL = "interlock_approval_status"
NODE_WAIT_S = 120.0  # a bound on one run of the script, not an expectation


@pytest.fixture(scope="module")
def node() -> str:
    """Node on PATH, with the pinned SDKs installed (once; kept in node_modules)."""
    try:
        return node_with(NODE_DIR, "this test runs the official TypeScript MCP SDK with it")
    except NodeMissing as exc:
        pytest.fail(str(exc))


async def ts(node: str, stack: Stack, sdk: str, *args: str) -> dict[str, Any]:
    """One run of client.mjs as the operator; the JSON document it printed."""
    env = {**os.environ, "INTERLOCK_URL": stack.url, "INTERLOCK_TOKEN": token(stack, "operator")}
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "client.mjs"), "--sdk", sdk, *args, cwd=NODE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_WAIT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    doc: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": "no output"}
    assert proc.returncode == 0, (doc, err.decode())
    assert "error" not in doc, (doc, err.decode())
    return doc


def started(evs: list[Any], call_id: str) -> int:
    """The executor's claims on the call (written before it touches the cluster)."""
    return sum(1 for e in evs
               if e.type == "tool.started" and getattr(e, "call_id", None) == call_id)


# v1: `@modelcontextprotocol/sdk` (2025-11-25); v2: `@modelcontextprotocol/client` (2026-07-28).
# Each scales web from what it is to a replica count of its own, so either may run alone.
SDKS = [("v1", "@modelcontextprotocol/sdk", "2025-11-25", 5),
        ("v2", "@modelcontextprotocol/client", "2026-07-28", 4)]


@pytest.mark.parametrize(("sdk", "package", "revision", "target"), SDKS,
                         ids=["sdk-1.x", "client-2.x"])
async def test_typescript_sdk_lists_reads_and_gets_a_held_write_executed_after_approval(
        stack: Stack, http: aiohttp.ClientSession, node: str,
        sdk: str, package: str, revision: str, target: int) -> None:
    operator, approver = people(stack, http)
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]
    before = replicas(stack)
    got = await ts(node, stack, sdk, "run", "--replicas", str(target))
    assert got["sdk"] == {"package": package,
                          "version": lock[f"node_modules/{package}"]["version"]}
    assert got["protocol_version"] == revision
    assert got["mcp_session_id"] is None  # stateless: no Mcp-Session-Id in any revision
    assert got["server"]["name"] == "interlock"

    # The tools are the catalogue, schemas and hints from it, and the one status tool.
    tools = {t["name"]: t for t in got["tools"]}
    assert set(tools) == {*catalogue.TOOLS, STATUS_TOOL}
    for name, tool in catalogue.TOOLS.items():
        hints = tools[name]["annotations"]
        assert (hints["readOnlyHint"], hints["destructiveHint"]) == (
            tool.access == "read", tool.access == "write"), name
        assert tools[name]["inputSchema"] == json.loads(json.dumps(
            parameters_schema(tool, meta_required=False))), name
    assert tools[STATUS_TOOL]["annotations"]["readOnlyHint"] is True
    assert tools[STATUS_TOOL]["annotations"]["destructiveHint"] is False

    # The read answers with its result.
    read = got["read"]
    assert read["isError"] is False, read
    assert read["structuredContent"]["status"] == "ok", read
    assert "web" in read["structuredContent"]["output"], read
    assert json.loads(read["text"][0]) == read["structuredContent"]

    # The write is held: the card's essentials, and nothing changed in the cluster.
    write = got["write"]
    held = write["structuredContent"]
    assert write["isError"] is False, write
    assert held["status"] == "held_for_approval", held
    aid, call_id, sid = held["approval_id"], held["call_id"], held["session_id"]
    [diff] = held["diff"]
    assert (diff["tool"], diff["call_id"]) == ("scale", call_id)
    assert diff["where"] | {"context": None} == {
        "context": None, "namespace": "shop", "kind": "deployment", "name": "web"}
    assert diff["changes"] == [f"spec.replicas: {before} → {target}"], diff
    assert held["required_approvals"] == 1
    assert held["expires_at"]
    assert aid in held["link"]
    assert STATUS_TOOL in held["next"]
    if sdk == "v1":
        assert before == 3  # the sandbox's web, untouched until a human approves below
    # A read through the executor after the hold: had the write been let through, it would
    # have run before this read's turn completed (the executor keeps a session's order).
    status, body = await operator.call("GET", f"/v1/sessions/{sid}")
    assert status == 200, body
    await operator.say(sid, "kubectl get deploy -n shop")
    await operator.wait_for(sid, lambda e: e.event == "turn.completed", after=int(body["last_seq"]))
    evs = await session_events(stack, sid)
    assert started(evs, call_id) == 0
    assert replicas(stack) == before
    # The call is on record as the operator's, from this client as it named itself: 2026-07-28
    # names the client in every request's _meta; the 2025 revisions name it only in
    # initialize, a request of its own to a stateless server, so the call's User-Agent does.
    [req] = [e for e in evs if e.type == "tool.requested"
             and ids.derived_id("c", e.event_id, "0") == call_id]
    assert req.actor == "operator"
    assert req.client == (f"interlock-e2e-typescript-{sdk} {got['sdk']['version']}"
                          if revision == "2026-07-28"
                          else f"interlock-e2e-typescript-{sdk}/{got['sdk']['version']}")

    # The client waits on the status tool while a human approves over HTTP (signed).
    waiting = asyncio.create_task(ts(node, stack, sdk, "status", aid, "60"))
    status, body = await approver.call("POST", f"/v1/approvals/{aid}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    outcome = await waiting
    assert outcome["protocol_version"] == revision
    done = outcome["status"]
    assert done["isError"] is False, done
    result = done["structuredContent"]
    assert result["status"] == "executed", result
    assert (result["approval_id"], result["approved_by"]) == (aid, "approver")
    [ran] = result["results"]
    assert (ran["call_id"], ran["tool"], ran["status"]) == (call_id, "scale", "ok"), ran
    assert replicas(stack) == target
    assert started(await session_events(stack, sid), call_id) == 1
