"""Issue 21 end to end: ONE hub (log, planner, gate, gateway, with INTERLOCK_CLUSTERS=a,b and a
leaf-node port) and two clusters, each a real sandbox with its own spoke — a leaf nats-server
joined to the hub as that cluster's identity, and an executor behind it (launcher/spoke.py).
All real processes and servers on loopback; what a cluster holds is read with the official
kubernetes client, and every stored write each sandbox answered is counted in the sandbox.

1. Reads and an approved write reach the cluster they name (or the session's default, or the
   deployment's, a) and no other; the card names the cluster.
2. A grant for cluster a re-published on b's subject with the gate's own identity and key (a
   compromised gate) is refused by b's executor — recorded, zero executions; a result that
   spoke b writes for one of a's calls is not believed (the audit flags it).
3. A spoke that drops mid-write — its leaf nats-server killed, or its executor killed — runs
   the write exactly once: the outcome is recorded after it reconnects (the real one, or
   "outcome unknown — verify" with what the cluster shows); a call to a cluster whose spoke is
   gone is refused at once, in words, with no card.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes import client, config

from launcher.nats import free_port
from launcher.spoke import Spoke
from launcher.stack import Stack
from sandbox.apiserver.policy import SLOW_WRITE
from sandbox.kubeconfig import write_kubeconfig
from sandbox.testing import running_sandbox
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ApprovalGranted
from schemas.execution import ToolResult, ToolStarted
from schemas.planning import ToolProposed
from services.runtime import identity, natsconf, presence
from services.runtime.bus import Bus
from services.runtime.identity import SIGNATURE_HEADER
from services.runtime.sealing.blobs import SealError
from services.runtime.sealing.opener import opener_for
from services.runtime.settings import NatsSettings
from tests.chaos.support import create_targets
from tests.e2e.conftest import bus_as, people, session_events, start_stack
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]

CLUSTERS = ("a", "b")
NS = "mc"
INTERVAL_S = 0.5  # presence beats: a cluster is gone after three missed ones
ACK_WAIT_S = 3.0  # a killed executor's grant comes back this soon
SLOW_S = 4.0  # how long the sandbox holds its answer to a write on a `slow` deployment
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
WAIT_S = 60.0  # a bound on one wait, not an expectation


@dataclass
class Cluster:
    """One sandbox, the stored writes it answered, its kubeconfig and its spoke."""

    name: str
    url: str
    kubeconfig: Path
    writes: list[tuple[str, str]] = field(default_factory=list)
    spoke: Any = None

    def scale_writes(self, deployment: str) -> int:
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/{deployment}/scale"
        return sum(1 for _, p in self.writes if p == path)

    def replicas(self, deployment: str) -> int:
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            dep = client.AppsV1Api(api).read_namespaced_deployment(deployment, NS)
            return int(dep.spec.replicas)
        finally:
            api.close()


def _count_writes(cluster: Cluster, sandbox: Any) -> None:
    """Every stored (non-dry-run) write the sandbox answered, as (method, path)."""
    original = sandbox.api.handle

    async def counted(request: web.Request) -> web.StreamResponse:
        # Counted when the request arrives (a slow write is stored before it is answered).
        if request.method in MUTATING and "All" not in request.query.getall("dryRun", []):
            cluster.writes.append((request.method, request.path))
        return await original(request)

    sandbox.api.handle = counted


RESULT_RETRIED = "the result of a write could not be recorded yet"


def executor_log(spoke: Spoke) -> str:
    return spoke._log_path("all").read_text(errors="replace")


@dataclass
class World:
    stack: Stack
    clusters: dict[str, Cluster]
    operator: Client
    approver: Client
    began: float


async def _until(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Polls `check` (sync or async) until it returns something truthy, within a bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _connected(stack: Stack, cluster: str, want: bool) -> bool:
    bus = await bus_as(stack, "gate")
    try:
        found = await presence.read_clusters(bus)
    finally:
        await bus.close()
    return presence.connected(found.get(cluster, []), datetime.now(UTC), INTERVAL_S) == want


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory,
                http: aiohttp.ClientSession) -> AsyncIterator[World]:
    began = time.monotonic()
    root = tmp_path_factory.mktemp("multicluster")
    with contextlib.ExitStack() as sandboxes:
        clusters: dict[str, Cluster] = {}
        for name in CLUSTERS:
            run = sandboxes.enter_context(running_sandbox(root / f"{name}.sandbox.kubeconfig"))
            # Its kubeconfig context named for the cluster, as `interlock up --context` has it.
            kc = write_kubeconfig(root / f"{name}.kubeconfig", run.url, context=name)
            c = Cluster(name, run.url, kc)
            _count_writes(c, run.sandbox)
            await create_targets(run.url, ["web", f"only-{name}"], namespace=NS)
            await create_targets(run.url, ["slow"], {SLOW_WRITE: str(SLOW_S)}, namespace=NS)
            clusters[name] = c
        leaf_port = free_port()
        env = {"INTERLOCK_CLUSTERS": ",".join(CLUSTERS),
               "INTERLOCK_PRESENCE_INTERVAL": str(INTERVAL_S)}
        stack = await start_stack(tmp_path_factory, extra_env=env, clusters=CLUSTERS,
                                  leaf_port=leaf_port, ack_wait_s=ACK_WAIT_S,
                                  kubeconfig=clusters["a"].kubeconfig)
        try:
            for name, c in clusters.items():
                c.spoke = Spoke(
                    name, f"nats://127.0.0.1:{leaf_port}",
                    stack.credentials[natsconf.spoke_user(name)], c.kubeconfig,
                    root / f"spoke-{name}", stack.data / "gate.pub",
                    stack.keys / identity.KEYRING_FILE,
                    stack.keys / identity.executor_key_file(name),
                    extra_env={"INTERLOCK_PRESENCE_INTERVAL": str(INTERVAL_S)})
                await c.spoke.start()
            for name in CLUSTERS:
                await _until(f"cluster {name} connected",
                             lambda n=name: _connected(stack, n, True))
            operator, approver = people(stack, http)
            yield World(stack, clusters, operator, approver, began)
        finally:
            for c in clusters.values():
                if c.spoke is not None:
                    await c.spoke.stop()
            codes = await stack.stop()
            print(f"\ntest_multicluster: one hub, two spokes, wall time "
                  f"{time.monotonic() - began:.1f} s")
    assert all(code == 0 for code in codes.values()), codes


async def _say(w: World, sid: str, text: str, after: int = 0,
               until: tuple[str, ...] = ("tool.result", "tool.refused", "command.refused",
                                         "approval.requested")) -> Any:
    await w.operator.say(sid, text)
    seen = await w.operator.wait_for(sid, lambda e: e.event in until, after=after,
                                     timeout=WAIT_S)
    return seen[-1]


async def _approve(w: World, sid: str, card: Any) -> Any:
    status, body = await w.approver.call(
        "POST", f"/v1/approvals/{card.data['approval_id']}/decision", {"decision": "approve"})
    assert status == 202, body
    seen = await w.operator.wait_for(
        sid, lambda e: e.event in ("tool.result", "command.refused"), after=card.id,
        timeout=WAIT_S)
    return seen[-1]


async def test_reads_and_an_approved_write_reach_their_cluster_only(world: World) -> None:
    w = world
    sid = await w.operator.new_session()
    # A read naming b runs on b; one naming none runs on the default, a.
    got = await _say(w, sid, f"kubectl get deploy only-b -n {NS} --context b")
    assert got.event == "tool.result" and got.data["status"] == "ok", got.data
    assert got.data["cluster"] == "b"
    got = await _say(w, sid, f"kubectl get deploy only-a -n {NS}", after=got.id)
    assert got.event == "tool.result" and got.data["status"] == "ok", got.data
    assert got.data["cluster"] == "a"
    got = await _say(w, sid, f"kubectl get deploy only-b -n {NS}", after=got.id)
    assert got.data["status"] == "error" and "NotFound" in got.data["output"], got.data

    # A write on b: the card names b; approved, it changes b and nothing on a.
    card = await _say(w, sid, f"kubectl scale deploy/web --replicas=3 -n {NS} --context b",
                      after=got.id)
    assert card.event == "approval.requested", card.data
    (call,) = card.data["calls"]
    assert call["target"]["cluster"] == "b"
    assert call["context"] == "b"
    assert card.data["title"].endswith(" on cluster b"), card.data["title"]
    result = await _approve(w, sid, card)
    assert result.data["status"] == "ok", result.data
    assert result.data["cluster"] == "b"
    b, a = w.clusters["b"], w.clusters["a"]
    assert await asyncio.to_thread(b.replicas, "web") == 3
    assert await asyncio.to_thread(a.replicas, "web") == 1
    assert (a.scale_writes("web"), b.scale_writes("web")) == (0, 1)

    # A session whose default is b: a call naming no cluster runs on b.
    status, body = await w.operator.call("POST", "/v1/sessions", {"cluster": "b"})
    assert status == 201, body
    on_b = str(body["session_id"])
    got = await _say(w, on_b, f"kubectl get deploy only-b -n {NS}")
    assert got.data["status"] == "ok" and got.data["cluster"] == "b", got.data


async def test_a_grant_for_a_replayed_onto_b_is_refused_and_bs_word_on_a_not_believed(
        world: World, http: aiohttp.ClientSession) -> None:
    w = world
    a, b = w.clusters["a"], w.clusters["b"]
    sid = await w.operator.new_session()
    card = await _say(w, sid, f"kubectl scale deploy/web --replicas=2 -n {NS} --context a")
    assert card.event == "approval.requested", card.data
    result = await _approve(w, sid, card)
    assert result.data["status"] == "ok", result.data
    assert (a.scale_writes("web"), b.scale_writes("web")) == (1, 1)  # b's from the test above

    # The gate, compromised, re-emits the grant for a on b's subject: its own identity, its
    # own key, a valid event signature over the new subject.
    events = await session_events(w.stack, sid)
    granted = next(e for e in events if isinstance(e, ApprovalGranted))
    call_id = granted.grants[0].call_id
    on_b = S.tag_filter("gate", "approval.granted", sid, granted.approval_id, cluster="b")
    gate = await bus_as(w.stack, "gate")
    try:
        data = E.encode(granted)
        await gate.js.publish(on_b, data, timeout=5.0, headers={
            SIGNATURE_HEADER: gate._sign(on_b, data), "Nats-Msg-Id": f"replay-{call_id}"})
    finally:
        await gate.close()
    refused = await w.operator.wait_for(
        sid, lambda e: e.event == "command.refused" and e.data.get("cluster") == "b",
        after=result.id, timeout=WAIT_S)
    assert refused[-1].data["call_id"] == call_id
    # Zero executions: b's executor has nothing pending, and neither sandbox saw a write more.
    admin = await bus_as(w.stack, "admin")
    try:
        async def settled() -> bool:  # the refusal is recorded before its command is acked
            info = await admin.js.consumer_info(S.EVENTS_STREAM, S.executor_durable("all", "b"))
            return info.num_pending == 0 and info.num_ack_pending == 0 \
                and info.num_redelivered == 0
        await _until("b's executor done with the replayed grant", settled)
    finally:
        await admin.close()
    assert (a.scale_writes("web"), b.scale_writes("web")) == (1, 1)
    assert await asyncio.to_thread(b.replicas, "web") == 3

    # Spoke b, compromised, writes on its own subject a "result" for a's read.
    read = await _say(w, sid, f"kubectl get deploy only-a -n {NS} --context a",
                      after=refused[-1].id)
    assert read.data["cluster"] == "a"
    forged = ToolResult(session_id=sid, call_id=read.data["call_id"], tool="get",
                        status="ok", output="forged by spoke b", cluster_name="b",
                        actor="executor")
    spoke = await Bus.connect(NatsSettings(
        url=b.spoke.url, user="executor", password=b.spoke.credentials["executor"],
        signing_key_file=str(b.spoke.signing_key), keyring_file=str(b.spoke.keyring)),
        "executor")
    try:
        await spoke.append(forged)
    finally:
        await spoke.close()
    async with http.get(f"{w.stack.url}/v1/sessions/{sid}/audit",
                        headers=w.operator.headers) as r:
        report = await r.json()
    assert report["integrity"]["ok"] is False
    problems = [str(p.get("problem", "")) for p in report["integrity"]["problems"]]
    assert [p for p in problems if "not believed" in p] == [
        f"tool.result about call {forged.call_id} was written for cluster 'b', but the gate "
        "classified that call for cluster 'a': another cluster's executor cannot speak for "
        "it; not believed"], problems
    # The replayed grant is on the record too: b refused a command of a's call.
    assert any(p.startswith(f"the executor of cluster 'b' refused a command for call "
                            f"{call_id}") for p in problems), problems
    # The planner went on from a's own result, not b's word: one answer to the read.
    events = await session_events(w.stack, sid)
    results = [e for e in events if isinstance(e, ToolResult) and e.call_id == forged.call_id]
    assert [r.cluster() for r in results] == ["a", "b"]

    # Spoke b, compromised, claims a write held for a — and records its "result" — before
    # anyone approves it: a's executor claims and answers on a's own subjects, so it still
    # runs the write, once, and its own result is the one recorded for a.
    forged_seen = await w.operator.wait_for(
        sid, lambda e: e.event == "tool.result" and e.data.get("cluster") == "b",
        after=read.id, timeout=WAIT_S)
    card = await _say(w, sid, f"kubectl scale deploy/web --replicas=4 -n {NS} --context a",
                      after=forged_seen[-1].id)
    assert card.event == "approval.requested", card.data
    (call,) = card.data["calls"]
    spoke = await Bus.connect(NatsSettings(
        url=b.spoke.url, user="executor", password=b.spoke.credentials["executor"],
        signing_key_file=str(b.spoke.signing_key), keyring_file=str(b.spoke.keyring)),
        "executor")
    try:
        await spoke.append(ToolStarted(session_id=sid, call_id=call["call_id"],
                                       approval_id=card.data["approval_id"], actor="executor",
                                       cluster_name="b"))
        await spoke.append(ToolResult(session_id=sid, call_id=call["call_id"], tool="scale",
                                      status="ok", output="claimed by spoke b",
                                      cluster_name="b", actor="executor"))
    finally:
        await spoke.close()
    status, body = await w.approver.call(
        "POST", f"/v1/approvals/{card.data['approval_id']}/decision", {"decision": "approve"})
    assert status == 202, body
    seen = await w.operator.wait_for(
        sid, lambda e: e.event in ("tool.result", "command.refused")
        and e.data.get("call_id") == call["call_id"] and e.data.get("cluster") == "a",
        after=card.id, timeout=WAIT_S)
    assert seen[-1].event == "tool.result" and seen[-1].data["status"] == "ok", seen[-1].data
    assert (a.scale_writes("web"), b.scale_writes("web")) == (2, 1)
    assert await asyncio.to_thread(a.replicas, "web") == 4

    # Every spoke has its own executor key. A secret written on a is sealed to a's key: it
    # runs on a, and spoke b — with its own NATS identity and key — can fetch the blob but
    # not open it.
    card = await _say(w, sid, f"kubectl create secret generic db -n {NS} "
                      "--from-literal=password=Only-For-A-7q --context a", after=seen[-1].id)
    assert card.event == "approval.requested", card.data
    assert "Only-For-A-7q" not in str(card.data)
    result = await _approve(w, sid, card)
    assert result.data["status"] == "ok" and result.data["cluster"] == "a", result.data
    proposed = next(e for e in await session_events(w.stack, sid)
                    if isinstance(e, ToolProposed) and e.tool == "create")
    spoke = await Bus.connect(NatsSettings(
        url=b.spoke.url, user="executor", password=b.spoke.credentials["executor"],
        signing_key_file=str(b.spoke.signing_key), keyring_file=str(b.spoke.keyring)),
        "executor")
    try:
        with pytest.raises(SealError):
            await opener_for(spoke).args(sid, proposed.tool, proposed.args)
    finally:
        await spoke.close()
    # b's key does not speak for a: an executor event on one of a's subjects signed with it
    # (put there by whatever could write the log) is flagged by the audit.
    b_signer = identity.load_signer(b.spoke.signing_key, "executor")
    lie = ToolResult(session_id=sid, call_id=call["call_id"], tool="scale", status="ok",
                     output="signed with b's key", cluster_name="a", actor="executor")
    subject, data = S.event_subject(lie), E.encode(lie)
    admin = await bus_as(w.stack, "admin")
    try:
        await admin.js.publish(subject, data, timeout=5.0,
                               headers={SIGNATURE_HEADER: b_signer.sign(subject, data)})
    finally:
        await admin.close()
    async with http.get(f"{w.stack.url}/v1/sessions/{sid}/audit",
                        headers=w.operator.headers) as r:
        report = await r.json()
    wrong = [p for p in report["integrity"]["problems"] if p.get("signature") == "wrong key"]
    assert len(wrong) == 1 and "cluster 'b'" in str(wrong[0]["problem"]), wrong


async def test_a_spoke_dropping_mid_write_runs_it_once_and_a_gone_cluster_is_refused_at_once(
        world: World) -> None:
    w = world
    b = w.clusters["b"]
    spoke = b.spoke
    sid = await w.operator.new_session()

    # The leaf nats-server of b dies while b's write is in the cluster: the executor's result
    # cannot reach the log until it is back; then it is recorded, once, and verified.
    card = await _say(w, sid, f"kubectl scale deploy/slow --replicas=2 -n {NS} --context b")
    assert card.event == "approval.requested", card.data
    status, body = await w.approver.call(
        "POST", f"/v1/approvals/{card.data['approval_id']}/decision", {"decision": "approve"})
    assert status == 202, body
    await _until("b's write in the cluster", lambda: b.scale_writes("slow") == 1)
    spoke.kill_leaf()
    # The cluster answers; the executor cannot record the result while its server is down.
    await _until("b's executor failing to record the result",
                 lambda: RESULT_RETRIED in executor_log(spoke), timeout=WAIT_S)
    await spoke.restart_leaf()
    seen = await w.operator.wait_for(sid, lambda e: e.event == "tool.verified",
                                     after=card.id, timeout=WAIT_S)
    results = [e for e in seen if e.event == "tool.result"]
    assert [r.data["status"] for r in results] == ["ok"], [r.data for r in results]
    assert b.scale_writes("slow") == 1
    assert await asyncio.to_thread(b.replicas, "slow") == 2

    # b's executor is killed while its write is in the cluster: the claim is recorded, the
    # result is not; the grant comes back to the restarted executor, which says so.
    card = await _say(w, sid, f"kubectl scale deploy/slow --replicas=3 -n {NS} --context b",
                      after=seen[-1].id)
    assert card.event == "approval.requested", card.data
    status, body = await w.approver.call(
        "POST", f"/v1/approvals/{card.data['approval_id']}/decision", {"decision": "approve"})
    assert status == 202, body
    await _until("b's second write in the cluster", lambda: b.scale_writes("slow") == 2)
    spoke.kill_executor()
    spoke.start_executor()
    got = await w.operator.wait_for(sid, lambda e: e.event == "tool.result",
                                    after=card.id, timeout=WAIT_S)
    assert got[-1].data["status"] == "unknown", got[-1].data
    assert "outcome unknown — verify" in got[-1].data["output"]
    assert b.scale_writes("slow") == 2  # never twice
    events = await session_events(w.stack, sid)
    assert sum(1 for e in events if isinstance(e, ToolResult)
               and e.call_id == got[-1].data["call_id"]) == 1

    # Spoke b gone altogether: a read and a write on b are refused at once, with no card.
    await spoke.stop()
    await _until("cluster b seen as gone", lambda: _connected(w.stack, "b", False))
    t0 = time.monotonic()
    refused = await _say(w, sid, f"kubectl get deploy only-b -n {NS} --context b",
                         after=got[-1].id)
    took = time.monotonic() - t0
    assert refused.event == "tool.refused", refused.data
    assert refused.data["reason"].startswith("cluster 'b' is not connected: no executor has "
                                             "reported for ")
    assert refused.data["reason"].endswith(" s (interlock clusters)")
    refused = await _say(w, sid, f"kubectl scale deploy/web --replicas=5 -n {NS} --context b",
                         after=refused.id)
    assert refused.event == "tool.refused", refused.data
    refused = await _say(w, sid, f"kubectl get deploy web -n {NS} --context x",
                         after=refused.id)
    assert refused.data["reason"] == "cluster 'x' is not allowed here (allowed: a, b)"
    events = await session_events(w.stack, sid)
    assert sum(1 for e in events if e.type == "approval.requested") == 2  # the two above
    print(f"refused a read to a disconnected cluster in {took:.2f} s")
