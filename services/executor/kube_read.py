"""The read tools: each turns its catalogue args into API calls and a kubectl-like answer.

Everything an object carries passes through `redact` before it leaves: a Secret's keys are
shown, its values never."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from schemas import catalogue as C
from services.executor.kube import KINDS, Kube, KubeError, Outcome, path
from services.executor.redact import redact, redact_text

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    secs = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _pod_row(p: Obj) -> list[str]:
    st = p.get("status") or {}
    cs = st.get("containerStatuses") or []
    ready = sum(1 for c in cs if c.get("ready"))
    total = len((p.get("spec") or {}).get("containers") or cs)
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    phase = st.get("phase", "Unknown")
    for c in cs:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            phase = waiting["reason"]
    return [p["metadata"]["name"], f"{ready}/{total}", phase, str(restarts),
            _age(p["metadata"].get("creationTimestamp"))]


def _deploy_row(d: Obj) -> list[str]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            str(st.get("updatedReplicas", 0)), str(st.get("availableReplicas", 0)),
            _age(d["metadata"].get("creationTimestamp"))]


def _secret_row(s: Obj) -> list[str]:
    return [s["metadata"]["name"], str(s.get("type", "Opaque")), str(len(s.get("data") or {})),
            _age(s["metadata"].get("creationTimestamp"))]


def _node_row(n: Obj) -> list[str]:
    conds = (n.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    status = "Ready" if ready else "NotReady"
    if (n.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return [n["metadata"]["name"], status, _age(n["metadata"].get("creationTimestamp"))]


def _generic_row(o: Obj) -> list[str]:
    return [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp"))]


_ROWS: dict[str, tuple[list[str], Callable[[Obj], list[str]]]] = {
    "pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], _pod_row),
    "deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deploy_row),
    "secret": (["NAME", "TYPE", "DATA", "AGE"], _secret_row),
    "node": (["NAME", "STATUS", "AGE"], _node_row),
}


def _ns(kind: str, namespace: str) -> str:
    return namespace if KINDS[kind].namespaced else ""


# `-o wide`: the extra columns kubectl adds for these kinds (others print their usual table).
def _pod_wide(p: Obj) -> list[str]:
    return [*_pod_row(p), str((p.get("status") or {}).get("podIP") or "<none>"),
            str((p.get("spec") or {}).get("nodeName") or "<none>")]


def _deploy_wide(d: Obj) -> list[str]:
    cs = (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return [*_deploy_row(d), ",".join(str(c.get("name", "")) for c in cs),
            ",".join(str(c.get("image", "")) for c in cs), _selector(d) or "<none>"]


_WIDE: dict[str, tuple[list[str], Callable[[Obj], list[str]]]] = {
    "pod": ([*_ROWS["pod"][0], "IP", "NODE"], _pod_wide),
    "deployment": ([*_ROWS["deployment"][0], "CONTAINERS", "IMAGES", "SELECTOR"], _deploy_wide),
}


def _qualified(kind: str, name: str) -> str:
    """`-o name`: kind.group/name, as kubectl prints it (deployment.apps/web, pod/web-1)."""
    group = KINDS[kind].group
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def _formatted(items: list[Obj], output: str, single: bool) -> str:
    """json/yaml as kubectl prints them: the object itself, or a v1 List of them."""
    doc: Obj = items[0] if single else {"apiVersion": "v1", "kind": "List", "items": items,
                                        "metadata": {"resourceVersion": ""}}
    if output == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip()
    return json.dumps(doc, indent=4)


def get(k: Kube, a: C.GetArgs) -> Outcome:
    obj = redact(k.read(a.cluster, a.kind, _ns(a.kind, a.namespace), a.name), KINDS[a.kind].kind)
    if a.output == "name":
        return Outcome(text=_qualified(a.kind, a.name), data=obj)
    if a.output == "yaml":
        return Outcome(text=_formatted([obj], "yaml", True), data=obj)
    if a.output == "wide":
        headers, row = _WIDE.get(a.kind) or _ROWS.get(a.kind, (["NAME", "AGE"], _generic_row))
        return Outcome(text=table(headers, [row(obj)]), data=obj)
    return Outcome(text=json.dumps(obj, indent=2), data=obj)


def list_(k: Kube, a: C.ListArgs) -> Outcome:
    kinds = [a.kind, *(x for x in a.more_kinds if x != a.kind)]
    parts = [_list_one(k, a, kind, several=len(kinds) > 1) for kind in kinds]
    if len(parts) == 1:
        return parts[0]
    data = {"kind": a.kind, "items": [i for p in parts for i in p.data["items"]]}
    if a.output in ("json", "yaml"):
        # One List holding every kind's objects, as kubectl prints `get deploy,svc -o json`.
        items = [o for p in parts for o in p.data.pop("objects")]
        return Outcome(text=_formatted(items, a.output, False), data=data)
    texts = [p.text for p in parts if not p.text.startswith("No resources found")]
    sep = "\n" if a.output == "name" else "\n\n"
    return Outcome(text=sep.join(texts) or parts[0].text, data=data)


def _list_one(k: Kube, a: C.ListArgs, kind: str, *, several: bool) -> Outcome:
    namespaced = KINDS[kind].namespaced
    every = a.all_namespaces or not namespaced
    # A list response's items do not say their kind: redact is told (a Secret's values).
    items = [redact(i, KINDS[kind].kind)
             for i in k.list(a.cluster, kind, a.namespace, all_namespaces=every,
                             label_selector=a.label_selector)]
    headers, row = _ROWS.get(kind, (["NAME", "AGE"], _generic_row))
    summary = [{"name": i["metadata"]["name"], "namespace": i["metadata"].get("namespace", ""),
                **dict(zip([h.lower() for h in headers[-len(r):]], r, strict=True))}
               for i, r in zip(items, (row(i) for i in items), strict=True)]
    if several:
        for s in summary:
            s["kind"] = kind
    if a.output == "wide":
        headers, row = _WIDE.get(kind, (headers, row))
    rows = [row(i) for i in items]
    if several:
        # Several kinds: each row names its object as kind.group/name, as kubectl does.
        rows = [[_qualified(kind, r[0]), *r[1:]] for r in rows]
    if a.all_namespaces and namespaced:
        headers = ["NAMESPACE", *headers]
        rows = [[i["metadata"].get("namespace", ""), *r] for i, r in zip(items, rows, strict=True)]
    data: Obj = {"kind": kind, "items": summary}
    where = "any namespace" if every else f"{a.namespace} namespace"
    if a.output == "name" and items:
        return Outcome(text="\n".join(_qualified(kind, i["metadata"]["name"]) for i in items),
                       data=data)
    if a.output in ("json", "yaml"):
        data["objects"] = items
        if not several:
            return Outcome(text=_formatted(items, a.output, False),
                           data={"kind": kind, "items": summary})
        return Outcome(text="", data=data)
    text = table(headers, rows) if rows else f"No resources found in {where}."
    return Outcome(text=text, data=data)


# -- describe ----------------------------------------------------------------------------------


def _events_for(k: Kube, ctx: str, obj: Obj) -> list[Obj]:
    meta = obj["metadata"]
    sel = [f"involvedObject.name={meta['name']}", f"involvedObject.kind={obj.get('kind', '')}"]
    ns = meta.get("namespace", "")
    if ns:
        sel.append(f"involvedObject.namespace={ns}")
    items = k.list(ctx, "event", ns, all_namespaces=not ns, field_selector=",".join(sel))
    return sorted(items, key=_event_time)


def _event_time(e: Obj) -> str:
    return str(e.get("lastTimestamp") or e.get("eventTime") or
               e["metadata"].get("creationTimestamp") or "")


def _selector(obj: Obj) -> str:
    sel = (obj.get("spec") or {}).get("selector") or {}
    labels = sel.get("matchLabels", sel) if isinstance(sel, dict) else {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, str))


def owned_by(k: Kube, ctx: str, obj: Obj, kinds: tuple[str, ...]) -> list[Obj]:
    uid = obj["metadata"]["uid"]
    out = []
    for kind in kinds:
        for child in k.list(ctx, kind, obj["metadata"].get("namespace", "")):
            if any(r.get("uid") == uid for r in child["metadata"].get("ownerReferences") or []):
                out.append(child)
    return out


def pods_of(k: Kube, ctx: str, kind: str, obj: Obj) -> list[Obj]:
    """The pods a workload (or service, node, namespace) runs or selects."""
    meta = obj["metadata"]
    if kind == "pod":
        return [obj]
    if kind == "node":
        return k.list(ctx, "pod", all_namespaces=True,
                      field_selector=f"spec.nodeName={meta['name']}")
    if kind == "namespace":
        return k.list(ctx, "pod", meta["name"])
    if kind == "cronjob":
        return [p for j in owned_by(k, ctx, obj, ("job",)) for p in pods_of(k, ctx, "job", j)]
    if kind in ("deployment", "replicaset", "statefulset", "daemonset", "job", "service",
                "poddisruptionbudget"):
        sel = _selector(obj) if kind != "service" else ",".join(
            f"{a}={b}" for a, b in sorted(((obj.get("spec") or {}).get("selector") or {}).items()))
        if not sel:
            return []
        return k.list(ctx, "pod", meta.get("namespace", ""), label_selector=sel)
    return []


def _owned(k: Kube, ctx: str, kind: str, obj: Obj) -> list[Obj]:
    if kind == "deployment":
        rss = owned_by(k, ctx, obj, ("replicaset",))
        return rss + [p for rs in rss for p in owned_by(k, ctx, rs, ("pod",))]
    if kind in ("replicaset", "statefulset", "daemonset", "job"):
        return owned_by(k, ctx, obj, ("pod",))
    if kind == "cronjob":
        return owned_by(k, ctx, obj, ("job",))
    if kind in ("service", "node"):
        return pods_of(k, ctx, kind, obj)
    return []


def describe(k: Kube, a: C.DescribeArgs) -> Outcome:
    obj = redact(k.read(a.cluster, a.kind, _ns(a.kind, a.namespace), a.name), KINDS[a.kind].kind)
    events = _events_for(k, a.cluster, obj)
    owned = [redact(o) for o in _owned(k, a.cluster, a.kind, obj)]
    meta = obj["metadata"]
    lines = [f"Name:         {meta['name']}"]
    if meta.get("namespace"):
        lines.append(f"Namespace:    {meta['namespace']}")
    lines.append(f"Kind:         {obj.get('kind', a.kind)}")
    labels = ",".join(f"{x}={y}" for x, y in sorted((meta.get("labels") or {}).items()))
    lines.append(f"Labels:       {labels or '<none>'}")
    lines.append(f"Created:      {meta.get('creationTimestamp', '')}")
    for section in ("spec", "status", "data"):
        if obj.get(section):
            lines.append(f"{section.capitalize()}:\n" + json.dumps(obj[section], indent=2))
    if owned:
        lines.append("Owned objects:")
        lines += [f"  {o.get('kind', '')}/{o['metadata']['name']}" +
                  (f"  {_pod_row(o)[2]}" if o.get("kind") == "Pod" else "") for o in owned]
    lines.append("Events:" + ("  <none>" if not events else ""))
    if events:
        lines.append(_events_table(events))
    summary_events = [_event_summary(e) for e in events]
    return Outcome(text="\n".join(lines), data={
        "object": obj, "events": summary_events,
        "owned": [{"kind": o.get("kind", ""), "name": o["metadata"]["name"]} for o in owned]})


def _event_summary(e: Obj) -> Obj:
    inv = e.get("involvedObject") or {}
    return {"type": e.get("type", ""), "reason": e.get("reason", ""),
            "object": f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
            "count": e.get("count", 1), "last_seen": _event_time(e),
            "message": redact_text(str(e.get("message", "")))}


def _events_table(events: list[Obj]) -> str:
    rows = [[_age(_event_time(e)), str(e.get("type", "")), str(e.get("reason", "")),
             f"{str((e.get('involvedObject') or {}).get('kind', '')).lower()}/"
             f"{(e.get('involvedObject') or {}).get('name', '')}",
             redact_text(str(e.get("message", "")))] for e in events]
    return table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], rows)


def events(k: Kube, a: C.EventsArgs) -> Outcome:
    sel = []
    if a.kind:
        sel.append(f"involvedObject.kind={KINDS[a.kind].kind}")
    if a.name:
        sel.append(f"involvedObject.name={a.name}")
    if a.warnings_only:
        sel.append("type=Warning")
    items = k.list(a.cluster, "event", a.namespace, all_namespaces=a.all_namespaces,
                   field_selector=",".join(sel))
    items = [e for e in items if not a.warnings_only or e.get("type") == "Warning"]
    items = sorted(items, key=_event_time)[-a.limit:]
    if not items:
        return Outcome(text="No events found.", data={"events": []})
    return Outcome(text=_events_table(items), data={"events": [_event_summary(e) for e in items]})


def _log_rank(p: Obj) -> tuple[bool, bool, str]:
    """kubectl's choice among a workload's pods: ready first, then running, then the newest."""
    st = p.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in st.get("conditions") or [])
    return ready, st.get("phase") == "Running", str(p["metadata"].get("creationTimestamp") or "")


def logs(k: Kube, a: C.LogsArgs) -> Outcome:
    pod, note = a.name, ""
    if a.kind != "pod":
        obj = k.read(a.cluster, a.kind, a.namespace, a.name)
        pods = sorted(pods_of(k, a.cluster, a.kind, obj), key=_log_rank, reverse=True)
        if not pods:
            raise KubeError("NotFound", f"{a.kind} {a.name} has no pods to read logs from", 404)
        pod = pods[0]["metadata"]["name"]
        if len(pods) > 1:
            note = f"Found {len(pods)} pods, using pod/{pod}\n"
    text = k.request(a.cluster, "GET", path("pod", a.namespace, pod, "log"), raw=True,
                     query={"container": a.container, "tailLines": a.tail_lines,
                            "previous": "true" if a.previous else None})
    text = redact_text(str(text))
    return Outcome(text=note + (text or "(no log lines)"),
                   data={"pod": pod, "container": a.container, "previous": a.previous,
                         "lines": text.count("\n")})


# -- rollouts ----------------------------------------------------------------------------------


def rollout_state(kind: str, obj: Obj) -> tuple[bool, str]:
    """(complete, message) as `kubectl rollout status` decides them."""
    name, spec, st = obj["metadata"]["name"], obj.get("spec") or {}, obj.get("status") or {}
    gen = obj["metadata"].get("generation", 0)
    if st.get("observedGeneration", 0) < gen:
        return False, f"Waiting for {kind} spec update to be observed..."
    if kind == "daemonset":
        want, updated = st.get("desiredNumberScheduled", 0), st.get("updatedNumberScheduled", 0)
        avail = st.get("numberAvailable", 0)
        if updated < want:
            return False, (f"Waiting for daemon set \"{name}\" rollout to finish: {updated} out "
                           f"of {want} new pods have been updated...")
        if avail < want:
            return False, (f"Waiting for daemon set \"{name}\" rollout to finish: {avail} of "
                           f"{want} updated pods are available...")
        return True, f"daemon set \"{name}\" successfully rolled out"
    want = spec.get("replicas", 1)
    updated = st.get("updatedReplicas", 0)
    if kind == "statefulset":
        ready = st.get("readyReplicas", 0)
        if ready < want or st.get("currentRevision") != st.get("updateRevision"):
            return False, (f"Waiting for {want - ready} pods to be ready..." if ready < want else
                           "Waiting for partitioned roll out to finish...")
        return True, f"statefulset rolling update complete {ready} pods at revision " \
                     f"{st.get('updateRevision', '')}..."
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return False, f"deployment \"{name}\" exceeded its progress deadline"
    total, avail = st.get("replicas", 0), st.get("availableReplicas", 0)
    if updated < want:
        return False, (f"Waiting for deployment \"{name}\" rollout to finish: {updated} out of "
                       f"{want} new replicas have been updated...")
    if total > updated:
        return False, (f"Waiting for deployment \"{name}\" rollout to finish: {total - updated} "
                       "old replicas are pending termination...")
    if avail < updated:
        return False, (f"Waiting for deployment \"{name}\" rollout to finish: {avail} of "
                       f"{updated} updated replicas are available...")
    return True, f"deployment \"{name}\" successfully rolled out"


def wait_rollout(k: Kube, ctx: str, kind: str, namespace: str, name: str,
                 seconds: float, interval: float = 0.25) -> tuple[bool, str, Obj]:
    """Polls the workload until its rollout completes or `seconds` pass (0: look once)."""
    deadline = time.monotonic() + seconds
    while True:
        obj = k.read(ctx, kind, namespace, name)
        done, message = rollout_state(kind, obj)
        if done or time.monotonic() >= deadline:
            return done, message, obj
        time.sleep(interval)  # polling the cluster with a deadline: the executor's own wait


def rollout_status(k: Kube, a: C.RolloutStatusArgs) -> Outcome:
    done, message, obj = wait_rollout(k, a.cluster, a.kind, a.namespace, a.name, a.wait_seconds)
    st = obj.get("status") or {}
    return Outcome(text=message, data={"complete": done, "replicas": obj["spec"].get("replicas"),
                                       "updated": st.get("updatedReplicas"),
                                       "available": st.get("availableReplicas")})


def revisions(k: Kube, ctx: str, deploy: Obj) -> list[tuple[int, Obj]]:
    rss = owned_by(k, ctx, deploy, ("replicaset",))
    out = [(int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")), rs) for rs in rss]
    return sorted((r for r in out if r[0] > 0), key=lambda r: r[0])


def _images(template: Obj) -> str:
    return ",".join(f"{c['name']}={c.get('image', '')}"
                    for c in (template.get("spec") or {}).get("containers") or [])


def rollout_history(k: Kube, a: C.RolloutHistoryArgs) -> Outcome:
    deploy = k.read(a.cluster, "deployment", a.namespace, a.name)
    revs = revisions(k, a.cluster, deploy)
    if a.revision is not None:
        match = [rs for r, rs in revs if r == a.revision]
        if not match:
            raise KubeError("NotFound", f"deployment/{a.name} has no revision {a.revision} "
                            f"(revisions: {', '.join(str(r) for r, _ in revs) or 'none'})", 404)
        tmpl = redact(match[0]["spec"]["template"])
        return Outcome(text=f"deployment.apps/{a.name} with revision #{a.revision}\n"
                            + json.dumps(tmpl, indent=2),
                       data={"revision": a.revision, "template": tmpl})
    # The change-cause is the command that made the revision: `set env … TOKEN=…` included.
    rows = [[str(r), redact_text((rs["metadata"].get("annotations") or {}).get(
        "kubernetes.io/change-cause", "<none>")), _images(rs["spec"]["template"])]
        for r, rs in revs]
    return Outcome(text=f"deployment.apps/{a.name}\n" +
                   table(["REVISION", "CHANGE-CAUSE", "IMAGES"], rows),
                   data={"revisions": [{"revision": r[0], "change_cause": r[1], "images": r[2]}
                                       for r in rows]})


# -- metrics, cluster, access ------------------------------------------------------------------


def _metrics(k: Kube, ctx: str, resource_path: str, selector: str) -> list[Obj]:
    try:
        body = k.request(ctx, "GET", resource_path, query={"labelSelector": selector})
    except KubeError as exc:
        if exc.status in (404, 503):
            raise KubeError("NotFound", "metrics are not available: the cluster does not serve "
                            "metrics.k8s.io (is metrics-server installed?)", exc.status) from exc
        raise
    items: list[Obj] = body.get("items") or []
    return items


def _cpu_m(q: str) -> int:
    q = str(q)
    if q.endswith("n"):
        return int(q[:-1]) // 1_000_000
    if q.endswith("u"):
        return int(q[:-1]) // 1_000
    if q.endswith("m"):
        return int(q[:-1])
    return int(float(q) * 1000)


_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _mem_mi(q: str) -> int:
    q = str(q)
    for suffix, mult in _MEM.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult) // 2**20
    return int(float(q)) // 2**20


def top_pods(k: Kube, a: C.TopPodsArgs) -> Outcome:
    where = "/apis/metrics.k8s.io/v1beta1/" + ("pods" if a.all_namespaces
                                                else f"namespaces/{a.namespace}/pods")
    items = _metrics(k, a.cluster, where, a.label_selector)
    rows, data = [], []
    for m in sorted(items, key=lambda m: (m["metadata"].get("namespace", ""),
                                          m["metadata"]["name"])):
        containers = m.get("containers") or []
        entries = ([(c["name"], c["usage"]) for c in containers] if a.containers else
                   [("", {"cpu": f"{sum(_cpu_m(c['usage']['cpu']) for c in containers)}m",
                          "memory":
                              f"{sum(_mem_mi(c['usage']['memory']) for c in containers)}Mi"})])
        for cname, usage in entries:
            cpu, mem = _cpu_m(usage["cpu"]), _mem_mi(usage["memory"])
            row = [m["metadata"]["name"], *([cname] if a.containers else []), f"{cpu}m", f"{mem}Mi"]
            if a.all_namespaces:
                row.insert(0, m["metadata"].get("namespace", ""))
            rows.append(row)
            data.append({"namespace": m["metadata"].get("namespace", ""),
                         "pod": m["metadata"]["name"], "container": cname,
                         "cpu_millicores": cpu, "memory_mib": mem})
    headers = [*(["NAMESPACE"] if a.all_namespaces else []), "NAME",
               *(["CONTAINER"] if a.containers else []), "CPU(cores)", "MEMORY(bytes)"]
    text = table(headers, rows) if rows else "No pod metrics found."
    return Outcome(text=text, data={"pods": data})


def top_nodes(k: Kube, a: C.TopNodesArgs) -> Outcome:
    items = _metrics(k, a.cluster, "/apis/metrics.k8s.io/v1beta1/nodes", a.label_selector)
    alloc = {n["metadata"]["name"]: (n.get("status") or {}).get("allocatable") or {}
             for n in k.list(a.cluster, "node")}
    rows, data = [], []
    for m in sorted(items, key=lambda m: m["metadata"]["name"]):
        name = m["metadata"]["name"]
        cpu, mem = _cpu_m(m["usage"]["cpu"]), _mem_mi(m["usage"]["memory"])
        cap_cpu = _cpu_m(alloc.get(name, {}).get("cpu", "0")) or 1
        cap_mem = _mem_mi(alloc.get(name, {}).get("memory", "0")) or 1
        rows.append([name, f"{cpu}m", f"{cpu * 100 // cap_cpu}%", f"{mem}Mi",
                     f"{mem * 100 // cap_mem}%"])
        data.append({"node": name, "cpu_millicores": cpu, "memory_mib": mem})
    text = table(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], rows) \
        if rows else "No node metrics found."
    return Outcome(text=text, data={"nodes": data})


def cluster_info(k: Kube, a: C.ClusterInfoArgs) -> Outcome:
    version = k.request(a.cluster, "GET", "/version")
    nodes = k.list(a.cluster, "node")
    namespaces = [n["metadata"]["name"] for n in k.list(a.cluster, "namespace")]
    ready = sum(1 for n in nodes if _node_row(n)[1].startswith("Ready"))
    host = k.host(a.cluster)
    text = (f"Kubernetes control plane is running at {host}\n"
            f"Version: {version.get('gitVersion', '')}\n"
            f"Nodes: {len(nodes)} ({ready} ready)\n"
            f"Namespaces: {', '.join(namespaces)}")
    return Outcome(text=text, data={"server": host, "version": version.get("gitVersion", ""),
                                    "nodes": len(nodes), "nodes_ready": ready,
                                    "namespaces": namespaces})


def can_i(k: Kube, a: C.CanIArgs) -> Outcome:
    resource, _, sub = a.resource.partition("/")
    attrs: Obj = {"verb": a.verb, "resource": resource, "group": a.group,
                  "namespace": a.namespace}
    if sub:
        attrs["subresource"] = sub
    if a.name:
        attrs["name"] = a.name
    review = k.request(a.cluster, "POST",
                       "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                       body={"apiVersion": "authorization.k8s.io/v1",
                             "kind": "SelfSubjectAccessReview",
                             "spec": {"resourceAttributes": attrs}})
    st = review.get("status") or {}
    allowed = bool(st.get("allowed"))
    reason = str(st.get("reason") or "")
    return Outcome(text=("yes" if allowed else "no") + (f" - {reason}" if reason else ""),
                   data={"allowed": allowed, "reason": reason, **attrs})


READERS: dict[type[C.Args], Callable[[Kube, Any], Outcome]] = {
    C.GetArgs: get, C.ListArgs: list_, C.DescribeArgs: describe, C.LogsArgs: logs,
    C.EventsArgs: events, C.RolloutStatusArgs: rollout_status,
    C.RolloutHistoryArgs: rollout_history, C.TopPodsArgs: top_pods, C.TopNodesArgs: top_nodes,
    C.ClusterInfoArgs: cluster_info, C.CanIArgs: can_i,
}
