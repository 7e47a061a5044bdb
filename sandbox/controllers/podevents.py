"""The Events a pretend kubelet records for a pod: container pulls, starts and restarts,
back-offs and OOM kills as its status moves on, and the containers stopped when it is deleted."""

from __future__ import annotations

from datetime import datetime

from sandbox.controllers.events import Recorder
from sandbox.state.store import Obj
from sandbox.state.timeutil import now, parse_iso


def record_transitions(
    recorder: Recorder, pod: Obj, old: Obj, new: Obj, node: Obj, started: datetime
) -> None:
    """The Events a kubelet records as a pod's containers move from `old` to `new` status."""
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
                recorder.record(
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
            recorder.record(
                pod,
                "Warning",
                "BackOff",
                _backoff(name, pod),
                component="kubelet",
                host=host,
                field_path=field,
                count=starts,
                first=started,
                last=parse_iso(term["finishedAt"]),
            )
        if starts > 0 and term.get("reason") == "OOMKilled":
            recorder.record(
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
            recorder.record(
                pod,
                "Warning",
                "BackOff",
                _backoff(name, pod),
                component="kubelet",
                host=host,
                field_path=field,
            )


def _backoff(container: str, pod: Obj) -> str:
    """A kubelet's BackOff message, as `kubectl describe pod` shows it."""
    meta = pod["metadata"]
    return (f"Back-off restarting failed container {container} in pod "
            f"{meta['name']}_{meta['namespace']}({meta['uid']})")


def record_killed(recorder: Recorder, pod: Obj) -> None:
    """The Events a kubelet records when a running pod is deleted."""
    for c in pod["spec"].get("containers") or []:
        recorder.record(
            pod,
            "Normal",
            "Killing",
            f"Stopping container {c['name']}",
            component="kubelet",
            host=pod["spec"].get("nodeName", ""),
            field_path=f"spec.containers{{{c['name']}}}",
        )
