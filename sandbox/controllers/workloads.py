"""Controllers for StatefulSets, DaemonSets and PodDisruptionBudgets, registered on the shared
`Controllers` queue (which owns Deployments, ReplicaSets, pods and endpoints; batch.py runs Jobs
and CronJobs, autoscaling.py HorizontalPodAutoscalers)."""

from __future__ import annotations

import copy
import uuid

from sandbox.controllers.core import (
    DAEMONSETS,
    NODES,
    PODS,
    PVCS,
    STATEFULSETS,
    Controllers,
    Key,
    _is_ready,
    template_hash,
)
from sandbox.controllers.disruption import PDBS, budget_status
from sandbox.state.defaults import apply_defaults
from sandbox.state.store import Change, Obj
from sandbox.state.timeutil import iso, now


class Workloads:
    def __init__(self, ctl: Controllers) -> None:
        self.ctl = ctl
        self.store = ctl.store
        ctl._reconcilers.update(
            {
                "StatefulSet": self._statefulset,
                "DaemonSet": self._daemonset,
                "PodDisruptionBudget": self._pdb,
            }
        )
        ctl.extra.append(self._related)

    def _related(self, change: Change) -> list[Key]:
        """DaemonSets follow the nodes; PDBs follow the pods of their namespace."""
        kind, meta = change.rt.kind, change.obj["metadata"]
        ns = meta.get("namespace", "")
        keys: list[Key] = []
        if kind == "Node":
            keys.extend(
                ("DaemonSet", d["metadata"]["namespace"], d["metadata"]["name"])
                for d in self.store.iter_raw(DAEMONSETS)
            )
        if kind == "Pod":
            keys.extend(
                ("PodDisruptionBudget", ns, p["metadata"]["name"])
                for p in self.store.iter_raw(PDBS)
                if p["metadata"]["namespace"] == ns
            )
        return keys

    # ---- statefulsets --------------------------------------------------------------------
    def _statefulset(self, ns: str, name: str) -> None:
        s = self.store.get(STATEFULSETS, ns, name)
        if s is None:
            return
        spec = s["spec"]
        desired = spec.get("replicas", 1)
        revision = f"{name}-{template_hash(spec['template'])}"
        pods = {p["metadata"]["name"]: p for p in self.ctl._owned(PODS, s)}
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        for i in range(desired):
            for tmpl in spec.get("volumeClaimTemplates") or []:
                self._ensure_claim(s, tmpl, i)
            pod_name = f"{name}-{i}"
            pod = pods.get(pod_name)
            if pod is None:
                self._create_member(s, i, revision)
                if ordered:
                    break
            elif ordered and not _is_ready(pod):
                break
        extras = sorted(
            (p for n, p in pods.items() if _ordinal(n, name) >= desired),
            key=lambda p: -_ordinal(p["metadata"]["name"], name),
        )
        for pod in extras[: 1 if ordered else None]:
            self.store.delete(PODS, ns, pod["metadata"]["name"])
            self.ctl.recorder.record(
                s,
                "Normal",
                "SuccessfulDelete",
                f"delete Pod {pod['metadata']['name']} in StatefulSet {name} successful",
                component="statefulset-controller",
            )
        members = [
            p
            for n, p in pods.items()
            if _ordinal(n, name) < desired and self.store.get(PODS, ns, n) is not None
        ]
        if len(members) == desired and all(_is_ready(p) for p in members):
            stale = [
                p
                for p in members
                if p["metadata"]["labels"].get("controller-revision-hash") != revision
            ]
            if stale:
                victim = max(stale, key=lambda p: _ordinal(p["metadata"]["name"], name))
                self.store.delete(PODS, ns, victim["metadata"]["name"])
        members = [p for p in self.ctl._owned(PODS, s)]
        ready = sum(1 for p in members if _is_ready(p))
        updated = sum(
            1
            for p in members
            if p["metadata"]["labels"].get("controller-revision-hash") == revision
        )
        status: Obj = {
            "observedGeneration": s["metadata"].get("generation", 1),
            "replicas": len(members),
            "readyReplicas": ready,
            "currentReplicas": updated,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        self.ctl._set_status(STATEFULSETS, s, status)

    def _create_member(self, s: Obj, i: int, revision: str) -> None:
        name = s["metadata"]["name"]
        template = copy.deepcopy(s["spec"]["template"])
        pod_spec = template.setdefault("spec", {})
        pod_spec["subdomain"] = s["spec"].get("serviceName", "")
        volumes = pod_spec.setdefault("volumes", [])
        for tmpl in s["spec"].get("volumeClaimTemplates") or []:
            claim = f"{tmpl['metadata']['name']}-{name}-{i}"
            volumes.append(
                {"name": tmpl["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
            )
        if not volumes:
            del pod_spec["volumes"]
        pod_name = f"{name}-{i}"
        self.ctl.new_pod(
            s,
            template,
            pod_name,
            {
                "controller-revision-hash": revision,
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(i),
            },
            hostname=pod_name,
        )
        self.ctl.recorder.record(
            s,
            "Normal",
            "SuccessfulCreate",
            f"create Pod {pod_name} in StatefulSet {name} successful",
            component="statefulset-controller",
            last=self.ctl._when(s),
        )

    def _ensure_claim(self, s: Obj, tmpl: Obj, i: int) -> None:
        ns, name = s["metadata"]["namespace"], s["metadata"]["name"]
        claim = f"{tmpl['metadata']['name']}-{name}-{i}"
        if self.store.get(PVCS, ns, claim) is not None:
            return
        spec = copy.deepcopy(tmpl.get("spec") or {})
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        spec.setdefault("storageClassName", "standard")
        spec["volumeName"] = f"pvc-{uuid.UUID(int=self.ctl.rng.getrandbits(128))}"
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim,
                "namespace": ns,
                "labels": dict(s["spec"].get("selector", {}).get("matchLabels") or {}),
                "annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "volume.kubernetes.io/storage-provisioner": "rancher.io/local-path",
                },
                "finalizers": ["kubernetes.io/pvc-protection"],
                "creationTimestamp": self.ctl._birth(s),
            },
            "spec": spec,
            "status": {
                "phase": "Bound",
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": storage},
            },
        }
        apply_defaults(PVCS, pvc)
        self.store.create(PVCS, pvc)

    # ---- daemonsets ----------------------------------------------------------------------
    def _daemonset(self, ns: str, name: str) -> None:
        ds = self.store.get(DAEMONSETS, ns, name)
        if ds is None:
            return
        template = ds["spec"]["template"]
        pod_spec = template.get("spec") or {}
        revision = template_hash(template)
        tolerations = pod_spec.get("tolerations") or []
        selector = pod_spec.get("nodeSelector") or {}
        nodes = [
            n
            for n in self.store.list(NODES)
            if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and all(_tolerated(t, tolerations) for t in (n.get("spec") or {}).get("taints") or [])
        ]
        wanted = {n["metadata"]["name"] for n in nodes}
        pods = self.ctl._owned(PODS, ds)
        placed = {p["spec"].get("nodeName") for p in pods}
        for pod in pods:
            stale = pod["metadata"]["labels"].get("controller-revision-hash") != revision
            if pod["spec"].get("nodeName") not in wanted or stale:
                self.store.delete(PODS, ns, pod["metadata"]["name"])
                placed.discard(pod["spec"].get("nodeName"))
        for node in sorted(wanted - placed):
            bound = copy.deepcopy(template)
            bound.setdefault("spec", {})["nodeName"] = node
            self.ctl.new_pod(
                ds, bound, self.ctl.pod_name(name), {"controller-revision-hash": revision}
            )
        pods = self.ctl._owned(PODS, ds)
        ready = sum(1 for p in pods if _is_ready(p))
        self.ctl._set_status(
            DAEMONSETS,
            ds,
            {
                "currentNumberScheduled": len(pods),
                "desiredNumberScheduled": len(wanted),
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
                "updatedNumberScheduled": len(pods),
                "observedGeneration": ds["metadata"].get("generation", 1),
            },
        )

    # ---- pod disruption budgets ----------------------------------------------------------
    def _pdb(self, ns: str, name: str) -> None:
        pdb = self.store.get(PDBS, ns, name)
        if pdb is None:
            return
        status: Obj = dict(budget_status(self.store, pdb))
        allowed = status["disruptionsAllowed"] > 0
        old = {c["type"]: c for c in (pdb.get("status") or {}).get("conditions") or []}
        reason = "SufficientPods" if allowed else "InsufficientPods"
        prev = old.get("DisruptionAllowed")
        when = prev["lastTransitionTime"] if prev and prev.get("reason") == reason else iso(now())
        status["observedGeneration"] = pdb["metadata"].get("generation", 1)
        status["conditions"] = [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed else "False",
                "reason": reason,
                "message": "",
                "lastTransitionTime": when,
                "observedGeneration": status["observedGeneration"],
            }
        ]
        self.ctl._set_status(PDBS, pdb, status)


def _tolerated(taint: Obj, tolerations: list[Obj]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    return any(
        (t.get("operator") == "Exists" and not t.get("key"))
        or (
            t.get("key") == taint.get("key")
            and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
        )
        for t in tolerations
    )


def _ordinal(pod_name: str, set_name: str) -> int:
    suffix = pod_name[len(set_name) + 1 :]
    return int(suffix) if suffix.isdigit() else -1
