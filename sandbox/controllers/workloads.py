"""Controllers for StatefulSets, Jobs, CronJobs and HorizontalPodAutoscalers, registered on
the shared `Controllers` queue (which owns Deployments, ReplicaSets, pods and endpoints)."""

from __future__ import annotations

import copy
import math
import uuid
from datetime import datetime

from sandbox.controllers.core import (
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    HPAS,
    JOBS,
    NODES,
    PODS,
    PVCS,
    STATEFULSETS,
    Controllers,
    Key,
    _is_ready,
    controller_of,
    owner_ref,
    template_hash,
)
from sandbox.controllers.cron import Schedule
from sandbox.controllers.disruption import PDBS, budget_status
from sandbox.controllers.telemetry import Metrics, quantity
from sandbox.state.defaults import apply_defaults
from sandbox.state.selectors import labels_match, selector_from_spec
from sandbox.state.store import Change, Obj
from sandbox.state.timeutil import iso, now, parse_iso

JOB_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Workloads:
    def __init__(self, ctl: Controllers, metrics: Metrics) -> None:
        self.ctl = ctl
        self.store = ctl.store
        self.metrics = metrics
        ctl._reconcilers.update(
            {
                "StatefulSet": self._statefulset,
                "Job": self._job,
                "CronJob": self._cronjob,
                "HorizontalPodAutoscaler": self._hpa,
                "DaemonSet": self._daemonset,
                "PodDisruptionBudget": self._pdb,
            }
        )
        ctl.extra.append(self._related)

    def _related(self, change: Change) -> list[Key]:
        """HPAs follow their target and its pods; CronJobs follow their Jobs."""
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
        if kind in ("Pod", "Deployment", "StatefulSet", "ReplicaSet"):
            keys.extend(
                ("HorizontalPodAutoscaler", ns, h["metadata"]["name"])
                for h in self.store.iter_raw(HPAS)
                if h["metadata"]["namespace"] == ns
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

    # ---- jobs ----------------------------------------------------------------------------
    def _job(self, ns: str, name: str) -> None:
        j = self.store.get(JOBS, ns, name)
        if j is None:
            return
        spec, uid = j["spec"], j["metadata"]["uid"]
        if not spec.get("selector"):
            # apiserver generates the selector on create; done here because uid is known now.
            labels = {JOB_UID: uid, JOB_NAME: name, "controller-uid": uid, "job-name": name}
            spec["selector"] = {"matchLabels": {JOB_UID: uid}}
            tmeta = spec["template"].setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            self.ctl._write(JOBS, j)
            return
        status = copy.deepcopy(j.get("status") or {})
        conditions = status.get("conditions") or []
        finished = any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions
        )
        pods = self.ctl._owned(PODS, j)
        succeeded = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p["status"].get("phase") == "Failed")
        active = [p for p in pods if not _terminal(p)]
        completions = spec.get("completions", 1)
        born = j["metadata"]["creationTimestamp"]
        if not finished and not spec.get("suspend"):
            if succeeded >= completions:
                ends = [
                    c["state"]["terminated"]["finishedAt"]
                    for p in pods
                    for c in p["status"].get("containerStatuses") or []
                    if "terminated" in c.get("state", {})
                ]
                when = max(ends) if ends else iso(now())
                status["completionTime"] = when
                conditions = [
                    {
                        "type": "SuccessCriteriaMet",
                        "status": "True",
                        "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                        "lastProbeTime": when,
                        "lastTransitionTime": when,
                    },
                    {
                        "type": "Complete",
                        "status": "True",
                        "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                        "lastProbeTime": when,
                        "lastTransitionTime": when,
                    },
                ]
                self.ctl.recorder.record(
                    j,
                    "Normal",
                    "Completed",
                    "Job completed",
                    component="job-controller",
                    last=parse_iso(when),
                )
            elif failed > spec.get("backoffLimit", 6):
                when = iso(now())
                conditions = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastProbeTime": when,
                        "lastTransitionTime": when,
                    }
                ]
                for p in active:
                    self.store.delete(PODS, ns, p["metadata"]["name"])
                active = []
            else:
                want = min(spec.get("parallelism", 1), completions - succeeded) - len(active)
                for _ in range(max(0, want)):
                    pod = self.ctl.new_pod(j, spec["template"], self.ctl.pod_name(name), {})
                    active.append(pod)
                    self.ctl.recorder.record(
                        j,
                        "Normal",
                        "SuccessfulCreate",
                        f"Created pod: {pod['metadata']['name']}",
                        component="job-controller",
                        last=self.ctl._when(j),
                    )
        status.update(
            {
                "startTime": status.get("startTime") or born,
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if _is_ready(p)),
                "terminating": 0,
                "uncountedTerminatedPods": {},
            }
        )
        if conditions:
            status["conditions"] = conditions
        status = {k: v for k, v in status.items() if v not in (0, None) or k == "ready"}
        self.ctl._set_status(JOBS, j, status)

    # ---- cronjobs ------------------------------------------------------------------------
    def _cronjob(self, ns: str, name: str) -> None:
        cj = self.store.get(CRONJOBS, ns, name)
        if cj is None:
            return
        spec = cj["spec"]
        try:
            schedule = Schedule(spec.get("schedule", ""), spec.get("timeZone"))
        except ValueError:
            return
        born = parse_iso(cj["metadata"]["creationTimestamp"])
        at = now()
        jobs = self.ctl._owned(JOBS, cj)
        have = {j["metadata"]["name"] for j in jobs}
        due = schedule.previous(
            at, limit=spec.get("successfulJobsHistoryLimit", 3) if self.ctl.settling else 1
        )
        if not spec.get("suspend"):
            for t in sorted(d for d in due if d >= born):
                job_name = f"{name}-{int(t.timestamp() // 60)}"
                if job_name not in have:
                    self._create_job(cj, job_name, t)
                    have.add(job_name)
        jobs = self.ctl._owned(JOBS, cj)
        self._trim_history(cj, jobs)
        jobs = self.ctl._owned(JOBS, cj)
        done = [j for j in jobs if _job_done(j) == "Complete"]
        active = [j for j in jobs if not _job_done(j)]
        status: Obj = {}
        if active:
            status["active"] = [
                {
                    "kind": "Job",
                    "namespace": ns,
                    "name": j["metadata"]["name"],
                    "uid": j["metadata"]["uid"],
                    "apiVersion": "batch/v1",
                    "resourceVersion": j["metadata"]["resourceVersion"],
                }
                for j in active
            ]
        if jobs:
            status["lastScheduleTime"] = max(j["metadata"]["creationTimestamp"] for j in jobs)
        if done:
            status["lastSuccessfulTime"] = max(j["status"].get("completionTime", "") for j in done)
        self.ctl._set_status(CRONJOBS, cj, status)
        upcoming = schedule.next(at)
        if upcoming is not None:
            self.ctl.after((upcoming - at).total_seconds(), ("CronJob", ns, name))

    def _create_job(self, cj: Obj, job_name: str, t: datetime) -> None:
        template = copy.deepcopy(cj["spec"].get("jobTemplate") or {})
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": cj["metadata"]["namespace"],
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": {
                    "batch.kubernetes.io/cronjob-scheduled-timestamp": t.strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                },
                "ownerReferences": [owner_ref(cj)],
                "creationTimestamp": iso(t) if self.ctl.settling else iso(now()),
            },
            "spec": template.get("spec") or {},
        }
        apply_defaults(JOBS, job)
        self.store.create(JOBS, job)
        self.ctl.recorder.record(
            cj,
            "Normal",
            "SuccessfulCreate",
            f"Created job {job_name}",
            component="cronjob-controller",
            last=t if self.ctl.settling else None,
        )

    def _trim_history(self, cj: Obj, jobs: list[Obj]) -> None:
        for state, limit in (
            ("Complete", cj["spec"].get("successfulJobsHistoryLimit", 3)),
            ("Failed", cj["spec"].get("failedJobsHistoryLimit", 1)),
        ):
            finished = sorted(
                (j for j in jobs if _job_done(j) == state),
                key=lambda j: j["metadata"]["creationTimestamp"],
            )
            for j in finished[: max(0, len(finished) - limit)]:
                ns = j["metadata"]["namespace"]
                self.store.delete(JOBS, ns, j["metadata"]["name"])
                for pod in self.store.list(PODS, ns):
                    if (controller_of(pod) or {}).get("uid") == j["metadata"]["uid"]:
                        self.store.delete(PODS, ns, pod["metadata"]["name"])

    # ---- horizontal pod autoscalers ------------------------------------------------------
    def _hpa(self, ns: str, name: str) -> None:
        hpa = self.store.get(HPAS, ns, name)
        if hpa is None:
            return
        spec = hpa["spec"]
        ref = spec.get("scaleTargetRef") or {}
        rt = {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS}.get(ref.get("kind", ""))
        target = self.store.get(rt, ns, ref.get("name", "")) if rt else None
        old = hpa.get("status") or {}
        when = iso(now())
        if target is None:
            self.ctl._set_status(
                HPAS,
                hpa,
                {
                    "currentReplicas": old.get("currentReplicas", 0),
                    "desiredReplicas": 0,
                    "conditions": [
                        {
                            "type": "AbleToScale",
                            "status": "False",
                            "reason": "FailedGetScale",
                            "lastTransitionTime": when,
                            "message": f"the HPA controller was unable to get the target's "
                            f"current scale: {ref.get('kind', '').lower()}s.apps "
                            f'"{ref.get("name")}" not found',
                        }
                    ],
                },
            )
            return
        reqs = selector_from_spec(target["spec"].get("selector"))
        pods = [
            p
            for p in self.store.list(PODS, ns)
            if labels_match(reqs, p["metadata"].get("labels"))
            and p["status"].get("phase") == "Running"
        ]
        current = (target.get("status") or {}).get("replicas", target["spec"].get("replicas", 1))
        cpu_target = next(
            (
                m["resource"]["target"].get("averageUtilization")
                for m in spec.get("metrics")
                or [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"averageUtilization": 80}},
                    }
                ]
                if m.get("type") == "Resource" and m["resource"].get("name") == "cpu"
            ),
            80,
        )
        utils = [u for u in (self._cpu_utilization(p) for p in pods) if u is not None]
        min_r, max_r = spec.get("minReplicas", 1), spec["maxReplicas"]
        status: Obj = {"currentReplicas": current}
        if utils and cpu_target:
            util = round(sum(utils) / len(utils))
            avg_cores = sum(
                self.metrics.container_usage(p, c["name"])[0]
                for p in pods
                for c in p["spec"]["containers"]
            ) / len(pods)
            status["currentMetrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {
                            "averageUtilization": util,
                            "averageValue": f"{round(avg_cores * 1000)}m",
                        },
                    },
                }
            ]
            ratio = util / cpu_target
            raw = current if abs(ratio - 1) <= 0.1 else math.ceil(current * ratio)
        else:
            util, raw = None, current
        desired = max(min_r, min(max_r, raw))
        status["desiredReplicas"] = desired
        limited = raw > max_r or raw < min_r
        old_conds = {c["type"]: c for c in old.get("conditions") or []}

        def cond(type_: str, ok: bool, reason: str, message: str) -> Obj:
            prev = old_conds.get(type_)
            t = prev["lastTransitionTime"] if prev and prev.get("reason") == reason else when
            return {
                "type": type_,
                "status": "True" if ok else "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": t,
            }

        status["conditions"] = [
            cond(
                "AbleToScale",
                True,
                "ReadyForNewScale",
                "recommended size matches current size"
                if desired == current
                else "the last scale time was sufficiently old as to warrant a new scale",
            ),
            cond(
                "ScalingActive",
                util is not None,
                "ValidMetricFound" if util is not None else "FailedGetResourceMetric",
                "the HPA was able to successfully calculate a replica count from cpu resource "
                "utilization (percentage of request)"
                if util is not None
                else "the HPA was unable to compute the replica count: no metrics returned",
            ),
            cond(
                "ScalingLimited",
                limited,
                ("TooManyReplicas" if raw > max_r else "TooFewReplicas")
                if limited
                else "DesiredWithinRange",
                "the desired replica count is more than the maximum replica count"
                if raw > max_r
                else "the desired count is within the acceptable range",
            ),
        ]
        if old.get("lastScaleTime"):
            status["lastScaleTime"] = old["lastScaleTime"]
        if desired != current and rt is not None and target["spec"].get("replicas") != desired:
            target["spec"]["replicas"] = desired
            target["metadata"]["generation"] = target["metadata"].get("generation", 1) + 1
            self.ctl._write(rt, target)
            status["lastScaleTime"] = when
            direction = "above" if desired > current else "below"
            self.ctl.recorder.record(
                hpa,
                "Normal",
                "SuccessfulRescale",
                f"New size: {desired}; reason: cpu resource utilization (percentage of "
                f"request) {direction} target",
                component="horizontal-pod-autoscaler",
            )
        self.ctl._set_status(HPAS, hpa, status)

    def _cpu_utilization(self, pod: Obj) -> float | None:
        used = requested = 0.0
        for c in pod["spec"].get("containers") or []:
            req = ((c.get("resources") or {}).get("requests") or {}).get("cpu")
            if req is None:
                return None
            requested += quantity(req)
            used += self.metrics.container_usage(pod, c["name"])[0]
        return 100 * used / requested if requested else None


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


def _job_done(job: Obj) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return str(c["type"])
    return ""
