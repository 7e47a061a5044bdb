"""A pretend kubelet: kwok-style stages driven by pod annotations. A pod's status is a pure
function of its spec, annotations, start time and the current time, so backdated scenario pods
come up already restarted, and live pods move through the same stages on timers.

Annotations (on the pod or its template), all optional:
  sandbox.interlock.dev/ready-after   readiness delay after the container starts (scaled)
  sandbox.interlock.dev/oom-every     the container is OOMKilled this often (exit 137)
  sandbox.interlock.dev/crash-after   the container exits 1 this long after each start, and
                                      sits in CrashLoopBackOff between restarts
  sandbox.interlock.dev/crash-backoff first back-off (doubles up to 5m, like kubelet); 10s
  sandbox.interlock.dev/run-for       the container exits 0 after this long (job pods: 2s)
  sandbox.interlock.dev/cpu           CPU usage reported by metrics.k8s.io (e.g. 850m)
  sandbox.interlock.dev/memory        memory usage reported by metrics.k8s.io (e.g. 240Mi)
  sandbox.interlock.dev/log           what the containers log, one line per line of the value
                                      (instead of the scenario files' or the default lines)
Durations look like 90s, 5m, 1h30m."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandbox.state.timeutil import iso, parse_duration

Obj = dict[str, Any]
PREFIX = "sandbox.interlock.dev/"
START_DELAY = 0.5  # seconds from scheduling to the container running, before time_scale
READY_DELAY = 1.0  # seconds from running to Ready, before time_scale
JOB_RUN_FOR = 2.0
MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Behaviour:
    start_delay: float
    ready_delay: float
    oom_every: float | None = None
    crash_after: float | None = None
    crash_backoff: float = 10.0
    run_for: float | None = None


def annotation(pod: Obj, key: str) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(PREFIX + key)


def behaviour(pod: Obj, time_scale: float, is_job: bool = False) -> Behaviour:
    def dur(key: str) -> float | None:
        value = annotation(pod, key)
        return parse_duration(value) if value is not None else None

    ready = dur("ready-after")
    run_for = dur("run-for")
    if run_for is None and is_job:
        run_for = JOB_RUN_FOR * time_scale
    return Behaviour(
        start_delay=START_DELAY * time_scale,
        ready_delay=(ready if ready is not None else READY_DELAY) * time_scale,
        oom_every=dur("oom-every"),
        crash_after=dur("crash-after"),
        crash_backoff=dur("crash-backoff") or 10.0,
        run_for=run_for,
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class ContainerTimeline:
    """Where one container is at time `at`: how often it restarted and its current state."""

    restarts: int
    state: Obj
    last_state: Obj
    ready: bool
    ready_since: datetime | None
    next_change: float | None  # seconds until the state changes, None if it never will


def _terminated(reason: str, code: int, started: datetime, finished: datetime, cid: str) -> Obj:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": iso(started),
            "finishedAt": iso(finished),
            "containerID": cid,
        }
    }


def timeline(
    b: Behaviour, started: datetime, at: datetime, restart_policy: str, cid: str
) -> ContainerTimeline:
    """Replays the container's life from `started` (scheduling) up to `at`."""
    run_start = started + timedelta(seconds=b.start_delay)
    if at < run_start:
        return ContainerTimeline(
            0,
            {"waiting": {"reason": "ContainerCreating"}},
            {},
            False,
            None,
            (run_start - at).total_seconds(),
        )
    restarts = 0
    last_state: Obj = {}
    backoff = b.crash_backoff
    while True:
        # The next exit of the current run, if any.
        exit_after, reason, code = None, "", 0
        candidates = [
            (b.oom_every, "OOMKilled", 137),
            (b.crash_after, "Error", 1),
            (b.run_for, "Completed", 0),
        ]
        for after, r, c in candidates:
            if after is not None and (exit_after is None or after < exit_after):
                exit_after, reason, code = after, r, c
        exit_at = run_start + timedelta(seconds=exit_after) if exit_after is not None else None
        if exit_at is None or at < exit_at:
            ready_at = run_start + timedelta(seconds=b.ready_delay)
            ready = at >= ready_at
            changes = [t for t in (ready_at, exit_at) if t is not None and t > at]
            nxt = (min(changes) - at).total_seconds() if changes else None
            return ContainerTimeline(
                restarts,
                {"running": {"startedAt": iso(run_start)}},
                last_state,
                ready,
                ready_at if ready else None,
                nxt,
            )
        term = _terminated(reason, code, run_start, exit_at, f"{cid}-{restarts}")
        if restart_policy == "Never" or (restart_policy == "OnFailure" and code == 0):
            return ContainerTimeline(restarts, term, last_state, False, None, None)
        # Restart: OOM kills come back after the start delay, crashes back off exponentially.
        if reason == "Error":
            restart_at = exit_at + timedelta(seconds=backoff)
            wait_msg = f"back-off {int(backoff)}s restarting failed container"
            backoff = min(backoff * 2, MAX_BACKOFF)
        else:
            restart_at = exit_at + timedelta(seconds=b.start_delay)
            wait_msg = ""
        if at < restart_at:
            waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": wait_msg}}
            return ContainerTimeline(
                restarts, waiting, term, False, None, (restart_at - at).total_seconds()
            )
        restarts += 1
        last_state = term
        run_start = restart_at


def container_id(pod: Obj, name: str) -> str:
    return "containerd://" + _digest(pod["metadata"].get("uid", ""), name)[:64]


def image_id(image: str) -> str:
    repo = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    return f"{repo}@sha256:{_digest(image)}"


def pod_status(
    pod: Obj,
    b: Behaviour,
    started: datetime,
    scheduled: datetime,
    at: datetime,
    pod_ip: str,
    host_ip: str,
) -> tuple[Obj, float | None]:
    """The whole `status` of a scheduled pod at time `at`, and seconds until it next changes."""
    spec = pod["spec"]
    policy = spec.get("restartPolicy", "Always")
    statuses, wakes = [], []
    ready_since: list[datetime] = []
    for c in spec.get("containers") or []:
        tl = timeline(b, started, at, policy, container_id(pod, c["name"]))
        if tl.next_change is not None:
            wakes.append(tl.next_change)
        if tl.ready_since is not None:
            ready_since.append(tl.ready_since)
        cs: Obj = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": image_id(c.get("image", "")),
            "ready": tl.ready,
            "restartCount": tl.restarts,
            "started": "running" in tl.state,
            "state": tl.state,
            "lastState": tl.last_state,
        }
        if "waiting" not in tl.state or tl.restarts:
            cs["containerID"] = f"{container_id(pod, c['name'])}"
        statuses.append(cs)
    running = any("running" in s["state"] for s in statuses)
    terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
    if statuses and len(terminated) == len(statuses):
        phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"
    elif running or any(s["restartCount"] or s["lastState"] for s in statuses):
        phase = "Running"
    else:
        phase = "Pending"
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    t_ready = iso(max(ready_since)) if all_ready and ready_since else ""
    t_sched, t_start = iso(scheduled), iso(started + timedelta(seconds=b.start_delay))

    def cond(type_: str, ok: bool, when: str, reason: str = "") -> Obj:
        c: Obj = {
            "type": type_,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": when,
        }
        if reason and not ok:
            c["reason"] = reason
        return c

    started_any = phase != "Pending"
    ready_reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
    status: Obj = {
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", started_any, t_start),
            cond("Initialized", True, t_sched),
            cond("Ready", all_ready, t_ready or t_start, ready_reason),
            cond("ContainersReady", all_ready, t_ready or t_start, ready_reason),
            cond("PodScheduled", True, t_sched),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": iso(scheduled),
        "containerStatuses": statuses,
        "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
    }
    return status, (min(wakes) if wakes else None)
