"""Context a human needs to catch a bad change, computed by the gate — not left to the model.

Pure functions: the risk flags of one call from its preview, and the target's recent history
from the gate's own log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.approval import ApprovalCall, BlastRadius
from schemas.base import Target
from services.gate.policy import Effect, Policy

PRODUCTION_NAMES = frozenset({"production", "prod", "prd", "live"})


def production_like(namespace: str) -> bool:
    ns = namespace.lower()
    return ns in PRODUCTION_NAMES or ns.startswith(("prod-", "production-")) or ns.endswith(
        ("-prod", "-production")
    )


def _why(tool: str, t: Target, namespace: str) -> str:
    """Why a namespace other than the target's own field is affected, in words."""
    if namespace == t.namespace or (t.kind == "namespace" and namespace == t.name):
        return ""  # the namespace itself (or an object in it): nothing to explain
    if t.kind == "node":
        does = {"drain": "evicts its pods", "cordon": "strands its pods",
                "delete": "removes the node its pods run on"}.get(tool, "affects its pods")
        return f"{tool} of node/{t.name} {does}"
    return f"{tool} of {t.kind}/{t.name} affects it"


# Node writes that leave its running pods alone: where they land is not in doubt.
_NODE_HARMLESS = ("uncordon", "label", "annotate")


def effect_of(tool: str, t: Target, radius: BlastRadius, preview_error: str = "") -> Effect:
    """Where a write's effect lands. The gate's own knowledge (the target's namespace, and a
    Namespace object's own name) always counts; the dry run's `affected_namespaces` can only
    add to it, never take away. A node write whose dry run failed lands somewhere unknown:
    every namespace rule applies (fail closed)."""
    own = [t.namespace] if t.namespace else []
    if t.kind == "namespace" and t.name:
        own.append(t.name)
    names = list(dict.fromkeys([*own, *sorted(set(radius.affected_namespaces) - set(own))]))
    unknown = ""
    if t.kind == "node" and tool not in _NODE_HARMLESS and preview_error:
        unknown = (f"node/{t.name}: which namespaces' pods it runs is unknown (the dry run "
                   "failed)")
    return Effect(tool=tool, namespaces=tuple((ns, _why(tool, t, ns)) for ns in names if ns),
                  unknown=unknown, cluster=t.cluster)


def _where(call: ApprovalCall) -> str:
    """The target in words: kind/name, or what a label selector matched."""
    t = call.target
    if t.name:
        return f"{t.kind}/{t.name}"
    selector = call.args.get("selector") if isinstance(call.args, dict) else ""
    return f"{t.kind} objects matching {selector}" if selector else t.kind


def production_cluster(cluster: str, policy: Policy | None = None) -> bool:
    """The cluster is production-like: by its name, or the policy protects it."""
    if policy is not None and policy.protected_cluster(cluster):
        return True
    return bool(cluster) and production_like(cluster)


def flags_for(call: ApprovalCall, tool: str, policy: Policy | None = None) -> list[str]:
    t, r = call.target, call.blast_radius
    where = _where(call)
    out: list[str] = []
    effect = effect_of(tool, t, r, call.preview_error)
    # Same namespace and name on two clusters are two objects: the cluster is part of the risk.
    if policy is not None and policy.protected_cluster(t.cluster):
        out.append(f"production-like cluster {t.cluster!r}: protected by policy" if t.cluster
                   else "production-like cluster: none named, and the policy protects "
                        f"{', '.join(policy.protected_clusters)}")
    elif t.cluster and production_like(t.cluster):
        out.append(f"production-like cluster {t.cluster!r}")
    for ns, why in effect.namespaces:
        if production_like(ns):
            out.append(f"production-like namespace {ns!r}" + (f": {why}" if why else ""))
    if effect.unknown:
        out.append(f"{effect.unknown}: it may run production pods")
    if tool == "delete" and t.kind == "namespace":
        counts = r.summary.partition(": ")[2] if r.summary.startswith("deletes namespace") \
            else ""
        out.append(f"deletes namespace {t.name} and everything in it: "
                   + (counts or "what it holds is unknown (the dry run did not list it)"))
    if r.same_name_namespaces:
        others = ", ".join(sorted(r.same_name_namespaces))
        out.append(f"{where} also exists in {others}: check the namespace ({t.namespace})")
    if r.replicas_after == 0 and (r.replicas_before or 0) > 0:
        out.append(f"scales {where} to zero: every pod is removed")
    if tool == "delete":
        if t.kind in ("deployment", "statefulset", "replicaset") or r.pods_affected:
            n = len(r.pods_affected)
            if n:
                out.append(f"deletes {n} running pod(s): {', '.join(r.pods_affected[:5])}")
        if t.kind == "persistentvolumeclaim" and r.mounted_by:
            out.append(f"deletes PVC {t.name} that is still referenced by "
                       f"{', '.join(r.mounted_by)}: its data is lost when that workload scales up")
        if t.kind == "service":
            if r.headless:
                out.append(f"deletes headless service {t.name}: peers find each other through "
                           "its DNS records")
            if r.selects:
                out.append(f"deletes service {t.name} that routes to {len(r.selects)} pod(s)")
        if r.owners:
            out.append(f"{where} is owned by {', '.join(r.owners)}: scheduled or batch work")
    elif r.owners and any(o.startswith(("CronJob/", "Job/")) for o in r.owners):
        out.append(f"{where} is owned by {', '.join(r.owners)}: scheduled or batch work")
    if r.replicas_before == 1 and r.replicas_after == 0:
        out.append(f"removes the last replica of {where}")
    if call.preview_error:
        out.append(f"dry run failed: {call.preview_error}")
    return out


@dataclass(frozen=True)
class Change:
    """A write the gate released earlier, as remembered from the log."""

    at: datetime
    tool: str
    target: Target
    before: object
    after: object
    approver: str
    session_id: str


def same_target(a: Target, b: Target) -> bool:
    return (a.cluster, a.namespace, a.kind, a.name) == (b.cluster, b.namespace, b.kind, b.name)


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


def history(changes: list[Change], call: ApprovalCall, tool: str, now: datetime,
            window_s: float) -> tuple[list[str], list[str]]:
    """(history lines, flags) for a call from the recent changes to the same target."""
    recent = [c for c in changes if same_target(c.target, call.target)
              and (now - c.at).total_seconds() <= window_s]
    lines = [f"{c.at:%H:%M:%S} {c.tool} {c.before}→{c.after} approved by {c.approver}"
             for c in recent]
    flags: list[str] = []
    r = call.blast_radius
    if tool == "scale" and r.replicas_before is not None and r.replicas_after is not None \
            and r.replicas_after > r.replicas_before:
        ups: list[Change] = []
        for c in reversed([c for c in recent if c.tool == "scale"]):
            if isinstance(c.before, int) and isinstance(c.after, int) and c.after > c.before:
                ups.insert(0, c)
            else:
                break
        if ups:
            minutes = max(1, round((now - ups[0].at).total_seconds() / 60))
            chain = ", ".join(f"{c.before}→{c.after}" for c in ups)
            on = f" on cluster {call.target.cluster}" if call.target.cluster else ""
            flags.append(
                f"{_ordinal(len(ups) + 1)} consecutive scale-up of {call.target.kind}/"
                f"{call.target.name}{on} in {minutes} minutes: {chain}, now "
                f"{r.replicas_before}→{r.replicas_after} — is this a feedback loop?"
            )
    return lines, flags


def autoscaler_flags(call: ApprovalCall, tool: str) -> list[str]:
    """A manual scale of a workload an autoscaler owns does not last: the HPA sets its own
    replica count at its next sync. Named before approval, from the executor's dry run."""
    t, r = call.target, call.blast_radius
    if tool != "scale" or not r.autoscaler:
        return []
    if not t.name:  # by selector: replicas_after sums the set; the args say each one's count
        return [f"{_where(call)}: the replica counts are owned by {r.autoscaler}: a manual "
                f"scale to {call.args.get('replicas')} will be reverted by the autoscaler"]
    return [f"{t.kind}/{t.name} is scaled by {r.autoscaler}: a manual scale"
            + (f" to {r.replicas_after}" if r.replicas_after is not None else "")
            + " will be reverted by the autoscaler"]
