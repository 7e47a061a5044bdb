"""A write whose preview enumerated the objects it acts on runs only while it would act on
exactly those (issue 16): the drain race and the namespace delete, against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from services.executor import kube_write as W
from services.executor.kube import Kube

PODS = by_plural("", "pods")
NODES = by_plural("", "nodes")
NAMESPACES = by_plural("", "namespaces")
CONFIGMAPS = by_plural("", "configmaps")
SCENARIOS = ["baseline"]
NODE = "effect-node"


def args(tool: str, **raw: Any) -> catalogue.Args:
    return catalogue.TOOLS[tool].parse_args(raw)


def on_node(cluster: Sandbox) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.store.list(PODS, "shop")
            if p["spec"].get("nodeName") == NODE and not p["metadata"].get("deletionTimestamp")}


async def node_with_pods(cluster: Sandbox, kube: Kube, run: Any, replicas: int) -> None:
    """A node of its own whose only pods are one Deployment's (pinned by a nodeSelector)."""
    await run(lambda: kube.request("", "POST", "/api/v1/nodes", body={
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {"podCIDR": "10.250.0.0/24"}}))
    labels = {"app": "pinned"}
    await run(lambda: kube.request("", "POST", "/apis/apps/v1/namespaces/shop/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pinned"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE},
                     "containers": [{"name": "app", "image": "nginx:1.27"}]}}}}))
    await cluster.wait_for(lambda: len(on_node(cluster)) == replicas, timeout=10)


async def scale_pinned(cluster: Sandbox, kube: Kube, run: Any, replicas: int) -> None:
    await run(lambda: kube.request(
        "", "PATCH", "/apis/apps/v1/namespaces/shop/deployments/pinned/scale",
        body={"spec": {"replicas": replicas}}, content_type=W.MERGE))
    await cluster.wait_for(lambda: len(on_node(cluster)) == replicas, timeout=10)


def cordoned(cluster: Sandbox) -> bool:
    node = cluster.store.get(NODES, "", NODE)
    assert node is not None
    return bool(node["spec"].get("unschedulable"))


async def test_a_drain_runs_only_on_its_previewed_pods(cluster: Sandbox, kube: Kube,
                                                       run: Any) -> None:
    await node_with_pods(cluster, kube, run, 1)
    previewed = on_node(cluster)
    d = args("drain", name=NODE)
    pv = await run(lambda: W.preview(kube, d))
    assert pv.effect == (f"/node/{NODE}", *(f"shop/pod/{n}" for n in previewed))
    assert pv.radius.pods_affected == tuple(f"shop/{n}" for n in previewed)

    await scale_pinned(cluster, kube, run, 3)
    grown = on_node(cluster)
    with pytest.raises(W.EffectChanged) as err:
        await run(lambda: W.execute(kube, d, pv.resource_version, pv.effect))
    added = tuple(sorted(f"shop/pod/{n}" for n in set(grown) - set(previewed)))
    assert (err.value.added, err.value.removed) == (added, ())
    assert err.value.status == 409
    assert err.value.message.startswith(f"the write to node/{NODE} was not run: the objects it "
                                        "acts on changed since it was previewed and approved "
                                        f"(now also {', '.join(added)}); nothing was changed")
    assert on_node(cluster) == grown, "nothing was evicted"
    assert not cordoned(cluster), "nor was the node cordoned"

    # A grant that bound no effect (an approval made before effects were bound) does not run
    # a write that enumerates one: the human saw no pod set.
    with pytest.raises(W.EffectChanged):
        await run(lambda: W.execute(kube, d, pv.resource_version))
    assert on_node(cluster) == grown

    # The set as it is now, previewed and approved again: exactly those pods are evicted.
    pv = await run(lambda: W.preview(kube, d))
    out, plan, _ = await run(lambda: W.execute(kube, d, pv.resource_version, pv.effect))
    assert plan.effect == pv.effect
    assert cordoned(cluster)
    assert not set(on_node(cluster)) & set(grown)
    assert sorted(c["path"] for c in out.data["changes"] if c["after"] == "evicted") == sorted(
        f"pod/shop/{n}" for n in grown)


async def test_a_namespace_delete_binds_what_dies_with_it_but_not_its_pods(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    a = args("delete", kind="namespace", name="shop")
    pv = await run(lambda: W.preview(kube, a))
    assert "/namespace/shop" in pv.effect
    assert {"shop/deployment/web", "shop/service/web", "shop/configmap/web-config"} \
        <= set(pv.effect)
    assert not [r for r in pv.effect if "/pod/" in r or "/replicaset/" in r], \
        "a workload's pods churn: the workload is bound, not them"

    # A pod replaced by its ReplicaSet does not void the approval...
    web = sorted(p["metadata"]["name"] for p in cluster.store.list(PODS, "shop"))
    await run(lambda: kube.request("", "DELETE", f"/api/v1/namespaces/shop/pods/{web[0]}"))
    await cluster.wait_for(lambda: len(cluster.store.list(PODS, "shop")) == len(web)
                           and web[0] not in {p["metadata"]["name"]
                                              for p in cluster.store.list(PODS, "shop")},
                           timeout=10)
    again = await run(lambda: W.preview(kube, a))
    assert again.effect == pv.effect

    # ...a configuration that appeared since the card was shown does.
    await run(lambda: kube.request("", "POST", "/api/v1/namespaces/shop/configmaps", body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}}))
    with pytest.raises(W.EffectChanged) as err:
        await run(lambda: W.execute(kube, a, pv.resource_version, pv.effect))
    assert (err.value.added, err.value.removed) == (("shop/configmap/late",), ())
    ns = cluster.store.get(NAMESPACES, "", "shop")
    assert ns is not None
    assert not ns["metadata"].get("deletionTimestamp")
    assert cluster.store.get(CONFIGMAPS, "shop", "late") is not None
