"""A drain executes exactly the pods on its card (issue 16), on the whole stack in direct mode.

The seed of the issue: the preview of a drain listed 1 pod; more pods were scheduled onto the
node before approval — a Node's resourceVersion does not change when pods land on it, so the
grant's precondition did not notice — and the approved drain evicted 4. The previewed pod set is
now part of the approved call: the gate signs its digest into the grant, and the executor
recomputes it before sending anything. A different set → nothing is evicted, the node is not
even cordoned, and the result names what changed.

Each test has a node of its own, made for it, whose only pods are the test's (a nodeSelector on
the node's hostname label); the stack runs the baseline scenario alone, so no CronJob run or
other controller puts a pod there behind the test's back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client, watch

from launcher.stack import Stack
from schemas.approval import effect_digest
from tests.e2e.conftest import approve_and_result, kube, people, start_stack
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NS = "race"
HOST = "kubernetes.io/hostname"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory, scenarios=("baseline",), sandbox_time_scale=0.05)
    try:
        client.CoreV1Api(kube(s)).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


def _node(stack: Stack, name: str) -> None:
    client.CoreV1Api(kube(stack)).create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels={HOST: name,
                                                        "kubernetes.io/os": "linux"}),
        spec=client.V1NodeSpec(pod_cidr="10.250.0.0/24")))


def _deployment(stack: Stack, name: str, node: str, replicas: int) -> None:
    labels = {"app": name}
    client.AppsV1Api(kube(stack)).create_namespaced_deployment(NS, client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(node_selector={HOST: node}, containers=[
                    client.V1Container(name="app", image="nginx:1.27")])))))


def _scale(stack: Stack, name: str, replicas: int) -> None:
    client.AppsV1Api(kube(stack)).patch_namespaced_deployment_scale(
        name, NS, {"spec": {"replicas": replicas}})


def _until_on(stack: Stack, node: str, done: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """The test's pods bound to the node ({name: uid}) once `done` holds for them: a watch, not
    a sleep."""
    core = client.CoreV1Api(kube(stack))
    pods: dict[str, str] = {}
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, NS, field_selector=f"spec.nodeName={node}",
                       timeout_seconds=60):
        pod = ev["object"]
        if ev["type"] == "DELETED" or pod.metadata.deletion_timestamp:
            pods.pop(pod.metadata.name, None)
        else:
            pods[pod.metadata.name] = pod.metadata.uid
        if done(pods):
            w.stop()
            return dict(pods)
    raise AssertionError(f"the pods on {node} never reached the wanted state: {pods}")


def _now_on(stack: Stack, node: str) -> dict[str, str]:
    pods = client.CoreV1Api(kube(stack)).list_namespaced_pod(
        NS, field_selector=f"spec.nodeName={node}").items
    return {p.metadata.name: p.metadata.uid for p in pods if not p.metadata.deletion_timestamp}


def _cordoned(stack: Stack, node: str) -> bool:
    return bool(client.CoreV1Api(kube(stack)).read_node(node).spec.unschedulable)


def _refs(pods: dict[str, str]) -> list[str]:
    return sorted(f"{NS}/pod/{name}" for name in pods)


async def _preview_drain(operator: Client, node: str) -> tuple[str, dict[str, Any], int]:
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl drain {node} --ignore-daemonsets")
    got = await operator.wait_for(sid, lambda e: e.event in ("approval.requested",
                                                             "tool.refused"))
    assert got[-1].event == "approval.requested", got[-1].data
    return sid, dict(got[-1].data), got[-1].id


async def test_pods_scheduled_after_the_preview_are_not_evicted(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    node = "race-grown"
    _node(stack, node)
    _deployment(stack, "grown", node, 1)
    previewed = _until_on(stack, node, lambda p: len(p) == 1)
    operator, approver = people(stack, http)
    sid, req, seen = await _preview_drain(operator, node)
    [call] = req["calls"]
    # The card names exactly the pods the drain will evict, and the call carries that set.
    assert call["blast_radius"]["pods_affected"] == [f"{NS}/{n}" for n in previewed]
    assert call["blast_radius"]["summary"] == (
        f"node {node} will be cordoned and 1 pod evicted (1 of {NS}): exactly the pods listed "
        "— if the node's pods differ when it runs, nothing is evicted")
    assert call["effect"] == [f"/node/{node}", *_refs(previewed)]

    # Before anyone approves, three more pods land on the node. The Node object does not
    # change: its resourceVersion, which the grant binds, is the previewed one.
    rv = client.CoreV1Api(kube(stack)).read_node(node).metadata.resource_version
    _scale(stack, "grown", 4)
    grown = _until_on(stack, node, lambda p: len(p) == 4)
    assert client.CoreV1Api(kube(stack)).read_node(node).metadata.resource_version == rv

    result = await approve_and_result(operator, approver, sid, req, seen)
    # Nothing outside the card was evicted — nothing at all was: the set is not the approved
    # one, so the drain did not run, and the node was not even cordoned.
    assert _now_on(stack, node) == grown
    assert not _cordoned(stack, node)
    assert result["status"] == "error", result
    added = sorted(set(_refs(grown)) - set(_refs(previewed)))
    assert result["data"]["effect_changed"] == {"added": added, "removed": []}
    assert "nothing was changed" in result["output"]
    for ref in added:
        assert ref in result["output"]


async def test_a_previewed_pod_replaced_by_another_is_not_evicted(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    node = "race-replaced"
    _node(stack, node)
    _deployment(stack, "replaced", node, 2)
    previewed = _until_on(stack, node, lambda p: len(p) == 2)
    operator, approver = people(stack, http)
    sid, req, seen = await _preview_drain(operator, node)
    assert req["calls"][0]["effect"] == [f"/node/{node}", *_refs(previewed)]

    # One previewed pod goes away; its ReplicaSet puts a new one (a new name) on the node.
    gone = sorted(previewed)[0]
    client.CoreV1Api(kube(stack)).delete_namespaced_pod(gone, NS)
    now = _until_on(stack, node, lambda p: len(p) == 2 and gone not in p)

    result = await approve_and_result(operator, approver, sid, req, seen)
    assert _now_on(stack, node) == now
    assert not _cordoned(stack, node)
    assert result["status"] == "error", result
    assert result["data"]["effect_changed"] == {
        "added": sorted(set(_refs(now)) - set(_refs(previewed))),
        "removed": [f"{NS}/pod/{gone}"]}


async def test_an_unchanged_set_evicts_exactly_the_previewed_pods(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    node = "race-steady"
    _node(stack, node)
    _deployment(stack, "steady", node, 2)
    previewed = _until_on(stack, node, lambda p: len(p) == 2)
    operator, approver = people(stack, http)
    sid, req, seen = await _preview_drain(operator, node)
    assert req["calls"][0]["effect"] == [f"/node/{node}", *_refs(previewed)]

    result = await approve_and_result(operator, approver, sid, req, seen)
    assert result["status"] == "ok", result
    assert _cordoned(stack, node)
    # Both previewed pods were evicted; their replacements cannot land on the cordoned node.
    assert not set(_now_on(stack, node)) & set(previewed)
    evicted = sorted(c["path"] for c in result["data"]["changes"] if c["after"] == "evicted")
    assert evicted == sorted(f"pod/{NS}/{n}" for n in previewed)
    # The grant that ran it binds that set, and the audit verifies it as such.
    status, audit = await operator.call("GET", f"/v1/sessions/{sid}/audit")
    assert status == 200, audit
    assert audit["integrity"]["ok"] is True, audit["integrity"]
    got = await operator.wait_for(sid, lambda e: e.event == "approval.granted")
    [grant] = got[-1].data["grants"]
    assert grant["effect_digest"] == effect_digest(tuple(req["calls"][0]["effect"]))
