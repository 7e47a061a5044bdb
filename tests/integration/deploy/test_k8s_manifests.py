"""deploy/k8s kept honest: the RBAC rules are exactly what the catalogue's tools need (less the
documented withholdings), nothing forbidden is granted anywhere, and every Deployment runs its
service with only settings it reads, files it can find, and the identity it should have."""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.stack import SERVICES
from schemas import catalogue as C
from services.runtime import natsconf
from tests.integration.deploy.test_compose import SETTINGS, Recording

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = Path(sys.prefix, "bin", "kubectl")
sys.path.insert(0, str(ROOT / "deploy"))
import generate  # noqa: E402
import rbac  # noqa: E402

Doc = dict[str, Any]


def build(tmp: Path, clusters: tuple[str, ...] = ()) -> tuple[Path, list[Doc]]:
    """deploy/k8s copied next to freshly generated secrets, rendered by kubectl's kustomize."""
    out = tmp / "k8s"
    shutil.copytree(K8S, out, ignore=shutil.ignore_patterns("secrets", "spokes"))
    subprocess.run([sys.executable, str(ROOT / "deploy" / "generate.py"), "k8s",
                    str(out / "secrets"), *(f"--cluster={c}" for c in clusters)],
                   check=True, capture_output=True)
    text = subprocess.run([str(KUBECTL), "kustomize", str(out)], check=True,
                          capture_output=True, text=True).stdout
    return out, [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Doc]]:
    return build(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def docs(built: tuple[Path, list[Doc]]) -> list[Doc]:
    return built[1]


def of(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = of(docs, kind, name)
    return found


# -- RBAC equals the catalogue -----------------------------------------------------------------


def test_every_catalogue_tool_has_its_needs() -> None:
    assert set(rbac.NEEDS) == set(C.TOOLS), "a tool without RBAC needs (deploy/rbac.py NEEDS)"
    for name, needs in rbac.NEEDS.items():
        assert needs, name


def test_rbac_yaml_is_generated_from_the_catalogue() -> None:
    assert (K8S / "rbac.yaml").read_text() == rbac.render(), \
        "deploy/k8s/rbac.yaml is stale: run `python deploy/rbac.py --write`"


@pytest.mark.parametrize(("role", "access"), [(rbac.READ_ROLE, "read"),
                                              (rbac.WRITE_ROLE, "write")])
def test_cluster_roles_equal_the_union_of_needs(docs: list[Doc], role: str, access: str) -> None:
    granted = rbac.expand(one(docs, "ClusterRole", role)["rules"])
    wanted = rbac.needs(access)
    assert granted - wanted == set(), "granted but no tool needs it"
    assert wanted - granted == set(), "a tool needs it but it is not granted"
    withheld = set().union(*rbac.WITHHELD.values())
    assert not granted & withheld


def test_the_read_identity_only_reads(docs: list[Doc]) -> None:
    granted = rbac.expand(one(docs, "ClusterRole", rbac.READ_ROLE)["rules"])
    assert {n for n in granted if n[2] not in rbac.READ_VERBS} == \
        {("authorization.k8s.io", "selfsubjectaccessreviews", "create")}  # can_i: a question
    write_tools = {n for t, tool in C.TOOLS.items() if tool.access == "write"
                   for n in rbac.NEEDS[t] if n[2] not in rbac.READ_VERBS}
    assert not granted & write_tools


def test_needs_follow_the_executor_code() -> None:
    """Spot checks against what services/executor sends."""
    read, write = rbac.needs("read"), rbac.needs("write")
    assert ("", "pods/log", "get") in read
    assert ("metrics.k8s.io", "pods", "list") in read
    assert ("apps", "deployments/scale", "patch") in write  # kube_write.scale
    assert ("", "pods/eviction", "create") in write  # kube_write.drain
    assert ("", "nodes", "update") in write  # cordon is a PUT
    assert ("apps", "deployments", "update") in write  # set_image & co. are PUTs
    assert ("", "pods", "list") in write  # every preview's blast radius
    assert ("", "persistentvolumeclaims", "list") in write  # same name elsewhere (facts)
    # what the catalogue reaches but the deployment withholds
    every = set().union(*rbac.NEEDS.values())
    assert ("", "secrets", "get") in every
    assert ("rbac.authorization.k8s.io", "clusterrolebindings", "create") in every
    assert not any(n[1] == "secrets" for n in read | write)
    assert ("rbac.authorization.k8s.io", "roles", "get") in write  # read, not written
    assert not any(n[0] == rbac.RBAC_GROUP and n[2] not in rbac.READ_VERBS for n in write)


def test_a_new_kind_in_the_catalogue_changes_the_rules() -> None:
    assert set(rbac.kinds_of("patch")) == set(C.Kind.__args__)  # type: ignore[attr-defined]
    assert set(rbac.kinds_of("scale")) == set(C.ScalableKind.__args__)  # type: ignore[attr-defined]
    assert rbac.kinds_of("cordon") == ("node",)
    assert set(rbac.kinds_of("apply")) == set(rbac.KINDS)


# -- nothing forbidden, anywhere ---------------------------------------------------------------


def test_no_manifest_grants_anything_forbidden(docs: list[Doc]) -> None:
    roles = of(docs, "ClusterRole") + of(docs, "Role")
    assert {r["metadata"]["name"] for r in roles} == {rbac.READ_ROLE, rbac.WRITE_ROLE}
    for role in roles:
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs
            assert not set(rule["verbs"]) & rbac.FORBIDDEN_VERBS, rule
            assert not set(rule["resources"]) & rbac.FORBIDDEN_RESOURCES, rule
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in v for v in rule[field]), rule
    bindings = of(docs, "ClusterRoleBinding") + of(docs, "RoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == {rbac.READ_ROLE, rbac.WRITE_ROLE}
    for b in bindings:
        assert b["roleRef"]["name"] not in ("cluster-admin", "admin", "edit")
        (subject,) = b["subjects"]
        assert subject["kind"] == "ServiceAccount"
        assert subject["namespace"] == rbac.NAMESPACE
        assert subject["name"] == {rbac.READ_ROLE: rbac.READ_SA,
                                   rbac.WRITE_ROLE: rbac.WRITE_SA}[b["roleRef"]["name"]]


def _pod_specs(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def test_only_the_executors_carry_a_kubernetes_identity(docs: list[Doc]) -> None:
    for name, spec in _pod_specs(docs).items():
        if name == "interlock-executor-read":
            assert spec["serviceAccountName"] == rbac.READ_SA
            assert spec["automountServiceAccountToken"] is True
        elif name == "interlock-executor-write":
            assert spec["serviceAccountName"] == rbac.WRITE_SA
            assert spec["automountServiceAccountToken"] is True
        else:
            assert "serviceAccountName" not in spec, name
            assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
    for sa in of(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


# -- every service, its settings, files and secrets --------------------------------------------


def _secret_data(doc: Doc) -> dict[str, str]:
    if doc["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    return dict(doc.get("data") or {})


def _env(docs: list[Doc], container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source \
            else ("Secret", source["secretRef"])
        env.update(_secret_data(one(docs, kind, ref["name"])))
    for item in container.get("env") or []:
        env[item["name"]] = item["value"]
    return env


def _deployments_of(service: str) -> list[str]:
    if service == "executor":
        return ["interlock-executor-read", "interlock-executor-write"]
    return [f"interlock-{service}"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_with_only_settings_it_reads(docs: list[Doc], service: str) -> None:
    module, cls = SETTINGS[service].split(":")
    settings_class = getattr(importlib.import_module(module), cls)
    for name in _deployments_of(service):
        deploy = one(docs, "Deployment", name)
        (container,) = deploy["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"services.{service}"]
        assert container["image"] == "interlock:local"
        env = _env(docs, container)
        recording = Recording(env)
        settings = settings_class.from_env(recording)
        unknown = set(env) - recording.asked
        assert not unknown, f"{name}: variables its settings never read: {unknown}"
        assert settings.nats.user == service
        assert env["INTERLOCK_NATS_URL"] == "nats://nats:4222"
        if service == "executor":
            assert settings.kubeconfig is None  # in-cluster, as its ServiceAccount
            assert settings.role == name.rsplit("-", 1)[1]
        # every file setting points into a volume that holds that key
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        for key, value in env.items():
            if key.endswith("_FILE") and value:
                directory, _, filename = value.rpartition("/")
                vol = volumes[mounts[directory]]
                kind, ref = ("Secret", vol["secret"]["secretName"]) if "secret" in vol \
                    else ("ConfigMap", vol["configMap"]["name"])
                assert filename in _secret_data(one(docs, kind, ref)), f"{name}: {key}"


def test_the_executors_split_reads_from_writes(docs: list[Doc]) -> None:
    job = one(docs, "Job", "interlock-provision")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "services.runtime.provision"]
    env = _env(docs, container)
    assert env["INTERLOCK_EXECUTOR_CONSUMERS"] == "split"
    assert env["INTERLOCK_NATS_USER"] == natsconf.ADMIN_USER
    # the admin password is the job's alone
    for name, spec in _pod_specs(docs).items():
        refs = [s.get("secretRef", {}).get("name") for c in spec["containers"]
                for s in c.get("envFrom") or []]
        assert ("interlock-admin" in refs) == (name == "interlock-provision"), name


def test_secrets_match_the_nats_config(docs: list[Doc]) -> None:
    conf = json.loads(_secret_data(one(docs, "Secret", "interlock-nats-config"))["nats.conf"])
    users = {name: entry for name, (_, entry) in natsconf.users(conf).items()}
    assert conf["jetstream"] == {"store_dir": "/data/jetstream", "sync_interval": "always"}
    for service in SERVICES:
        password = _secret_data(one(docs, "Secret", f"interlock-{service}"))
        assert users[service]["password"] == password["INTERLOCK_NATS_PASSWORD"]
        assert users[service]["permissions"] == natsconf.permissions(service)
    admin = _secret_data(one(docs, "Secret", "interlock-admin"))
    assert users[natsconf.ADMIN_USER]["password"] == admin["INTERLOCK_NATS_PASSWORD"]
    # The gate's key is mounted by the gate alone.
    for name, spec in _pod_specs(docs).items():
        secrets = {v.get("secret", {}).get("secretName") for v in spec.get("volumes") or []}
        assert ("interlock-gate-key" in secrets) == (name == "interlock-gate"), name


def test_the_gateway_is_probed_and_served(docs: list[Doc]) -> None:
    deploy = one(docs, "Deployment", "interlock-gateway")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    svc = one(docs, "Service", "interlock-gateway")
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    for name in ("interlock-planner", "interlock-gate", "interlock-notifier",
                 "interlock-executor-read", "interlock-executor-write"):
        (c,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert c["livenessProbe"]["exec"]["command"][:2] == ["python", "deploy/healthcheck.py"]
    nats = one(docs, "StatefulSet", "nats")
    (c,) = nats["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["-c", "/etc/nats/nats.conf"]
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/nats", "/data"}


# -- the hub's NATS: three JetStream nodes, routes between them, a leafnode port ---------------


def test_the_hub_nats_is_a_three_node_jetstream_cluster(docs: list[Doc]) -> None:
    sts = one(docs, "StatefulSet", "nats")
    spec = sts["spec"]
    assert spec["replicas"] == generate.HUB_REPLICAS == 3
    assert spec["podManagementPolicy"] == "Parallel"  # a quorum must start together
    (c,) = spec["template"]["spec"]["containers"]
    # one config, a server_name per pod: its pod name (unique and stable in a StatefulSet)
    assert c["args"] == ["-c", "/etc/nats/nats.conf", "--name", "$(POD_NAME)"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} \
        in c["env"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"client": 4222, "cluster": generate.CLUSTER_PORT,
                     "leafnodes": generate.LEAF_PORT, "monitor": 8222}
    conf = json.loads(_secret_data(one(docs, "Secret", "interlock-nats-config"))["nats.conf"])
    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert {"name": "cluster", "port": 6222, "targetPort": "cluster"} in headless["spec"]["ports"]
    # the routes name every pod by its stable DNS name under the headless Service
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(spec["replicas"])]
    assert conf["cluster"]["routes"] == [
        f"nats://{pod}.{spec['serviceName']}.{rbac.NAMESPACE}.svc:6222" for pod in pods]
    assert conf["cluster"]["listen"] == "0.0.0.0:6222"
    assert conf["jetstream"]["store_dir"] == "/data/jetstream"
    # one cluster (no --cluster): no leafnode listener, no INTERLOCK_CLUSTERS
    assert "leafnodes" not in conf
    assert not one(docs, "ConfigMap", "interlock-clusters").get("data")
    provision = one(docs, "ConfigMap", "interlock-provision")["data"]
    assert provision["INTERLOCK_STREAM_REPLICAS"] == str(spec["replicas"])
    leaf = one(docs, "Service", "nats-leaf")
    assert leaf["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert leaf["spec"]["ports"] == [{"name": "leafnodes", "port": generate.LEAF_PORT,
                                      "targetPort": "leafnodes"}]
    assert leaf["spec"].get("type", "ClusterIP") == "ClusterIP"  # exposing it is a choice


def test_nats_server_accepts_the_hub_config(built: tuple[Path, list[Doc]]) -> None:
    out, _ = built
    proc = subprocess.run([str(Path(sys.prefix, "bin", "nats-server")), "-t", "-c",
                           str(out / "secrets" / "nats-cluster.conf")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr + proc.stdout
