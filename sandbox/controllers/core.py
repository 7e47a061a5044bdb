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
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sandbox.controllers import kubelet, podevents
from sandbox.controllers.events import Recorder
from sandbox.state.defaults import apply_defaults
from sandbox.state.resources import RESOURCES, VIRTUAL_GROUPS, ResourceType, by_plural
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
            "Pod": self._pod,
            # Deployments and ReplicaSets (rollouts.py), Services (endpoints.py) and the
            # workloads of workloads.py, batch.py and autoscaling.py register their own.
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
                self._loop.call_soon(podevents.record_killed, self.recorder, obj)
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
            podevents.record_transitions(self.recorder, pod, status, new_status, node, started)
            pod["status"] = new_status
            self._write(PODS, pod)
        if wake is not None:
            self.after(wake, ("Pod", ns, name))


def _is_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _negate(ts: str) -> str:
    """Sort key that orders newer timestamps first."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in ts)
