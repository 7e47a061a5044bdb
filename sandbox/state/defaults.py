"""apiserver-style defaulting and validation, applied on create, replace, patch and their dry
runs alike, so `describe` and `diff` see what a real cluster would have stored."""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any

from sandbox.state.errors import bad_request, invalid
from sandbox.state.resources import ResourceType

Obj = dict[str, Any]
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _container(c: Obj) -> None:
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            for k, v in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                p.setdefault(k, v)
            if "httpGet" in p:
                p["httpGet"].setdefault("path", "/")
                p["httpGet"].setdefault("scheme", "HTTP")


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _container(c)
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            v["configMap"].setdefault("defaultMode", 420)
        if "secret" in v:
            v["secret"].setdefault("defaultMode", 420)


def _template(spec: Obj) -> None:
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec(template.setdefault("spec", {}))


def _percent_strategy(spec: Obj, key: str, kind_key: str) -> None:
    strategy = spec.setdefault(key, {})
    strategy.setdefault(kind_key, "RollingUpdate")
    if strategy[kind_key] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        if key == "strategy":
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        elif key == "updateStrategy" and spec.get("podManagementPolicy"):
            ru.setdefault("partition", 0)
        else:
            ru.setdefault("maxUnavailable", 1)
            ru.setdefault("maxSurge", 0)


def _job_spec(spec: Obj) -> None:
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    # Jobs may not restart Always; upstream rejects it, the sandbox defaults to Never.
    spec.setdefault("template", {}).setdefault("spec", {}).setdefault("restartPolicy", "Never")
    _template(spec)


_QUANTITY_MAPS = frozenset({"requests", "limits", "capacity", "allocatable", "hard", "used"})


def _quantities_as_strings(node: Any, parent: str = "") -> None:
    """apiserver serialises every resource.Quantity as a string (`cpu: 1` comes back "1"),
    and the client's models accept nothing else."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                parent in _QUANTITY_MAPS
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                node[key] = str(value)
            else:
                _quantities_as_strings(value, key)
    elif isinstance(node, list):
        for item in node:
            _quantities_as_strings(item, parent)


def apply_defaults(rt: ResourceType, obj: Obj, cluster_ip: str = "") -> None:
    _quantities_as_strings(obj)
    meta = obj.setdefault("metadata", {})
    spec = obj.get("spec")
    kind = rt.kind
    if kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif kind == "Pod":
        pod_spec(obj.setdefault("spec", {}))
        obj["spec"].setdefault("serviceAccountName", "default")
        obj["spec"].setdefault("enableServiceLinks", True)
        obj["spec"].setdefault("priority", 0)
        obj["spec"].setdefault("preemptionPolicy", "PreemptLowerPriority")
        obj["spec"].setdefault(
            "tolerations",
            [
                {
                    "key": f"node.kubernetes.io/{t}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for t in ("not-ready", "unreachable")
            ],
        )
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", _qos(obj["spec"]))
    elif kind == "Deployment" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _percent_strategy(spec, "strategy", "type")
        _template(spec)
        _default_selector(spec)
    elif kind == "ReplicaSet" and spec is not None:
        spec.setdefault("replicas", 1)
        _template(spec)
        _default_selector(spec)
    elif kind == "StatefulSet" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault(
            "persistentVolumeClaimRetentionPolicy",
            {"whenDeleted": "Retain", "whenScaled": "Retain"},
        )
        _percent_strategy(spec, "updateStrategy", "type")
        _template(spec)
        for pvc in spec.get("volumeClaimTemplates") or []:
            pvc.setdefault("apiVersion", "v1")
            pvc.setdefault("kind", "PersistentVolumeClaim")
            pvc.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
            pvc.setdefault("status", {"phase": "Pending"})
    elif kind == "DaemonSet" and spec is not None:
        spec.setdefault("revisionHistoryLimit", 10)
        _percent_strategy(spec, "updateStrategy", "type")
        _template(spec)
    elif kind == "Job" and spec is not None:
        _job_spec(spec)
    elif kind == "CronJob" and spec is not None:
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        job = spec.setdefault("jobTemplate", {})
        job.setdefault("metadata", {})
        job_spec = job.setdefault("spec", {})
        job_spec.setdefault("template", {}).setdefault("spec", {}).setdefault(
            "restartPolicy", "OnFailure"
        )
        _template(job_spec)
        job_spec.setdefault("backoffLimit", 6)
        job_spec.setdefault("completionMode", "NonIndexed")
        job_spec.setdefault("suspend", False)
    elif kind == "Service" and spec is not None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec["type"] != "ExternalName":
            if "clusterIP" not in spec and cluster_ip:
                spec["clusterIP"] = cluster_ip
            if spec.get("clusterIP"):
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif kind == "PersistentVolumeClaim" and spec is not None:
        spec.setdefault("volumeMode", "Filesystem")
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) if string_data else obj.get("data")
        for k, v in string_data.items():
            assert data is not None
            data[k] = base64.b64encode(str(v).encode()).decode()
        for k, v in (obj.get("data") or {}).items():
            if isinstance(v, str) and ("\n" in v or "\r" in v):
                # Go's base64 decoder skips line breaks (kustomize wraps long values); the
                # apiserver stores the bytes, so reads return the value unwrapped.
                obj["data"][k] = v.replace("\r", "").replace("\n", "")
    elif kind == "StorageClass":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    elif kind == "PriorityClass":
        obj.setdefault("preemptionPolicy", "PreemptLowerPriority")
    elif kind == "NetworkPolicy" and spec is not None:
        spec.setdefault("policyTypes", ["Ingress"] + (["Egress"] if "egress" in spec else []))
    elif kind == "HorizontalPodAutoscaler" and spec is not None:
        spec.setdefault("minReplicas", 1)


def _default_selector(spec: Obj) -> None:
    labels = spec["template"]["metadata"].get("labels") or {}
    spec.setdefault("selector", {"matchLabels": dict(labels)})


def _qos(spec: Obj) -> str:
    containers = spec.get("containers") or []
    reqs = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in reqs):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res)
        and (r.get("requests") or {}).get(res, (r.get("limits") or {}).get(res))
        == (r.get("limits") or {}).get(res)
        for r in reqs
        for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def validate(rt: ResourceType, obj: Obj) -> None:
    """The subset of apiserver validation a user is likely to trip over: 422 Invalid."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _NAME_RE.match(name):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character",
            )
        )
    spec = obj.get("spec") or {}
    if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:  # a non-int is a 400 from schema
            causes.append(
                ("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
            )
        selector_labels = (spec.get("selector") or {}).get("matchLabels") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if any(template_labels.get(k) != v for k, v in selector_labels.items()):
            causes.append(
                (
                    "spec.template.metadata.labels",
                    "Invalid value: "
                    f"{template_labels}: `selector` does not match template `labels`",
                )
            )
    pod = spec if rt.kind == "Pod" else (spec.get("template") or {}).get("spec")
    if rt.kind in ("Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
        prefix = "spec" if rt.kind == "Pod" else "spec.template.spec"
        containers = (pod or {}).get("containers") or []
        if not containers:
            causes.append((f"{prefix}.containers", "Required value"))
        for i, c in enumerate(containers):
            if not c.get("name"):
                causes.append((f"{prefix}.containers[{i}].name", "Required value"))
            if not c.get("image"):
                causes.append((f"{prefix}.containers[{i}].image", "Required value"))
    if rt.kind == "Secret":
        for key, value in (obj.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except ValueError as exc:
                # apiserver fails to decode []byte fields: a 400, not a 422.
                raise bad_request(
                    f'Secret in version "v1" cannot be handled as a Secret: '
                    f"illegal base64 data in data.{key}"
                ) from exc
    if rt.kind == "Service":
        ip = spec.get("clusterIP")
        if ip and ip != "None":
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                causes.append(("spec.clusterIP", f'Invalid value: "{ip}": must be a valid IP'))
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)


# (kind, dotted path) pairs apiserver refuses to change once set.
_IMMUTABLE: tuple[tuple[str, str], ...] = (
    ("Deployment", "spec.selector"),
    ("ReplicaSet", "spec.selector"),
    ("DaemonSet", "spec.selector"),
    ("StatefulSet", "spec.selector"),
    ("StatefulSet", "spec.serviceName"),
    ("StatefulSet", "spec.volumeClaimTemplates"),
    ("StatefulSet", "spec.podManagementPolicy"),
    ("Job", "spec.selector"),
    ("Job", "spec.template"),
    ("Job", "spec.completions"),
    ("Service", "spec.clusterIP"),
    ("PersistentVolumeClaim", "spec.accessModes"),
    ("PersistentVolumeClaim", "spec.storageClassName"),
    ("PersistentVolumeClaim", "spec.volumeName"),
    ("RoleBinding", "roleRef"),
    ("ClusterRoleBinding", "roleRef"),
)
# What may change in a running pod's spec (everything else is fixed at creation).
_POD_MUTABLE = ("image", "activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _at(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _pod_spec_masked(spec: Obj) -> Obj:
    masked = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for key in ("containers", "initContainers"):
        masked[key] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(key) or []]
    return masked


def carry_allocated(rt: ResourceType, old: Obj, new: Obj) -> None:
    """Values the server allocated survive an update that leaves them out (`kubectl replace`
    of a manifest without clusterIP), as upstream's patchAllocatedValues does."""
    if rt.kind != "Service":
        return
    before, after = old.get("spec") or {}, new.setdefault("spec", {})
    for field in ("clusterIP", "clusterIPs"):
        if not after.get(field) and before.get(field):
            after[field] = before[field]
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in before.get("ports") or []}
    for port in after.get("ports") or []:
        prev = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
        if prev and prev.get("nodePort") and not port.get("nodePort"):
            port["nodePort"] = prev["nodePort"]


def validate_update(rt: ResourceType, old: Obj, new: Obj) -> None:
    """Update rules on top of `validate`: immutable fields and what a pod may change."""
    name = old["metadata"]["name"]
    causes: list[tuple[str, str]] = []
    for kind, path in _IMMUTABLE:
        if kind == rt.kind and _at(old, path) is not None and _at(old, path) != _at(new, path):
            causes.append((path, "Invalid value: field is immutable"))
    if rt.kind in ("ConfigMap", "Secret") and old.get("immutable"):
        for field in ("data", "binaryData", "immutable"):
            if old.get(field) != new.get(field):
                causes.append((field, "Forbidden: field is immutable when `immutable` is set"))
    if rt.kind == "Pod" and _pod_spec_masked(old.get("spec") or {}) != _pod_spec_masked(
        new.get("spec") or {}
    ):
        causes.append(
            (
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        )
    if rt.kind == "PersistentVolumeClaim":
        before = _at(old, "spec.resources.requests.storage")
        after = _at(new, "spec.resources.requests.storage")
        if before != after and _bytes(after) < _bytes(before):
            causes.append(
                (
                    "spec.resources.requests.storage",
                    "Forbidden: field can not be less than previous value",
                )
            )
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)


_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _bytes(quantity: Any) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity or "0"))
    if not match or match.group(2) not in _UNITS:
        return 0.0
    return float(match.group(1)) * _UNITS[match.group(2)]
