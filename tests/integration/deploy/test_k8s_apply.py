"""deploy/k8s applied with real kubectl (`apply -k`, kustomize built in) to the sandbox cluster:
a server-side dry run stores nothing, the real apply creates every object (read back with the
official client), and the two ServiceAccounts can do exactly what the catalogue needs — asked
the way an operator would, `kubectl auth can-i --as=system:serviceaccount:interlock:<sa>`,
which the sandbox answers from the stored RBAC objects."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.testing import Running, running_sandbox
from tests.integration.deploy.test_k8s_manifests import KUBECTL, build, of, rbac

Doc = dict[str, Any]
NS = rbac.NAMESPACE


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_sandbox(tmp_path_factory.mktemp("kube") / "kubeconfig", ["baseline"]) as run:
        yield run


@pytest.fixture(scope="module")
def kubectl(cluster: Running, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig),
                               "--cache-dir", str(cache), *args],
                              capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


@pytest.fixture(scope="module")
def api(cluster: Running) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig),
                                             persist_config=False)


@pytest.fixture(scope="module")
def applied(kubectl: Any, api: k8s.ApiClient,
            tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    out, docs = build(tmp_path_factory.mktemp("build"))
    # A server-side dry run needs the namespace to exist, as on a real API server.
    kubectl("apply", "-f", str(out / "namespace.yaml"))
    dry = kubectl("apply", "-k", str(out), "--dry-run=server")
    lines = [x for x in dry.stdout.splitlines() if x]
    assert len(lines) == len(docs)
    assert all(x.endswith("(server dry run)") for x in lines), dry.stdout
    assert not k8s.AppsV1Api(api).list_namespaced_deployment(NS).items
    assert not [r for r in k8s.RbacAuthorizationV1Api(api).list_cluster_role().items
                if r.metadata.name.startswith("interlock-")]
    real = kubectl("apply", "-k", str(out))
    assert "(server dry run)" not in real.stdout
    again = kubectl("apply", "-k", str(out))  # idempotent
    assert "created" not in again.stdout
    return docs


def test_every_object_exists_after_apply(applied: list[Doc], api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    batch, authz = k8s.BatchV1Api(api), k8s.RbacAuthorizationV1Api(api)
    listed = {
        "Namespace": {n.metadata.name for n in core.list_namespace().items} & {NS},
        "ServiceAccount": {s.metadata.name for s in core.list_namespaced_service_account(NS).items},
        "ConfigMap": {c.metadata.name for c in core.list_namespaced_config_map(NS).items},
        "Secret": {s.metadata.name for s in core.list_namespaced_secret(NS).items},
        "Service": {s.metadata.name for s in core.list_namespaced_service(NS).items},
        "Deployment": {d.metadata.name for d in apps.list_namespaced_deployment(NS).items},
        "StatefulSet": {s.metadata.name for s in apps.list_namespaced_stateful_set(NS).items},
        "Job": {j.metadata.name for j in batch.list_namespaced_job(NS).items},
        "ClusterRole": {r.metadata.name for r in authz.list_cluster_role().items},
        "ClusterRoleBinding": {b.metadata.name for b in authz.list_cluster_role_binding().items},
    }
    kinds = {d["kind"] for d in applied}
    assert kinds == set(listed)
    for kind, names in listed.items():
        wanted = {d["metadata"]["name"] for d in applied if d["kind"] == kind}
        assert wanted <= names, kind
    for role in of(applied, "ClusterRole"):
        stored = authz.read_cluster_role(role["metadata"]["name"])
        rules = [api.sanitize_for_serialization(r) for r in stored.rules or []]
        assert rbac.expand(rules) == rbac.expand(role["rules"])
    sa = core.read_namespaced_service_account(rbac.WRITE_SA, NS)
    assert sa.automount_service_account_token is False
    read = apps.read_namespaced_deployment("interlock-executor-read", NS)
    assert read.spec.template.spec.service_account_name == rbac.READ_SA


def _can(api: k8s.ApiClient, sa: str, group: str, resource: str, verb: str,
         namespace: str = "shop") -> bool:
    """A SelfSubjectAccessReview as the ServiceAccount (impersonated, as kubectl --as does)."""
    name, _, sub = resource.partition("/")
    attrs: dict[str, str] = {"group": group, "resource": name, "verb": verb,
                             "namespace": namespace}
    if sub:
        attrs["subresource"] = sub
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}
    m, url, headers, data, _ = api.param_serialize(
        method="POST", resource_path="/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        header_params={"Content-Type": "application/json", "Accept": "application/json",
                       "Impersonate-User": f"system:serviceaccount:{NS}:{sa}"},
        body=body, auth_settings=["BearerToken"])
    resp = api.call_api(m, url, headers, data)
    resp.read()
    return bool(json.loads(resp.data)["status"]["allowed"])


@pytest.mark.parametrize(("sa", "access"), [(rbac.READ_SA, "read"), (rbac.WRITE_SA, "write")])
def test_each_identity_may_do_exactly_what_its_tools_need(
        applied: list[Doc], api: k8s.ApiClient, sa: str, access: str) -> None:
    granted = rbac.needs(access)
    everything = set().union(*rbac.NEEDS.values())
    for need in sorted(everything | {(g, r, v) for g, r, _ in everything
                                     for v in ("get", "list", "watch", "create", "update",
                                               "patch", "delete", "deletecollection")}):
        assert _can(api, sa, *need) == (need in granted), (sa, need)


@pytest.mark.parametrize("sa", [rbac.READ_SA, rbac.WRITE_SA])
def test_kubectl_auth_can_i_refuses_the_forbidden(applied: list[Doc], kubectl: Any,
                                                  sa: str) -> None:
    who = f"--as=system:serviceaccount:{NS}:{sa}"

    def can(*args: str) -> str:
        proc = kubectl("auth", "can-i", *args, who, check=False)
        return proc.stdout.strip()

    for args in (("get", "secrets", "-n", "shop"), ("list", "secrets", "-A"),
                 ("watch", "secrets", "-n", NS), ("create", "pods", "--subresource=exec"),
                 ("create", "pods", "--subresource=attach"),
                 ("create", "pods", "--subresource=portforward"),
                 ("impersonate", "serviceaccounts"), ("impersonate", "users"),
                 ("escalate", "clusterroles"), ("bind", "clusterroles"),
                 ("create", "clusterrolebindings"), ("create", "serviceaccounts",
                                                     "--subresource=token"),
                 ("delete", "secrets", "-n", "shop")):
        assert can(*args) == "no", args
    expected = "yes" if sa == rbac.WRITE_SA else "no"
    assert can("patch", "deployments.apps", "--subresource=scale", "-n", "shop") == expected
    assert can("create", "pods", "--subresource=eviction", "-n", "shop") == expected
    assert can("update", "nodes") == expected
    assert can("get", "pods", "-n", "shop") == "yes"
    assert can("get", "pods", "--subresource=log", "-n", "shop") == \
        ("yes" if sa == rbac.READ_SA else "no")


def test_the_manifests_ship_no_kubeconfig_and_no_cluster_admin(applied: list[Doc],
                                                               kubectl: Any) -> None:
    who = f"--as=system:serviceaccount:{NS}:{rbac.WRITE_SA}"
    assert kubectl("auth", "can-i", "*", "*", who, check=False).stdout.strip() == "no"
    # the sandbox's own user is unaffected (not impersonated)
    assert kubectl("auth", "can-i", "create", "clusterrolebindings").stdout.strip() == "yes"
    cfg = [d for d in applied if d["kind"] == "ConfigMap" and "KUBECONFIG" in
           (d.get("data") or {})]
    assert not cfg
    assert Path(KUBECTL).exists()


def test_the_hub_nats_runs_three_named_pods_and_a_leafnode_service(
        applied: list[Doc], api: k8s.ApiClient, cluster: Running) -> None:
    """The sandbox's StatefulSet controller makes the pods: three, each its own server_name
    (its pod name, through `--name $(POD_NAME)`) and its own volume."""
    core = k8s.CoreV1Api(api)
    selector = "app.kubernetes.io/component=nats"
    sts = k8s.AppsV1Api(api).read_namespaced_stateful_set("nats", NS)
    assert sts.spec.replicas == 3
    pods: list[Any] = []
    for _ in range(200):
        pods = core.list_namespaced_pod(NS, label_selector=selector).items
        if len(pods) == 3:
            break
        time.sleep(0.05)
    names = sorted(p.metadata.name for p in pods)
    assert names == ["nats-0", "nats-1", "nats-2"]
    server_names = set()
    for pod in pods:
        (c,) = pod.spec.containers
        env = {e.name: e.value_from.field_ref.field_path for e in c.env if e.value_from}
        assert c.args[c.args.index("--name") + 1] == "$(POD_NAME)"
        assert env["POD_NAME"] == "metadata.name"
        server_names.add(pod.metadata.name)  # what $(POD_NAME) expands to in that pod
    assert len(server_names) == 3
    claims = {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(NS).items}
    assert {f"data-{n}" for n in names} <= claims
    leaf = core.read_namespaced_service("nats-leaf", NS)
    assert [(p.port, p.target_port) for p in leaf.spec.ports] == [(7422, "leafnodes")]
    headless = core.read_namespaced_service("nats-headless", NS)
    assert headless.spec.cluster_ip == "None"
    assert {p.name: p.port for p in headless.spec.ports} == {"client": 4222, "cluster": 6222}
