"""The adapter to Kubernetes, through the official `kubernetes` client.

It knows nothing of NATS or events: it turns catalogue args into API calls and API answers into
plain dicts, and translates ApiException into KubeError with a clear message. The client is
synchronous, so the service calls it in a worker thread.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from schemas.approval import BlastRadius, FieldChange
from schemas.catalogue import GetArgs, ListArgs, ScaleArgs
from services.executor.redact import redact


class KubeError(Exception):
    def __init__(self, reason: str, message: str, status: int = 0) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status


class ContextRefused(KubeError):
    pass


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType", 422: "Invalid",
            429: "TooManyRequests"}


def translate(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    message = exc.reason or ""
    reason = _REASONS.get(status, "Error")
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message") or message
        reason = body.get("reason") or reason
    except (TypeError, ValueError):
        pass
    return KubeError(reason, message, status)


@dataclass
class Preview:
    diff: tuple[FieldChange, ...]
    radius: BlastRadius
    resource_version: str


@dataclass
class Outcome:
    text: str
    data: Any = None
    before: Any = None
    after: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _json(resp: Any) -> Any:
    return json.loads(resp.data or b"null")


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


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _pod_row(p: dict[str, Any]) -> list[str]:
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


def _deploy_row(d: dict[str, Any]) -> list[str]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            str(st.get("updatedReplicas", 0)), str(st.get("availableReplicas", 0)),
            _age(d["metadata"].get("creationTimestamp"))]


def _generic_row(o: dict[str, Any]) -> list[str]:
    return [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp"))]


_ROWS = {
    "pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], _pod_row),
    "deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deploy_row),
}


class Kube:
    """One ApiClient per allowed kubeconfig context."""

    def __init__(self, kubeconfig: Path | None, allowed_contexts: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.allowed = allowed_contexts
        self._clients: dict[str, client.ApiClient] = {}
        self._lock = threading.Lock()

    def api(self, context: str) -> client.ApiClient:
        if context and self.allowed and context not in self.allowed:
            raise ContextRefused("Forbidden", f"cluster context {context!r} is not allowed")
        if context and not self.allowed:
            _, current = config.list_kube_config_contexts(
                config_file=str(self.kubeconfig) if self.kubeconfig else None
            )
            if context != current["name"]:
                raise ContextRefused("Forbidden", f"cluster context {context!r} is not allowed")
        with self._lock:
            if context not in self._clients:
                self._clients[context] = config.new_client_from_config(
                    config_file=str(self.kubeconfig) if self.kubeconfig else None,
                    context=context or None,
                    persist_config=False,
                )
            return self._clients[context]

    # -- resource plumbing -------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return _json(fn(*args, _preload_content=False, **kwargs))
        except ApiException as exc:
            raise translate(exc) from exc

    def _apis(self, ctx: str) -> tuple[client.CoreV1Api, client.AppsV1Api]:
        api = self.api(ctx)
        return client.CoreV1Api(api), client.AppsV1Api(api)

    def _reader(self, ctx: str, kind: str) -> tuple[Any, Any, Any, bool]:
        core, apps = self._apis(ctx)
        table = {
            "pod": (core.read_namespaced_pod, core.list_namespaced_pod,
                    core.list_pod_for_all_namespaces, True),
            "service": (core.read_namespaced_service, core.list_namespaced_service,
                        core.list_service_for_all_namespaces, True),
            "event": (core.read_namespaced_event, core.list_namespaced_event,
                      core.list_event_for_all_namespaces, True),
            "namespace": (core.read_namespace, core.list_namespace, core.list_namespace, False),
            "node": (core.read_node, core.list_node, core.list_node, False),
            "deployment": (apps.read_namespaced_deployment, apps.list_namespaced_deployment,
                           apps.list_deployment_for_all_namespaces, True),
            "replicaset": (apps.read_namespaced_replica_set, apps.list_namespaced_replica_set,
                           apps.list_replica_set_for_all_namespaces, True),
            "statefulset": (apps.read_namespaced_stateful_set, apps.list_namespaced_stateful_set,
                            apps.list_stateful_set_for_all_namespaces, True),
        }
        return table[kind]

    # -- reads -------------------------------------------------------------------------------

    def get(self, a: GetArgs) -> Outcome:
        read, _, _, namespaced = self._reader(a.cluster, a.kind)
        obj = self._call(read, a.name, a.namespace) if namespaced else self._call(read, a.name)
        obj = redact(obj)
        return Outcome(text=json.dumps(obj, indent=2)[:20_000], data=obj)

    def list(self, a: ListArgs) -> Outcome:
        _, list_ns, list_all, namespaced = self._reader(a.cluster, a.kind)
        kwargs: dict[str, Any] = {}
        if a.label_selector:
            kwargs["label_selector"] = a.label_selector
        if not namespaced or a.all_namespaces:
            body = self._call(list_all, **kwargs)
        else:
            body = self._call(list_ns, a.namespace, **kwargs)
        items = [redact(i) for i in body.get("items") or []]
        headers, row = _ROWS.get(a.kind, (["NAME", "AGE"], _generic_row))
        if a.all_namespaces and namespaced:
            headers = ["NAMESPACE", *headers]
            rows = [[i["metadata"].get("namespace", ""), *row(i)] for i in items]
        else:
            rows = [row(i) for i in items]
        if not rows:
            where = "any namespace" if a.all_namespaces else f"{a.namespace} namespace"
            text = f"No resources found in {where}."
        else:
            text = _table(headers, rows)
        summary = [{"name": i["metadata"]["name"],
                    "namespace": i["metadata"].get("namespace", ""),
                    **dict(zip([h.lower() for h in headers[-len(r):]], r, strict=True))}
                   for i, r in zip(items, (row(i) for i in items), strict=True)]
        return Outcome(text=text, data={"kind": a.kind, "items": summary})

    # -- scale -------------------------------------------------------------------------------

    def _scale_fns(self, a: ScaleArgs) -> tuple[Any, Any, Any]:
        _, apps = self._apis(a.cluster)
        return {
            "deployment": (apps.read_namespaced_deployment, apps.read_namespaced_deployment_scale,
                           apps.patch_namespaced_deployment_scale),
            "statefulset": (apps.read_namespaced_stateful_set,
                            apps.read_namespaced_stateful_set_scale,
                            apps.patch_namespaced_stateful_set_scale),
            "replicaset": (apps.read_namespaced_replica_set,
                           apps.read_namespaced_replica_set_scale,
                           apps.patch_namespaced_replica_set_scale),
        }[a.kind]

    def _pods_of(self, ctx: str, namespace: str, selector: dict[str, str]) -> list[str]:
        core, _ = self._apis(ctx)
        sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        body = self._call(core.list_namespaced_pod, namespace, label_selector=sel)
        return sorted(p["metadata"]["name"] for p in body.get("items") or [])

    def preview_scale(self, a: ScaleArgs) -> Preview:
        read_obj, _, patch_scale = self._scale_fns(a)
        obj = self._call(read_obj, a.name, a.namespace)
        before = int((obj.get("spec") or {}).get("replicas", 1))
        after_scale = self._call(patch_scale, a.name, a.namespace,
                                 {"spec": {"replicas": a.replicas}}, dry_run="All")
        after = int((after_scale.get("spec") or {}).get("replicas", a.replicas))
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        pods = self._pods_of(a.cluster, a.namespace, selector) if selector else []
        if after < before:
            summary = f"{before - after} of {len(pods)} pods will be removed"
        elif after > before:
            summary = f"{after - before} pods will be added"
        else:
            summary = "no change"
        diff = (FieldChange(path="spec.replicas", before=before, after=after),)
        radius = BlastRadius(replicas_before=before, replicas_after=after,
                             pods_affected=tuple(pods) if after < before else (),
                             summary=summary)
        return Preview(diff, radius, str(obj["metadata"].get("resourceVersion", "")))

    def scale(self, a: ScaleArgs, resource_version: str = "") -> Outcome:
        read_obj, read_scale, patch_scale = self._scale_fns(a)
        before = self._call(read_scale, a.name, a.namespace)
        body: dict[str, Any] = {"spec": {"replicas": a.replicas}}
        if resource_version:
            # Approved against this state: if the object changed since, fail with a conflict.
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            after = self._call(patch_scale, a.name, a.namespace, body)
        except KubeError as exc:
            if exc.status == 409:
                raise KubeError(
                    "Conflict",
                    f"{a.kind}/{a.name} changed since it was previewed (resourceVersion "
                    f"{resource_version}); nothing was changed — propose the call again",
                    409,
                ) from exc
            raise
        b = (before.get("spec") or {}).get("replicas")
        n = (after.get("spec") or {}).get("replicas")
        return Outcome(
            text=f"{a.kind}.apps/{a.name} scaled from {b} to {n} replicas in {a.namespace}",
            data={"replicas_before": b, "replicas_after": n},
            before={"spec": {"replicas": b}}, after={"spec": {"replicas": n}},
        )
