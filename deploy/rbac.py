"""Least-privilege RBAC for the executor, derived from the tool catalogue.

    python deploy/rbac.py            # print deploy/k8s/rbac.yaml
    python deploy/rbac.py --write    # rewrite it (tests/integration/deploy checks it is current)

NEEDS maps every catalogue tool to the (apiGroup, resource, verb) triples its code in
services/executor/ sends (kube_read.py, kube_write.py, facts.py): the kinds come from the tool's
argument types, so widening a Literal in schemas/catalogue.py changes the rules. Reads run under
the read ServiceAccount, previews (a server-side dry run needs the write verbs) and writes under
the write ServiceAccount (two executor Deployments, INTERLOCK_EXECUTOR_ROLE=read|write).

WITHHELD is what the catalogue could address but the deployment never grants, each with its
reason; a call that needs it fails with the API server's 403 Forbidden as its result:
  * Secrets, every verb: a read of a Secret is a read of credentials, and the executor's
    redaction is a display rule, not a permission boundary. (Writes read the object first.)
  * writes to RBAC objects: an approved binding would hand the write identity's power to an
    identity the gate does not stand in front of; and without `escalate`/`bind` (never granted)
    Kubernetes refuses most of them anyway.
FORBIDDEN is what no rule may ever contain (tests check the manifests against it).
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from schemas import catalogue as C  # noqa: E402
from services.executor.kube import KINDS  # noqa: E402

Need = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

NAMESPACE = "interlock"
READ_SA = "interlock-read"
WRITE_SA = "interlock-write"
READ_ROLE = "interlock-executor-read"
WRITE_ROLE = "interlock-executor-write"
RBAC_YAML = ROOT / "deploy" / "k8s" / "rbac.yaml"

READ_VERBS = frozenset({"get", "list", "watch"})
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_KINDS = ("role", "rolebinding", "clusterrole", "clusterrolebinding")
# Never in any rule, whatever the catalogue says.
FORBIDDEN_VERBS = frozenset({"*", "impersonate", "escalate", "bind", "approve", "sign",
                             "deletecollection"})
FORBIDDEN_RESOURCES = frozenset({
    "*", "secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/proxy",
    "services/proxy", "nodes/proxy", "serviceaccounts/token", "certificatesigningrequests",
    "certificatesigningrequests/approval", "tokenreviews", "subjectaccessreviews",
    "users", "groups", "userextras", "uids",
})


def _on(kinds: Iterable[str], *verbs: str, sub: str = "") -> set[Need]:
    out = set()
    for kind in kinds:
        info = KINDS[kind]
        resource = f"{info.plural}/{sub}" if sub else info.plural
        out |= {(info.group, resource, v) for v in verbs}
    return out


def _namespaced(kinds: Iterable[str]) -> list[str]:
    return [k for k in kinds if KINDS[k].namespaced]


def kinds_of(tool: str) -> tuple[str, ...]:
    """The kinds a tool may address: its `kind` argument's Literal, every kind the executor
    manages for a manifest, or the one kind it works on."""
    args = C.TOOLS[tool].args_type
    fields = {f.name: f for f in msgspec.structs.fields(args)}
    if "manifest" in fields:
        return tuple(KINDS)  # services.executor.kube.kind_of_manifest
    if "kind" not in fields:
        return {"logs": ("pod",)}.get(tool, ())
    return tuple(_literals(fields["kind"].type))


def _literals(annotation: typing.Any) -> list[str]:
    """The strings of a Literal, through Optional/Union and Annotated."""
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if isinstance(a, str)]
    return [v for arm in typing.get_args(annotation) for v in _literals(arm)]


# -- what each tool's code calls ---------------------------------------------------------------

WORKLOADS = ("deployment", "statefulset", "replicaset", "daemonset", "job", "cronjob")
# Every preview gathers the same context (kube_write.blast_radius, facts.gather): the pods a
# change touches, and the owner chain of the target (best effort).
PREVIEW_CONTEXT = _on(["pod"], "list") | _on(WORKLOADS, "get")


def _write(tool: str, *verbs: str) -> set[Need]:
    """A write's plan reads its target (get), the preview lists the same name in every namespace
    (facts.same_name_namespaces), a lost outcome is observed (get), and it sends `verbs`."""
    kinds = kinds_of(tool)
    return _on(kinds, "get", *verbs) | _on(_namespaced(kinds), "list") | PREVIEW_CONTEXT


def _reads() -> dict[str, set[Need]]:
    return {
        "get": _on(kinds_of("get"), "get"),
        "list": _on(kinds_of("list"), "list"),
        # the object, its events, what it owns (replicasets and pods, a cronjob's jobs)
        "describe": _on(kinds_of("describe"), "get")
        | _on(["event", "replicaset", "pod", "job"], "list"),
        "logs": _on(["pod"], "get", sub="log"),
        "events": _on(["event"], "list"),
        "rollout_status": _on(kinds_of("rollout_status"), "get"),
        "rollout_history": _on(["deployment"], "get") | _on(["replicaset"], "list"),
        "top_pods": {("metrics.k8s.io", "pods", "list")},
        "top_nodes": {("metrics.k8s.io", "nodes", "list")} | _on(["node"], "list"),
        # GET /version is public in every cluster (ClusterRole system:public-info-viewer).
        "cluster_info": _on(["node", "namespace"], "list"),
        "can_i": {("authorization.k8s.io", "selfsubjectaccessreviews", "create")},
    }


def _writes() -> dict[str, set[Need]]:
    return {
        "scale": _write("scale") | _on(kinds_of("scale"), "patch", sub="scale"),
        "rollout_restart": _write("rollout_restart", "update"),
        "rollout_undo": _write("rollout_undo", "update") | _on(["replicaset"], "list"),
        # a cronjob's pods are found through its jobs
        "set_image": _write("set_image", "update") | _on(["job"], "list"),
        "set_resources": _write("set_resources", "update") | _on(["job"], "list"),
        "set_env": _write("set_env", "update") | _on(["job"], "list"),
        "patch": _write("patch", "patch") | _on(["job"], "list"),
        "apply": _write("apply", "create", "patch") | _on(["job"], "list"),
        "create": _write("create", "create"),
        # deleting a PVC: which workloads still mount it (facts.mounted_by)
        "delete": _write("delete", "delete") | _on(WORKLOADS, "list") | _on(["job"], "list"),
        "cordon": _write("cordon", "update"),
        "uncordon": _write("uncordon", "update"),
        "drain": _write("drain", "update") | _on(["pod"], "create", sub="eviction"),
        "label": _write("label", "update") | _on(["job"], "list"),
        "annotate": _write("annotate", "update") | _on(["job"], "list"),
    }


NEEDS: dict[str, frozenset[Need]] = {
    name: frozenset(needs) for name, needs in {**_reads(), **_writes()}.items()
}

WITHHELD: dict[str, frozenset[Need]] = {
    "Secrets: a Secret's values are credentials; redaction is not a permission boundary":
        frozenset(n for n in set().union(*NEEDS.values()) if n[0] == "" and
                  n[1].split("/")[0] == "secrets"),
    "writes to RBAC objects: a binding would pass the write identity's power to an identity "
    "outside the gate":
        frozenset(n for n in set().union(*NEEDS.values()) if n[0] == RBAC_GROUP
                  and n[2] not in READ_VERBS),
}


def needs(access: str) -> frozenset[Need]:
    """The union of the needs of every tool of this access, less what is withheld."""
    out: set[Need] = set()
    for name, tool in C.TOOLS.items():
        if tool.access == access:
            out |= NEEDS[name]
    return frozenset(out - set().union(*WITHHELD.values()))


def rules(granted: Iterable[Need]) -> list[dict[str, list[str]]]:
    """RBAC rules for a set of needs: per API group, resources that share a verb set share a
    rule. Deterministic, so the manifest is stable."""
    by_resource: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in granted:
        by_resource.setdefault((group, resource), set()).add(verb)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in by_resource.items():
        grouped.setdefault((group, tuple(sorted(verbs))), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            for (group, verbs), resources in sorted(grouped.items())]


def expand(rule_list: Iterable[dict[str, typing.Any]]) -> set[Need]:
    """The (group, resource, verb) triples a list of RBAC rules grants (no wildcard expansion:
    a "*" stays a "*", which the tests refuse)."""
    out: set[Need] = set()
    for rule in rule_list:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb))
    return out


def documents() -> list[dict[str, typing.Any]]:
    docs: list[dict[str, typing.Any]] = []
    for sa, role, access, what in (
        (READ_SA, READ_ROLE, "read", "reads (executor-read)"),
        (WRITE_SA, WRITE_ROLE, "write", "previews and approved writes (executor-write)"),
    ):
        labels = {"app.kubernetes.io/name": "interlock", "app.kubernetes.io/component": sa}
        docs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": sa, "namespace": NAMESPACE, "labels": labels,
                                  "annotations": {"interlock.dev/purpose": what}},
                     "automountServiceAccountToken": False})
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": role, "labels": labels},
                     "rules": rules(needs(access))})
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": role, "labels": labels},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                 "name": role},
                     "subjects": [{"kind": "ServiceAccount", "name": sa,
                                   "namespace": NAMESPACE}]})
    return docs


def render() -> str:
    import yaml

    head = ("# GENERATED by `python deploy/rbac.py --write` from the tool catalogue; do not edit.\n"
            "# Read-only identity for reads, write identity for previews and approved writes.\n"
            "# Never granted: secrets, pods/exec|attach|portforward, impersonate, escalate, bind,\n"
            "# wildcards, RBAC writes (see deploy/rbac.py and deploy/k8s/README.md).\n")
    return head + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents())


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv[1:]:
        RBAC_YAML.write_text(text)
        sys.stdout.write(f"wrote {RBAC_YAML}\n")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
