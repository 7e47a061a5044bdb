"""Done-when 2: the official client (sync and kubernetes.aio) over every resource, and every
object the sandbox stores validates against the client's pydantic models."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox
from sandbox.state.resources import RESOURCES, VIRTUAL_GROUPS, ResourceType, by_plural
from tests.integration.sandbox.conftest import Call, api_client_for


def model_for(rt: ResourceType) -> Any:
    if rt.kind == "Event":
        return k8s.CoreV1Event
    return getattr(k8s, ("V2" if rt.version == "v2" else "V1") + rt.kind)


STORED = [rt for rt in RESOURCES if rt.group not in VIRTUAL_GROUPS]


async def test_every_stored_object_validates_against_the_client_models(
    full_sandbox: Sandbox,
) -> None:
    # Let live controllers touch a few objects first (pods become Ready, HPAs compute).
    await full_sandbox.wait_for(lambda: True)
    seen: dict[str, int] = {}
    for rt in STORED:
        model = model_for(rt)
        for obj in full_sandbox.store.list(rt):
            parsed = model.from_dict(obj)
            assert parsed.metadata.name == obj["metadata"]["name"]
            seen[rt.kind] = seen.get(rt.kind, 0) + 1
    assert {rt.kind for rt in STORED} - set(seen) == set(), "every kind has scenario objects"


def _list_calls(api: k8s.ApiClient) -> dict[str, Callable[[], Any]]:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    batch, hpa = k8s.BatchV1Api(api), k8s.AutoscalingV2Api(api)
    rbac = k8s.RbacAuthorizationV1Api(api)
    policy = k8s.PolicyV1Api(api)
    leases = k8s.CoordinationV1Api(api)
    net, storage = k8s.NetworkingV1Api(api), k8s.StorageV1Api(api)
    return {
        "EndpointSlice": k8s.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        "NetworkPolicy": net.list_network_policy_for_all_namespaces,
        "Ingress": net.list_ingress_for_all_namespaces,
        "IngressClass": net.list_ingress_class,
        "StorageClass": storage.list_storage_class,
        "PriorityClass": k8s.SchedulingV1Api(api).list_priority_class,
        "Lease": leases.list_lease_for_all_namespaces,
        "Namespace": core.list_namespace,
        "Node": core.list_node,
        "Pod": core.list_pod_for_all_namespaces,
        "Service": core.list_service_for_all_namespaces,
        "Endpoints": core.list_endpoints_for_all_namespaces,
        "ConfigMap": core.list_config_map_for_all_namespaces,
        "Secret": core.list_secret_for_all_namespaces,
        "PersistentVolumeClaim": core.list_persistent_volume_claim_for_all_namespaces,
        "PersistentVolume": core.list_persistent_volume,
        "Event": core.list_event_for_all_namespaces,
        "ServiceAccount": core.list_service_account_for_all_namespaces,
        "Deployment": apps.list_deployment_for_all_namespaces,
        "ReplicaSet": apps.list_replica_set_for_all_namespaces,
        "StatefulSet": apps.list_stateful_set_for_all_namespaces,
        "DaemonSet": apps.list_daemon_set_for_all_namespaces,
        "Job": batch.list_job_for_all_namespaces,
        "CronJob": batch.list_cron_job_for_all_namespaces,
        "HorizontalPodAutoscaler": hpa.list_horizontal_pod_autoscaler_for_all_namespaces,
        "PodDisruptionBudget": policy.list_pod_disruption_budget_for_all_namespaces,
        "Role": rbac.list_role_for_all_namespaces,
        "RoleBinding": rbac.list_role_binding_for_all_namespaces,
        "ClusterRole": rbac.list_cluster_role,
        "ClusterRoleBinding": rbac.list_cluster_role_binding,
    }


async def test_client_lists_every_resource(
    full_sandbox: Sandbox, tmp_path: Path, call: Call
) -> None:
    api = api_client_for(write_kubeconfig(tmp_path / "kc", full_sandbox.url))
    calls = _list_calls(api)
    assert set(calls) == {rt.kind for rt in STORED}
    for rt in STORED:
        result = await call(calls[rt.kind])
        stored = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in full_sandbox.store.list(rt)
        }
        listed = {(i.metadata.namespace or "", i.metadata.name) for i in result.items}
        # Events may be added while listing (live pods); everything else must match exactly.
        if rt.kind == "Event":
            assert listed <= {
                (o["metadata"]["namespace"], o["metadata"]["name"])
                for o in full_sandbox.store.list(rt)
            }
            assert listed
        else:
            assert listed == stored, rt.kind


def _crud_cases() -> list[tuple[str, str, dict[str, Any]]]:
    meta = {"name": "probe", "namespace": "shop", "labels": {"probe": "yes"}}
    pod_spec = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    template = {"metadata": {"labels": {"app": "probe"}}, "spec": pod_spec}
    return [
        ("core", "config_map", {"metadata": meta, "data": {"a": "1"}}),
        ("core", "secret", {"metadata": meta, "stringData": {"password": "hunter2"}}),
        (
            "core",
            "service",
            {"metadata": meta, "spec": {"selector": {"app": "probe"}, "ports": [{"port": 80}]}},
        ),
        (
            "core",
            "persistent_volume_claim",
            {
                "metadata": meta,
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        ),
        ("core", "service_account", {"metadata": meta}),
        ("core", "pod", {"metadata": meta, "spec": pod_spec}),
        ("core", "endpoints", {"metadata": meta, "subsets": []}),
        (
            "core",
            "event",
            {
                "metadata": meta,
                "involvedObject": {"kind": "Pod", "name": "x", "namespace": "shop"},
                "reason": "Probe",
                "message": "hello",
                "type": "Normal",
            },
        ),
        (
            "apps",
            "deployment",
            {
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "probe"}},
                    "template": template,
                },
            },
        ),
        (
            "apps",
            "replica_set",
            {
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "probe"}},
                    "template": template,
                },
            },
        ),
        (
            "apps",
            "stateful_set",
            {
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "serviceName": "probe",
                    "selector": {"matchLabels": {"app": "probe"}},
                    "template": template,
                },
            },
        ),
        (
            "apps",
            "daemon_set",
            {
                "metadata": meta,
                "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": template},
            },
        ),
        (
            "batch",
            "job",
            {
                "metadata": meta,
                "spec": {"template": {"spec": {**pod_spec, "restartPolicy": "Never"}}},
            },
        ),
        (
            "batch",
            "cron_job",
            {
                "metadata": meta,
                "spec": {
                    "schedule": "*/5 * * * *",
                    "jobTemplate": {"spec": {"template": template}},
                },
            },
        ),
        (
            "hpa",
            "horizontal_pod_autoscaler",
            {
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "web",
                    },
                    "minReplicas": 2,
                    "maxReplicas": 5,
                },
            },
        ),
        ("networking", "network_policy", {"metadata": meta, "spec": {"podSelector": {}}}),
        (
            "networking",
            "ingress",
            {
                "metadata": meta,
                "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
            },
        ),
        ("coordination", "lease", {"metadata": meta, "spec": {"holderIdentity": "me"}}),
        (
            "rbac",
            "role",
            {
                "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            },
        ),
        (
            "rbac",
            "role_binding",
            {
                "metadata": meta,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "probe",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}],
            },
        ),
    ]


@pytest.mark.parametrize(
    ("group", "kind", "body"), _crud_cases(), ids=[c[1] for c in _crud_cases()]
)
async def test_client_create_read_patch_replace_delete(
    sandbox: Sandbox,
    api_client: k8s.ApiClient,
    call: Call,
    group: str,
    kind: str,
    body: dict[str, Any],
) -> None:
    api = {
        "core": k8s.CoreV1Api,
        "apps": k8s.AppsV1Api,
        "batch": k8s.BatchV1Api,
        "hpa": k8s.AutoscalingV2Api,
        "rbac": k8s.RbacAuthorizationV1Api,
        "coordination": k8s.CoordinationV1Api,
        "networking": k8s.NetworkingV1Api,
    }[group](api_client)
    create = getattr(api, f"create_namespaced_{kind}")
    read = getattr(api, f"read_namespaced_{kind}")
    patch = getattr(api, f"patch_namespaced_{kind}")
    replace = getattr(api, f"replace_namespaced_{kind}")
    delete = getattr(api, f"delete_namespaced_{kind}")

    created = await call(create, "shop", body)
    assert created.metadata.uid
    assert created.metadata.resource_version
    got = await call(read, "probe", "shop")
    assert got.metadata.uid == created.metadata.uid
    patched = await call(patch, "probe", "shop", {"metadata": {"labels": {"patched": "1"}}})
    assert patched.metadata.labels == {"probe": "yes", "patched": "1"}
    conflicts = 0
    while True:  # controllers may write status in between: retry on 409, as clients do
        latest = await call(read, "probe", "shop")
        latest.metadata.labels["replaced"] = "1"
        try:
            replaced = await call(replace, "probe", "shop", latest)
            break
        except k8s.ApiException as exc:
            conflicts += 1
            if exc.status != 409 or conflicts > 10:
                raise
    assert replaced.metadata.labels["replaced"] == "1"
    assert int(replaced.metadata.resource_version) > int(patched.metadata.resource_version)
    await call(delete, "probe", "shop")
    with pytest.raises(k8s.ApiException) as exc:
        await call(read, "probe", "shop")
    assert exc.value.status == 404


async def test_cluster_scoped_create_and_delete(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
    ns = await call(core.create_namespace, {"metadata": {"name": "probe"}})
    assert ns.status.phase == "Active"
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "probe"}
    await sandbox.wait_for(
        lambda: sandbox.store.get(by_plural("", "serviceaccounts"), "probe", "default") is not None
    )
    await call(core.create_namespaced_config_map, "probe", {"metadata": {"name": "x"}})
    role = await call(rbac.create_cluster_role, {"metadata": {"name": "probe"}, "rules": []})
    assert role.metadata.name == "probe"
    await call(
        rbac.create_cluster_role_binding,
        {
            "metadata": {"name": "probe"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "probe",
            },
        },
    )
    pv = await call(
        core.create_persistent_volume,
        {
            "metadata": {"name": "probe"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/x"},
            },
        },
    )
    assert pv.spec.capacity == {"storage": "1Gi"}
    await call(core.delete_namespace, "probe")
    assert sandbox.store.list(by_plural("", "configmaps"), "probe") == []
    await call(rbac.delete_cluster_role_binding, "probe")
    await call(rbac.delete_cluster_role, "probe")
    await call(core.delete_persistent_volume, "probe")
    assert [n.metadata.name for n in (await call(core.list_node)).items] == [
        "sandbox-control-plane",
        "sandbox-worker-1",
        "sandbox-worker-2",
    ]


async def test_secrets_are_served_base64_encoded(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core = k8s.CoreV1Api(api_client)
    await call(
        core.create_namespaced_secret,
        "shop",
        {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}},
    )
    secret = await call(core.read_namespaced_secret, "db", "shop")
    assert secret.string_data is None
    assert secret.type == "Opaque"
    assert base64.b64decode(secret.data["password"]) == b"hunter2"
    tls = await call(core.read_namespaced_secret, "web-tls", "shop")
    assert tls.type == "kubernetes.io/tls"
    assert base64.b64decode(tls.data["tls.key"]).startswith(b"-----BEGIN PRIVATE KEY-----")


async def test_client_reads_logs_and_scale_subresources(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core, apps = k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client)
    pod = (await call(core.list_namespaced_pod, "shop", label_selector="app=web")).items[0]
    text = await call(core.read_namespaced_pod_log, pod.metadata.name, "shop", tail_lines=2)
    assert text.splitlines()[-1].endswith('"Mozilla/5.0"')
    assert len(text.splitlines()) == 2
    rs = (await call(apps.list_namespaced_replica_set, "shop")).items[0]
    scale = await call(apps.read_namespaced_replica_set_scale, rs.metadata.name, "shop")
    assert scale.spec.replicas == 3
    status = await call(apps.read_namespaced_deployment_status, "web", "shop")
    assert status.status.observed_generation == 1


async def test_field_selectors_used_by_describe(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core = k8s.CoreV1Api(api_client)
    pods = await call(
        core.list_pod_for_all_namespaces,
        field_selector="spec.nodeName=sandbox-worker-1,status.phase!=Succeeded",
    )
    assert pods.items
    assert all(p.spec.node_name == "sandbox-worker-1" for p in pods.items)
    deploy = await call(k8s.AppsV1Api(api_client).read_namespaced_deployment, "web", "shop")
    events = await call(
        core.list_namespaced_event,
        "shop",
        field_selector=f"involvedObject.uid={deploy.metadata.uid},involvedObject.kind=Deployment",
    )
    assert [e.reason for e in events.items] == ["ScalingReplicaSet"]


async def test_pagination_with_limit_and_continue(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core = k8s.CoreV1Api(api_client)
    first = await call(core.list_pod_for_all_namespaces, limit=2)
    assert len(first.items) == 2
    assert first.metadata._continue
    rest = await call(
        core.list_pod_for_all_namespaces, limit=100, _continue=first.metadata._continue
    )
    everything = await call(core.list_pod_for_all_namespaces)
    assert [p.metadata.name for p in first.items + rest.items] == [
        p.metadata.name for p in everything.items
    ]


async def test_aio_client_lists_and_scales(sandbox: Sandbox, kubeconfig: Path) -> None:
    cfg = aio_client.Configuration()
    await aio_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with aio_client.ApiClient(cfg) as api:
        pods = await aio_client.CoreV1Api(api).list_namespaced_pod("shop")
        assert len(pods.items) == 3
        apps = aio_client.AppsV1Api(api)
        scale = await apps.patch_namespaced_deployment_scale(
            "web", "shop", {"spec": {"replicas": 4}}
        )
        assert scale.spec.replicas == 4
    await sandbox.wait_for(lambda: len(sandbox.store.list(by_plural("", "pods"), "shop")) == 4)


async def test_dynamic_client_over_legacy_discovery(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call, tmp_path: Path
) -> None:
    from kubernetes.dynamic import DynamicClient

    def run() -> tuple[int, str, int]:
        dyn = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
        deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
        web = deployments.get(name="web", namespace="shop")
        pods = dyn.resources.get(api_version="v1", kind="Pod").get(namespace="shop")
        scale = dyn.resources.get(api_version="apps/v1", kind="Deployment").subresources["scale"]
        scaled = scale.patch(
            name="web",
            namespace="shop",
            body={"spec": {"replicas": 2}},
            content_type="application/merge-patch+json",
        )
        return web.spec.replicas, scaled.kind, len(pods.items)

    replicas, kind, pods = await call(run)
    assert (replicas, kind, pods) == (3, "Scale", 3)
    await sandbox.wait_for(lambda: len(sandbox.store.list(by_plural("", "pods"), "shop")) == 2)
