"""What a cluster reports about running containers: their logs (from scenario files, or a
plausible default) and resource usage for metrics.k8s.io, which `kubectl top` reads."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandbox.controllers import kubelet
from sandbox.state.errors import bad_request
from sandbox.state.resources import by_plural
from sandbox.state.selectors import Requirement, labels_match
from sandbox.state.store import Obj, Store
from sandbox.state.timeutil import iso, now, parse_iso

PODS = by_plural("", "pods")
NODES = by_plural("", "nodes")


@dataclass
class LogSpec:
    """Log lines for the containers of pods matched by namespace + label selector.
    `{ts}` in a line becomes a timestamp counted from the container's start."""

    namespace: str
    selector: list[Requirement]
    container: str | None = None
    image: str | None = None  # only containers running exactly this image
    lines: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)


def _stamp(lines: list[str], start: str | None) -> list[tuple[datetime, str]]:
    """Lines with their times: seven seconds apart from the container's start, squeezed
    closer for a container that started moments ago, so no line is dated in the future."""
    base = parse_iso(start) if start else now()
    elapsed = max((now() - base).total_seconds(), 0.0)
    step = timedelta(seconds=min(7.0, elapsed / max(len(lines), 1)))
    return [
        (base + step * i, line.replace("{ts}", iso(base + step * i)))
        for i, line in enumerate(lines)
    ]


def _default_lines(pod: Obj, container: str, image: str) -> list[str]:
    if "nginx" in image:
        return [
            "/docker-entrypoint.sh: /docker-entrypoint.d/ is not empty, will attempt to perform "
            "configuration",
            "/docker-entrypoint.sh: Configuration complete; ready for start up",
            '{ts} [notice] 1#1: using the "epoll" event method',
            "{ts} [notice] 1#1: nginx/" + image.rsplit(":", 1)[-1],
            "{ts} [notice] 1#1: start worker processes",
            '10.244.0.1 - - "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.37"',
        ]
    return [
        f"{{ts}} INFO starting {container} ({image})",
        f"{{ts}} INFO {container} listening on :8080",
        "{ts} INFO ready",
    ]


class LogBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.specs: list[LogSpec] = []

    def add(self, spec: LogSpec) -> None:
        self.specs.append(spec)

    def logs(self, pod: Obj, container: str, *, previous: bool) -> list[tuple[datetime, str]]:
        meta = pod["metadata"]
        cs: Obj = next(
            (
                c
                for c in (pod.get("status") or {}).get("containerStatuses") or []
                if c["name"] == container
            ),
            {},
        )
        image = next(
            (
                c.get("image", "")
                for c in pod["spec"].get("containers") or []
                if c["name"] == container
            ),
            "",
        )
        spec = next(
            (
                s
                for s in self.specs
                if s.namespace == meta.get("namespace")
                and (s.container in (None, container))
                and (s.image in (None, image))
                and labels_match(s.selector, meta.get("labels"))
            ),
            None,
        )
        # A pod's own annotation wins over the scenario files: what a test's workload prints
        # (the lines a container writes are the workload's to choose, escapes and all).
        written = kubelet.annotation(pod, "log")
        if written is not None:
            spec = LogSpec(namespace=str(meta.get("namespace")), selector=[],
                           lines=written.split("\n"))
        if previous:
            term = (cs.get("lastState") or {}).get("terminated")
            if not term:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{meta["name"]}" not found'
                )
            lines = (
                spec.previous
                if spec and spec.previous
                else (spec.lines if spec else _default_lines(pod, container, image))
            )
            return _stamp(lines, term.get("startedAt"))
        state = cs.get("state") or {}
        if "waiting" in state and not cs.get("lastState"):
            raise bad_request(
                f'container "{container}" in pod "{meta["name"]}" is waiting to '
                f"start: {state['waiting'].get('reason', 'ContainerCreating')}"
            )
        start = (state.get("running") or state.get("terminated") or {}).get("startedAt")
        lines = spec.lines if spec else _default_lines(pod, container, image)
        return _stamp(lines, start)


# ---- metrics ------------------------------------------------------------------------------
_QTY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def quantity(text: str | int | float) -> float:
    m = _QTY.match(str(text).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"bad quantity {text!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _seed(*parts: str) -> int:
    return int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:8], 16)


class Metrics:
    def __init__(self, store: Store) -> None:
        self.store = store

    def container_usage(self, pod: Obj, container: str) -> tuple[float, float]:
        """(cores, bytes) for one running container."""
        cpu = kubelet.annotation(pod, "cpu")
        mem = kubelet.annotation(pod, "memory")
        seed = _seed(pod["metadata"]["name"], container)
        cores = quantity(cpu) if cpu else (1 + seed % 4) / 1000
        mem_bytes = quantity(mem) if mem else (8 + seed % 24) * 1024**2
        return cores, mem_bytes

    def _running(self, namespace: str | None) -> list[Obj]:
        return [
            p
            for p in self.store.list(PODS, namespace)
            if (p.get("status") or {}).get("phase") == "Running"
        ]

    def pod_metrics(self, namespace: str | None) -> list[Obj]:
        stamp = iso(now())
        out = []
        for pod in self._running(namespace):
            containers = []
            for cs in pod["status"].get("containerStatuses") or []:
                if "running" not in (cs.get("state") or {}):
                    continue
                cores, mem = self.container_usage(pod, cs["name"])
                containers.append(
                    {
                        "name": cs["name"],
                        "usage": {
                            "cpu": f"{round(cores * 1e9)}n",
                            "memory": f"{round(mem / 1024)}Ki",
                        },
                    }
                )
            meta = pod["metadata"]
            out.append(
                {
                    "kind": "PodMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "labels": meta.get("labels") or {},
                        "creationTimestamp": stamp,
                    },
                    "timestamp": stamp,
                    "window": "30s",
                    "containers": containers,
                }
            )
        return out

    def node_metrics(self) -> list[Obj]:
        stamp = iso(now())
        usage: dict[str, list[float]] = {}
        for pod in self._running(None):
            node = pod["spec"].get("nodeName", "")
            total = usage.setdefault(node, [0.15, 900 * 1024**2])  # system daemons
            for c in pod["spec"].get("containers") or []:
                cores, mem = self.container_usage(pod, c["name"])
                total[0] += cores
                total[1] += mem
        out: list[Obj] = []
        for node in self.store.list(NODES):
            name = node["metadata"]["name"]
            cores, mem = usage.get(name, [0.15, 900 * 1024**2])
            out.append(
                {
                    "kind": "NodeMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {
                        "name": name,
                        "labels": node["metadata"].get("labels") or {},
                        "creationTimestamp": stamp,
                    },
                    "timestamp": stamp,
                    "window": "20s",
                    "usage": {"cpu": f"{round(cores * 1e9)}n", "memory": f"{round(mem / 1024)}Ki"},
                }
            )
        return out
