"""Issue 16, "Done when" 1: credentials in ordinary reads never reach the log, SSE or a model.

A real sandbox cluster holds the leak corpus (tests/leaks.py) where credentials really sit: a
ConfigMap with whole embedded files (.properties, .env, yaml, json, an AWS credentials file, a
kubeconfig, private keys), a Deployment's env and args over two revisions (so
`rollout history --revision 1` shows the old template), a change-cause, an event message and pod
logs. The whole stack reads them — in direct mode and through the scripted model — and then the
EVENTS stream's bytes, the SSE bytes the gateway serves, the services' own logs and every request
the model received are searched for every corpus value. The look-alikes (digests, SHAs, UIDs,
resourceVersions, a public certificate, plain URLs, `token_ttl=30s`…) must still be there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from nats.js.errors import NotFoundError

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from sandbox.controllers.telemetry import LogSpec
from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from sandbox.state.selectors import selector_from_spec
from schemas import subjects as S
from tests import leaks as L
from tests.e2e.conftest import bus_as, kube, people
from tests.support import Client, SseEvent, remember_keys
from tests.support_llm import Reply, Request, ScriptedLLM, calls, say

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
NS = "billing"
APP = "billing-api"
API_KEY = "sk-e2e-model-key-never-in-the-log-1616"
REPLICASETS = by_plural("apps", "replicasets")
DEPLOYMENTS = by_plural("apps", "deployments")

READS = [
    f"/kubectl get configmap billing-config -n {NS} -o yaml",
    f"/kubectl describe configmap billing-config -n {NS}",
    f"/kubectl get configmaps -n {NS} -o json",
    f"/kubectl get deploy {APP} -n {NS} -o json",
    f"/kubectl describe deploy {APP} -n {NS}",
    f"/kubectl rollout history deploy/{APP} -n {NS} --revision=1",
    f"/kubectl rollout history deploy/{APP} -n {NS}",
    f"/kubectl logs deploy/{APP} -n {NS}",
    f"/kubectl get pods -n {NS} -o yaml",
    f"/kubectl events -n {NS}",
]


def model_reads(req: Request) -> Reply:
    if not req.tool_results():
        return calls(
            ("get", {"kind": "configmap", "name": "billing-config", "namespace": NS,
                     "output": "yaml"}),
            ("describe", {"kind": "configmap", "name": "billing-config", "namespace": NS}),
            ("get", {"kind": "deployment", "name": APP, "namespace": NS}),
            ("describe", {"kind": "deployment", "name": APP, "namespace": NS}),
            ("rollout_history", {"name": APP, "namespace": NS, "revision": 1}),
            ("logs", {"kind": "deployment", "name": APP, "namespace": NS}),
            ("events", {"namespace": NS}),
            text="Reading billing-api's configuration, history and logs.")
    return say("billing-api reads its settings from billing-config; nothing to change.")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[Sandbox]:
    sb = Sandbox(["baseline"], time_scale=0.02)
    sb.logbook.add(LogSpec(namespace=NS, selector=selector_from_spec({"matchLabels": {
        "app": APP}}), lines=list(L.LOG_LINES)))
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(model_reads) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, cluster: Sandbox,
                llm: ScriptedLLM) -> AsyncIterator[Stack]:
    data = tmp_path_factory.mktemp("leaks")
    s = Stack(StackConfig(
        data_dir=data / "stack", http_port=free_port(), admin_token="t" * 32,
        kubeconfig=write_kubeconfig(data / "kubeconfig", cluster.url),
        extra_env={"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": API_KEY,
                   "INTERLOCK_MODEL": "scripted-1", "INTERLOCK_MODEL_RETRY_BASE": "0"}))
    try:
        await s.start()
        remember_keys(s)
        await seed(s, cluster)
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


def _deployment(env: list[dict[str, object]], args: list[str], cause: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NS, "labels": {"app": APP},
                     "annotations": {"kubernetes.io/change-cause": cause,
                                     "example.com/git-commit": L.GIT_SHA}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": APP}},
                 "template": {"metadata": {"labels": {"app": APP}},
                              "spec": {"containers": [{"name": "api", "image": L.IMAGE,
                                                       "args": args, "env": env}]}}},
    }


async def seed(stack: Stack, cluster: Sandbox) -> None:
    """The corpus into the cluster through its API, as a team would have put it there."""
    api = kube(stack)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def write() -> None:
        core.create_namespace({"metadata": {"name": NS}})
        core.create_namespaced_config_map(NS, {"metadata": {"name": "billing-config"},
                                               "data": L.configmap_data()})
        apps.create_namespaced_deployment(NS, _deployment(L.env_v1(), ["--listen=:8080"],
                                                          "initial release"))

    await asyncio.to_thread(write)
    await cluster.wait_for(lambda: len(cluster.store.list(REPLICASETS, NS)) == 1, timeout=30)

    def second() -> None:
        # A replace, not a (merging) patch: revision 1's env stays only in its ReplicaSet.
        body = _deployment(L.env_v2(), L.ARGS_V2, L.CHANGE_CAUSE)
        for attempt in range(20):
            body["metadata"]["resourceVersion"] = apps.read_namespaced_deployment(
                APP, NS).metadata.resource_version
            try:
                apps.replace_namespaced_deployment(APP, NS, body)
                break
            except ApiException as exc:
                # The sandbox's controllers were still writing the first rollout's status
                # between the read and the replace: read again, as any client would.
                if exc.status != 409 or attempt == 19:
                    raise
        core.create_namespaced_event(NS, {
            "metadata": {"name": f"{APP}.chart"},
            "involvedObject": {"kind": "Deployment", "name": APP, "namespace": NS,
                               "apiVersion": "apps/v1"},
            "reason": "FailedPull", "type": "Warning", "message": L.EVENT_MESSAGE,
            "source": {"component": "chart-puller"}})

    await asyncio.to_thread(second)

    def rolled_out() -> bool:
        d = cluster.store.get(DEPLOYMENTS, NS, APP)
        st = (d or {}).get("status") or {}
        return (len(cluster.store.list(REPLICASETS, NS)) == 2
                and st.get("updatedReplicas") == 1 and st.get("availableReplicas") == 1
                and st.get("replicas") == 1)

    await cluster.wait_for(rolled_out, timeout=30)


def _of(events: list[SseEvent], tag: str) -> list[Any]:
    return [e.data for e in events if e.event == tag]


async def _raw_sse(api: Client, sid: str, turns: int) -> bytes:
    """The bytes of the session's SSE stream, from the start, until `turns` turns completed."""
    buf = b""
    async with api.http.get(f"{api.base}/v1/sessions/{sid}/events",
                            headers={**api.headers, "Last-Event-ID": "0"}) as r:
        assert r.status == 200
        async with asyncio.timeout(60):
            async for chunk in r.content.iter_any():
                buf += chunk
                if buf.count(b"event: turn.completed") >= turns:
                    return buf
    raise AssertionError("the SSE stream ended early")


async def _events_bytes(stack: Stack) -> bytes:
    """Every message EVENTS holds, whatever its subject."""
    bus = await bus_as(stack, "admin")
    try:
        out, seq = [], 1
        while True:
            try:
                msg = await bus.js.get_msg(S.EVENTS_STREAM, seq=seq, next=True, direct=True)
            except NotFoundError:
                return b"\n".join(out)
            out.append(msg.data or b"")
            seq = int(msg.seq or 0) + 1
    finally:
        await bus.close()


def _uid_and_rv(stack: Stack) -> tuple[str, str]:
    cm = client.CoreV1Api(kube(stack)).read_namespaced_config_map("billing-config", NS)
    return str(cm.metadata.uid), str(cm.metadata.resource_version)


async def test_reads_leak_no_credential_and_keep_the_look_alikes(
    stack: Stack, http: aiohttp.ClientSession, llm: ScriptedLLM
) -> None:
    operator, _ = people(stack, http)
    # Direct mode: every read form, one message each.
    direct = await operator.new_session()
    for i, line in enumerate(READS, start=1):
        await operator.say(direct, line)
        events = await _turns(operator, direct, i)
    results = _of(events, "tool.result")
    assert [r["status"] for r in results] == ["ok"] * len(READS), \
        [(r["tool"], r["output"][:300]) for r in results if r["status"] != "ok"]
    direct_text = "\n".join(r["output"] for r in results)

    # Model mode: the same reads chosen by the (scripted) model.
    modelled = await operator.new_session()
    await operator.say(modelled, "Why does billing-api fail to pull its chart? Check its config.")
    m_events = await _turns(operator, modelled, 1)
    m_results = _of(m_events, "tool.result")
    assert [r["status"] for r in m_results] == ["ok"] * 7, \
        [(r["tool"], r["output"][:300]) for r in m_results]
    assert len(llm.requests) >= 2
    model_saw = "\n".join(json.dumps(r.body) for r in llm.requests)

    # Nothing of the corpus anywhere a person, a viewer or a model can read it.
    assert L.found_in(direct_text) == []
    assert L.found_in(model_saw) == []
    assert L.found_in(await _events_bytes(stack)) == []
    for sid, turns in ((direct, len(READS)), (modelled, 1)):
        assert L.found_in(await _raw_sse(operator, sid, turns)) == []
    for log in sorted((stack.data / "logs").glob("*.log")):
        assert L.found_in(log.read_bytes()) == [], log.name

    # …while what makes the output useful is still there, for the person and the model.
    uid, rv = await asyncio.to_thread(_uid_and_rv, stack)
    for text in (direct_text, model_saw):
        missing = [x for x in (*L.LOOKALIKES, uid) if x not in text and
                   json.dumps(x)[1:-1] not in text]
        assert missing == []
    assert rv in direct_text
    # The reference to the Secret stays: valueFrom is not a value.
    assert '"secretKeyRef"' in direct_text
    assert "billing-db" in direct_text
    # Redacted in place, so the reader sees which field holds a credential.
    assert "DB_PASS" in direct_text
    assert "spring.datasource.password=<redacted>" in direct_text


async def _turns(api: Client, sid: str, n: int) -> list[SseEvent]:
    """The session's events up to its n-th completed turn."""
    count = 0

    def done(e: SseEvent) -> bool:
        nonlocal count
        count += e.event == "turn.completed"
        return count >= n

    return await api.wait_for(sid, done, timeout=90)
