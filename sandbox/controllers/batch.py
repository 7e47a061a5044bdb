"""Controllers for Jobs and CronJobs, registered on the shared `Controllers` queue (a CronJob
follows its Jobs through their owner reference, as the queue routes every owned object)."""

from __future__ import annotations

import copy
from datetime import datetime

from sandbox.controllers.core import (
    CRONJOBS,
    JOBS,
    PODS,
    Controllers,
    _is_ready,
    controller_of,
    owner_ref,
)
from sandbox.controllers.cron import Schedule
from sandbox.state.defaults import apply_defaults
from sandbox.state.store import Obj
from sandbox.state.timeutil import iso, now, parse_iso

JOB_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Batch:
    def __init__(self, ctl: Controllers) -> None:
        self.ctl = ctl
        self.store = ctl.store
        ctl._reconcilers.update({"Job": self._job, "CronJob": self._cronjob})

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


def _job_done(job: Obj) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return str(c["type"])
    return ""
