"""The write tools: one plan per tool, used twice — as a server-side dry run for the preview a
human approves, and for real with the previewed resourceVersion as a precondition.

A plan reads the object, computes the request from it, and `send(dry_run, rv)` performs it.
Because preview and execution run the very same plan, what was shown is what runs; because the
real request carries the previewed resourceVersion, a target that changed in between fails with
a Conflict instead of being overwritten."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas import catalogue as C
from schemas.approval import BlastRadius, FieldChange
from services.executor import evidence, facts
from services.executor import kube_read as R
from services.executor.diff import diff, value_at
from services.executor.kube import KINDS, Kube, KubeError, Outcome, Preview, kind_of_manifest, path
from services.executor.redact import redact

Obj = dict[str, Any]
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_PROD = re.compile(r"(^|[-_.])(prod|production|live)($|[-_.])")
WORKLOADS = ("deployment", "statefulset", "daemonset", "replicaset")
# Node writes that leave the pods running there alone (see affected_namespaces).
NODE_HARMLESS = ("uncordoned", "labeled", "annotated")


@dataclass
class Plan:
    kind: str
    namespace: str
    name: str
    before: Obj | None
    send: Callable[[bool, str], Obj | None]  # (dry_run, resourceVersion) -> object after
    deleting: bool = False
    verb: str = "configured"
    # Every object `send` acts on, enumerated when the plan is made: sorted
    # "namespace/kind/name" refs (`effect_ref`), or () for a write on its target alone. A plan
    # that sets it must act on exactly these objects and no others (a drain evicts its listed
    # pods, never a fresh list). The preview records it, the grant binds its digest, and `execute`
    # sends nothing unless the plan made again at execution enumerates the same set.
    effect: tuple[str, ...] = ()

    @property
    def rv(self) -> str:
        return str(((self.before or {}).get("metadata") or {}).get("resourceVersion", ""))

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def effect_ref(namespace: str, kind: str, name: str) -> str:
    """One object of an effect: "namespace/kind/name" ("" namespace when cluster-scoped)."""
    return f"{namespace}/{kind}/{name}"


def _pod_ref(pod: Obj) -> str:
    return effect_ref(pod["metadata"].get("namespace", ""), "pod", pod["metadata"]["name"])


class EffectChanged(KubeError):
    """The objects a write would act on now are not the ones its card enumerated and the human
    approved: nothing was sent."""

    def __init__(self, what: str, added: tuple[str, ...], removed: tuple[str, ...]) -> None:
        said = "; ".join(part for part in (
            f"now also {', '.join(added)}" if added else "",
            f"no longer {', '.join(removed)}" if removed else "") if part)
        super().__init__("Conflict", f"{what} was not run: the objects it acts on changed since "
                         f"it was previewed and approved ({said}); nothing was changed — review "
                         "the new state and propose the call again", 409)
        self.added = added
        self.removed = removed


def check_effect(plan: Plan, approved: tuple[str, ...]) -> None:
    """Raises EffectChanged unless the plan acts on exactly the approved objects.

    The one comparison every write with an enumerated effect goes through (`execute` calls it
    before sending anything): `approved` is the effect the human approved (the call's, whose
    digest the grant signs), () for a write that enumerated nothing — so a plan that now
    enumerates objects where none were approved is refused too."""
    now, then = set(plan.effect), set(approved)
    if now != then:
        raise EffectChanged(f"the write to {plan.ref}", tuple(sorted(now - then)),
                            tuple(sorted(then - now)))


def _ns(kind: str, namespace: str) -> str:
    return namespace if KINDS[kind].namespaced else ""


def _dry(dry_run: bool) -> dict[str, Any]:
    return {"dryRun": "All" if dry_run else None, "fieldManager": "interlock"}


def _put_plan(k: Kube, ctx: str, kind: str, namespace: str, name: str,
              change: Callable[[Obj], Obj], verb: str = "configured") -> Plan:
    """A write computed locally from the current object and sent as a replace (PUT)."""
    ns = _ns(kind, namespace)
    before = k.read(ctx, kind, ns, name)
    new = change(copy.deepcopy(before))

    def send(dry_run: bool, rv: str) -> Obj:
        body = copy.deepcopy(new)
        body["metadata"]["resourceVersion"] = rv or before["metadata"]["resourceVersion"]
        out: Obj = k.request(ctx, "PUT", path(kind, ns, name), body=body, query=_dry(dry_run))
        return out

    return Plan(kind, ns, name, before, send, verb=verb)


def _patch_plan(k: Kube, ctx: str, kind: str, namespace: str, name: str, body: Obj,
                content_type: str, verb: str = "patched") -> Plan:
    ns = _ns(kind, namespace)
    before = k.read(ctx, kind, ns, name)

    def send(dry_run: bool, rv: str) -> Obj:
        patch = copy.deepcopy(body)
        meta = patch.setdefault("metadata", {})
        if isinstance(meta, dict):  # an optimistic-lock precondition, honoured by the server
            meta["resourceVersion"] = rv or before["metadata"]["resourceVersion"]
        out: Obj = k.request(ctx, "PATCH", path(kind, ns, name), body=patch,
                             content_type=content_type, query=_dry(dry_run))
        return out

    return Plan(kind, ns, name, before, send, verb=verb)


# -- containers of a pod template --------------------------------------------------------------


def _template(kind: str, obj: Obj) -> Obj:
    spec = obj["spec"]
    if kind == "cronjob":
        return spec["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    return spec["template"]  # type: ignore[no-any-return]


def _containers(kind: str, obj: Obj, wanted: str | None) -> list[Obj]:
    containers: list[Obj] = _template(kind, obj)["spec"].get("containers") or []
    if wanted is None:
        return containers
    chosen = [c for c in containers if c.get("name") == wanted]
    if not chosen:
        names = ", ".join(c.get("name", "") for c in containers)
        raise KubeError("NotFound", f"{kind}/{obj['metadata']['name']} has no container "
                        f"{wanted!r} (containers: {names})", 404)
    return chosen


def scale(k: Kube, a: C.ScaleArgs) -> Plan:
    before = k.read(a.cluster, a.kind, a.namespace, a.name)

    def send(dry_run: bool, rv: str) -> Obj:
        body = {"spec": {"replicas": a.replicas},
                "metadata": {"resourceVersion": rv or before["metadata"]["resourceVersion"]}}
        out = k.request(a.cluster, "PATCH", path(a.kind, a.namespace, a.name, "scale"),
                        body=body, content_type=MERGE, query=_dry(dry_run))
        after = copy.deepcopy(before)
        after["spec"]["replicas"] = (out.get("spec") or {}).get("replicas", a.replicas)
        return after

    return Plan(a.kind, a.namespace, a.name, before, send, verb="scaled")


def rollout_restart(k: Kube, a: C.RolloutRestartArgs) -> Plan:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def change(o: Obj) -> Obj:
        meta = o["spec"]["template"].setdefault("metadata", {})
        meta.setdefault("annotations", {})[RESTARTED_AT] = now
        return o

    return _put_plan(k, a.cluster, a.kind, a.namespace, a.name, change, "restarted")


def rollout_undo(k: Kube, a: C.RolloutUndoArgs) -> Plan:
    deploy = k.read(a.cluster, "deployment", a.namespace, a.name)
    revs = R.revisions(k, a.cluster, deploy)
    current = int((deploy["metadata"].get("annotations") or {}).get(R.REVISION, "0") or 0)
    if a.to_revision:
        match = [rs for r, rs in revs if r == a.to_revision]
    else:
        match = [rs for r, rs in revs if r < current][-1:]
    if not match:
        raise KubeError("NotFound", f"deployment/{a.name} has no revision "
                        f"{a.to_revision or 'before ' + str(current)} to roll back to "
                        f"(revisions: {', '.join(str(r) for r, _ in revs) or 'none'})", 404)
    template = copy.deepcopy(match[0]["spec"]["template"])
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)

    def change(o: Obj) -> Obj:
        o["spec"]["template"] = template
        return o

    return _put_plan(k, a.cluster, "deployment", a.namespace, a.name, change, "rolled back")


def set_image(k: Kube, a: C.SetImageArgs) -> Plan:
    def change(o: Obj) -> Obj:
        for c in _containers(a.kind, o, a.container):
            c["image"] = a.image
        return o

    return _put_plan(k, a.cluster, a.kind, a.namespace, a.name, change, "image updated")


def set_resources(k: Kube, a: C.SetResourcesArgs) -> Plan:
    def change(o: Obj) -> Obj:
        for c in _containers(a.kind, o, a.container):
            res = c.setdefault("resources", {})
            for section, values in (("requests", a.requests), ("limits", a.limits)):
                if values is None:
                    continue
                for key in ("cpu", "memory"):
                    if getattr(values, key) is not None:
                        res.setdefault(section, {})[key] = getattr(values, key)
        return o

    return _put_plan(k, a.cluster, a.kind, a.namespace, a.name, change,
                     "resource requirements updated")


def set_env(k: Kube, a: C.SetEnvArgs) -> Plan:
    def change(o: Obj) -> Obj:
        for c in _containers(a.kind, o, a.container):
            env = [e for e in c.get("env") or [] if e.get("name") not in a.remove]
            for name, value in a.env.items():
                existing = next((e for e in env if e.get("name") == name), None)
                if existing is None:
                    env.append({"name": name, "value": value})
                else:
                    existing.pop("valueFrom", None)
                    existing["value"] = value
            c["env"] = env
        return o

    return _put_plan(k, a.cluster, a.kind, a.namespace, a.name, change, "env updated")


def patch(k: Kube, a: C.PatchArgs) -> Plan:
    return _patch_plan(k, a.cluster, a.kind, a.namespace, a.name, dict(a.body),
                       SMP if a.patch_type == "strategic" else MERGE)


def _manifest_target(a: C.ApplyArgs | C.CreateArgs) -> tuple[str, str, Obj]:
    kind = kind_of_manifest(a.manifest)
    manifest = copy.deepcopy(a.manifest)
    manifest.pop("status", None)
    ns = _ns(kind, str(manifest["metadata"].get("namespace") or a.namespace))
    if ns:
        manifest["metadata"]["namespace"] = ns
    return kind, ns, manifest


def _create_plan(k: Kube, ctx: str, kind: str, ns: str, manifest: Obj) -> Plan:
    def send(dry_run: bool, rv: str) -> Obj:
        out: Obj = k.request(ctx, "POST", path(kind, ns), body=manifest, query=_dry(dry_run))
        return out

    return Plan(kind, ns, manifest["metadata"]["name"], None, send, verb="created")


def apply(k: Kube, a: C.ApplyArgs) -> Plan:
    kind, ns, manifest = _manifest_target(a)
    name = manifest["metadata"]["name"]
    applied = copy.deepcopy(manifest)
    manifest["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(
        applied, sort_keys=True, separators=(",", ":"))
    before = k.read_or_none(a.cluster, kind, ns, name)
    if before is None:
        plan = _create_plan(k, a.cluster, kind, ns, manifest)

        def send_new(dry_run: bool, rv: str) -> Obj | None:
            if rv:  # previewed as existing; it has gone since
                raise KubeError("Conflict", f"{kind}/{name} was deleted since it was previewed",
                                409)
            return plan.send(dry_run, rv)

        return Plan(kind, ns, name, None, send_new, verb="created")
    body = copy.deepcopy(manifest)
    body["metadata"].pop("namespace", None)
    return _patch_plan(k, a.cluster, kind, ns, name, body, SMP, verb="configured")


def create(k: Kube, a: C.CreateArgs) -> Plan:
    kind, ns, manifest = _manifest_target(a)
    return _create_plan(k, a.cluster, kind, ns, manifest)


def delete(k: Kube, a: C.DeleteArgs) -> Plan:
    ns = _ns(a.kind, a.namespace)
    before = k.read(a.cluster, a.kind, ns, a.name)

    def send(dry_run: bool, rv: str) -> None:
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1",
                        "propagationPolicy": a.propagation.capitalize(),
                        "preconditions": {"resourceVersion":
                                          rv or before["metadata"]["resourceVersion"]}}
        if a.grace_period_seconds is not None:
            options["gracePeriodSeconds"] = a.grace_period_seconds
        if dry_run:
            options["dryRun"] = ["All"]
        k.request(a.cluster, "DELETE", path(a.kind, ns, a.name), body=options,
                  query=_dry(dry_run))
        return None

    effect = namespace_effect(k, a.cluster, a.name) if a.kind == "namespace" else ()
    return Plan(a.kind, ns, a.name, before, send, deleting=True, verb="deleted", effect=effect)


def _unschedulable(k: Kube, ctx: str, name: str, value: bool, verb: str) -> Plan:
    def change(o: Obj) -> Obj:
        if value:
            o.setdefault("spec", {})["unschedulable"] = True
        else:
            o.setdefault("spec", {}).pop("unschedulable", None)
        return o

    return _put_plan(k, ctx, "node", "", name, change, verb)


def cordon(k: Kube, a: C.CordonArgs) -> Plan:
    return _unschedulable(k, a.cluster, a.name, True, "cordoned")


def uncordon(k: Kube, a: C.UncordonArgs) -> Plan:
    return _unschedulable(k, a.cluster, a.name, False, "uncordoned")


def _drainable(a: C.DrainArgs, pods: list[Obj]) -> list[Obj]:
    out = []
    for p in pods:
        refs = p["metadata"].get("ownerReferences") or []
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if any(r.get("kind") == "DaemonSet" for r in refs):
            if a.ignore_daemonsets:
                continue
            raise KubeError("Invalid", f"pod {p['metadata']['name']} is managed by a DaemonSet "
                            "(set ignore_daemonsets)", 422)
        if not a.delete_emptydir_data and any(
                "emptyDir" in v for v in (p.get("spec") or {}).get("volumes") or []):
            raise KubeError("Invalid", f"pod {p['metadata']['name']} uses emptyDir data that "
                            "would be lost (set delete_emptydir_data)", 422)
        if not refs:
            raise KubeError("Invalid", f"pod {p['metadata']['name']} has no controller and "
                            "would not come back; delete it explicitly first", 422)
        out.append(p)
    return out


def _evict(k: Kube, ctx: str, pod: Obj, dry_run: bool, grace: int | None) -> None:
    meta = pod["metadata"]
    body: Obj = {"apiVersion": "policy/v1", "kind": "Eviction",
                 "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    if grace is not None or dry_run:
        body["deleteOptions"] = {**({"gracePeriodSeconds": grace} if grace is not None else {}),
                                 **({"dryRun": ["All"]} if dry_run else {})}
    k.request(ctx, "POST", path("pod", meta["namespace"], meta["name"], "eviction"), body=body,
              query={"dryRun": "All" if dry_run else None})


def drain(k: Kube, a: C.DrainArgs) -> Plan:
    cordon_plan = _unschedulable(k, a.cluster, a.name, True, "drained")
    pods = _drainable(a, R.pods_of(k, a.cluster, "node", cordon_plan.before or {}))
    blocked: list[str] = []

    def send(dry_run: bool, rv: str) -> Obj | None:
        node = cordon_plan.send(dry_run, rv)
        deadline = time.monotonic() + a.timeout_seconds
        pending = list(pods)
        blocked.clear()
        while pending:
            retry = []
            for p in pending:
                try:
                    _evict(k, a.cluster, p, dry_run, a.grace_period_seconds)
                except KubeError as exc:
                    if exc.status == 404:
                        continue  # gone already
                    if exc.status != 429:
                        raise
                    retry.append(p)
            if not retry or dry_run:
                blocked[:] = [f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                              for p in retry]
                break
            if time.monotonic() >= deadline:
                names = ", ".join(p["metadata"]["name"] for p in retry)
                raise KubeError("TooManyRequests", f"drain of node/{a.name} stopped after "
                                f"{a.timeout_seconds}s: evicting {names} would violate a "
                                "PodDisruptionBudget; the node stays cordoned and "
                                f"{len(pods) - len(retry)} of {len(pods)} pods were evicted", 429)
            pending = retry
            time.sleep(1.0)  # kubectl retries blocked evictions every few seconds
        return node

    # The node and exactly the pods listed here: `send` evicts these, never a fresh list, and
    # `execute` refuses when the list made again at execution is not the approved one (pods
    # land on a node without changing the Node's resourceVersion, so no precondition sees it).
    plan = Plan("node", "", a.name, cordon_plan.before, send, verb="drained",
                effect=tuple(sorted([effect_ref("", "node", a.name),
                                     *(_pod_ref(p) for p in pods)])))
    plan.drain_pods = pods  # type: ignore[attr-defined]
    plan.drain_blocked = blocked  # type: ignore[attr-defined]
    return plan


def _meta_plan(k: Kube, a: C.LabelArgs | C.AnnotateArgs, field: str,
               values: dict[str, str | None]) -> Plan:
    def change(o: Obj) -> Obj:
        current = o["metadata"].setdefault(field, {})
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            elif key in current and current[key] != value and not a.overwrite:
                raise KubeError("Invalid", f"'{key}' already has a value ({current[key]}), and "
                                "overwrite is false", 422)
            else:
                current[key] = value
        return o

    return _put_plan(k, a.cluster, a.kind, a.namespace, a.name, change,
                     "labeled" if field == "labels" else "annotated")


def label(k: Kube, a: C.LabelArgs) -> Plan:
    return _meta_plan(k, a, "labels", dict(a.labels))


def annotate(k: Kube, a: C.AnnotateArgs) -> Plan:
    return _meta_plan(k, a, "annotations", dict(a.annotations))


PLANNERS: dict[type[C.Args], Callable[[Kube, Any], Plan]] = {
    C.ScaleArgs: scale, C.RolloutRestartArgs: rollout_restart, C.RolloutUndoArgs: rollout_undo,
    C.SetImageArgs: set_image, C.SetResourcesArgs: set_resources, C.SetEnvArgs: set_env,
    C.PatchArgs: patch, C.ApplyArgs: apply, C.CreateArgs: create, C.DeleteArgs: delete,
    C.CordonArgs: cordon, C.UncordonArgs: uncordon, C.DrainArgs: drain, C.LabelArgs: label,
    C.AnnotateArgs: annotate,
}


def plan_for(k: Kube, args: C.Args) -> Plan:
    if getattr(args, "selector", ""):
        from services.executor import selector  # it builds on this module's planners

        return selector.plan(k, args)  # type: ignore[arg-type]
    planner = PLANNERS.get(type(args))
    if planner is None:
        raise KubeError("NotSupported", f"no writer for {type(args).__name__}")
    return planner(k, args)


# -- preview, execution, verification ----------------------------------------------------------


def _changes(plan: Plan, after: Obj | None) -> tuple[FieldChange, ...]:
    if hook := getattr(plan, "changes_of", None):  # a selector's plan: each object's changes
        return hook(after)  # type: ignore[no-any-return]
    if plan.deleting:
        return (FieldChange(path=plan.ref, before="exists", after="deleted"),)
    changes = diff(plan.before, after)
    for pod in getattr(plan, "drain_pods", []):
        meta = pod["metadata"]
        changes += (FieldChange(path=f"pod/{meta['namespace']}/{meta['name']}",
                                before=(pod.get("status") or {}).get("phase", "Running"),
                                after="evicted"),)
    return changes


def _replicas(obj: Obj | None) -> int | None:
    value = ((obj or {}).get("spec") or {}).get("replicas")
    return int(value) if isinstance(value, int) else None


# What dies with a namespace, in the order a human weighs it: workloads, pods, data, routing,
# configuration. (label, kinds) — ReplicaSets are left out: their Deployments are counted.
_NAMESPACE_CONTENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("deployment", "deployments", ("deployment",)),
    ("statefulset", "statefulsets", ("statefulset",)),
    ("daemonset", "daemonsets", ("daemonset",)),
    ("job/cronjob", "jobs/cronjobs", ("cronjob", "job")),
    ("pod", "pods", ("pod",)),
    ("PVC", "PVCs", ("persistentvolumeclaim",)),
    ("service", "services", ("service",)),
    ("configmap/secret", "configmaps/secrets", ("configmap", "secret")),
)
_NAMES_SHOWN = 8


def namespace_contents(k: Kube, ctx: str, namespace: str) -> tuple[str, tuple[str, ...]]:
    """(counts, one line per sort with names) of what a namespace delete takes with it.

    A sort that cannot be listed is said so, never left out: an absent line would read as
    "nothing of that sort is lost"."""
    counts: list[str] = []
    lines: list[str] = []
    for one, many, kinds in _NAMESPACE_CONTENTS:
        names: list[str] = []
        try:
            for kind in kinds:
                prefix = f"{kind}/" if len(kinds) > 1 else ""
                names += sorted(prefix + o["metadata"]["name"] for o in k.list(ctx, kind,
                                                                               namespace))
        except KubeError as exc:
            counts.append(f"{many} unknown")
            lines.append(f"{many}: could not be listed ({exc.reason})")
            continue
        if not names:
            continue
        label = one if len(names) == 1 else many
        counts.append(f"{len(names)} {label}")
        shown = ", ".join(names[:_NAMES_SHOWN])
        more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
        lines.append(f"{len(names)} {label}: {shown}{more}")
    return ", ".join(counts) or "nothing in it", tuple(lines)


# What a namespace delete's effect binds: the sorts its card names, less what churns on its own
# (a Deployment's ReplicaSets and pods, a CronJob's Jobs and their pods — their owners are
# bound instead), so that a rollout or a restart does not void the approval but a workload, a
# claim, a service or a config that appeared (or went) since the card was shown does.
_NAMESPACE_BOUND = ("deployment", "statefulset", "daemonset", "cronjob", "job", "pod",
                    "persistentvolumeclaim", "service", "configmap", "secret")


def namespace_effect(k: Kube, ctx: str, namespace: str) -> tuple[str, ...]:
    """The refs a namespace delete binds: the Namespace, and every object of the bound sorts in
    it that no other object owns (a bare pod, a Job no CronJob made). A sort the executor may
    not list (the shipped RBAC never grants secrets) is bound as "namespace/kind/*": the card
    says it could not be listed, and it stays so for the approval to hold."""
    refs = [effect_ref("", "namespace", namespace)]
    for kind in _NAMESPACE_BOUND:
        try:
            objs = k.list(ctx, kind, namespace)
        except KubeError:
            refs.append(effect_ref(namespace, kind, "*"))
            continue
        refs += [effect_ref(namespace, kind, o["metadata"]["name"]) for o in objs
                 if not (o["metadata"].get("ownerReferences") and kind in ("pod", "job"))]
    return tuple(sorted(refs))


def _live(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def affected_namespaces(k: Kube, ctx: str, plan: Plan) -> tuple[str, ...]:
    """The namespaces a write's effect lands in. The target's own namespace, a Namespace
    object's name, and for a node the namespaces of the pods it runs: a cordon strands them, a
    drain evicts them, a delete or patch (unschedulable, a NoExecute taint) can do either. An
    uncordon only lets new pods in; a label or annotation moves no running pod. The gate
    protects all of them."""
    out = {plan.namespace} if plan.namespace else set()
    if plan.kind == "namespace":
        out.add(plan.name)
    elif plan.kind == "node" and plan.verb not in NODE_HARMLESS and plan.before is not None:
        out |= {p["metadata"].get("namespace", "") for p in _live(
            R.pods_of(k, ctx, "node", plan.before))}
    elif plan.kind == "persistentvolume":  # the data of a claim in that namespace
        claim = ((plan.before or {}).get("spec") or {}).get("claimRef") or {}
        out.add(str(claim.get("namespace") or ""))
    return tuple(sorted(out - {""}))


def blast_radius(k: Kube, ctx: str, plan: Plan, after: Obj | None) -> BlastRadius:
    if hook := getattr(plan, "radius_of", None):  # a selector's plan: each object's, listed
        return hook(k, ctx, after)  # type: ignore[no-any-return]
    before = plan.before
    pod_objs = R.pods_of(k, ctx, plan.kind, before) \
        if before is not None and plan.kind in (*WORKLOADS, "pod", "job", "cronjob",
                                                 "namespace", "node") else []
    pods = [p["metadata"]["name"] for p in pod_objs]
    # A pod that has finished (a Job's, Succeeded or Failed) runs nothing a delete could stop.
    running = [p["metadata"]["name"] for p in pod_objs
               if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    namespaces = affected_namespaces(k, ctx, plan)
    contents: tuple[str, ...] = ()
    rb, ra = _replicas(before), _replicas(after)
    production = bool(_PROD.search(plan.namespace)) or bool(_PROD.search(
        (after or before or {}).get("metadata", {}).get("namespace", "") or "")) or any(
        _PROD.search(ns) for ns in namespaces)
    affected: tuple[str, ...] = ()
    if plan.deleting and plan.kind == "namespace":
        affected = tuple(pods)
        counts, contents = namespace_contents(k, ctx, plan.name)
        summary = f"deletes namespace {plan.name}: {counts}"
    elif plan.deleting:
        affected = tuple(running)
        finished = len(pods) - len(running)
        summary = f"{plan.ref} will be deleted"
        if plan.kind == "pod" and finished:
            summary += f"; it has finished ({(before or {}).get('status', {}).get('phase')})"
        elif plan.kind != "pod" and pods:
            summary += f" with {len(pods)} pods" + (f" ({finished} of them finished)"
                                                    if finished else "")
    elif hasattr(plan, "drain_pods"):
        drained = plan.drain_pods
        affected = tuple(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in drained)
        summary = (f"node {plan.name} will be cordoned and {len(drained)} "
                   f"{'pod' if len(drained) == 1 else 'pods'} evicted")
        by_ns: dict[str, int] = {}
        for p in drained:
            by_ns[p["metadata"]["namespace"]] = by_ns.get(p["metadata"]["namespace"], 0) + 1
        if by_ns:
            summary += " (" + ", ".join(f"{n} of {ns}" for ns, n in sorted(by_ns.items())) + ")"
            # The rule the approver relies on (check_effect): these pods, or nothing.
            summary += ": exactly the pods listed — if the node's pods differ when it runs, " \
                       "nothing is evicted"
        if plan.drain_blocked:  # type: ignore[attr-defined]
            summary += (f"; {len(plan.drain_blocked)} evictions are blocked now by a "  # type: ignore[attr-defined]
                        f"PodDisruptionBudget: {', '.join(plan.drain_blocked)}")  # type: ignore[attr-defined]
    elif before is not None and after is not None and plan.kind in (*WORKLOADS, "job",
                                                                     "cronjob") and \
            value_at(before, "spec.template") != value_at(after, "spec.template"):
        affected = tuple(pods)
        summary = f"{len(pods)} pods will be replaced by a rolling update"
        if ra is not None and rb is not None and ra != rb:
            summary += f"; replicas {rb} → {ra}"
    elif rb is not None and ra is not None and ra < rb:
        affected = tuple(pods)
        summary = f"{rb - ra} of {len(pods)} pods will be removed"
    elif rb is not None and ra is not None and ra > rb:
        summary = f"{ra - rb} pods will be added"
    elif before is None:
        summary = f"{plan.ref} will be created"
    elif plan.kind == "node":
        summary = (f"no new pods will be scheduled on {plan.name}" if plan.verb == "cordoned"
                   else f"{plan.name} will accept new pods")
        stranded = [ns for ns in namespaces if ns]
        if plan.verb == "cordoned" and stranded:
            summary += f"; it runs {len(pods)} pods of {', '.join(stranded)}"
    else:
        summary = "no pods restart" if pods or plan.kind in WORKLOADS else "no pods affected"
    return BlastRadius(replicas_before=rb, replicas_after=ra, pods_affected=affected,
                       production_like=production, summary=summary[:2000],
                       affected_namespaces=namespaces,
                       deletes_contents=tuple(line[:2000] for line in contents))


def preview(k: Kube, args: C.Args) -> Preview:
    plan = plan_for(k, args)
    after = plan.send(True, plan.rv)
    radius = blast_radius(k, args.cluster, plan, after)
    context = facts.gather(k, args.cluster, plan.kind, plan.namespace, plan.name, plan.before,
                           plan.deleting)
    if context:
        radius = msgspec.structs.replace(radius, **context)
    return Preview(_changes(plan, after), radius, plan.rv, plan.effect)


def execute(k: Kube, args: C.Args, resource_version: str,
            approved_effect: tuple[str, ...] = ()) -> tuple[Outcome, Plan, Obj | None]:
    """Runs the approved write: the same plan as its preview, made again now, sent only if its
    target is at the previewed resourceVersion and it acts on exactly `approved_effect`."""
    plan = plan_for(k, args)
    # The set first: when objects joined or left it (a selector's match), the refusal names
    # them, which the resourceVersion comparison below cannot.
    check_effect(plan, approved_effect)
    if resource_version and plan.rv != resource_version:
        # Fail before sending; the server would refuse it too (the precondition rides along).
        raise conflict(plan, resource_version, plan.rv)
    if not resource_version and plan.before is not None and isinstance(args, C.ApplyArgs):
        raise conflict(plan, "(absent)", plan.rv)  # previewed as a creation
    try:
        after = plan.send(False, resource_version)
    except KubeError as exc:
        if exc.status == 409:
            current = k.read_or_none(args.cluster, plan.kind, plan.namespace, plan.name)
            now = (current or {}).get("metadata", {}).get("resourceVersion", "(deleted)")
            raise conflict(plan, resource_version, now) from exc
        raise
    changes = _changes(plan, after)
    text = f"{plan.ref} {plan.verb}" + (f" in {plan.namespace}" if plan.namespace else "")
    if isinstance(args, C.ScaleArgs) and not args.selector:  # kubectl's wording (and README's)
        text = (f"{args.kind}.apps/{args.name} scaled from {_replicas(plan.before)} to "
                f"{_replicas(after)} replicas in {args.namespace}")
    if changes:
        text += ":\n" + "\n".join(f"  {c.describe()}" for c in changes[:50])
    out = Outcome(text=text, data={"changes": [{"path": c.path, "before": c.before,
                                                "after": c.after} for c in changes]},
                  before={c.path: c.before for c in changes},
                  after={c.path: c.after for c in changes})
    return out, plan, after


def conflict(plan: Plan, previewed: str, now: str) -> KubeError:
    if hook := getattr(plan, "conflict_of", None):  # a selector's plan: the set changed
        return hook(previewed, now)  # type: ignore[no-any-return]
    return KubeError("Conflict", f"{plan.ref} changed since it was previewed (resourceVersion "
                     f"{previewed}, now {now or '(absent)'}); nothing was changed — review the "
                     "new state and propose the call again", 409)


@dataclass
class Verification:
    outcome: str  # verified | failed | timed_out | skipped | not_as_approved
    check: str
    detail: str
    observed: Any = None


def verify(k: Kube, args: C.Args, plan: Plan, after: Obj | None,
           timeout_s: float) -> Verification:
    """Checks that a write took hold: rollouts complete, deletions finish, fields stick."""
    if hook := getattr(plan, "verify_of", None):  # a selector's plan: each object in turn
        return hook(k, after, timeout_s)  # type: ignore[no-any-return]
    ctx = args.cluster
    if plan.deleting:
        deadline = time.monotonic() + timeout_s
        while True:
            current = k.read_or_none(ctx, plan.kind, plan.namespace, plan.name)
            if current is None:
                return Verification("verified", f"{plan.ref} is gone", f"{plan.ref} no longer "
                                    "exists")
            if time.monotonic() >= deadline:
                return Verification("timed_out", f"{plan.ref} is gone",
                                    f"{plan.ref} still exists after {timeout_s:g}s")
            time.sleep(0.25)
    if hasattr(plan, "drain_pods"):
        left = [p["metadata"]["name"] for p in _drainable(
            args, R.pods_of(k, ctx, "node", plan.before or {}))]  # type: ignore[arg-type]
        return Verification("verified" if not left else "failed",
                            f"no evictable pods left on node/{plan.name}",
                            "node drained" if not left else f"pods remain: {', '.join(left)}",
                            {"remaining": left})
    rollout_kind = plan.kind if plan.kind in ("deployment", "statefulset", "daemonset") else ""
    if rollout_kind and after is not None and (
            value_at(plan.before, "spec.template") != value_at(after, "spec.template")
            or _replicas(plan.before) != _replicas(after)):
        done, message, obj = R.wait_rollout(k, ctx, rollout_kind, plan.namespace, plan.name,
                                            timeout_s)
        failed = "exceeded its progress deadline" in message
        st = obj.get("status") or {}
        observed = {"replicas": st.get("replicas"), "ready": st.get("readyReplicas"),
                    "updated": st.get("updatedReplicas")}
        if done:
            # A rollout that completed is not yet the approved state: something (an HPA) may
            # have set a field back while it ran. Compare what settled with the approved diff.
            reverted = _not_as_approved(k, args, plan, after, obj, observed)
            if reverted is not None:
                return reverted
        return Verification("verified" if done else "failed" if failed else "timed_out",
                            f"rollout status of {plan.ref}", message, observed)
    current = k.read_or_none(ctx, plan.kind, plan.namespace, plan.name)
    if current is None:
        return Verification("failed", f"{plan.ref} exists", f"{plan.ref} is not there")
    observed = redact({"resourceVersion": current["metadata"].get("resourceVersion")})
    reverted = _not_as_approved(k, args, plan, after, current, observed)
    if reverted is not None:
        return reverted
    return Verification("verified", f"the changed fields of {plan.ref} hold",
                        "every changed field reads back as written", observed)


def _not_as_approved(k: Kube, args: C.Args, plan: Plan, after: Obj | None, current: Obj,
                     observed: dict[str, Any]) -> Verification | None:
    """`not_as_approved` when the settled object differs from the approved diff (or an
    autoscaler is bound to undo it), saying what was seen and who changed it back; else None."""
    wrong = [(c.path, value_at(after, c.path), value_at(current, c.path))
             for c in diff(plan.before, after)
             if not c.path.endswith("last-applied-configuration")
             and value_at(current, c.path) != value_at(after, c.path)]
    pending = "" if wrong else evidence.autoscaler_pending(k, args, plan.kind, current)
    if not wrong and not pending:
        return None
    seen = "; ".join(f"{p} is {v!r}, approved {a!r}" for p, a, v in wrong[:10]) or pending
    who = evidence.who_changed(k, args, plan.kind, current, [p for p, _, _ in wrong])
    detail = f"not as approved: {seen}" + (f" — changed back by {who}" if who else "")
    return Verification("not_as_approved", f"the approved changes of {plan.ref} hold", detail,
                        {**observed, "differs": [{"path": p, "approved": a, "observed": v}
                                                 for p, a, v in wrong[:20]],
                         "changed_by": who})


def observe(k: Kube, args: C.Args) -> Any:
    """The target's current state, for an outcome we could not record: the human verifies."""
    target = args.target()
    kind = target.kind if target.kind in KINDS else ""
    if not kind or not target.name:
        return None
    current = k.read_or_none(args.cluster, kind, _ns(kind, target.namespace), target.name)
    if current is None:
        return {"exists": False}
    meta = current["metadata"]
    return redact({"exists": True, "resourceVersion": meta.get("resourceVersion"),
                   "generation": meta.get("generation"),
                   "replicas": (current.get("spec") or {}).get("replicas"),
                   "unschedulable": (current.get("spec") or {}).get("unschedulable")})
