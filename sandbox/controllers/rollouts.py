"""The Deployment and ReplicaSet controllers, registered on the shared `Controllers` queue:
rollouts (rolling and recreate), revisions and their history, and the pods a ReplicaSet owns."""

from __future__ import annotations

import copy
import math
from typing import Any

from sandbox.controllers.core import (
    CHANGE_CAUSE,
    DEPLOYMENTS,
    HASH_LABEL,
    PODS,
    REPLICASETS,
    REVISION,
    Controllers,
    _is_ready,
    _negate,
    owner_ref,
    template_hash,
)
from sandbox.state.defaults import apply_defaults
from sandbox.state.store import Obj
from sandbox.state.timeutil import iso, now, parse_iso


def _resolve(value: Any, total: int, round_up: bool) -> int:
    """maxSurge/maxUnavailable as ints: percentages of `total`."""
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def _cond(old: list[Obj], type_: str, status: str, reason: str, message: str, when: str) -> Obj:
    """A condition that keeps its transition time while its status and reason hold."""
    prev = next((c for c in old if c.get("type") == type_), None)
    if prev and prev.get("status") == status and prev.get("reason") == reason:
        return {**prev, "message": message}
    return {
        "type": type_,
        "status": status,
        "lastUpdateTime": when,
        "lastTransitionTime": when,
        "reason": reason,
        "message": message,
    }


class Rollouts:
    def __init__(self, ctl: Controllers) -> None:
        self.ctl = ctl
        self.store = ctl.store
        ctl._reconcilers.update({"Deployment": self._deployment, "ReplicaSet": self._replicaset})

    # ---- deployments ---------------------------------------------------------------------
    def _deployment(self, ns: str, name: str) -> None:
        d = self.store.get(DEPLOYMENTS, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        template = spec["template"]
        thash = template_hash(template)
        rss = self.ctl._owned(REPLICASETS, d)
        new = next(
            (rs for rs in rss if rs["metadata"].get("labels", {}).get(HASH_LABEL) == thash), None
        )
        olds = [rs for rs in rss if rs is not new]
        max_rev = max(
            (int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in rss), default=0
        )
        strategy = spec.get("strategy") or {}
        ru = strategy.get("rollingUpdate") or {}
        surge = _resolve(ru.get("maxSurge", "25%"), desired, True)
        unavailable = _resolve(ru.get("maxUnavailable", "25%"), desired, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        active_olds = any(rs["spec"].get("replicas", 0) > 0 for rs in olds)
        if new is None:
            start = 0 if active_olds else desired
            if strategy.get("type") == "RollingUpdate" and active_olds:
                total = sum(rs["spec"].get("replicas", 0) for rs in olds)
                start = max(0, min(desired, desired + surge - total))
            new = self._create_rs(d, thash, start, max_rev + 1, surge)
            self.ctl.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {new['metadata']['name']} from 0 to {start}",
                component="deployment-controller",
                last=self.ctl._when(d),
            )
        elif int(new["metadata"].get("annotations", {}).get(REVISION, "0")) < max_rev:
            new["metadata"].setdefault("annotations", {})[REVISION] = str(max_rev + 1)
            new = self.ctl._write(REPLICASETS, new)
        if not spec.get("paused"):
            if strategy.get("type") == "Recreate":
                self._recreate(d, new, olds, desired)
            else:
                self._rolling(d, new, olds, desired, surge, unavailable)
        self._cleanup_history(d, olds)
        self._deployment_status(d, new, self.ctl._owned(REPLICASETS, d), desired, unavailable)

    def _create_rs(self, d: Obj, thash: str, replicas: int, revision: int, surge: int) -> Obj:
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = thash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = thash
        desired = d["spec"].get("replicas", 1)
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{thash}",
                "namespace": d["metadata"]["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + surge),
                    REVISION: str(revision),
                    **{
                        k: v
                        for k, v in (d["metadata"].get("annotations") or {}).items()
                        if k == CHANGE_CAUSE
                    },
                },
                "ownerReferences": [owner_ref(d)],
                "creationTimestamp": self.ctl._birth(d),
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        apply_defaults(REPLICASETS, rs)
        return self.store.create(REPLICASETS, rs)

    def _scale_rs(self, d: Obj, rs: Obj, replicas: int) -> Obj:
        before = rs["spec"].get("replicas", 0)
        if before == replicas:
            return rs
        rs["spec"]["replicas"] = replicas
        rs["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
        rs["metadata"].setdefault("annotations", {})[
            "deployment.kubernetes.io/desired-replicas"
        ] = str(d["spec"].get("replicas", 1))
        rs = self.ctl._write(REPLICASETS, rs)
        verb = "up" if replicas > before else "down"
        self.ctl.recorder.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {replicas}",
            component="deployment-controller",
            last=self.ctl._when(d),
        )
        return rs

    def _recreate(self, d: Obj, new: Obj, olds: list[Obj], desired: int) -> None:
        for rs in olds:
            self._scale_rs(d, rs, 0)
        if all((rs.get("status") or {}).get("replicas", 0) == 0 for rs in olds):
            self._scale_rs(d, new, desired)

    def _rolling(
        self, d: Obj, new: Obj, olds: list[Obj], desired: int, surge: int, unavailable: int
    ) -> None:
        olds = [rs for rs in olds if rs["spec"].get("replicas", 0) > 0]
        if not olds:
            self._scale_rs(d, new, desired)
            return
        total = new["spec"].get("replicas", 0) + sum(rs["spec"]["replicas"] for rs in olds)
        if new["spec"].get("replicas", 0) < desired:
            room = desired + surge - total
            if room > 0:
                new = self._scale_rs(d, new, min(desired, new["spec"].get("replicas", 0) + room))
        elif new["spec"].get("replicas", 0) > desired:
            new = self._scale_rs(d, new, desired)
        available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in [new, *olds])
        can_remove = available - (desired - unavailable)
        for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
            replicas = rs["spec"]["replicas"]
            unhealthy = replicas - (rs.get("status") or {}).get("availableReplicas", 0)
            remove = min(replicas, max(0, unhealthy) + max(0, can_remove))
            if remove > 0:
                can_remove -= max(0, remove - max(0, unhealthy))
                self._scale_rs(d, rs, replicas - remove)

    def _cleanup_history(self, d: Obj, olds: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        idle = [
            rs
            for rs in olds
            if rs["spec"].get("replicas", 0) == 0
            and (rs.get("status") or {}).get("replicas", 0) == 0
        ]
        idle.sort(key=lambda r: int(r["metadata"].get("annotations", {}).get(REVISION, "0")))
        for rs in idle[: max(0, len(idle) - limit)]:
            self.store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _deployment_status(
        self, d: Obj, new: Obj, rss: list[Obj], desired: int, unavailable: int
    ) -> None:
        def total(field: str, sets: list[Obj]) -> int:
            return sum((rs.get("status") or {}).get(field, 0) for rs in sets)

        new = next((rs for rs in rss if rs["metadata"]["uid"] == new["metadata"]["uid"]), new)
        replicas, available = total("replicas", rss), total("availableReplicas", rss)
        updated = (new.get("status") or {}).get("replicas", 0)
        old_conditions = (d.get("status") or {}).get("conditions") or []
        when = iso(now()) if not self.ctl.settling else d["metadata"]["creationTimestamp"]
        rs_name = new["metadata"]["name"]
        complete = updated == desired and replicas == desired and available >= desired
        min_ok = available >= desired - unavailable
        status: Obj = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": total("readyReplicas", rss),
            "availableReplicas": available,
            "conditions": [
                _cond(
                    old_conditions,
                    "Available",
                    "True" if min_ok else "False",
                    "MinimumReplicasAvailable" if min_ok else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if min_ok
                    else "Deployment does not have minimum availability.",
                    when,
                ),
                self._progressing(d, rs_name, complete, (updated, available, replicas), when),
            ],
        }
        if replicas - available > 0:
            status["unavailableReplicas"] = replicas - available
        status = {k: v for k, v in status.items() if v != 0 or k in ("replicas",)}
        revision = new["metadata"].get("annotations", {}).get(REVISION)
        changed = False
        if revision and d["metadata"].get("annotations", {}).get(REVISION) != revision:
            d["metadata"].setdefault("annotations", {})[REVISION] = revision
            changed = True
        if d.get("status") != status or changed:
            d["status"] = status
            self.ctl._write(DEPLOYMENTS, d)

    def _progressing(
        self, d: Obj, rs_name: str, complete: bool, counts: tuple[int, int, int], when: str
    ) -> Obj:
        """The Progressing condition: its lastUpdateTime moves whenever the rollout makes
        progress; a rollout that makes none for progressDeadlineSeconds (x time_scale) is
        marked ProgressDeadlineExceeded, which ends `kubectl rollout status` with an error."""
        old_status = d.get("status") or {}
        prev = next(
            (c for c in old_status.get("conditions") or [] if c.get("type") == "Progressing"), None
        )
        if complete:
            return _cond(
                old_status.get("conditions") or [],
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                when,
            )
        before = (
            old_status.get("updatedReplicas", 0),
            old_status.get("availableReplicas", 0),
            old_status.get("replicas", 0),
        )
        stalled_since = prev.get("lastUpdateTime", when) if prev else when
        if prev is None or before != counts or prev.get("reason") == "NewReplicaSetAvailable":
            stalled_since = when  # progress (or a new rollout) just happened
        deadline = d["spec"].get("progressDeadlineSeconds", 600) * self.ctl.time_scale
        waited = (now() - parse_iso(stalled_since)).total_seconds()
        if not self.ctl.settling and waited >= deadline:
            cond = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{rs_name}" has timed out progressing.',
                "lastUpdateTime": stalled_since,
                "lastTransitionTime": stalled_since,
            }
            if prev and prev.get("reason") == "ProgressDeadlineExceeded":
                cond["lastTransitionTime"] = prev.get("lastTransitionTime", stalled_since)
            return cond
        if not self.ctl.settling:
            self.ctl.after(
                deadline - waited + 1.0,
                ("Deployment", d["metadata"]["namespace"], d["metadata"]["name"]),
            )
        transition = (
            prev.get("lastTransitionTime", when) if prev and prev.get("status") == "True" else when
        )
        return {
            "type": "Progressing",
            "status": "True",
            "reason": "ReplicaSetUpdated",
            "message": f'ReplicaSet "{rs_name}" is progressing.',
            "lastUpdateTime": stalled_since,
            "lastTransitionTime": transition,
        }

    # ---- replicasets ---------------------------------------------------------------------
    def _replicaset(self, ns: str, name: str) -> None:
        rs = self.store.get(REPLICASETS, ns, name)
        if rs is None:
            return
        desired = rs["spec"].get("replicas", 1)
        pods = [
            p
            for p in self.ctl._owned(PODS, rs)
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if len(pods) < desired:
            for _ in range(desired - len(pods)):
                pod = self.ctl.new_pod(rs, rs["spec"]["template"], self.ctl.pod_name(name), {})
                self.ctl.recorder.record(
                    rs,
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                    last=parse_iso(pod["metadata"]["creationTimestamp"]),
                )
        elif len(pods) > desired:

            def rank(p: Obj) -> tuple[int, int, str]:
                st = p.get("status") or {}
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in st.get("conditions") or []
                )
                return (
                    1 if p["spec"].get("nodeName") else 0,
                    1 if ready else 0,
                    _negate(p["metadata"]["creationTimestamp"]),
                )

            for pod in sorted(pods, key=rank)[: len(pods) - desired]:
                self.store.delete(PODS, ns, pod["metadata"]["name"])
                self.ctl.recorder.record(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                )
        pods = [
            p
            for p in self.ctl._owned(PODS, rs)
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        ready = sum(1 for p in pods if _is_ready(p))
        status: Obj = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        self.ctl._set_status(REPLICASETS, rs, status)
