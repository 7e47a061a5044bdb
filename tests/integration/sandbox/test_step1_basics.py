"""The contract other parts of Interlock rely on first: the official client and real kubectl
can read the baseline and scale `web`, and the Deployment controller follows."""

from __future__ import annotations

from kubernetes import client as k8s

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from tests.integration.sandbox.conftest import Call, Kubectl

PODS = by_plural("", "pods")
DEPLOYMENTS = by_plural("apps", "deployments")


def _web_pods(sandbox: Sandbox, ready_only: bool = False) -> list[dict]:
    pods = [
        p for p in sandbox.store.list(PODS, "shop") if p["metadata"]["labels"].get("app") == "web"
    ]
    if ready_only:
        pods = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
    return pods


async def test_client_lists_the_baseline_pods(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    pods = await call(k8s.CoreV1Api(api_client).list_namespaced_pod, "shop")
    assert len(pods.items) == 3
    for pod in pods.items:
        assert pod.status.phase == "Running"
        assert pod.spec.containers[0].image == "nginx:1.27"
        assert pod.metadata.labels["app"] == "web"
        assert pod.status.container_statuses[0].ready is True
    deploy = await call(k8s.AppsV1Api(api_client).read_namespaced_deployment, "web", "shop")
    assert deploy.spec.replicas == 3
    assert deploy.status.ready_replicas == 3
    assert deploy.spec.strategy.type == "RollingUpdate"


async def test_client_scales_and_the_controller_follows(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    apps = k8s.AppsV1Api(api_client)
    scale = await call(
        apps.patch_namespaced_deployment_scale, "web", "shop", {"spec": {"replicas": 5}}
    )
    assert scale.spec.replicas == 5
    await sandbox.wait_for(lambda: len(_web_pods(sandbox, ready_only=True)) == 5)
    await sandbox.wait_for(
        lambda: (
            sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["status"].get("readyReplicas") == 5
        )
    )
    read = await call(apps.read_namespaced_deployment_scale, "web", "shop")
    assert (read.spec.replicas, read.status.replicas, read.status.selector) == (5, 5, "app=web")

    await call(apps.patch_namespaced_deployment_scale, "web", "shop", {"spec": {"replicas": 2}})
    await sandbox.wait_for(lambda: len(_web_pods(sandbox)) == 2)
    await sandbox.wait_for(
        lambda: sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["status"].get("replicas") == 2
    )


async def test_dry_run_scale_changes_nothing(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    before = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
    rv_before = sandbox.store.resource_version
    scale = await call(
        k8s.AppsV1Api(api_client).patch_namespaced_deployment_scale,
        "web",
        "shop",
        {"spec": {"replicas": 5}},
        dry_run="All",
    )
    assert scale.spec.replicas == 5  # the would-be result is returned...
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web") == before  # ...not stored
    assert sandbox.store.resource_version == rv_before
    assert len(_web_pods(sandbox)) == 3


async def test_kubectl_get_pods(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("get", "pods", "-n", "shop")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(lines) == 4
    for line in lines[1:]:
        name, ready, status, restarts, age = line.split()
        assert name.startswith("web-")
        assert (ready, status, restarts, age) == ("1/1", "Running", "0", "3d")


async def test_kubectl_scale(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("scale", "deploy/web", "--replicas=5", "-n", "shop")
    assert out.strip() == "deployment.apps/web scaled"
    await sandbox.wait_for(lambda: len(_web_pods(sandbox, ready_only=True)) == 5)
    await sandbox.wait_for(
        lambda: (
            sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["status"].get("availableReplicas")
            == 5
        )
    )
    out = await kubectl.ok("get", "deploy", "web", "-n", "shop")
    assert out.splitlines()[1].split()[:4] == ["web", "5/5", "5", "5"]
