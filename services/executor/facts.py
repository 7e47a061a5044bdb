"""Facts about a write's surroundings that a human needs to catch a bad change, gathered from
the cluster during the preview: the same name in other namespaces (the wrong-namespace failure),
workloads still mounting a PVC being deleted (the "unused" PVC of a database scaled to zero),
headless services and what a service routes to, and ownership by Jobs/CronJobs (scheduled batch
work). The gate turns them into risk flags; they never decide anything on their own."""

from __future__ import annotations

from typing import Any

from services.executor.kube import KINDS, Kube, KubeError

Obj = dict[str, Any]
_WORKLOADS = ("deployment", "statefulset", "replicaset", "daemonset", "job", "cronjob")


def _pod_spec(kind: str, obj: Obj) -> Obj:
    spec = obj.get("spec") or {}
    if kind == "cronjob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    if kind == "pod":
        return spec
    return ((spec.get("template") or {}).get("spec") or {})


def _claims(kind: str, obj: Obj) -> set[str]:
    names = {(v.get("persistentVolumeClaim") or {}).get("claimName")
             for v in _pod_spec(kind, obj).get("volumes") or []}
    if kind == "statefulset":
        # volumeClaimTemplates make PVCs named <template>-<set>-<ordinal>.
        set_name = obj["metadata"]["name"]
        for t in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            prefix = f"{t['metadata']['name']}-{set_name}-"
            names.add(prefix)
    return {n for n in names if n}


def _mounted_by(k: Kube, ctx: str, namespace: str, pvc: str) -> list[str]:
    out = []
    for kind in _WORKLOADS:
        if kind not in KINDS:
            continue
        for obj in k.list(ctx, kind, namespace):
            claims = _claims(kind, obj)
            if pvc in claims or any(c.endswith("-") and pvc.startswith(c) for c in claims):
                replicas = (obj.get("spec") or {}).get("replicas")
                note = f" (replicas {replicas})" if isinstance(replicas, int) else ""
                out.append(f"{kind}/{obj['metadata']['name']}{note}")
    return out


def _owners(k: Kube, ctx: str, obj: Obj, depth: int = 3) -> list[str]:
    chain: list[str] = []
    current = obj
    for _ in range(depth):
        refs = (current.get("metadata") or {}).get("ownerReferences") or []
        if not refs:
            break
        ref = refs[0]
        chain.append(f"{ref['kind']}/{ref['name']}")
        kind = ref["kind"].lower()
        if kind not in KINDS:
            break
        parent = k.read_or_none(ctx, kind, current["metadata"].get("namespace", ""), ref["name"])
        if parent is None:
            break
        current = parent
    return chain


def gather(k: Kube, ctx: str, kind: str, namespace: str, name: str, before: Obj | None,
           deleting: bool) -> dict[str, Any]:
    """BlastRadius fields; best effort: a fact that cannot be read is left out, never guessed
    into a reassurance."""
    facts: dict[str, Any] = {}
    if not name or kind not in KINDS:
        return facts
    try:
        if KINDS[kind].namespaced:
            same = k.list(ctx, kind, all_namespaces=True,
                          field_selector=f"metadata.name={name}")
            others = sorted({o["metadata"].get("namespace", "") for o in same} - {namespace})
            if others:
                facts["same_name_namespaces"] = tuple(others)
        if before is not None:
            owners = _owners(k, ctx, before)
            if owners:
                facts["owners"] = tuple(owners)
        if deleting and kind == "persistentvolumeclaim":
            mounted = _mounted_by(k, ctx, namespace, name)
            if mounted:
                facts["mounted_by"] = tuple(mounted)
        if deleting and kind == "service" and before is not None:
            spec = before.get("spec") or {}
            facts["headless"] = spec.get("clusterIP") == "None"
            selector = spec.get("selector") or {}
            if selector:
                sel = ",".join(f"{a}={b}" for a, b in sorted(selector.items()))
                pods = k.list(ctx, "pod", namespace, label_selector=sel)
                facts["selects"] = tuple(sorted(p["metadata"]["name"] for p in pods))
    except KubeError:
        pass
    return facts
