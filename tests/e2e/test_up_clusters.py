"""`interlock up --kubeconfig merged --context a --context b` as a person runs it (issue 21, done
when 4): two real sandboxes as two clusters, one `interlock up` process serving both through a
local spoke each (a leaf nats-server and an executor), `interlock clusters` listing them, reads
answered by the right sandbox, and a write to a context outside the list refused before any
card."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from launcher.nats import free_port
from sandbox.cli import READY_PREFIX
from tests.e2e.conftest import ROOT, run_cli
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
TOKEN = "clusters-admin-token-0123456789"
UP_WAIT_S = 120.0  # bounds, not expectations
CONNECTED_WAIT_S = 60.0


@dataclass
class World:
    url: str
    banner: str
    merged: Path
    servers: dict[str, str]  # context -> its sandbox's API server URL
    env: dict[str, str]
    data: Path
    pid: int  # the `interlock up` process


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without a model (direct mode) and without contexts of its own."""
    drop = ("INTERLOCK_MODEL", "OPENAI_API_KEY", "INTERLOCK_KUBE_CONTEXTS", "KUBECONFIG")
    return {**{k: v for k, v in os.environ.items() if k not in drop},
            "INTERLOCK_ADMIN_TOKEN": TOKEN, **extra}


async def _sandbox(path: Path, context: str) -> tuple[asyncio.subprocess.Process, str]:
    """A real sandbox process whose kubeconfig names its context `context`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox", "--port", "0", "--kubeconfig", str(path), "--context",
        context, "--scenario", "baseline", "--time-scale", "0.05", cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert line.startswith(READY_PREFIX), line
    return proc, line[len(READY_PREFIX):].strip()


def _merge(out: Path, *files: Path, alias: tuple[str, str]) -> Path:
    """One kubeconfig holding every file's context, plus `alias[0]`: another context on the
    cluster of `alias[1]` (reachable, but not served)."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [],
                              "users": [], "contexts": [], "preferences": {}}
    for f in files:
        doc = yaml.safe_load(f.read_text())
        for key in ("clusters", "users", "contexts"):
            merged[key] += doc[key]
    [base] = [c for c in merged["contexts"] if c["name"] == alias[1]]
    merged["contexts"].append({"name": alias[0], "context": dict(base["context"])})
    merged["current-context"] = alias[0]  # not served: nothing may run on it anyway
    out.write_text(yaml.safe_dump(merged))
    out.chmod(0o600)
    return out


async def _read_until_ready(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            break
        lines.append(raw.decode())
        if "Press Ctrl-C" in lines[-1] or "failed" in lines[-1]:
            break
    return "".join(lines)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    """A live process's command line; "" once it is gone (or a zombie)."""
    try:
        if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z":
            return ""
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except (OSError, IndexError):
        return ""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("clusters")
    sandboxes: list[asyncio.subprocess.Process] = []
    up: asyncio.subprocess.Process | None = None
    try:
        (pa, url_a), (pb, url_b) = await asyncio.gather(_sandbox(tmp / "a.yaml", "a"),
                                                        _sandbox(tmp / "b.yaml", "b"))
        sandboxes += [pa, pb]
        merged = _merge(tmp / "merged.yaml", tmp / "a.yaml", tmp / "b.yaml", alias=("c", "a"))
        port = free_port()
        env = _env()
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "launcher.cli", "up", "--port", str(port), "--data",
            str(tmp / "data"), "--kubeconfig", str(merged), "--context", "a", "--context", "b",
            cwd=str(ROOT), env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        banner = await asyncio.wait_for(_read_until_ready(up), UP_WAIT_S)
        assert "Press Ctrl-C" in banner, banner
        yield World(f"http://127.0.0.1:{port}", banner, merged, {"a": url_a, "b": url_b}, env,
                    tmp / "data", up.pid)
    finally:
        children: dict[int, str] = {}
        if up is not None and up.returncode is None:
            children = {pid: _cmdline(pid) for pid in _children(up.pid)}
            os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
            try:
                await asyncio.wait_for(up.communicate(), 60)
            except TimeoutError:
                os.killpg(up.pid, signal.SIGKILL)
                await up.wait()
        for p in sandboxes:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            await p.wait()
    assert up is not None
    assert up.returncode == 0, up.returncode
    # Ctrl-C stopped every process it started: the hub's and both spokes' (their nats-server
    # and executor), none left behind.
    names = list(children.values())
    assert sum("services.executor" in n for n in names) == 2, names
    assert sum("nats-server" in n for n in names) == 3, names
    assert [n for n in map(_cmdline, children) if n] == [], "still running"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def admin(world: World) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        yield Client(http, world.url, TOKEN)


async def _clusters(world: World) -> list[dict[str, Any]]:
    """`interlock clusters --json`, until both report connected (the spokes' first beats)."""
    env = {**world.env, "INTERLOCK_URL": world.url, "INTERLOCK_TOKEN": TOKEN}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECTED_WAIT_S
    while True:
        code, out, err = await run_cli(env, "clusters", "--json")
        assert code == 0, err
        listed = list(json.loads(out)["clusters"])
        if all(c["connected"] for c in listed) or loop.time() > deadline:
            return listed
        await asyncio.sleep(0.5)


async def test_up_serves_both_contexts_and_interlock_clusters_lists_them(world: World,
                                                                        admin: Client) -> None:
    assert "  Clusters        a (default), b" in world.banner, world.banner
    listed = await _clusters(world)
    assert [(c["name"], c["default"], c["connected"]) for c in listed] == [
        ("a", True, True), ("b", False, True)], listed
    for c in listed:
        assert c["last_seen"], c
        assert c["roles"] == ["all"], c
        assert c["version"], c
    env = {**world.env, "INTERLOCK_URL": world.url, "INTERLOCK_TOKEN": TOKEN}
    code, out, err = await run_cli(env, "clusters")
    assert code == 0, err
    _, row_a, row_b, total = out.splitlines()
    assert row_a.split()[:3] == ["a", "yes", "yes"]
    assert row_b.split()[:2] == ["b", "yes"]
    assert total == "2 of 2 cluster(s) connected"
    # Any signed-in person may ask (a viewer), nobody unsigned.
    tokens = json.loads((world.data / "tokens.json").read_text())["tokens"]
    [viewer] = [t["token"] for t in tokens if t["principal"] == "viewer"]
    status, body = await admin.call("GET", "/v1/clusters", token=viewer)
    assert status == 200, body
    assert [c["name"] for c in body["clusters"]] == ["a", "b"]
    async with admin.http.get(world.url + "/v1/clusters") as r:
        assert r.status == 401


async def _answer(admin: Client, sid: str, text: str, after: int) -> Any:
    """The tool.result or tool.refused of one command said in the session."""
    await admin.say(sid, text)
    seen = await admin.wait_for(sid, lambda e: e.event in ("tool.result", "tool.refused"),
                                after=after)
    return seen


async def test_a_read_on_each_context_answers_from_its_own_sandbox(world: World,
                                                                  admin: Client) -> None:
    await _clusters(world)
    sid = await admin.new_session()
    after = 0
    for context, other in (("a", "b"), ("b", "a")):
        seen = await _answer(admin, sid, f"kubectl cluster-info --context {context}", after)
        after = seen[-1].id
        assert seen[-1].event == "tool.result", seen[-1].data
        output = str(seen[-1].data["output"])
        assert f"running at {world.servers[context]}" in output, output
        assert world.servers[other] not in output
    # A call naming no context goes to the default cluster, a.
    seen = await _answer(admin, sid, "kubectl cluster-info", after)
    assert world.servers["a"] in str(seen[-1].data["output"]), seen[-1].data


async def test_a_write_outside_the_list_is_refused_without_a_card(world: World,
                                                                 admin: Client) -> None:
    """c is in the kubeconfig (on sandbox a's server) and `nowhere` is not: neither is served,
    so a write to either is refused at once — no dry run, no card."""
    await _clusters(world)
    sid = await admin.new_session()
    after = 0
    for context in ("c", "nowhere"):
        seen = await _answer(
            admin, sid, f"kubectl scale deploy/web --replicas=5 -n shop --context {context}",
            after)
        after = seen[-1].id
        assert seen[-1].event == "tool.refused", [(e.event, e.data) for e in seen]
        assert (f"cluster '{context}' is not allowed here (allowed: a, b)"
                in str(seen[-1].data)), seen[-1].data
        assert not [e for e in seen if e.event in ("approval.requested", "preview.recorded")]
    status, body = await admin.call("GET", "/v1/approvals?state=all")
    assert status == 200, body
    assert not [a for a in body["approvals"] if a["session_id"] == sid], body


def _spoke_procs(world: World, cluster: str) -> dict[str, int]:
    """The live nats-server and executor of one cluster's spoke, children of `interlock up`."""
    out = {}
    for pid in _children(world.pid):
        line = _cmdline(pid)
        if "nats-server" in line and f"/spokes/{cluster}/" in line:
            out["nats-server"] = pid
        elif "services.executor" in line and Path(f"/proc/{pid}/environ").read_bytes().find(
                f"INTERLOCK_CLUSTER={cluster}\0".encode()) >= 0:
            out["executor"] = pid
    return out


async def test_a_spokes_processes_that_die_are_started_again(world: World,
                                                            admin: Client) -> None:
    """Spoke b's nats-server and executor killed outright: `interlock up` starts both again
    and b answers reads again (from its own sandbox)."""
    before = _spoke_procs(world, "b")
    assert set(before) == {"nats-server", "executor"}, before
    killed_at = datetime.now(UTC)
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECTED_WAIT_S
    while True:
        now = _spoke_procs(world, "b")
        if set(now) == set(before) and not set(now.values()) & set(before.values()):
            break
        assert loop.time() < deadline, f"not started again: {now} (were {before})"
        await asyncio.sleep(0.1)
    # The new executor has reported (what the gate checks before it sends b a call): a call
    # sent before that could be handed to the killed one and wait out its ack deadline.
    while True:
        status, body = await admin.call("GET", "/v1/clusters")
        assert status == 200, body
        (row,) = [c for c in body["clusters"] if c["name"] == "b"]
        seen = row["last_seen"]
        if row["connected"] and seen and datetime.fromisoformat(seen) > killed_at:
            break
        assert loop.time() < deadline, f"b did not report again: {row}"
        await asyncio.sleep(0.2)
    sid = await admin.new_session()
    seen = await _answer(admin, sid, "kubectl cluster-info --context b", 0)
    assert seen[-1].event == "tool.result", seen[-1].data
    assert f"running at {world.servers['b']}" in str(seen[-1].data["output"])


async def test_the_callers_kube_contexts_reach_interlock_up(world: World,
                                                            tmp_path: Path) -> None:
    """INTERLOCK_KUBE_CONTEXTS exported before `interlock up` is read by it (it was dropped):
    here a list naming a context the kubeconfig lacks stops it before anything starts. (That
    a,b serves both like the flags is tests/unit/test_up_contexts.py.)"""
    env = _env(INTERLOCK_KUBE_CONTEXTS="a,nowhere")
    code, out, _ = await run_cli(env, "up", "--port", str(free_port()), "--data",
                                 str(tmp_path / "data"), "--kubeconfig", str(world.merged))
    assert code == 1
    assert (f"interlock up failed: context 'nowhere' is not in {world.merged} (its contexts: "
            "a, b, c)") in out, out
    assert not (tmp_path / "data").exists()  # nothing started, nothing written
