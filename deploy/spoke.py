"""The spoke's manifests: what runs inside each cluster Interlock manages (issue 21).

    python deploy/spoke.py            # print the files of deploy/k8s/spoke/
    python deploy/spoke.py --write    # rewrite them (tests/integration/deploy checks they are
                                      # current)

A spoke is the cluster's own executors (read and write identities, each its own ServiceAccount
with the RBAC of deploy/rbac.py) and a small nats-server of their own (no JetStream) that joins
the hub as a NATS leaf node: an OUTBOUND connection to the hub's leafnode port, authenticated as
the hub user `spoke-<cluster>`, whose account reaches only that cluster's commands and results.
Nothing in the spoke listens for the outside: the leaf server's one Service is the executors'
in-cluster client port, and NetworkPolicies let only the executors reach it.

deploy/k8s/spoke/ is the base, the same for every cluster, and holds no secret and no cluster
name. `python deploy/generate.py spoke NAME --hub-leaf-url URL` writes the overlay of one
cluster (deploy/k8s/spokes/NAME/, git-ignored): its leaf config, passwords, keys and name.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "deploy"))

import rbac  # noqa: E402

SPOKE_DIR = ROOT / "deploy" / "k8s" / "spoke"
NAMESPACE = rbac.NAMESPACE
IMAGE = "interlock:local"
NATS_IMAGE = "nats:2.15"
NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
# The objects every cluster's overlay generates (deploy/generate.py spoke), by name.
LEAF_CONFIG = "interlock-nats-leaf"  # ConfigMap: the leaf server's config (no secret in it)
LEAF_SECRET = "interlock-spoke-nats"  # Secret: the hub URL with spoke-<c>'s password, local ones
CLUSTER_CONFIG = "interlock-cluster"  # ConfigMap: INTERLOCK_CLUSTER
EXECUTOR_CONFIG = "interlock-executor"
SIGNING_KEY = "interlock-executor-signing-key"
KEYRING = "interlock-keyring"
GATE_PUBKEY = "interlock-gate-pubkey"
# The local user each executor Deployment connects as (natsconf.render_spoke's local users).
ROLES = {"read": ("executor-read", rbac.READ_SA), "write": ("executor-write", rbac.WRITE_SA)}
HUB_URL_ENV = "INTERLOCK_HUB_LEAF_URL"


def password_env(user: str) -> str:
    """The variable that carries a local user's password into the leaf server's config (the
    config in the ConfigMap names it; the value is in the Secret LEAF_SECRET)."""
    return "INTERLOCK_PASSWORD_" + user.upper().replace("-", "_")


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "interlock", "app.kubernetes.io/component": component}


def _pod_security(user: int) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user,
            "seccompProfile": {"type": "RuntimeDefault"}}


_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}


def namespace() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NAMESPACE, "labels": {
                 "app.kubernetes.io/name": "interlock",
                 "pod-security.kubernetes.io/enforce": "restricted"}}}]


def config() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": EXECUTOR_CONFIG},
             "data": {
                 # the spoke's own nats-server (nats-leaf.yaml), never the hub
                 "INTERLOCK_NATS_URL": f"nats://nats:{NATS_PORT}",
                 # this cluster's own executor key (the Secret holds no other cluster's)
                 "INTERLOCK_SIGNING_KEY_FILE": "/etc/interlock/signing-key/executor.key",
                 "INTERLOCK_KEYRING_FILE": "/etc/interlock/keyring/keyring.json",
                 "INTERLOCK_GATE_PUBKEY_FILE": "/etc/interlock/gate-pub/gate.pub",
                 "INTERLOCK_CALL_TIMEOUT": "30",
                 "INTERLOCK_VERIFY_TIMEOUT": "120",
                 "INTERLOCK_LOG_LEVEL": "INFO",
             }}]


def nats_leaf() -> list[dict[str, Any]]:
    labels = _labels("nats-leaf")
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nats", "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "client", "port": NATS_PORT, "targetPort": "client"}]},
    }
    container = {
        "name": "nats",
        "image": NATS_IMAGE,
        "args": ["-c", "/etc/nats/nats.conf"],
        # The hub URL (with spoke-<cluster>'s password) and the local users' passwords: the
        # config reads them as $VARIABLES, so the ConfigMap holds none.
        "envFrom": [{"secretRef": {"name": LEAF_SECRET}}],
        "ports": [{"name": "client", "containerPort": NATS_PORT},
                  {"name": "monitor", "containerPort": NATS_MONITOR_PORT}],
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "monitor"},
                         "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "monitor"},
                          "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                      "limits": {"memory": "256Mi"}},
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{"name": "config", "mountPath": "/etc/nats", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "interlock-nats-leaf", "labels": labels},
        "spec": {
            # One connection to the hub per cluster: a second replica would be a second leaf
            # of the same account (harmless, but nothing gains from it; a restart reconnects).
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "automountServiceAccountToken": False,
                "securityContext": _pod_security(1000),
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": LEAF_CONFIG}}],
            }},
        },
    }
    return [service, deployment]


def executors() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for role, (user, sa) in ROLES.items():
        name = f"interlock-executor-{role}"
        labels = _labels(f"executor-{role}")
        container = {
            "name": f"executor-{role}",
            "image": IMAGE,
            "command": ["python", "-m", "services.executor"],
            "envFrom": [{"configMapRef": {"name": EXECUTOR_CONFIG}},
                        {"configMapRef": {"name": CLUSTER_CONFIG}},
                        {"secretRef": {"name": name}}],
            "env": [{"name": "INTERLOCK_EXECUTOR_ROLE", "value": role},
                    {"name": "INTERLOCK_NATS_USER", "value": user}],
            "livenessProbe": {"exec": {"command": ["python", "deploy/healthcheck.py",
                                                   "executor"]},
                              "initialDelaySeconds": 10, "periodSeconds": 30,
                              "timeoutSeconds": 10, "failureThreshold": 3},
            "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                          "limits": {"memory": "512Mi"}},
            "securityContext": _CONTAINER_SECURITY,
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "keyring", "mountPath": "/etc/interlock/keyring", "readOnly": True},
                {"name": "signing-key", "mountPath": "/etc/interlock/signing-key",
                 "readOnly": True},
                {"name": "gate-pub", "mountPath": "/etc/interlock/gate-pub", "readOnly": True},
            ],
        }
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {
                    # No kubeconfig: the in-cluster ServiceAccount (rbac.yaml) is its identity.
                    "serviceAccountName": sa,
                    "automountServiceAccountToken": True,
                    "securityContext": _pod_security(10001),
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "keyring", "configMap": {"name": KEYRING}},
                        {"name": "signing-key", "secret": {"secretName": SIGNING_KEY,
                                                           "defaultMode": 0o400}},
                        {"name": "gate-pub", "configMap": {"name": GATE_PUBKEY}},
                    ],
                }},
            },
        })
    return docs


def network_policies() -> list[dict[str, Any]]:
    executor_pods = {"matchExpressions": [{
        "key": "app.kubernetes.io/component", "operator": "In",
        "values": [f"executor-{role}" for role in ROLES]}]}
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "interlock-nats-leaf"},
         "spec": {"podSelector": {"matchLabels": _labels("nats-leaf")},
                  "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": executor_pods}],
                               "ports": [{"protocol": "TCP", "port": NATS_PORT}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "interlock-executor"},
         "spec": {"podSelector": executor_pods, "policyTypes": ["Ingress"], "ingress": []}},
    ]


def kustomization() -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "interlock"}}],
        "resources": [name for name in FILES if name != "kustomization.yaml"],
        "images": [{"name": "interlock", "newName": "interlock", "newTag": "local"}],
    }


HEADS = {
    "kustomization.yaml": (
        "The spoke base: what runs in each cluster Interlock manages. Apply a cluster's overlay,\n"
        "not this: `python deploy/generate.py spoke NAME --hub-leaf-url nats://HUB:7422` writes\n"
        "deploy/k8s/spokes/NAME/ (its leaf config, passwords, keys), then\n"
        "  kubectl --context NAME apply -k deploy/k8s/spokes/NAME\n"
        "See README.md (\"Many clusters\")."),
    "namespace.yaml": "The spoke's namespace (Pod Security `restricted` enforced).",
    "rbac.yaml": None,  # rbac.render() carries its own header
    "config.yaml": (
        "The executors' non-secret settings. INTERLOCK_CLUSTER comes from the overlay's\n"
        "ConfigMap interlock-cluster, the NATS password from the Secret of each role."),
    "nats-leaf.yaml": (
        "The spoke's own nats-server (no JetStream): the executors connect to it as they would\n"
        "to the hub, and it joins the hub as a leaf node, an OUTBOUND connection authenticated\n"
        "as spoke-<cluster> (the hub's account for this cluster bounds all it can do). Its\n"
        "Service is the executors' in-cluster client port; nothing exposes it outside."),
    "executor.yaml": (
        "The cluster's executors: reads under the read-only ServiceAccount, previews and\n"
        "approved writes under the write one (deploy/rbac.py), each binding its durable\n"
        "consumer for this cluster on the hub through the leaf node."),
    "network-policy.yaml": (
        "Only the executors reach the leaf server; nothing reaches the executors."),
}
BUILDERS = {
    "namespace.yaml": namespace,
    "config.yaml": config,
    "nats-leaf.yaml": nats_leaf,
    "executor.yaml": executors,
    "network-policy.yaml": network_policies,
}
FILES = ("kustomization.yaml", "namespace.yaml", "rbac.yaml", "config.yaml", "nats-leaf.yaml",
         "executor.yaml", "network-policy.yaml")
GENERATED = ("# Generated by `python deploy/spoke.py --write`: edit deploy/spoke.py, not this "
             "file.\n")


def _comment(text: str) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


def render() -> dict[str, str]:
    """Every file of deploy/k8s/spoke/, by name."""
    out: dict[str, str] = {}
    for name in FILES:
        if name == "rbac.yaml":
            out[name] = rbac.render()
            continue
        docs = [kustomization()] if name == "kustomization.yaml" else BUILDERS[name]()
        head = GENERATED + _comment(HEADS[name] or "")
        out[name] = head + "---\n".join(
            yaml.safe_dump(d, sort_keys=False, width=100) for d in docs)
    return out


def main(argv: list[str]) -> int:
    files = render()
    if "--write" in argv[1:]:
        SPOKE_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (SPOKE_DIR / name).write_text(text)
        sys.stdout.write(f"wrote {SPOKE_DIR}\n")
    else:
        for name, text in files.items():
            sys.stdout.write(f"# ==> {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
