"""Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for on get/list/watch. Cells
follow upstream's printers (pkg/printers/internalversion) for the columns people read."""

from __future__ import annotations

from typing import Any

from sandbox.apiserver import rows
from sandbox.apiserver.rows import Column, Obj, Row
from sandbox.state.resources import ResourceType
from sandbox.state.selectors import selector_string

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
        rows.pod_row,
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
        rows.deploy_row,
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
        rows.rs_row,
    ),
    "StatefulSet": (
        [("Name", S, 0), ("Ready", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1)],
        rows.sts_row,
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
        rows.ds_row,
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
            rows.name(p),
            str((p.get("spec") or {}).get("minAvailable", "N/A")),
            str((p.get("spec") or {}).get("maxUnavailable", "N/A")),
            (p.get("status") or {}).get("disruptionsAllowed", 0),
            rows.age(p),
        ],
    ),
    "NetworkPolicy": (
        [("Name", S, 0), ("Pod-Selector", S, 0), ("Age", S, 0)],
        lambda n: [
            rows.name(n),
            selector_string((n.get("spec") or {}).get("podSelector")) or "<none>",
            rows.age(n),
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
        rows.ingress_row,
    ),
    "IngressClass": (
        [("Name", S, 0), ("Controller", S, 0), ("Parameters", S, 0), ("Age", S, 0)],
        lambda c: [
            rows.name(c),
            (c.get("spec") or {}).get("controller", ""),
            "<none>",
            rows.age(c),
        ],
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
            rows.name(c)
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
            rows.age(c),
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
            rows.name(c),
            c.get("value", 0),
            str(c.get("globalDefault", False)).lower(),
            rows.age(c),
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
            rows.name(e),
            e.get("addressType", ""),
            ",".join(str(p.get("port")) for p in e.get("ports") or []) or "<unset>",
            ",".join(a for x in e.get("endpoints") or [] for a in x.get("addresses", []))
            or "<unset>",
            rows.age(e),
        ],
    ),
    "Lease": (
        [("Name", S, 0), ("Holder", S, 0), ("Age", S, 0)],
        lambda x: [rows.name(x), (x.get("spec") or {}).get("holderIdentity", ""), rows.age(x)],
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
        rows.svc_row,
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
        rows.node_row,
    ),
    "Namespace": (
        [("Name", S, 0), ("Status", S, 0), ("Age", S, 0)],
        lambda n: [rows.name(n), (n.get("status") or {}).get("phase", ""), rows.age(n)],
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
        rows.event_row,
    ),
    "ConfigMap": (
        [("Name", S, 0), ("Data", N, 0), ("Age", S, 0)],
        lambda c: [
            rows.name(c),
            len(c.get("data") or {}) + len(c.get("binaryData") or {}),
            rows.age(c),
        ],
    ),
    "Secret": (
        [("Name", S, 0), ("Type", S, 0), ("Data", N, 0), ("Age", S, 0)],
        lambda s: [rows.name(s), s.get("type", "Opaque"), len(s.get("data") or {}), rows.age(s)],
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
        rows.pvc_row,
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
        rows.pv_row,
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
        rows.job_row,
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
        rows.cronjob_row,
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
        rows.hpa_row,
    ),
    "Endpoints": ([("Name", S, 0), ("Endpoints", S, 0), ("Age", S, 0)], rows.endpoints_row),
    "ServiceAccount": (
        [("Name", S, 0), ("Secrets", N, 0), ("Age", S, 0)],
        lambda s: [rows.name(s), len(s.get("secrets") or []), rows.age(s)],
    ),
    "Role": (
        [("Name", S, 0), ("Created At", "date", 0)],
        lambda r: [rows.name(r), r["metadata"].get("creationTimestamp")],
    ),
    "ClusterRole": (
        [("Name", S, 0), ("Created At", "date", 0)],
        lambda r: [rows.name(r), r["metadata"].get("creationTimestamp")],
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
        rows.binding_row,
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
        rows.binding_row,
    ),
}
DEFAULT: tuple[list[Column], Row] = (
    [("Name", S, 0), ("Age", S, 0)],
    lambda o: [rows.name(o), rows.age(o)],
)


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
