"""A data dir written before issue 14 (one NATS account, unsigned events, v1 grants) is read by
today's `interlock up`: the old log is where it was, its session folds and audits as before, and
the verdict says plainly that its events carry no writer signature — while everything written
from then on is signed and checked.

The fixture `data/data-dir-before-issue-14.tar.gz` is the data dir of `interlock up` at commit
e357ff5 after one direct-mode session (a read, then `kubectl scale deploy/web --replicas=4 -n
shop` approved by `approver`), stopped with Ctrl-C; the sandbox's state is not part of it."""

from __future__ import annotations

import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from launcher.stack import Stack
from schemas import subjects as S
from services.runtime import identity
from tests.e2e.conftest import bus_as, stack_on_old_data
from tests.support import Client

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parent / "data" / "data-dir-before-issue-14.tar.gz"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def upgraded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    with tarfile.open(FIXTURE) as tar:  # the old layout: no signing keys yet
        assert not [n for n in tar.getnames() if n.split("/")[0] == "keys"]
    stack = await stack_on_old_data(tmp_path_factory, FIXTURE)
    try:
        yield stack
    finally:
        await stack.stop()


def old_session(stack: Stack) -> dict[str, object]:
    doc: dict[str, object] = json.loads((stack.data / "old-session.json").read_text())
    return doc


@pytest.mark.asyncio(loop_scope="module")
async def test_the_old_log_is_read_where_it_was_and_its_verdict_names_it_unsigned(
    upgraded: Stack,
) -> None:
    old = old_session(upgraded)
    sid, n = str(old["session_id"]), int(str(old["events"]))
    ring = identity.load_keyring(upgraded.keys / identity.KEYRING_FILE)
    assert ring.unsigned_before == n + 1  # signing began right after the old log's last event
    async with aiohttp.ClientSession() as http:
        viewer = Client(http, upgraded.url, str(upgraded.tokens["viewer"]["token"]))
        status, state = await viewer.call("GET", f"/v1/sessions/{sid}")
        assert status == 200, state
        status, audit = await viewer.call("GET", f"/v1/sessions/{sid}/audit")
        assert status == 200, audit
        # Every old event is there, in order, and the hash chain still holds.
        assert len(audit["timeline"]) == n
        assert [e["seq"] for e in audit["timeline"]] == list(range(1, n + 1))
        assert audit["integrity"]["chain"]["ok"] is True
        # The old write reads as it did: who asked, who approved, what changed, the result.
        (write,) = audit["writes"]
        assert write["requested_by"] == "operator"
        assert write["approvers"] == ["approver"]
        assert write["decision"] == "approved"
        assert write["diff"] == ["spec.replicas: 3 → 4"]
        assert write["result"] == "ok"
        # ... and its v1 grant still verifies (no grant problem), but nothing in it is signed by
        # its writer, so the verdict cannot be ok and names every event.
        problems = audit["integrity"]["problems"]
        assert {p["seq"] for p in problems if p.get("signature") == "unsigned"} == \
            set(range(1, n + 1))
        assert [p for p in problems if "signature" not in p] == []
        assert audit["integrity"]["ok"] is False
        # The live view replays the old events too.
        events = await viewer.wait_for(sid, lambda e: e.id == n)
        assert [e.id for e in events] == list(range(1, n + 1))


@pytest.mark.asyncio(loop_scope="module")
async def test_after_the_upgrade_new_work_is_signed_and_audits_intact(upgraded: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        operator = Client(http, upgraded.url, str(upgraded.tokens["operator"]["token"]))
        sid = await operator.new_session()
        await operator.say(sid, "kubectl get deploy web -n shop")
        await operator.wait_for(sid, lambda e: e.event == "turn.completed")
        status, audit = await operator.call("GET", f"/v1/sessions/{sid}/audit")
        assert status == 200, audit
        types = [e["type"] for e in audit["timeline"]]
        assert "tool.result" in types
        assert audit["integrity"]["problems"] == []
        assert audit["integrity"]["ok"] is True
        # The planner's consumer, provisioned before MCP existed, takes an MCP client's calls
        # (its filters were brought up to date at start-up, issue 19).
        http_mcp = create_mcp_http_client(
            headers={"Authorization": f"Bearer {upgraded.tokens['operator']['token']}"})
        async with McpClient(streamable_http_client(f"{upgraded.url}/mcp",
                                                    http_client=http_mcp)) as mcp:
            read = await mcp.call_tool("get", {"kind": "deployment", "name": "web",
                                               "namespace": "shop"})
        assert not read.is_error, read
        assert "web" in str((read.structured_content or {}).get("output")), read
    # The old data dir's EXEC command queue was empty, so it was deleted (issue 17: commands are
    # events); the old log's classifications and grants were not run again (the first test:
    # its session holds exactly the events it had).
    bus = await bus_as(upgraded, "admin")
    try:
        assert sorted(s.config.name for s in await bus.js.streams_info()) == [
            S.EVENTS_STREAM, S.PRESENCE_STREAM, S.SEALED_STREAM]
    finally:
        await bus.close()
