"""Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for on get/list/watch. Cells
follow upstream's printers (pkg/printers/internalversion) for the columns people read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.state.resources import ResourceType
from sandbox.state.selectors import selector_string
from sandbox.state.timeutil import human_age, parse_iso

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority (1 = only with -o wide)
Row = Callable[[Obj], list[Any]]


def _age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    return human_age(parse_iso(ts)) if ts else "<unknown>"


def _since(ts: str | None) -> str:
    return human_age(parse_iso(ts)) if ts else "<unknown>"


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _containers(spec: Obj) -> tuple[str, str]:
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


def _pod_row(pod: Obj) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    last = max(
        (c.get("lastState", {}).get("terminated", {}).get("finishedAt", "") for c in statuses),
        default="",
    )
    restarts_cell = f"{restarts} ({_since(last)} ago)" if restarts and last else str(restarts)
    return [
        _name(pod),
        f"{ready}/{len(spec.get('containers') or [])}",
        pod_status_reason(pod),
        restarts_cell,
        _age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _deploy_row(d: Obj) -> list[Any]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers(spec)
    return [
        _name(d),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(d),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _rs_row(rs: Obj) -> list[Any]:
    spec, st = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers(spec)
    return [
        _name(rs),
        spec.get("replicas", 0),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        _age(rs),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _sts_row(s: Obj) -> list[Any]:
    spec, st = s.get("spec") or {}, s.get("status") or {}
    names, images = _containers(spec)
    return [
        _name(s),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        _age(s),
        names,
        images,
    ]


def _svc_row(s: Obj) -> list[Any]:
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
        _name(s),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        _age(s),
        selector,
    ]


def _node_row(n: Obj) -> list[Any]:
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
        _name(n),
        state,
        roles,
        _age(n),
        info.get("kubeletVersion", ""),
        addr.get("InternalIP", "<none>"),
        addr.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _event_row(e: Obj) -> list[Any]:
    inv = e.get("involvedObject") or {}
    last = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp")
    first = e.get("firstTimestamp") or e.get("eventTime")
    source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
    return [
        _since(last),
        e.get("type", ""),
        e.get("reason", ""),
        f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        source,
        e.get("message", ""),
        _since(first),
        e.get("count", 1),
        _name(e),
    ]


def _pvc_row(p: Obj) -> list[Any]:
    spec, st = p.get("spec") or {}, p.get("status") or {}
    modes = {
        "ReadWriteOnce": "RWO",
        "ReadOnlyMany": "ROX",
        "ReadWriteMany": "RWX",
        "ReadWriteOncePod": "RWOP",
    }
    return [
        _name(p),
        st.get("phase", "Pending"),
        spec.get("volumeName", ""),
        (st.get("capacity") or {}).get("storage", ""),
        ",".join(modes.get(m, m) for m in st.get("accessModes") or []),
        spec.get("storageClassName") or "",
        "<unset>",
        _age(p),
        spec.get("volumeMode", "Filesystem"),
    ]


def _pv_row(p: Obj) -> list[Any]:
    spec, st = p.get("spec") or {}, p.get("status") or {}
    claim = spec.get("claimRef") or {}
    return [
        _name(p),
        (spec.get("capacity") or {}).get("storage", ""),
        ",".join(spec.get("accessModes") or []),
        spec.get("persistentVolumeReclaimPolicy", ""),
        st.get("phase", ""),
        f"{claim.get('namespace')}/{claim.get('name')}" if claim else "",
        spec.get("storageClassName", ""),
        "<unset>",
        "",
        _age(p),
    ]


def _ds_row(d: Obj) -> list[Any]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers(spec)
    selector = ",".join(
        f"{k}={v}"
        for k, v in ((spec.get("template") or {}).get("spec", {}).get("nodeSelector") or {}).items()
    )
    return [
        _name(d),
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        selector or "<none>",
        _age(d),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _ingress_row(i: Obj) -> list[Any]:
    spec, st = i.get("spec") or {}, i.get("status") or {}
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or []) or "*"
    lb = (st.get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(x.get("ip") or x.get("hostname", "") for x in lb)
    ports = "80, 443" if spec.get("tls") else "80"
    return [_name(i), spec.get("ingressClassName") or "<none>", hosts, address, ports, _age(i)]


def _job_row(j: Obj) -> list[Any]:
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
    names, images = _containers(spec)
    return [
        _name(j),
        state,
        f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}",
        dur,
        _age(j),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _cronjob_row(c: Obj) -> list[Any]:
    spec, st = c.get("spec") or {}, c.get("status") or {}
    names, images = _containers((spec.get("jobTemplate") or {}).get("spec") or {})
    last = st.get("lastScheduleTime")
    return [
        _name(c),
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        str(spec.get("suspend", False)),
        len(st.get("active") or []),
        _since(last) if last else "<none>",
        _age(c),
        names,
        images,
        "<none>",
    ]


def _hpa_row(h: Obj) -> list[Any]:
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
        _name(h),
        f"{ref.get('kind')}/{ref.get('name')}",
        ", ".join(targets) or "<none>",
        spec.get("minReplicas", 1),
        spec.get("maxReplicas"),
        st.get("currentReplicas", 0),
        _age(h),
    ]


def _endpoints_row(e: Obj) -> list[Any]:
    addrs = [
        f"{a['ip']}:{p['port']}"
        for s in e.get("subsets") or []
        for a in s.get("addresses") or []
        for p in s.get("ports") or [{"port": 0}]
    ]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_name(e), text or "<none>", _age(e)]


def _binding_row(b: Obj) -> list[Any]:
    ref = b.get("roleRef") or {}
    subjects = b.get("subjects") or []

    def of(kind: str) -> str:
        return ",".join(
            (f"{s.get('namespace')}/{s['name']}" if kind == "ServiceAccount" else s["name"])
            for s in subjects
            if s.get("kind") == kind
        )

    return [
        _name(b),
        f"{ref.get('kind')}/{ref.get('name')}",
        _age(b),
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]


S, N = "string", "integer"
TABLES: dict[str, tuple[list[Column], Row]] = {
    "Pod": (
        [
            ("Name", S, 0),
            ("Ready", S, 0),
            ("Status", S, 0),
            ("Restarts", S, 0),
            ("Age", S, 0),
            ("IP", S, 1),
            ("Node", S, 1),
            ("Nominated Node", S, 1),
            ("Readiness Gates", S, 1),
        ],
        _pod_row,
    ),
    "Deployment": (
        [
            ("Name", S, 0),
            ("Ready", S, 0),
            ("Up-to-date", N, 0),
            ("Available", N, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        _deploy_row,
    ),
    "ReplicaSet": (
        [
            ("Name", S, 0),
            ("Desired", N, 0),
            ("Current", N, 0),
            ("Ready", N, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        _rs_row,
    ),
    "StatefulSet": (
        [("Name", S, 0), ("Ready", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1)],
        _sts_row,
    ),
    "DaemonSet": (
        [
            ("Name", S, 0),
            ("Desired", N, 0),
            ("Current", N, 0),
            ("Ready", N, 0),
            ("Up-to-date", N, 0),
            ("Available", N, 0),
            ("Node Selector", S, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        _ds_row,
    ),
    "PodDisruptionBudget": (
        [
            ("Name", S, 0),
            ("Min Available", S, 0),
            ("Max Unavailable", S, 0),
            ("Allowed Disruptions", N, 0),
            ("Age", S, 0),
        ],
        lambda p: [
            _name(p),
            str((p.get("spec") or {}).get("minAvailable", "N/A")),
            str((p.get("spec") or {}).get("maxUnavailable", "N/A")),
            (p.get("status") or {}).get("disruptionsAllowed", 0),
            _age(p),
        ],
    ),
    "NetworkPolicy": (
        [("Name", S, 0), ("Pod-Selector", S, 0), ("Age", S, 0)],
        lambda n: [
            _name(n),
            selector_string((n.get("spec") or {}).get("podSelector")) or "<none>",
            _age(n),
        ],
    ),
    "Ingress": (
        [
            ("Name", S, 0),
            ("Class", S, 0),
            ("Hosts", S, 0),
            ("Address", S, 0),
            ("Ports", S, 0),
            ("Age", S, 0),
        ],
        _ingress_row,
    ),
    "IngressClass": (
        [("Name", S, 0), ("Controller", S, 0), ("Parameters", S, 0), ("Age", S, 0)],
        lambda c: [_name(c), (c.get("spec") or {}).get("controller", ""), "<none>", _age(c)],
    ),
    "StorageClass": (
        [
            ("Name", S, 0),
            ("Provisioner", S, 0),
            ("ReclaimPolicy", S, 0),
            ("VolumeBindingMode", S, 0),
            ("AllowVolumeExpansion", S, 0),
            ("Age", S, 0),
        ],
        lambda c: [
            _name(c)
            + (
                " (default)"
                if (c["metadata"].get("annotations") or {}).get(
                    "storageclass.kubernetes.io/is-default-class"
                )
                == "true"
                else ""
            ),
            c.get("provisioner", ""),
            c.get("reclaimPolicy", "Delete"),
            c.get("volumeBindingMode", "Immediate"),
            str(c.get("allowVolumeExpansion", False)).lower(),
            _age(c),
        ],
    ),
    "PriorityClass": (
        [
            ("Name", S, 0),
            ("Value", N, 0),
            ("Global-Default", S, 0),
            ("Age", S, 0),
            ("PreemptionPolicy", S, 0),
        ],
        lambda c: [
            _name(c),
            c.get("value", 0),
            str(c.get("globalDefault", False)).lower(),
            _age(c),
            c.get("preemptionPolicy", "PreemptLowerPriority"),
        ],
    ),
    "EndpointSlice": (
        [
            ("Name", S, 0),
            ("AddressType", S, 0),
            ("Ports", S, 0),
            ("Endpoints", S, 0),
            ("Age", S, 0),
        ],
        lambda e: [
            _name(e),
            e.get("addressType", ""),
            ",".join(str(p.get("port")) for p in e.get("ports") or []) or "<unset>",
            ",".join(a for x in e.get("endpoints") or [] for a in x.get("addresses", []))
            or "<unset>",
            _age(e),
        ],
    ),
    "Lease": (
        [("Name", S, 0), ("Holder", S, 0), ("Age", S, 0)],
        lambda x: [_name(x), (x.get("spec") or {}).get("holderIdentity", ""), _age(x)],
    ),
    "Service": (
        [
            ("Name", S, 0),
            ("Type", S, 0),
            ("Cluster-IP", S, 0),
            ("External-IP", S, 0),
            ("Port(s)", S, 0),
            ("Age", S, 0),
            ("Selector", S, 1),
        ],
        _svc_row,
    ),
    "Node": (
        [
            ("Name", S, 0),
            ("Status", S, 0),
            ("Roles", S, 0),
            ("Age", S, 0),
            ("Version", S, 0),
            ("Internal-IP", S, 1),
            ("External-IP", S, 1),
            ("OS-Image", S, 1),
            ("Kernel-Version", S, 1),
            ("Container-Runtime", S, 1),
        ],
        _node_row,
    ),
    "Namespace": (
        [("Name", S, 0), ("Status", S, 0), ("Age", S, 0)],
        lambda n: [_name(n), (n.get("status") or {}).get("phase", ""), _age(n)],
    ),
    "Event": (
        [
            ("Last Seen", S, 0),
            ("Type", S, 0),
            ("Reason", S, 0),
            ("Object", S, 0),
            ("Subobject", S, 1),
            ("Source", S, 1),
            ("Message", S, 0),
            ("First Seen", S, 1),
            ("Count", N, 1),
            ("Name", S, 1),
        ],
        _event_row,
    ),
    "ConfigMap": (
        [("Name", S, 0), ("Data", N, 0), ("Age", S, 0)],
        lambda c: [_name(c), len(c.get("data") or {}) + len(c.get("binaryData") or {}), _age(c)],
    ),
    "Secret": (
        [("Name", S, 0), ("Type", S, 0), ("Data", N, 0), ("Age", S, 0)],
        lambda s: [_name(s), s.get("type", "Opaque"), len(s.get("data") or {}), _age(s)],
    ),
    "PersistentVolumeClaim": (
        [
            ("Name", S, 0),
            ("Status", S, 0),
            ("Volume", S, 0),
            ("Capacity", S, 0),
            ("Access Modes", S, 0),
            ("StorageClass", S, 0),
            ("VolumeAttributesClass", S, 0),
            ("Age", S, 0),
            ("VolumeMode", S, 1),
        ],
        _pvc_row,
    ),
    "PersistentVolume": (
        [
            ("Name", S, 0),
            ("Capacity", S, 0),
            ("Access Modes", S, 0),
            ("Reclaim Policy", S, 0),
            ("Status", S, 0),
            ("Claim", S, 0),
            ("StorageClass", S, 0),
            ("VolumeAttributesClass", S, 0),
            ("Reason", S, 0),
            ("Age", S, 0),
        ],
        _pv_row,
    ),
    "Job": (
        [
            ("Name", S, 0),
            ("Status", S, 0),
            ("Completions", S, 0),
            ("Duration", S, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        _job_row,
    ),
    "CronJob": (
        [
            ("Name", S, 0),
            ("Schedule", S, 0),
            ("Timezone", S, 0),
            ("Suspend", S, 0),
            ("Active", N, 0),
            ("Last Schedule", S, 0),
            ("Age", S, 0),
            ("Containers", S, 1),
            ("Images", S, 1),
            ("Selector", S, 1),
        ],
        _cronjob_row,
    ),
    "HorizontalPodAutoscaler": (
        [
            ("Name", S, 0),
            ("Reference", S, 0),
            ("Targets", S, 0),
            ("MinPods", S, 0),
            ("MaxPods", N, 0),
            ("Replicas", N, 0),
            ("Age", S, 0),
        ],
        _hpa_row,
    ),
    "Endpoints": ([("Name", S, 0), ("Endpoints", S, 0), ("Age", S, 0)], _endpoints_row),
    "ServiceAccount": (
        [("Name", S, 0), ("Secrets", N, 0), ("Age", S, 0)],
        lambda s: [_name(s), len(s.get("secrets") or []), _age(s)],
    ),
    "Role": (
        [("Name", S, 0), ("Created At", "date", 0)],
        lambda r: [_name(r), r["metadata"].get("creationTimestamp")],
    ),
    "ClusterRole": (
        [("Name", S, 0), ("Created At", "date", 0)],
        lambda r: [_name(r), r["metadata"].get("creationTimestamp")],
    ),
    "RoleBinding": (
        [
            ("Name", S, 0),
            ("Role", S, 0),
            ("Age", S, 0),
            ("Users", S, 1),
            ("Groups", S, 1),
            ("ServiceAccounts", S, 1),
        ],
        _binding_row,
    ),
    "ClusterRoleBinding": (
        [
            ("Name", S, 0),
            ("Role", S, 0),
            ("Age", S, 0),
            ("Users", S, 1),
            ("Groups", S, 1),
            ("ServiceAccounts", S, 1),
        ],
        _binding_row,
    ),
}
DEFAULT: tuple[list[Column], Row] = ([("Name", S, 0), ("Age", S, 0)], lambda o: [_name(o), _age(o)])


def column_definitions(rt: ResourceType) -> list[dict[str, Any]]:
    columns, _ = TABLES.get(rt.kind, DEFAULT)
    return [
        {
            "name": n,
            "type": t,
            "format": "name" if n == "Name" else "",
            "description": n,
            "priority": p,
        }
        for n, t, p in columns
    ]


def _partial(rt: ResourceType, obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def row(rt: ResourceType, obj: Obj, include: str = "Metadata") -> dict[str, Any]:
    _, cells = TABLES.get(rt.kind, DEFAULT)
    out: dict[str, Any] = {"cells": cells(obj)}
    if include == "Object":
        out["object"] = obj
    elif include != "None":
        out["object"] = _partial(rt, obj)
    return out


def table(
    rt: ResourceType,
    objs: list[Obj],
    resource_version: str,
    *,
    include: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": column_definitions(rt) if with_columns else [],
        "rows": [row(rt, o, include) for o in objs],
    }
