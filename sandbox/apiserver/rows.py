"""The cells of a Table row, one function per kind, as upstream's printers
(pkg/printers/internalversion) fill the columns tables.py names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.state.selectors import selector_string
from sandbox.state.timeutil import human_age, parse_iso

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority (1 = only with -o wide)
Row = Callable[[Obj], list[Any]]


def age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    return human_age(parse_iso(ts)) if ts else "<unknown>"


def since(ts: str | None) -> str:
    return human_age(parse_iso(ts)) if ts else "<unknown>"


def name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def containers(spec: Obj) -> tuple[str, str]:
    cs = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def pod_status_reason(pod: Obj) -> str:
    """The STATUS column: the most telling container state, as kubectl shows it."""
    meta, status = pod["metadata"], pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            term = state["terminated"]
            reason = term.get("reason") or f"ExitCode:{term.get('exitCode')}"
        elif state.get("running") and cs.get("ready") and reason != "Running":
            reason = "Running"
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    last = max(
        (c.get("lastState", {}).get("terminated", {}).get("finishedAt", "") for c in statuses),
        default="",
    )
    restarts_cell = f"{restarts} ({since(last)} ago)" if restarts and last else str(restarts)
    return [
        name(pod),
        f"{ready}/{len(spec.get('containers') or [])}",
        pod_status_reason(pod),
        restarts_cell,
        age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def deploy_row(d: Obj) -> list[Any]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = containers(spec)
    return [
        name(d),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        age(d),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def rs_row(rs: Obj) -> list[Any]:
    spec, st = rs.get("spec") or {}, rs.get("status") or {}
    names, images = containers(spec)
    return [
        name(rs),
        spec.get("replicas", 0),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        age(rs),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def sts_row(s: Obj) -> list[Any]:
    spec, st = s.get("spec") or {}, s.get("status") or {}
    names, images = containers(spec)
    return [
        name(s),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        age(s),
        names,
        images,
    ]


def svc_row(s: Obj) -> list[Any]:
    spec = s.get("spec") or {}
    ports = ",".join(
        f"{p['port']}"
        + (f":{p['nodePort']}" if p.get("nodePort") else "")
        + f"/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    ingress = (s.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"
    return [
        name(s),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        age(s),
        selector,
    ]


def node_row(n: Obj) -> list[Any]:
    status = n.get("status") or {}
    ready: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    state = "Ready" if ready.get("status") == "True" else "NotReady"
    if (n.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = n["metadata"].get("labels") or {}
    roles = (
        ",".join(
            sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
        )
        or "<none>"
    )
    info = status.get("nodeInfo") or {}
    addr = {a["type"]: a["address"] for a in status.get("addresses") or []}
    return [
        name(n),
        state,
        roles,
        age(n),
        info.get("kubeletVersion", ""),
        addr.get("InternalIP", "<none>"),
        addr.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def event_row(e: Obj) -> list[Any]:
    inv = e.get("involvedObject") or {}
    last = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    first = e.get("firstTimestamp") or e.get("eventTime")
    source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
    return [
        since(last),
        e.get("type", ""),
        e.get("reason", ""),
        f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        source,
        e.get("message", ""),
        since(first),
        e.get("count", 1),
        name(e),
    ]


def pvc_row(p: Obj) -> list[Any]:
    spec, st = p.get("spec") or {}, p.get("status") or {}
    modes = {
        "ReadWriteOnce": "RWO",
        "ReadOnlyMany": "ROX",
        "ReadWriteMany": "RWX",
        "ReadWriteOncePod": "RWOP",
    }
    return [
        name(p),
        st.get("phase", "Pending"),
        spec.get("volumeName", ""),
        (st.get("capacity") or {}).get("storage", ""),
        ",".join(modes.get(m, m) for m in st.get("accessModes") or []),
        spec.get("storageClassName") or "",
        "<unset>",
        age(p),
        spec.get("volumeMode", "Filesystem"),
    ]


def pv_row(p: Obj) -> list[Any]:
    spec, st = p.get("spec") or {}, p.get("status") or {}
    claim = spec.get("claimRef") or {}
    return [
        name(p),
        (spec.get("capacity") or {}).get("storage", ""),
        ",".join(spec.get("accessModes") or []),
        spec.get("persistentVolumeReclaimPolicy", ""),
        st.get("phase", ""),
        f"{claim.get('namespace')}/{claim.get('name')}" if claim else "",
        spec.get("storageClassName", ""),
        "<unset>",
        "",
        age(p),
    ]


def ds_row(d: Obj) -> list[Any]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = containers(spec)
    selector = ",".join(
        f"{k}={v}"
        for k, v in ((spec.get("template") or {}).get("spec", {}).get("nodeSelector") or {}).items()
    )
    return [
        name(d),
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        selector or "<none>",
        age(d),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def ingress_row(i: Obj) -> list[Any]:
    spec, st = i.get("spec") or {}, i.get("status") or {}
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or []) or "*"
    lb = (st.get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(x.get("ip") or x.get("hostname", "") for x in lb)
    ports = "80, 443" if spec.get("tls") else "80"
    return [name(i), spec.get("ingressClassName") or "<none>", hosts, address, ports, age(i)]


def job_row(j: Obj) -> list[Any]:
    spec, st = j.get("spec") or {}, j.get("status") or {}
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    state = (
        "Complete"
        if conds.get("Complete") == "True"
        else "Failed"
        if conds.get("Failed") == "True"
        else "Running"
    )
    dur = ""
    if st.get("startTime"):
        end = st.get("completionTime")
        dur = human_age(parse_iso(st["startTime"]), parse_iso(end) if end else None)
    names, images = containers(spec)
    return [
        name(j),
        state,
        f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}",
        dur,
        age(j),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def cronjob_row(c: Obj) -> list[Any]:
    spec, st = c.get("spec") or {}, c.get("status") or {}
    names, images = containers((spec.get("jobTemplate") or {}).get("spec") or {})
    last = st.get("lastScheduleTime")
    return [
        name(c),
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        str(spec.get("suspend", False)),
        len(st.get("active") or []),
        since(last) if last else "<none>",
        age(c),
        names,
        images,
        "<none>",
    ]


def hpa_row(h: Obj) -> list[Any]:
    spec, st = h.get("spec") or {}, h.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    targets = []
    current = {m.get("resource", {}).get("name"): m for m in st.get("currentMetrics") or []}
    for m in spec.get("metrics") or []:
        res = m.get("resource") or {}
        want = (res.get("target") or {}).get("averageUtilization")
        have = (
            (current.get(res.get("name")) or {})
            .get("resource", {})
            .get("current", {})
            .get("averageUtilization")
        )
        cur = f"{have}%" if have is not None else "<unknown>"
        targets.append(f"{res.get('name')}: {cur}/{want}%")
    return [
        name(h),
        f"{ref.get('kind')}/{ref.get('name')}",
        ", ".join(targets) or "<none>",
        spec.get("minReplicas", 1),
        spec.get("maxReplicas"),
        st.get("currentReplicas", 0),
        age(h),
    ]


def endpoints_row(e: Obj) -> list[Any]:
    addrs = [
        f"{a['ip']}:{p['port']}"
        for s in e.get("subsets") or []
        for a in s.get("addresses") or []
        for p in s.get("ports") or [{"port": 0}]
    ]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [name(e), text or "<none>", age(e)]


def binding_row(b: Obj) -> list[Any]:
    ref = b.get("roleRef") or {}
    subjects = b.get("subjects") or []

    def of(kind: str) -> str:
        return ",".join(
            (f"{s.get('namespace')}/{s['name']}" if kind == "ServiceAccount" else s["name"])
            for s in subjects
            if s.get("kind") == kind
        )

    return [
        name(b),
        f"{ref.get('kind')}/{ref.get('name')}",
        age(b),
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]
