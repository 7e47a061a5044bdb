"""The adapter to Kubernetes, through the official `kubernetes` client.

It knows nothing of NATS or events: it sends REST requests with the client's ApiClient (its
kubeconfig loading, auth and TLS), returns plain dicts, and translates every failure into
KubeError with a clear message. The client is synchronous, so the service calls it in a worker
thread. The tools themselves live in kube_read.py and kube_write.py; diffs in diff.py.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from schemas.approval import BlastRadius, FieldChange
from services.executor.redact import redact_text

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Gone", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


class KubeError(Exception):
    """A Kubernetes failure in words a human acts on. `uncertain`: the request was sent and no
    answer came, so a write may or may not have happened."""

    def __init__(self, reason: str, message: str, status: int = 0, *,
                 uncertain: bool = False) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status
        self.uncertain = uncertain


class ContextRefused(KubeError):
    pass


def _status_error(status: int, body: bytes | str | None) -> KubeError:
    reason = _REASONS.get(status, "Error")
    message = ""
    causes: list[str] = []
    try:
        doc = json.loads(body or "{}")
        if isinstance(doc, dict):
            message = str(doc.get("message") or "")
            reason = str(doc.get("reason") or reason)
            for c in (doc.get("details") or {}).get("causes") or []:
                causes.append(": ".join(str(c[k]) for k in ("field", "message") if c.get(k)))
    except (TypeError, ValueError):
        message = (body.decode(errors="replace") if isinstance(body, bytes) else body or "")[:500]
    if causes and not all(c in message for c in causes):
        message = f"{message} ({'; '.join(causes)})" if message else "; ".join(causes)
    return KubeError(reason, redact_text(message or reason), status)


def translate(exc: ApiException) -> KubeError:
    return _status_error(int(exc.status or 0), exc.body)


@dataclass(frozen=True)
class KindInfo:
    kind: str  # the API's Kind, e.g. Deployment
    group: str
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _k(kind: str, group: str, version: str, plural: str, namespaced: bool = True) -> KindInfo:
    return KindInfo(kind, group, version, plural, namespaced)


# Catalogue kind -> where the API serves it. Keys match schemas.catalogue.Kind.
KINDS: dict[str, KindInfo] = {
    "pod": _k("Pod", "", "v1", "pods"),
    "deployment": _k("Deployment", "apps", "v1", "deployments"),
    "replicaset": _k("ReplicaSet", "apps", "v1", "replicasets"),
    "statefulset": _k("StatefulSet", "apps", "v1", "statefulsets"),
    "daemonset": _k("DaemonSet", "apps", "v1", "daemonsets"),
    "job": _k("Job", "batch", "v1", "jobs"),
    "cronjob": _k("CronJob", "batch", "v1", "cronjobs"),
    "service": _k("Service", "", "v1", "services"),
    "endpoints": _k("Endpoints", "", "v1", "endpoints"),
    "configmap": _k("ConfigMap", "", "v1", "configmaps"),
    "secret": _k("Secret", "", "v1", "secrets"),
    "serviceaccount": _k("ServiceAccount", "", "v1", "serviceaccounts"),
    "persistentvolumeclaim": _k("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    "persistentvolume": _k("PersistentVolume", "", "v1", "persistentvolumes", False),
    "horizontalpodautoscaler": _k("HorizontalPodAutoscaler", "autoscaling", "v2",
                                  "horizontalpodautoscalers"),
    "poddisruptionbudget": _k("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
    "namespace": _k("Namespace", "", "v1", "namespaces", False),
    "node": _k("Node", "", "v1", "nodes", False),
    "event": _k("Event", "", "v1", "events"),
    "role": _k("Role", "rbac.authorization.k8s.io", "v1", "roles"),
    "rolebinding": _k("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
    "clusterrole": _k("ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", False),
    "clusterrolebinding": _k("ClusterRoleBinding", "rbac.authorization.k8s.io", "v1",
                             "clusterrolebindings", False),
}
_BY_API_KIND = {(i.group, i.kind): name for name, i in KINDS.items()}


def kind_of_manifest(manifest: dict[str, Any]) -> str:
    """The catalogue kind of a manifest, or KubeError if we don't serve it."""
    api_version = str(manifest.get("apiVersion", ""))
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    name = _BY_API_KIND.get((group, str(manifest.get("kind", ""))))
    if name is None or KINDS[name].api_version != api_version:
        raise KubeError("NotSupported", f"{api_version} {manifest.get('kind')} is not a kind "
                        "the executor manages")
    return name


def path(kind: str, namespace: str = "", name: str = "", sub: str = "",
         all_namespaces: bool = False) -> str:
    info = KINDS[kind]
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    if info.namespaced and not all_namespaces:
        base += f"/namespaces/{namespace}"
    out = f"{base}/{info.plural}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


@dataclass
class Preview:
    diff: tuple[FieldChange, ...]
    radius: BlastRadius
    resource_version: str
    # The objects the write acts on (kube_write.Plan.effect), bound into the approval.
    effect: tuple[str, ...] = ()


@dataclass
class Outcome:
    text: str
    data: Any = None
    before: Any = None
    after: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Kube:
    """One ApiClient per allowed kubeconfig context; every request has a timeout."""

    def __init__(self, kubeconfig: Path | None, allowed_contexts: tuple[str, ...] = (),
                 timeout_s: float = 30.0, cluster: str = "") -> None:
        self.kubeconfig = kubeconfig
        self.allowed = allowed_contexts
        self.timeout_s = timeout_s
        # Per-cluster mode (issue 21): the one cluster this executor serves. Its name is a
        # label: the kube context of the same name when the allow-list holds it, else the one
        # allowed context, else the kubeconfig's current context (or in-cluster).
        self.cluster = cluster
        self._clients: dict[str, client.ApiClient] = {}
        self._lock = threading.Lock()

    def local(self, context: str) -> str:
        """The kube context a call naming `context` runs on. In per-cluster mode only this
        executor's own cluster (or none named) has one: anything else is refused."""
        if not self.cluster:
            return context
        if context not in ("", self.cluster):
            raise ContextRefused("Forbidden", f"cluster {context!r} is not this executor's "
                                 f"cluster {self.cluster!r}")
        if self.cluster in self.allowed:
            return self.cluster
        return self.allowed[0] if len(self.allowed) == 1 else ""

    def in_cluster(self) -> bool:
        """No kubeconfig anywhere, and the pod's service account is mounted."""
        return (self.kubeconfig is None and not os.environ.get("KUBECONFIG")
                and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
                and Path(config.incluster_config.SERVICE_TOKEN_FILENAME).exists())

    def check_context(self, context: str) -> None:
        """Refuses a context outside the allow-list (or, without one, other than current)."""
        context = self.local(context)
        if context and self.allowed and context not in self.allowed:
            raise ContextRefused("Forbidden", f"cluster context {context!r} is not allowed")
        if context and not self.allowed:
            if self.in_cluster():
                raise ContextRefused("Forbidden", f"cluster context {context!r}: in-cluster, "
                                     "there is only the cluster the executor runs in")
            try:
                _, current = config.list_kube_config_contexts(
                    config_file=str(self.kubeconfig) if self.kubeconfig else None
                )
            except config.ConfigException as exc:
                raise ContextRefused("Forbidden", f"no kubeconfig: {exc}") from exc
            if context != current["name"]:
                raise ContextRefused("Forbidden", f"cluster context {context!r} is not allowed")

    def context_name(self, context: str) -> str:
        """The cluster a call with this context runs on, named for a person reading the card:
        the context it names, else the kubeconfig's current context, else in-cluster. In
        per-cluster mode: the cluster's name."""
        if self.cluster:
            return self.cluster
        if context:
            return context
        if self.in_cluster():
            return "in-cluster (the executor's own cluster)"
        try:
            _, current = config.list_kube_config_contexts(
                config_file=str(self.kubeconfig) if self.kubeconfig else None)
        except config.ConfigException:
            return ""
        return str(current.get("name", ""))

    def api(self, context: str) -> client.ApiClient:
        self.check_context(context)
        context = self.local(context)
        with self._lock:
            if not context and context not in self._clients and self.in_cluster():
                # In a pod with no kubeconfig: its ServiceAccount (token refreshed as kubelet
                # rotates it), as client-go does. deploy/k8s runs reads and writes this way
                # under two different ServiceAccounts.
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                self._clients[context] = client.ApiClient(cfg)
            if context not in self._clients:
                try:
                    self._clients[context] = config.new_client_from_config(
                        config_file=str(self.kubeconfig) if self.kubeconfig else None,
                        context=context or None,
                        persist_config=False,
                    )
                except config.ConfigException as exc:
                    raise ContextRefused("Forbidden",
                                         f"cluster context {context!r}: {exc}") from exc
            return self._clients[context]

    def host(self, context: str) -> str:
        return str(self.api(context).configuration.host)

    def request(self, ctx: str, method: str, resource_path: str, *,
                query: dict[str, Any] | None = None, body: Any = None,
                content_type: str | None = None, raw: bool = False,
                timeout: float | None = None) -> Any:
        """One REST call. Returns parsed JSON (or text with raw=True); raises KubeError."""
        api = self.api(ctx)
        headers = {"Accept": "text/plain, */*" if raw else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, v) for k, v in (query or {}).items() if v is not None and v != ""]
        m, url, hdrs, data, _ = api.param_serialize(
            method=method, resource_path=resource_path, query_params=params,
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        try:
            resp = api.call_api(m, url, hdrs, data, _request_timeout=timeout or self.timeout_s)
            resp.read()
        except ApiException as exc:
            raise translate(exc) from exc
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            # Sent, no answer: the cluster may have acted.
            raise KubeError("Timeout", f"{method} {resource_path}: no answer within "
                            f"{timeout or self.timeout_s:g}s", 504, uncertain=True) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError("Unavailable", f"cannot reach the API server: {type(exc).__name__}",
                            503) from exc
        if not 200 <= resp.status < 300:
            raise _status_error(resp.status, resp.data)
        if raw:
            return (resp.data or b"").decode(errors="replace")
        return json.loads(resp.data or b"null")

    # -- conveniences --------------------------------------------------------------------------

    def read(self, ctx: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.request(ctx, "GET", path(kind, namespace, name))
        return obj

    def read_or_none(self, ctx: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.read(ctx, kind, namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, ctx: str, kind: str, namespace: str = "", *, all_namespaces: bool = False,
             label_selector: str = "", field_selector: str = "") -> list[dict[str, Any]]:
        body = self.request(ctx, "GET", path(kind, namespace, all_namespaces=all_namespaces),
                            query={"labelSelector": label_selector,
                                   "fieldSelector": field_selector})
        items: list[dict[str, Any]] = body.get("items") or []
        return items
