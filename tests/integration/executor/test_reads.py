"""Every read tool against the sandbox, checked against what the cluster holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from services.executor.kube import ContextRefused, Kube, KubeError
from services.executor.kube_read import READERS

PODS = by_plural("", "pods")


def read(kube: Kube, tool: str, **raw: Any) -> Any:
    args = catalogue.TOOLS[tool].parse_args(raw)
    return READERS[type(args)](kube, args)


async def test_get_and_list(cluster: Sandbox, kube: Kube, run: Any) -> None:
    out = await run(lambda: read(kube, "get", kind="deployment", name="web", namespace="shop"))
    assert out.data["spec"]["replicas"] == 3
    listed = await run(lambda: read(kube, "list", kind="pod", namespace="shop",
                                    label_selector="app=web"))
    names = {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")}
    assert {i["name"] for i in listed.data["items"]} == names
    every = await run(lambda: read(kube, "list", kind="deployment", all_namespaces=True))
    assert {(i["namespace"], i["name"]) for i in every.data["items"]} >= {
        ("shop", "web"), ("production", "payment-service")}
    assert every.text.startswith("NAMESPACE")


async def test_secret_keys_are_listed_values_never(kube: Kube, run: Any) -> None:
    out = await run(lambda: read(kube, "get", kind="secret", name="payment-db-credentials",
                                 namespace="production"))
    assert set(out.data["data"]) >= {"password"}
    assert set(out.data["data"].values()) == {"<redacted>"}
    described = await run(lambda: read(kube, "describe", kind="secret",
                                       name="payment-db-credentials", namespace="production"))
    assert "<redacted>" in described.text
    assert "cGF5" not in described.text  # no base64 of the values


async def test_describe_has_events_and_owned_objects(cluster: Sandbox, kube: Kube,
                                                     run: Any) -> None:
    out = await run(lambda: read(kube, "describe", kind="deployment", name="web",
                                 namespace="shop"))
    kinds = [o["kind"] for o in out.data["owned"]]
    assert kinds.count("ReplicaSet") == 1 and kinds.count("Pod") == 3
    assert out.data["events"], "the deployment's ScalingReplicaSet event"
    assert all(e["object"] == "deployment/web" for e in out.data["events"])


async def test_logs_tail_container_previous(cluster: Sandbox, kube: Kube, run: Any) -> None:
    pod = cluster.store.list(PODS, "shop")[0]["metadata"]["name"]
    out = await run(lambda: read(kube, "logs", name=pod, namespace="shop", tail_lines=2,
                                 container="web"))
    assert len(out.text.strip().splitlines()) == 2
    oom = [p for p in cluster.store.list(PODS, "production")
           if any(c.get("lastState", {}).get("terminated")
                  for c in p.get("status", {}).get("containerStatuses", []))]
    assert oom, "payment-oom has restarted pods"
    prev = await run(lambda: read(kube, "logs", name=oom[0]["metadata"]["name"],
                                  namespace="production", previous=True))
    assert prev.text.strip()
    with pytest.raises(KubeError) as err:
        await run(lambda: read(kube, "logs", name="nope", namespace="shop"))
    assert err.value.reason == "NotFound"


async def test_events_filters(kube: Kube, run: Any) -> None:
    out = await run(lambda: read(kube, "events", namespace="production", warnings_only=True))
    assert out.data["events"] and {e["type"] for e in out.data["events"]} == {"Warning"}
    one = await run(lambda: read(kube, "events", namespace="shop", kind="deployment",
                                 name="web"))
    assert {e["object"] for e in one.data["events"]} == {"deployment/web"}


async def test_rollout_status_and_history(cluster: Sandbox, kube: Kube, run: Any) -> None:
    out = await run(lambda: read(kube, "rollout_status", name="web", namespace="shop",
                                 wait_seconds=10))
    assert out.data["complete"] is True
    assert out.text == 'deployment "web" successfully rolled out'
    hist = await run(lambda: read(kube, "rollout_history", name="web", namespace="shop"))
    assert [r["revision"] for r in hist.data["revisions"]] == ["1"]
    assert "web=nginx:1.27" in hist.text
    one = await run(lambda: read(kube, "rollout_history", name="web", namespace="shop",
                                 revision=1))
    assert one.data["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


async def test_top_pods_and_nodes(kube: Kube, run: Any) -> None:
    pods = await run(lambda: read(kube, "top_pods", namespace="shop"))
    assert len(pods.data["pods"]) == 3 and all(p["memory_mib"] > 0 for p in pods.data["pods"])
    nodes = await run(lambda: read(kube, "top_nodes"))
    assert nodes.data["nodes"] and "CPU%" in nodes.text


async def test_cluster_info_and_can_i(cluster: Sandbox, kube: Kube, run: Any) -> None:
    info = await run(lambda: read(kube, "cluster_info"))
    assert info.data["server"] == cluster.url
    assert {"shop", "production"} <= set(info.data["namespaces"])
    yes = await run(lambda: read(kube, "can_i", verb="patch", resource="deployments",
                                 group="apps", namespace="shop"))
    no = await run(lambda: read(kube, "can_i", verb="create", resource="pods/exec",
                                namespace="shop"))
    assert yes.data["allowed"] is True and yes.text.startswith("yes")
    assert no.data["allowed"] is False and no.text.startswith("no")


async def test_contexts_outside_the_allow_list_are_refused(
        cluster: Sandbox, tmp_path: Path, run: Any) -> None:
    other = Sandbox(["baseline"], time_scale=0.02)
    await other.start()
    try:
        # Two clusters, two contexts in one kubeconfig: calls go where their context points.
        kc = write_kubeconfig(tmp_path / "a", cluster.url, context="east")
        second = write_kubeconfig(tmp_path / "b", other.url, context="west")
        import yaml

        merged = yaml.safe_load(kc.read_text())
        extra = yaml.safe_load(second.read_text())
        for key in ("clusters", "users", "contexts"):
            merged[key] += extra[key]
        kc.write_text(yaml.safe_dump(merged))
        await other.wait_for(lambda: True)
        kube = Kube(kc, ("east", "west"), timeout_s=10)
        east = await run(lambda: read(kube, "cluster_info", cluster="east"))
        west = await run(lambda: read(kube, "cluster_info", cluster="west"))
        assert east.data["server"] == cluster.url and west.data["server"] == other.url
        only_east = Kube(kc, ("east",), timeout_s=10)
        with pytest.raises(ContextRefused):
            await run(lambda: read(only_east, "cluster_info", cluster="west"))
        with pytest.raises(ContextRefused):  # not in the kubeconfig at all
            await run(lambda: read(kube, "cluster_info", cluster="prod"))
    finally:
        await other.stop()
