"""HTTP handlers for the resource API: dispatch, the verbs and the status and scale subresources
(logs, metrics and watch streams are reads.py's; how an answer is written, responses.py's).
Objects flow as plain dicts; the store owns versions, `defaults` owns defaulting/validation."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import yaml
from aiohttp import web

from sandbox.apiserver import policy, tables
from sandbox.apiserver.paths import Target, parse_path
from sandbox.apiserver.reads import LogSource, MetricsSource, Reads
from sandbox.apiserver.responses import error_response, json_response, wants_table
from sandbox.state import defaults, gc, patch, schema
from sandbox.state.errors import (
    ApiError,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
    unsupported_media,
)
from sandbox.state.resources import VIRTUAL_GROUPS, ResourceType, by_plural
from sandbox.state.selectors import selector_string
from sandbox.state.store import Obj, Store

log = logging.getLogger(__name__)

NAMESPACES = by_plural("", "namespaces")
SCALABLE = {"Deployment", "ReplicaSet", "StatefulSet"}
# Kinds whose DELETE answers with the object (graceful deletion or finalizers upstream); the
# client's models expect exactly that. Everything else answers with a Status.
DELETE_RETURNS_OBJECT = {
    "Pod",
    "Service",
    "ServiceAccount",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "Namespace",
}


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


def _random_suffix(n: int = 5) -> str:
    # The alphabet apiserver uses for generateName (no vowels, no confusable digits).
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


class ResourceApi(Reads):
    def __init__(self, store: Store, logs: LogSource, metrics: MetricsSource) -> None:
        self.store = store
        self.logs = logs
        self.metrics = metrics
        self._next_ip = 10
        self._stopping = asyncio.Event()
        self.open_watches = 0  # watch streams being served; tests wait for a client to attach

    def stop_watches(self) -> None:
        self._stopping.set()
        self.store.close_watchers()

    # ---- entry ---------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = parse_path(request.path)
        if target is None:
            return error_response(
                ApiError(404, "NotFound", "the server could not find the requested resource")
            )
        try:
            return await self._dispatch(request, target)
        except ApiError as err:
            return error_response(err)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # Malformed input that slipped past validation: a 400 beats a stack-trace 500.
            log.warning("bad request %s %s: %r", request.method, request.path, exc)
            return error_response(bad_request(f"the request could not be processed: {exc!r}"))

    async def _dispatch(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.rt.group in VIRTUAL_GROUPS:
            if method != "GET":
                raise method_not_allowed(method.lower(), t.rt.plural)
            return self._metrics(request, t)
        if t.sub:
            return await self._subresource(request, t)
        if not t.name:
            if method == "GET":
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                return await self._create(request, t)
            if method == "DELETE":
                return await self._delete_collection(request, t)
            raise method_not_allowed(method.lower(), t.rt.plural)
        handlers: dict[str, Callable[[web.Request, Target], Awaitable[web.StreamResponse]]] = {
            "GET": self._get,
            "PUT": self._replace,
            "PATCH": self._patch,
            "DELETE": self._delete,
        }
        if method not in handlers:
            raise method_not_allowed(method.lower(), t.rt.plural)
        return await handlers[method](request, t)

    # ---- helpers -------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty")
        ct = request.headers.get("Content-Type", "")
        if "protobuf" in ct or "cbor" in ct:
            # kubectl's typed generators (create job/deployment, run, expose) send protobuf,
            # which needs the Go schemas to decode; manifests (-f) and patches are JSON.
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the sandbox accepts JSON and YAML bodies only, not {ct}; write a "
                "manifest and use `kubectl create -f` or `kubectl apply -f`",
            )
        try:
            if "yaml" in ct:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body could not be decoded: {exc}") from exc

    def _require_namespace(self, namespace: str) -> None:
        if namespace and self.store.get(NAMESPACES, "", namespace) is None:
            raise not_found("namespaces", "", namespace)

    def allocate_ip(self) -> str:
        self._next_ip += 1
        return f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"

    def _prepare(self, rt: ResourceType, obj: Obj) -> Obj:
        defaults.apply_defaults(rt, obj, self.allocate_ip() if rt.kind == "Service" else "")
        defaults.validate(rt, obj)
        return obj

    def _finish_write(self, rt: ResourceType, current: Obj, new: Obj, *, sub: str = "") -> Obj:
        """Carry server-owned fields over an update and bump generation on spec changes."""
        meta = new.setdefault("metadata", {})
        if meta.get("name", current["metadata"]["name"]) != current["metadata"]["name"]:
            raise bad_request("the name of the object does not match the name on the URL")
        meta["name"] = current["metadata"]["name"]
        if rt.namespaced:
            ns = current["metadata"]["namespace"]
            if meta.get("namespace", ns) != ns:
                raise bad_request(
                    "the namespace of the object does not match the namespace on the URL"
                )
            meta["namespace"] = ns
        has_status = any(s.name == "status" for s in rt.subresources)
        if sub == "status":
            kept = copy.deepcopy(current)
            kept["status"] = new.get("status", {})
            kept["metadata"]["resourceVersion"] = meta.get("resourceVersion")
            return kept
        if has_status and "status" in current:
            new["status"] = current["status"]
        defaults.carry_allocated(rt, current, new)
        defaults.apply_defaults(rt, new)
        defaults.validate(rt, new)
        defaults.validate_update(rt, current, new)
        if rt.has_generation:
            meta["generation"] = current["metadata"].get("generation", 1) + (
                1 if new.get("spec") != current.get("spec") else 0
            )
        return new

    def _commit(self, request: web.Request, rt: ResourceType, current: Obj, new: Obj) -> Obj:
        if _dry_run(request):
            self.store.check_precondition(rt, current, new)
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            for f in ("uid", "creationTimestamp"):
                new["metadata"][f] = current["metadata"][f]
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            return new
        return self.store.update(rt, new)

    # ---- verbs ---------------------------------------------------------------------------
    def _list(self, request: web.Request, t: Target) -> web.Response:
        items = self._select(request, t)
        rv = self.store.resource_version
        cont = request.query.get("continue", "")
        start = int(base64.b64decode(cont).decode()) if cont else 0
        limit = int(request.query.get("limit", "0") or 0)
        page = items[start : start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            meta["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        if wants_table(request):
            body = tables.table(
                t.rt, page, rv, include=request.query.get("includeObject", "Metadata")
            )
            body["metadata"] = meta
            return json_response(body)
        return json_response(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": meta,
                "items": page,
            }
        )

    async def _get(self, request: web.Request, t: Target) -> web.Response:
        obj = self.store.must_get(t.rt, t.namespace, t.name)
        if wants_table(request):
            return json_response(
                tables.table(
                    t.rt,
                    [obj],
                    self.store.resource_version,
                    include=request.query.get("includeObject", "Metadata"),
                )
            )
        return json_response(obj)

    async def _create(self, request: web.Request, t: Target) -> web.Response:
        obj = await self._body(request)
        if not isinstance(obj, dict):
            raise bad_request("the body must be an object")
        self._check_kind(t.rt, obj)
        meta = obj.setdefault("metadata", {})
        if t.rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = t.namespace
            self._require_namespace(t.namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _random_suffix()
        obj = self._prepare(t.rt, obj)
        warnings = self._schema(request, t.rt, obj)
        if _dry_run(request):
            return json_response(self.store.prepare_new(t.rt, obj), 201, warnings=warnings)
        return json_response(self.store.create(t.rt, obj), 201, warnings=warnings)

    @staticmethod
    def _schema(request: web.Request, rt: ResourceType, obj: Obj) -> list[str]:
        return schema.check(rt, obj, request.query.get("fieldValidation", "Warn"))

    def _check_kind(self, rt: ResourceType, obj: Obj) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rt.api_version})"
                if api_version != rt.api_version
                else f"the kind in the data ({kind}) does not match {rt.kind}"
            )

    async def _replace(self, request: web.Request, t: Target) -> web.Response:
        new = await self._body(request)
        if not isinstance(new, dict):
            raise bad_request("the body must be an object")
        self._check_kind(t.rt, new)
        current = self.store.must_get(t.rt, t.namespace, t.name)
        new = self._finish_write(t.rt, current, new)
        warnings = self._schema(request, t.rt, new)
        return json_response(self._commit(request, t.rt, current, new), warnings=warnings)

    def _apply_patch(self, request: web.Request, doc: Obj, body: Any) -> Obj:
        ct = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ct == "application/merge-patch+json":
            result = patch.merge_patch(doc, body)
        elif ct == "application/json-patch+json":
            result = patch.json_patch(doc, body)
        elif ct == "application/strategic-merge-patch+json":
            result = patch.strategic_merge(doc, body)
        else:
            raise unsupported_media(ct or "<none>")
        if not isinstance(result, dict):
            raise bad_request("the patch did not produce an object")
        return result

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        body = await self._body(request)
        current = self.store.must_get(t.rt, t.namespace, t.name)
        new = self._apply_patch(request, current, body)
        new = self._finish_write(t.rt, current, new)
        warnings = self._schema(request, t.rt, new)
        return json_response(self._commit(request, t.rt, current, new), warnings=warnings)

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        options: Mapping[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            options = json.loads(raw) if raw.strip() else {}
        current = self.store.must_get(t.rt, t.namespace, t.name)
        pre = options.get("preconditions") or {}
        meta = current["metadata"]
        if (pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]) or (
            pre.get("uid") and pre["uid"] != meta["uid"]
        ):
            raise conflict(t.rt.plural, t.rt.group, t.name)
        if _dry_run(request) or "All" in (options.get("dryRun") or []):
            return json_response(
                current if t.rt.kind in DELETE_RETURNS_OBJECT else self._success(t.rt, current)
            )
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        deleted = gc.delete(self.store, t.rt, current, policy)
        return json_response(
            deleted if t.rt.kind in DELETE_RETURNS_OBJECT else self._success(t.rt, deleted)
        )

    def _success(self, rt: ResourceType, obj: Obj) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": obj["metadata"]["name"],
                "group": rt.group,
                "kind": rt.plural,
                "uid": obj["metadata"]["uid"],
            },
        }

    def delete_object(self, rt: ResourceType, obj: Obj, policy: str = "Background") -> Obj:
        """Delete with garbage collection (gc.delete), as the API's own deletes do."""
        return gc.delete(self.store, rt, obj, policy)

    async def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        items = self._select(request, t)
        if not _dry_run(request):
            for obj in items:
                if (
                    self.store.get(
                        t.rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                    )
                    is not None
                ):
                    gc.delete(self.store, t.rt, obj)
        return json_response(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": items,
            }
        )

    # ---- subresources --------------------------------------------------------------------
    async def _subresource(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.sub == "status" and any(s.name == "status" for s in t.rt.subresources):
            current = self.store.must_get(t.rt, t.namespace, t.name)
            if request.method == "GET":
                return json_response(current)
            if request.method == "PUT":
                new = await self._body(request)
            elif request.method == "PATCH":
                new = self._apply_patch(request, current, await self._body(request))
            else:
                raise method_not_allowed(request.method.lower(), f"{t.rt.plural}/status")
            new = self._finish_write(t.rt, current, new, sub="status")
            return json_response(self._commit(request, t.rt, current, new))
        if t.sub == "scale" and t.rt.kind in SCALABLE:
            return await self._scale(request, t)
        if t.sub == "log" and t.rt.kind == "Pod" and request.method == "GET":
            return await self._log(request, t)
        if t.sub == "eviction" and t.rt.kind == "Pod" and request.method == "POST":
            return await policy.evict(self.store, request, t, _dry_run(request))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _to_scale(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj["spec"].get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_string(obj["spec"].get("selector")),
            },
        }

    async def _scale(self, request: web.Request, t: Target) -> web.Response:
        current = self.store.must_get(t.rt, t.namespace, t.name)
        scale = self._to_scale(current)
        if request.method == "GET":
            return json_response(scale)
        body = await self._body(request)
        if request.method == "PUT":
            new_scale = body
        elif request.method == "PATCH":
            new_scale = self._apply_patch(request, scale, body)
        else:
            raise method_not_allowed(request.method.lower(), f"{t.rt.plural}/scale")
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                "Scale",
                "autoscaling",
                t.name,
                [
                    (
                        "spec.replicas",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                    )
                ],
            )
        new = copy.deepcopy(current)
        new["spec"]["replicas"] = replicas
        want_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"]["resourceVersion"] = want_rv or current["metadata"]["resourceVersion"]
        new = self._finish_write(t.rt, current, new)
        return json_response(self._to_scale(self._commit(request, t.rt, current, new)))
