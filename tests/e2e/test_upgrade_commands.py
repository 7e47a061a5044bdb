"""A data dir written before commands became events (issue 17) is read by today's `interlock up`:
its signed log folds and audits intact, nothing in it runs again, and new work runs.

The fixture `data/data-dir-before-issue-17.tar.gz` is the data dir of `interlock up` at commit
0a9661d (the executor consumed commands from the EXEC work queue; every event signed by its
writer) after one direct-mode session — `kubectl get pods -n shop`, then `kubectl scale
deploy/web --replicas=4 -n shop` approved by `approver`, executed and verified — stopped with
SIGTERM; its EXEC stream is empty. The sandbox's state is not part of it (the sandbox starts
fresh: web has 3 replicas), so a grant of the old log run again would show as 4 replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from launcher.nats import free_port
from launcher.stack import Stack
from tests.e2e.conftest import stack_on_old_data
from tests.support import Client

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parent / "data" / "data-dir-before-issue-17.tar.gz"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def upgraded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await stack_on_old_data(tmp_path_factory, FIXTURE)
    try:
        yield stack
    finally:
        await stack.stop()


def old_session(stack: Stack) -> tuple[str, int]:
    doc = json.loads((stack.data / "old-session.json").read_text())
    return str(doc["session_id"]), int(doc["events"])


async def audit_of(client: Client, sid: str) -> dict[str, object]:
    status, audit = await client.call("GET", f"/v1/sessions/{sid}/audit")
    assert status == 200, audit
    return dict(audit)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_old_log_audits_intact_and_nothing_in_it_runs_again(upgraded: Stack) -> None:
    sid, n = old_session(upgraded)
    async with aiohttp.ClientSession() as http:
        operator = Client(http, upgraded.url, str(upgraded.tokens["operator"]["token"]))
        approver = Client(http, upgraded.url, str(upgraded.tokens["approver"]["token"]))
        audit = await audit_of(operator, sid)
        timeline = audit["timeline"]
        assert isinstance(timeline, list)
        assert len(timeline) == n
        integrity = audit["integrity"]
        assert isinstance(integrity, dict)
        # Signed by their writers, chained, grants verified: nothing to report.
        assert integrity["problems"] == [], integrity
        assert integrity["ok"] is True
        (write,) = audit["writes"]  # type: ignore[misc]
        assert (write["requested_by"], write["approvers"], write["decision"], write["diff"],
                write["result"]) == ("operator", ["approver"], "approved",
                                     ["spec.replicas: 3 → 4"], "ok")

        # New work in a new session: a read, then a write approved and executed. The executor
        # takes the log in order, so once this write's result is recorded it has passed every
        # old classification and grant it might have been (wrongly) given.
        new = await operator.new_session()
        await operator.say(new, "kubectl get deploy web -n shop")
        got = await operator.wait_for(new, lambda e: e.event == "tool.result")
        assert got[-1].data["status"] == "ok", got[-1].data
        assert '"replicas": 3' in got[-1].data["output"], got[-1].data["output"]
        await operator.say(new, "kubectl scale deploy/web --replicas=5 -n shop")
        got = await operator.wait_for(new, lambda e: e.event == "approval.requested",
                                      after=got[-1].id or 0)
        card = got[-1].data
        # The card's diff starts from the fresh sandbox's 3: the old grant (→ 4) did not run.
        changes = [(d["path"], d["before"], d["after"]) for c in card["calls"] for d in c["diff"]]
        assert ("spec.replicas", 3, 5) in changes, changes
        status, body = await approver.call(
            "POST", f"/v1/approvals/{card['approval_id']}/decision", {"decision": "approve"})
        assert status == 202, body
        got = await operator.wait_for(new, lambda e: e.event in ("tool.result", "command.refused"),
                                      after=got[-1].id or 0)
        assert got[-1].event == "tool.result", got[-1].data
        assert got[-1].data["status"] == "ok", got[-1].data

        # The old session gained nothing: no second run, no refusal of a replayed grant.
        again = await audit_of(operator, sid)
        assert len(again["timeline"]) == n  # type: ignore[arg-type]
        new_audit = await audit_of(operator, new)
        assert new_audit["integrity"]["ok"] is True, new_audit["integrity"]  # type: ignore[index]


PENDING = Path(__file__).parent / "data" / "data-dir-pending-exec-command.tar.gz"


def test_a_command_still_waiting_in_exec_stops_the_upgrade_and_is_kept(tmp_path: Path) -> None:
    """`data/data-dir-pending-exec-command.tar.gz`: the same session at 0a9661d, then the
    executor stopped and `kubectl get deploy -n shop` asked: its command waits in EXEC. This
    version does not run EXEC commands, so `interlock up` must refuse to start on it — saying
    why and what to do — rather than drop an acknowledged command; the stream stays as it was."""
    data = tmp_path / "data"
    with tarfile.open(PENDING) as tar:
        tar.extractall(data, filter="data")
    exec_dir = data / "jetstream" / "jetstream" / "APP" / "streams" / "EXEC"
    assert exec_dir.is_dir()
    exe = str(Path(sys.prefix, "bin", "interlock"))
    up = subprocess.run([exe, "up", "--port", str(free_port()), "--data", str(data)],
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 1, up.stdout + up.stderr
    said = up.stdout + up.stderr
    assert "interlock up failed" in said
    assert "still holds 1 command(s) not yet executed" in said
    assert "Start the previous version" in said
    assert "Traceback" not in said
    # Kept: not deleted, and no executor consumer of this version was created on the log.
    assert exec_dir.is_dir()
    assert not (data / "jetstream" / "jetstream" / "APP" / "streams" / "EVENTS" / "obs" /
                "executor").exists()
