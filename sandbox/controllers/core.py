"""The control loops that make stored objects behave like a cluster.

Every store change enqueues the keys it affects; a queued key is reconciled on the next loop
iteration (or synchronously by `settle()` while scenarios load). Reconcilers are idempotent:
they read the store, compute the desired state and write only differences, so repeated or
spurious wake-ups are harmless. Timed transitions (a pod becoming Ready) re-enqueue the key with
`loop.call_later`."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sandbox.controllers import kubelet
from sandbox.controllers.events import Recorder
from sandbox.state.defaults import apply_defaults
from sandbox.state.resources import RESOURCES, VIRTUAL_GROUPS, ResourceType, by_plural
from sandbox.state.selectors import Requirement, labels_match
from sandbox.state.store import Change, Obj, Store
from sandbox.state.timeutil import iso, now, parse_iso

log = logging.getLogger(__name__)

NS = by_plural("", "namespaces")
NODES = by_plural("", "nodes")
PODS = by_plural("", "pods")
SERVICES = by_plural("", "services")
ENDPOINTS = by_plural("", "endpoints")
SLICES = by_plural("discovery.k8s.io", "endpointslices")
SLICE_MANAGER = "endpointslice-controller.k8s.io"
SAS = by_plural("", "serviceaccounts")
CONFIGMAPS = by_plural("", "configmaps")
PVCS = by_plural("", "persistentvolumeclaims")
DEPLOYMENTS = by_plural("apps", "deployments")
REPLICASETS = by_plural("apps", "replicasets")
STATEFULSETS = by_plural("apps", "statefulsets")
DAEMONSETS = by_plural("apps", "daemonsets")
JOBS = by_plural("batch", "jobs")
CRONJOBS = by_plural("batch", "cronjobs")
HPAS = by_plural("autoscaling", "horizontalpodautoscalers")

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"  # copied to ReplicaSets for `rollout history`
HASH_LABEL = "pod-template-hash"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"

Key = tuple[str, str, str]  # (kind, namespace, name)


def template_hash(template: Obj) -> str:
    """A stable, apiserver-looking hash of a pod template (upstream: fnv32a, safe-encoded)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    value = int.from_bytes(digest[:8], "big")
    out = ""
    for _ in range(10):
        value, r = divmod(value, len(_SAFE))
        out += _SAFE[r]
    return out


def owner_ref(obj: Obj) -> Obj:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


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


class Controllers:
    def __init__(
        self, store: Store, recorder: Recorder, *, time_scale: float = 1.0, seed: int = 0
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.settling = False
        self._queue: dict[Key, None] = {}  # ordered set
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._started: dict[str, datetime] = {}  # pod uid -> precise scheduling time
        self._next_pod_ip: dict[str, int] = {}
        self._reconcilers: dict[str, Callable[[str, str], None]] = {
            "Namespace": self._namespace,
            "Deployment": self._deployment,
            "ReplicaSet": self._replicaset,
            "Pod": self._pod,
            "Service": self._endpoints,
        }
        self.extra: list[Callable[[Change], list[Key]]] = []
        self.errors: list[str] = []  # reconciles that raised
        store.add_listener(self._on_change)

    # ---- queue ---------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._kick()

    def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._loop = None

    def resync(self) -> None:
        """Reconcile everything once: objects settled before the loop ran still owe their
        timers (pod readiness and OOM kills, the next CronJob run)."""
        for rt in RESOURCES:
            if rt.kind in self._reconcilers and rt.group not in VIRTUAL_GROUPS:
                for obj in self.store.iter_raw(rt):
                    meta = obj["metadata"]
                    self._queue[(rt.kind, meta.get("namespace", ""), meta["name"])] = None
        self._kick()

    def enqueue(self, key: Key) -> None:
        self._queue[key] = None
        self._kick()

    def _kick(self) -> None:
        if self._loop is not None and not self._scheduled and self._queue and not self.settling:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        self.run_pending(limit=200)
        self._kick()

    def run_pending(self, limit: int | None = None) -> int:
        done = 0
        while self._queue and (limit is None or done < limit):
            key = next(iter(self._queue))
            del self._queue[key]
            kind, ns, name = key
            try:
                self._reconcilers[kind](ns, name)
            except Exception as exc:
                # One broken object must not stop the loops; tests assert `errors` is empty.
                log.exception("reconcile %s %s/%s failed", kind, ns, name)
                self.errors.append(f"{kind} {ns}/{name}: {exc!r}")
            done += 1
        return done

    def settle(self, max_rounds: int = 10_000) -> None:
        """Drain the queue synchronously (scenario loading): the cluster starts converged."""
        self.settling = True
        try:
            rounds = 0
            while self._queue and rounds < max_rounds:
                rounds += self.run_pending(limit=100)
        finally:
            self.settling = False
        self._kick()

    def after(self, seconds: float, key: Key) -> None:
        if self._loop is None:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = self._loop.call_later(max(seconds, 0.0) + 0.005, self.enqueue, key)

    def _on_change(self, change: Change) -> None:
        obj, kind = change.obj, change.rt.kind
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        keys: list[Key] = []
        if kind in self._reconcilers:
            keys.append((kind, ns, meta["name"]))
        owner = controller_of(obj)
        if owner and owner.get("kind") in self._reconcilers:
            keys.append((owner["kind"], ns, owner["name"]))
        if kind == "Pod":
            for svc in self.store.iter_raw(SERVICES):
                if svc["metadata"].get("namespace") == ns:
                    keys.append(("Service", ns, svc["metadata"]["name"]))
        if kind == "Node":
            keys.extend(
                ("Pod", p["metadata"]["namespace"], p["metadata"]["name"])
                for p in self.store.iter_raw(PODS)
                if not p["spec"].get("nodeName")
            )
        for hook in self.extra:
            keys.extend(hook(change))
        if change.type == "DELETED" and kind == "Pod":
            if self._loop is not None and obj["spec"].get("nodeName"):
                # Recorded after the delete has finished notifying everyone.
                self._loop.call_soon(self._killed, obj)
            self._started.pop(meta.get("uid", ""), None)
            timer = self._timers.pop(("Pod", ns, meta["name"]), None)
            if timer is not None:
                timer.cancel()
        for key in keys:
            self._queue[key] = None
        self._kick()

    # ---- helpers -------------------------------------------------------------------------
    def _owned(self, rt: ResourceType, owner: Obj) -> list[Obj]:
        uid, ns = owner["metadata"]["uid"], owner["metadata"]["namespace"]
        owned = [
            o
            for o in self.store.iter_raw(rt)
            if o["metadata"].get("namespace") == ns and (controller_of(o) or {}).get("uid") == uid
        ]
        return [copy.deepcopy(o) for o in sorted(owned, key=lambda o: o["metadata"]["name"])]

    def _birth(self, owner: Obj) -> str:
        """New children of a backdated scenario object are as old as it is while settling."""
        return owner["metadata"]["creationTimestamp"] if self.settling else iso(now())

    def _when(self, obj: Obj) -> datetime:
        """Event time: now, or the object's (backdated) birth while scenarios settle."""
        return parse_iso(obj["metadata"]["creationTimestamp"]) if self.settling else now()

    def _write(self, rt: ResourceType, obj: Obj) -> Obj:
        return self.store.update(rt, obj, check_rv=False)

    def _set_status(self, rt: ResourceType, obj: Obj, status: Obj) -> None:
        if obj.get("status") != status:
            obj["status"] = status
            self._write(rt, obj)

    def new_pod(
        self, owner: Obj, template: Obj, name: str, extra_labels: dict[str, str], hostname: str = ""
    ) -> Obj:
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": owner["metadata"]["namespace"],
                "labels": {**(template.get("metadata", {}).get("labels") or {}), **extra_labels},
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [owner_ref(owner)],
                "creationTimestamp": self._birth(owner),
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if hostname:
            pod["spec"]["hostname"] = hostname
        if "generateName" not in pod["metadata"] and not hostname:
            pod["metadata"]["generateName"] = owner["metadata"]["name"] + "-"
        apply_defaults(PODS, pod)
        return self.store.create(PODS, pod)

    def pod_name(self, base: str) -> str:
        return f"{base}-{''.join(self.rng.choice(_SAFE) for _ in range(5))}"

    # ---- namespaces ----------------------------------------------------------------------
    def _namespace(self, _ns: str, name: str) -> None:
        if self.store.get(NS, "", name) is None:
            return
        if self.store.get(SAS, name, "default") is None:
            self.store.create(SAS, {"metadata": {"name": "default", "namespace": name}})
        if self.store.get(CONFIGMAPS, name, "kube-root-ca.crt") is None:
            self.store.create(
                CONFIGMAPS,
                {
                    "metadata": {"name": "kube-root-ca.crt", "namespace": name},
                    "data": {
                        "ca.crt": "-----BEGIN CERTIFICATE-----\nsandbox\n"
                        "-----END CERTIFICATE-----\n"
                    },
                },
            )

    # ---- deployments ---------------------------------------------------------------------
    def _deployment(self, ns: str, name: str) -> None:
        d = self.store.get(DEPLOYMENTS, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        desired = spec.get("replicas", 1)
        template = spec["template"]
        thash = template_hash(template)
        rss = self._owned(REPLICASETS, d)
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
            self.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {new['metadata']['name']} from 0 to {start}",
                component="deployment-controller",
                last=self._when(d),
            )
        elif int(new["metadata"].get("annotations", {}).get(REVISION, "0")) < max_rev:
            new["metadata"].setdefault("annotations", {})[REVISION] = str(max_rev + 1)
            new = self._write(REPLICASETS, new)
        if not spec.get("paused"):
            if strategy.get("type") == "Recreate":
                self._recreate(d, new, olds, desired)
            else:
                self._rolling(d, new, olds, desired, surge, unavailable)
        self._cleanup_history(d, olds)
        self._deployment_status(d, new, self._owned(REPLICASETS, d), desired, unavailable)

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
                "creationTimestamp": self._birth(d),
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
        rs = self._write(REPLICASETS, rs)
        verb = "up" if replicas > before else "down"
        self.recorder.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {replicas}",
            component="deployment-controller",
            last=self._when(d),
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
        when = iso(now()) if not self.settling else d["metadata"]["creationTimestamp"]
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
            self._write(DEPLOYMENTS, d)

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
        deadline = d["spec"].get("progressDeadlineSeconds", 600) * self.time_scale
        waited = (now() - parse_iso(stalled_since)).total_seconds()
        if not self.settling and waited >= deadline:
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
        if not self.settling:
            self.after(
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
            for p in self._owned(PODS, rs)
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if len(pods) < desired:
            for _ in range(desired - len(pods)):
                pod = self.new_pod(rs, rs["spec"]["template"], self.pod_name(name), {})
                self.recorder.record(
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
                self.recorder.record(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    component="replicaset-controller",
                )
        pods = [
            p
            for p in self._owned(PODS, rs)
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
        self._set_status(REPLICASETS, rs, status)

    # ---- pods (scheduler + kubelet) ------------------------------------------------------
    def _schedule(self, pod: Obj) -> Obj | None:
        selector = pod["spec"].get("nodeSelector") or {}
        nodes = [
            n
            for n in self.store.list(NODES)
            if not (n.get("spec") or {}).get("unschedulable")
            and all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and not any(t.get("effect") == "NoSchedule"
                        for t in (n.get("spec") or {}).get("taints") or [])
        ]
        if not nodes:
            return None
        load = {n["metadata"]["name"]: 0 for n in nodes}
        for p in self.store.iter_raw(PODS):
            node_name = p["spec"].get("nodeName")
            if node_name in load:
                load[node_name] += 1
        return min(nodes, key=lambda n: (load[n["metadata"]["name"]], n["metadata"]["name"]))

    def _pod_ip(self, node: Obj) -> str:
        cidr = (node.get("spec") or {}).get("podCIDR", "10.244.0.0/24")
        prefix = cidr.rsplit(".", 1)[0]
        n = self._next_pod_ip.get(prefix, 1) + 1
        self._next_pod_ip[prefix] = n
        return f"{prefix}.{n}"

    def _pod(self, ns: str, name: str) -> None:
        pod = self.store.get(PODS, ns, name)
        if pod is None:
            return
        uid = pod["metadata"]["uid"]
        if not pod["spec"].get("nodeName"):
            node = self._schedule(pod)
            if node is None:
                self._set_status(
                    PODS,
                    pod,
                    {
                        "phase": "Pending",
                        "qosClass": pod["status"].get("qosClass", "BestEffort"),
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "lastProbeTime": None,
                                "lastTransitionTime": iso(now()),
                                "message": "0/0 nodes are available",
                            }
                        ],
                    },
                )
                return
            pod["spec"]["nodeName"] = node["metadata"]["name"]
            born = parse_iso(pod["metadata"]["creationTimestamp"])
            started = born if born < now() - timedelta(seconds=5) else now()
            self._started[uid] = started
            pod["status"]["startTime"] = iso(started)
            pod = self._write(PODS, pod)
            self.recorder.record(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {node['metadata']['name']}",
                component="default-scheduler",
                first=started,
                last=started,
            )
        node = self.store.get(NODES, "", pod["spec"]["nodeName"])
        if node is None:
            return
        status = pod.get("status") or {}
        started = self._started.get(uid) or parse_iso(
            status.get("startTime") or pod["metadata"]["creationTimestamp"]
        )
        self._started[uid] = started
        host_ip = next(
            (
                a["address"]
                for a in (node.get("status") or {}).get("addresses") or []
                if a["type"] == "InternalIP"
            ),
            "10.0.0.1",
        )
        pod_ip = status.get("podIP") or (
            host_ip if pod["spec"].get("hostNetwork") else self._pod_ip(node)
        )
        owner = controller_of(pod) or {}
        b = kubelet.behaviour(pod, self.time_scale, is_job=owner.get("kind") == "Job")
        new_status, wake = kubelet.pod_status(pod, b, started, started, now(), pod_ip, host_ip)
        if new_status != status:
            self._pod_events(pod, status, new_status, node, started)
            pod["status"] = new_status
            self._write(PODS, pod)
        if wake is not None:
            self.after(wake, ("Pod", ns, name))

    def _pod_events(self, pod: Obj, old: Obj, new: Obj, node: Obj, started: datetime) -> None:
        host = node["metadata"]["name"]
        old_cs = {c["name"]: c for c in old.get("containerStatuses") or []}
        for cs in new.get("containerStatuses") or []:
            prev = old_cs.get(cs["name"], {})
            name, field = cs["name"], f"spec.containers{{{cs['name']}}}"
            was_running = "running" in (prev.get("state") or {})
            starts = cs["restartCount"] - prev.get("restartCount", 0)
            first_start = (
                "running" in cs["state"]
                and not prev.get("started")
                and not prev.get("restartCount")
                and not was_running
            )
            n = starts + (1 if first_start else 0)
            if n > 0:
                first = started
                last = (
                    parse_iso(cs["state"]["running"]["startedAt"])
                    if "running" in cs["state"]
                    else now()
                )
                for reason, msg in (
                    ("Pulled", f'Container image "{cs["image"]}" already present on machine'),
                    ("Created", f"Created container: {name}"),
                    ("Started", f"Started container {name}"),
                ):
                    self.recorder.record(
                        pod,
                        "Normal",
                        reason,
                        msg,
                        component="kubelet",
                        host=host,
                        field_path=field,
                        count=n,
                        first=first,
                        last=last,
                    )
            term = (cs.get("lastState") or {}).get("terminated") or {}
            if starts > 0 and term.get("reason") in ("OOMKilled", "Error"):
                self.recorder.record(
                    pod,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {name} in pod "
                    f"{pod['metadata']['name']}_{pod['metadata']['namespace']}"
                    f"({pod['metadata']['uid']})",
                    component="kubelet",
                    host=host,
                    field_path=field,
                    count=starts,
                    first=started,
                    last=parse_iso(term["finishedAt"]),
                )
            if starts > 0 and term.get("reason") == "OOMKilled":
                self.recorder.record(
                    node,
                    "Warning",
                    "OOMKilling",
                    f"Memory cgroup out of memory: Killed process {1000 + len(name) * 37} "
                    f"({name}) in pod {pod['metadata']['namespace']}/{pod['metadata']['name']}",
                    component="kernel-monitor",
                    host=host,
                    count=starts,
                    first=started,
                    last=parse_iso(term["finishedAt"]),
                )
            waiting = (cs.get("state") or {}).get("waiting") or {}
            was_waiting = (prev.get("state") or {}).get("waiting", {}).get("reason")
            if (
                waiting.get("reason") == "CrashLoopBackOff"
                and starts == 0
                and was_waiting != "CrashLoopBackOff"
            ):
                self.recorder.record(
                    pod,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {name} in pod "
                    f"{pod['metadata']['name']}_{pod['metadata']['namespace']}"
                    f"({pod['metadata']['uid']})",
                    component="kubelet",
                    host=host,
                    field_path=field,
                )

    def _killed(self, pod: Obj) -> None:
        for c in pod["spec"].get("containers") or []:
            self.recorder.record(
                pod,
                "Normal",
                "Killing",
                f"Stopping container {c['name']}",
                component="kubelet",
                host=pod["spec"].get("nodeName", ""),
                field_path=f"spec.containers{{{c['name']}}}",
            )

    # ---- endpoints -----------------------------------------------------------------------
    def _endpoints(self, ns: str, name: str) -> None:
        svc = self.store.get(SERVICES, ns, name)
        slice_name = f"{name}-{template_hash({'service': f'{ns}/{name}'})[:5]}"
        if svc is None:
            if self.store.get(ENDPOINTS, ns, name) is not None:
                self.store.delete(ENDPOINTS, ns, name)
            if self.store.get(SLICES, ns, slice_name) is not None:
                self.store.delete(SLICES, ns, slice_name)
            return
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return
        reqs: list[Requirement] = [(k, "=", (str(v),)) for k, v in selector.items()]
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        pods = [
            p
            for p in self.store.list(PODS, ns)
            if labels_match(reqs, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
        ]
        for p in pods:
            addr = {
                "ip": p["status"]["podIP"],
                "nodeName": p["spec"].get("nodeName"),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": p["metadata"]["name"],
                    "uid": p["metadata"]["uid"],
                },
            }
            (ready if _is_ready(p) else not_ready).append(addr)
        ports = []
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str):
                target = next(
                    (
                        cp["containerPort"]
                        for p in pods
                        for c in p["spec"].get("containers") or []
                        for cp in c.get("ports") or []
                        if cp.get("name") == target
                    ),
                    port.get("port"),
                )
            entry = {"port": target, "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
        subset: Obj = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if subset:
            subset["ports"] = ports
        ep = self.store.get(ENDPOINTS, ns, name)
        subsets = [subset] if subset else []
        if ep is None:
            self.store.create(
                ENDPOINTS,
                {
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": dict(svc["metadata"].get("labels") or {}),
                        "creationTimestamp": svc["metadata"]["creationTimestamp"],
                    },
                    "subsets": subsets,
                },
            )
        elif ep.get("subsets", []) != subsets:
            ep["subsets"] = subsets
            self._write(ENDPOINTS, ep)
        self._endpoint_slice(svc, slice_name, ready, not_ready, ports)

    def _endpoint_slice(
        self, svc: Obj, slice_name: str, ready: list[Obj], not_ready: list[Obj], ports: list[Obj]
    ) -> None:
        """The discovery.k8s.io/v1 view of the same endpoints: describe svc/ingress read it."""
        ns = svc["metadata"]["namespace"]

        def endpoint(addr: Obj, ok: bool) -> Obj:
            node = self.store.get(NODES, "", addr.get("nodeName") or "")
            zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(
                "topology.kubernetes.io/zone"
            )
            out: Obj = {
                "addresses": [addr["ip"]],
                "conditions": {"ready": ok, "serving": ok, "terminating": False},
                "nodeName": addr.get("nodeName"),
                "targetRef": addr["targetRef"],
            }
            if zone:
                out["zone"] = zone
            return out

        endpoints = [endpoint(a, True) for a in ready] + [endpoint(a, False) for a in not_ready]
        current = self.store.get(SLICES, ns, slice_name)
        if current is None:
            self.store.create(
                SLICES,
                {
                    "metadata": {
                        "name": slice_name,
                        "namespace": ns,
                        "generateName": f"{svc['metadata']['name']}-",
                        "labels": {
                            "kubernetes.io/service-name": svc["metadata"]["name"],
                            "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
                        },
                        "ownerReferences": [owner_ref(svc)],
                        "creationTimestamp": svc["metadata"]["creationTimestamp"],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                },
            )
        elif (current.get("endpoints"), current.get("ports")) != (endpoints, ports):
            current["endpoints"], current["ports"] = endpoints, ports
            self._write(SLICES, current)


def _is_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _negate(ts: str) -> str:
    """Sort key that orders newer timestamps first."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in ts)
