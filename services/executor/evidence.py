"""Evidence Interlock gathers itself about a write's target, during its preview.

A model quotes what it chose to read, and direct mode has no model at all; an approver still
needs the facts that make a change right or wrong — pods OOMKilled again and again, memory at
94% of its limit, an autoscaler that owns the replica count and will undo a manual scale, what
still references an object about to be deleted. They are read here from the cluster for the
target, in plain sentences, and shown on the card marked "gathered by Interlock", apart from
the model's quotes. Best effort: a fact that cannot be read is left out, never guessed into a
reassurance. The gate and the executor never decide anything on them."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import catalogue as C
from services.executor import facts
from services.executor import kube_read as R
from services.executor.kube import KINDS, Kube, KubeError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
WORKLOADS = ("deployment", "statefulset", "daemonset", "replicaset")
SCALABLE = {"deployment": "Deployment", "statefulset": "StatefulSet", "replicaset": "ReplicaSet"}
MAX_LINE = 2_000
MAX_LINES = 12


@dataclass
class Gathered:
    lines: list[str] = field(default_factory=list)
    # The autoscaler that owns the target's replica count, in words, e.g.
    # "HorizontalPodAutoscaler/order-service (min 3, max 6, cpu 70%)"; "" if none.
    autoscaler: str = ""

    def add(self, line: str) -> None:
        if line and len(self.lines) < MAX_LINES:
            self.lines.append(line[:MAX_LINE])


# -- quantities --------------------------------------------------------------------------------

_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DEC = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity(text: Any) -> float | None:
    """A Kubernetes quantity as a number (cores, bytes), or None if unreadable."""
    q = str(text).strip()
    try:
        for suffix, mult in _BIN.items():
            if q.endswith(suffix):
                return float(q[: -len(suffix)]) * mult
        if q and q[-1] in _DEC:
            return float(q[:-1]) * _DEC[q[-1]]
        return float(q)
    except ValueError:
        return None


def mem(b: float) -> str:
    return f"{b / 2**30:.1f}Gi" if b >= 2**30 else f"{round(b / 2**20)}Mi"


def cpu(cores: float) -> str:
    return f"{cores:g}" if cores >= 1 and cores == int(cores) else f"{round(cores * 1000)}m"


def ago(then: str | None, now: datetime) -> str:
    if not then:
        return ""
    try:
        t = datetime.fromisoformat(then.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return span((now - t).total_seconds()) + " ago"


def span(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 90:
        return f"{round(s)} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{round(s / 3600)} h"
    return f"{round(s / 86400)} d"


# -- pods: restarts and terminations ------------------------------------------------------------


def _restarts(where: str, pods: list[Obj], now: datetime) -> list[str]:
    if not pods:
        return []
    total = 0
    per_pod: list[tuple[str, int]] = []
    reasons: dict[str, list[tuple[str, str, Any]]] = {}  # reason -> [(pod, finishedAt, code)]
    oldest = now
    for p in pods:
        meta, st = p["metadata"], p.get("status") or {}
        created = meta.get("creationTimestamp") or st.get("startTime")
        if created:
            with contextlib.suppress(ValueError):
                oldest = min(oldest, datetime.fromisoformat(created.replace("Z", "+00:00")))
        n = 0
        for cs in st.get("containerStatuses") or []:
            n += int(cs.get("restartCount") or 0)
            term = (cs.get("lastState") or {}).get("terminated") or \
                (cs.get("state") or {}).get("terminated")
            if term and term.get("reason"):
                reasons.setdefault(term["reason"], []).append(
                    (meta["name"], term.get("finishedAt") or "", term.get("exitCode")))
        total += n
        per_pod.append((meta["name"], n))
    window = span((now - oldest).total_seconds())
    running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
    head = f"{where}: {len(pods)} pod{'s' if len(pods) != 1 else ''} ({running} running)"
    if not total and not reasons:
        return [f"{head}, no restarts in {window}"]
    counts = ", ".join(f"{name} {n}" for name, n in per_pod if n)
    lines = [f"{head}, restarts {total} in {window}" + (f" ({counts})" if counts else "")]
    for reason, seen in sorted(reasons.items(), key=lambda r: -len(r[1])):
        latest = max(seen, key=lambda s: s[1])
        code = f" (exit {latest[2]})" if latest[2] is not None else ""
        pods_n = len({s[0] for s in seen})
        # Each pod reports only its last termination: the restart count says how often.
        times = sum(n for name, n in per_pod if name in {s[0] for s in seen})
        often = f" — {reason} {times}\u00d7 in {window}" if times and len(reasons) == 1 else ""
        lines.append(f"last termination {reason}{code} on {pods_n} of {len(pods)} pods, "
                     f"latest {ago(latest[1], now)}{often}")
    return lines


# -- usage against requests and limits -----------------------------------------------------------


def _usage(k: Kube, ctx: str, namespace: str, pods: list[Obj]) -> list[str]:
    if not pods or not namespace:
        return []
    try:
        body = k.request(ctx, "GET",
                         f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods")
    except KubeError:
        return ["usage: no metrics (the cluster does not serve metrics.k8s.io)"]
    by_pod = {m["metadata"]["name"]: m for m in body.get("items") or []}
    # container -> resource -> (highest usage, its pod, request, limit)
    worst: dict[str, dict[str, tuple[float, str, float | None, float | None]]] = {}
    for p in pods:
        m = by_pod.get(p["metadata"]["name"])
        if m is None:
            continue
        spec = {c["name"]: c for c in (p.get("spec") or {}).get("containers") or []}
        for c in m.get("containers") or []:
            res = (spec.get(c["name"]) or {}).get("resources") or {}
            for r in ("memory", "cpu"):
                used = quantity((c.get("usage") or {}).get(r, ""))
                if used is None:
                    continue
                req = quantity((res.get("requests") or {}).get(r)) \
                    if (res.get("requests") or {}).get(r) is not None else None
                lim = quantity((res.get("limits") or {}).get(r)) \
                    if (res.get("limits") or {}).get(r) is not None else None
                cur = worst.setdefault(c["name"], {}).get(r)
                if cur is None or used > cur[0]:
                    worst[c["name"]][r] = (used, p["metadata"]["name"], req, lim)
    measured = sum(1 for p in pods if p["metadata"]["name"] in by_pod)
    lines = []
    for container, res in worst.items():
        for r in ("memory", "cpu"):
            if r not in res:
                continue
            used, pod, req, lim = res[r]
            fmt = mem if r == "memory" else cpu
            parts = [f"{r} {fmt(used)}"]
            if lim:
                parts.append(f"{round(100 * used / lim)}% of limit {fmt(lim)}")
            if req:
                parts.append(f"{round(100 * used / req)}% of request {fmt(req)}")
            if not lim and not req:
                parts.append("no request or limit set")
            who = f"container {container}" + (f", highest of {measured} pods ({pod})"
                                              if measured > 1 else f" of {pod}")
            lines.append(f"{parts[0]}, {', '.join(parts[1:])} — {who}")
    return lines


# -- autoscalers ---------------------------------------------------------------------------------


def autoscaler_of(k: Kube, ctx: str, kind: str, namespace: str, name: str) -> Obj | None:
    """The HorizontalPodAutoscaler whose scaleTargetRef is this workload, if any."""
    api_kind = SCALABLE.get(kind)
    if api_kind is None or not namespace:
        return None
    for h in k.list(ctx, "horizontalpodautoscaler", namespace):
        ref = (h.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == api_kind and ref.get("name") == name:
            return h
    return None


def describe_hpa(h: Obj) -> str:
    spec = h.get("spec") or {}
    targets = []
    for m in spec.get("metrics") or []:
        res = m.get("resource") or {}
        t = res.get("target") or {}
        if t.get("averageUtilization") is not None:
            targets.append(f"{res.get('name')} {t['averageUtilization']}%")
        elif t.get("averageValue") is not None:
            targets.append(f"{res.get('name')} {t['averageValue']}")
    bounds = f"min {spec.get('minReplicas', 1)}, max {spec.get('maxReplicas')}"
    return f"HorizontalPodAutoscaler/{h['metadata']['name']} ({bounds}" + \
        (f", {', '.join(targets)}" if targets else "") + ")"


def _hpa_line(h: Obj, where: str, wanted: int | None) -> str:
    st = h.get("status") or {}
    spec = h.get("spec") or {}
    now = []
    for m in st.get("currentMetrics") or []:
        cur = (m.get("resource") or {}).get("current") or {}
        if cur.get("averageUtilization") is not None:
            now.append(f"{(m.get('resource') or {}).get('name')} {cur['averageUtilization']}%")
    line = f"{where} is scaled by {describe_hpa(h)}"
    if now:
        line += f"; now at {', '.join(now)}"
    if st.get("desiredReplicas") is not None:
        line += f", wants {st['desiredReplicas']} replicas"
    if wanted is not None:
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
        outside = (f" ({wanted} is above its max {hi})" if hi is not None and wanted > hi else
                   f" ({wanted} is below its min {lo})" if wanted < lo else "")
        line += f": a manual scale to {wanted} will be reverted by the autoscaler{outside}"
    return line


# -- references to an object being deleted ------------------------------------------------------


def _pod_spec_refs(spec: Obj) -> tuple[set[str], set[str]]:
    """(configmaps, secrets) a pod spec names."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for v in spec.get("volumes") or []:
        if v.get("configMap"):
            cms.add(v["configMap"].get("name", ""))
        if v.get("secret"):
            secrets.add(v["secret"].get("secretName", ""))
        for src in (v.get("projected") or {}).get("sources") or []:
            if src.get("configMap"):
                cms.add(src["configMap"].get("name", ""))
            if src.get("secret"):
                secrets.add(src["secret"].get("name", ""))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for e in c.get("envFrom") or []:
            if e.get("configMapRef"):
                cms.add(e["configMapRef"].get("name", ""))
            if e.get("secretRef"):
                secrets.add(e["secretRef"].get("name", ""))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if vf.get("configMapKeyRef"):
                cms.add(vf["configMapKeyRef"].get("name", ""))
            if vf.get("secretKeyRef"):
                secrets.add(vf["secretKeyRef"].get("name", ""))
    for s in spec.get("imagePullSecrets") or []:
        secrets.add(s.get("name", ""))
    return cms, secrets


def _references(k: Kube, ctx: str, kind: str, namespace: str, name: str,
                before: Obj) -> list[str]:
    refs: list[str] = []
    if kind in ("configmap", "secret"):
        for wk in ("deployment", "statefulset", "daemonset", "cronjob"):
            for obj in k.list(ctx, wk, namespace):
                cms, secrets = _pod_spec_refs(facts._pod_spec(wk, obj))
                if name in (cms if kind == "configmap" else secrets):
                    refs.append(f"{wk}/{obj['metadata']['name']}")
    elif kind == "persistentvolumeclaim":
        refs += facts._mounted_by(k, ctx, namespace, name)
    elif kind == "service":
        try:
            ings = k.request(ctx, "GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}"
                                         "/ingresses").get("items") or []
        except KubeError:
            ings = []
        for ing in ings:
            spec = ing.get("spec") or {}
            backends = [((spec.get("defaultBackend") or {}).get("service") or {}).get("name")]
            for rule in spec.get("rules") or []:
                for p in (rule.get("http") or {}).get("paths") or []:
                    backends.append(((p.get("backend") or {}).get("service") or {}).get("name"))
            if name in backends:
                refs.append(f"ingress/{ing['metadata']['name']}")
    elif kind in WORKLOADS:
        h = autoscaler_of(k, ctx, kind, namespace, name)
        if h is not None:
            refs.append(f"horizontalpodautoscaler/{h['metadata']['name']}")
        labels = ((((before.get("spec") or {}).get("template") or {}).get("metadata") or {})
                  .get("labels") or {})
        for svc in k.list(ctx, "service", namespace):
            sel = (svc.get("spec") or {}).get("selector") or {}
            if sel and all(labels.get(a) == b for a, b in sel.items()):
                refs.append(f"service/{svc['metadata']['name']}")
    if not refs:
        return [f"nothing in {namespace or 'the cluster'} was found referencing "
                f"{kind}/{name}"] if kind in ("configmap", "secret", "persistentvolumeclaim",
                                              "service") else []
    return [f"{kind}/{name} is referenced by {', '.join(refs[:20])}"
            + (f" and {len(refs) - 20} more" if len(refs) > 20 else "")]


# -- the whole ------------------------------------------------------------------------------------


def _section(out: Gathered, fn: Any, *a: Any) -> Any:
    """One kind of fact; a failure to read it leaves it out and says so in the log only."""
    try:
        return fn(*a)
    except (KubeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.info("evidence left out: %s: %s", getattr(fn, "__name__", fn), exc)
        return None


def gather(k: Kube, args: C.Args, now: datetime | None = None) -> Gathered:
    """The facts about `args`' target an approver should see, read from the cluster now. Never
    fails a preview: an object shaped unlike what we expect yields the facts read so far."""
    if getattr(args, "selector", ""):  # each object a write by selector matched
        from services.executor import selector  # it builds on this module

        return selector.gather(k, args, now)
    out = Gathered()
    with contextlib.suppress(KubeError, KeyError, TypeError, ValueError, AttributeError):
        _gather(out, k, args, now)
    return out


def _gather(out: Gathered, k: Kube, args: C.Args, now: datetime | None) -> Gathered:
    t = args.target()
    kind, ns, name = t.kind, t.namespace, t.name
    if kind not in KINDS or not name:
        return out
    now = now or datetime.now(UTC)
    try:
        before = k.read_or_none(args.cluster, kind, ns if KINDS[kind].namespaced else "", name)
    except KubeError:
        return out
    if before is None:
        return out
    deleting = isinstance(args, C.DeleteArgs)
    if kind in (*WORKLOADS, "pod"):
        pods = _section(out, R.pods_of, k, args.cluster, kind, before) or []
        where = f"{kind}/{name}" if kind != "pod" else f"pod/{name}"
        for line in _section(out, _restarts, where, pods, now) or []:
            out.add(line)
        for line in _section(out, _usage, k, args.cluster, ns, pods) or []:
            out.add(line)
        h = _section(out, autoscaler_of, k, args.cluster, kind, ns, name)
        if h is not None:
            out.autoscaler = describe_hpa(h)
            wanted = args.replicas if isinstance(args, C.ScaleArgs) else None
            out.add(_hpa_line(h, f"{kind}/{name}", wanted))
    if deleting:
        for line in _section(out, _references, k, args.cluster, kind, ns, name, before) or []:
            out.add(line)
    return out


# -- after a write: who set it back ---------------------------------------------------------------


def autoscaler_pending(k: Kube, args: C.Args, kind: str, current: Obj) -> str:
    """A scale the settled object still shows but its autoscaler will undo (the approved count is
    outside the HPA's bounds): said now rather than "verified" until the next HPA sync."""
    if not isinstance(args, C.ScaleArgs):
        return ""
    t = args.target()
    h = autoscaler_of(k, args.cluster, kind, t.namespace, t.name)
    if h is None:
        return ""
    spec = h.get("spec") or {}
    lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if (hi is not None and args.replicas > hi) or args.replicas < lo:
        return (f"spec.replicas is {((current.get('spec') or {}).get('replicas'))!r} for now, "
                f"but {describe_hpa(h)} keeps it within {lo}..{hi} and will set it back")
    return ""


def who_changed(k: Kube, args: C.Args, kind: str, current: Obj, paths: list[str]) -> str:
    """Who set the approved fields back, as far as the cluster tells: the HPA that owns the
    replica count (with its latest rescale), else the field managers that wrote after us."""
    t = args.target()
    try:
        if any(p == "spec.replicas" for p in paths) or isinstance(args, C.ScaleArgs):
            h = autoscaler_of(k, args.cluster, kind, t.namespace, t.name)
            if h is not None:
                who = describe_hpa(h)
                events = k.list(args.cluster, "event", t.namespace,
                                field_selector="involvedObject.kind=HorizontalPodAutoscaler,"
                                               f"involvedObject.name={h['metadata']['name']}")
                rescales = sorted((e for e in events if e.get("reason") == "SuccessfulRescale"),
                                  key=lambda e: e.get("lastTimestamp") or
                                  e.get("eventTime") or "")
                if rescales:
                    who += f" ({rescales[-1].get('message', '')})"
                return who
        managers = [m.get("manager", "") for m in
                    sorted((current.get("metadata") or {}).get("managedFields") or [],
                           key=lambda m: m.get("time") or "")
                    if m.get("operation") == "Update" and m.get("manager") != "interlock"]
        if managers:
            return f"field manager {managers[-1]}"
    except KubeError:
        return ""
    return ""
