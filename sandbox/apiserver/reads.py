"""The reads that answer over time or from elsewhere than the store: a pod's logs (followed
too), the metrics API and watch streams, and the label/field selection lists and watches share.
Mixed into ResourceApi (api.py), whose state they read."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from datetime import datetime, timedelta
from typing import Protocol

from aiohttp import web

from sandbox.apiserver import tables
from sandbox.apiserver.paths import Target
from sandbox.apiserver.responses import JSON_CT, error_response, json_response, wants_table
from sandbox.state.errors import (
    ApiError,
    bad_request,
    not_found,
)
from sandbox.state.selectors import labels_match, parse_fields, parse_labels
from sandbox.state.store import Change, Obj, Store
from sandbox.state.timeutil import now

log = logging.getLogger(__name__)


class LogSource(Protocol):
    def logs(self, pod: Obj, container: str, *, previous: bool) -> list[tuple[datetime, str]]: ...


class MetricsSource(Protocol):
    def pod_metrics(self, namespace: str | None) -> list[Obj]: ...
    def node_metrics(self) -> list[Obj]: ...


def _container_status(pod: Obj, name: str) -> Obj:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == name:
            return cs  # type: ignore[no-any-return]
    return {}


class Reads:
    store: Store
    logs: LogSource
    metrics: MetricsSource
    open_watches: int
    _stopping: asyncio.Event

    def _select(self, request: web.Request, t: Target) -> list[Obj]:
        label_reqs = parse_labels(request.query.get("labelSelector", ""))
        field_match = parse_fields(request.query.get("fieldSelector", ""))
        return [
            o
            for o in self.store.list(t.rt, t.namespace or None)
            if labels_match(label_reqs, o["metadata"].get("labels")) and field_match(o)
        ]

    async def _log(self, request: web.Request, t: Target) -> web.StreamResponse:
        pod = self.store.must_get(t.rt, t.namespace, t.name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        name = request.query.get("container", "")
        if not name:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {t.name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            name = containers[0]
        if name not in containers:
            raise bad_request(f"container {name} is not valid for pod {t.name}")
        previous = request.query.get("previous") in ("true", "1")
        lines = self.logs.logs(pod, name, previous=previous)
        since = request.query.get("sinceSeconds")
        if since:
            cutoff = now() - timedelta(seconds=int(since))
            lines = [(ts, line) for ts, line in lines if ts >= cutoff]
        tail = request.query.get("tailLines")
        if tail is not None and int(tail) >= 0:
            lines = lines[len(lines) - int(tail) :] if int(tail) else []
        stamped = request.query.get("timestamps") in ("true", "1")
        text = "".join(
            (f"{ts.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z " if stamped else "") + line + "\n"
            for ts, line in lines
        )
        limit = request.query.get("limitBytes")
        if limit:
            text = text[: int(limit)]
        if request.query.get("follow") not in ("true", "1") or previous:
            return web.Response(text=text, content_type="text/plain")
        return await self._follow(request, t, pod, name, text)

    async def _follow(
        self, request: web.Request, t: Target, pod: Obj, container: str, text: str
    ) -> web.StreamResponse:
        """`logs -f`: what there is, then the stream stays open, as kubelet's does, until the
        container stops running (restart, deletion) or the client hangs up."""
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(text.encode())
        uid = pod["metadata"]["uid"]

        def same_run(current: Obj | None) -> bool:
            if current is None or current["metadata"]["uid"] != uid:
                return False
            before = _container_status(pod, container)
            now_cs = _container_status(current, container)
            return before.get("restartCount") == now_cs.get("restartCount") and (
                "running" in (now_cs.get("state") or {}) or "waiting" in (before.get("state") or {})
            )

        queue = self.store.subscribe()
        try:
            while not self._stopping.is_set():
                if not same_run(self.store.get(t.rt, t.namespace, t.name)):
                    break
                if await queue.get() is None:
                    break
        finally:
            self.store.unsubscribe(queue)
        await resp.write_eof()
        return resp

    def _metrics(self, request: web.Request, t: Target) -> web.Response:
        if t.rt.plural == "pods":
            items = self.metrics.pod_metrics(t.namespace or None)
        else:
            items = self.metrics.node_metrics()
        if t.name:
            for item in items:
                if item["metadata"]["name"] == t.name:
                    return json_response(item)
            raise not_found(t.rt.plural, t.rt.group, t.name)
        label_reqs = parse_labels(request.query.get("labelSelector", ""))
        items = [i for i in items if labels_match(label_reqs, i["metadata"].get("labels"))]
        return json_response(
            {
                "kind": f"{t.rt.kind}List",
                "apiVersion": t.rt.api_version,
                "metadata": {},
                "items": items,
            }
        )

    # ---- watch ---------------------------------------------------------------------------
    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        label_reqs = parse_labels(request.query.get("labelSelector", ""))
        field_match = parse_fields(request.query.get("fieldSelector", ""))
        as_table = wants_table(request)
        include = request.query.get("includeObject", "Metadata")

        def passes(obj: Obj) -> bool:
            if t.namespace and obj["metadata"].get("namespace") != t.namespace:
                return False
            return labels_match(label_reqs, obj["metadata"].get("labels")) and field_match(obj)

        def translate(change: Change) -> tuple[str, Obj] | None:
            """Upstream's cacheWatcher: an object that starts or stops matching the selectors
            arrives as ADDED or DELETED (the last matching state, at the new version)."""
            if change.rt.key != t.rt.key:
                return None
            if change.type != "MODIFIED" or change.old is None:
                return (change.type, change.obj) if passes(change.obj) else None
            now_in, was_in = passes(change.obj), passes(change.old)
            if now_in:
                return ("MODIFIED" if was_in else "ADDED", change.obj)
            if was_in:
                gone = copy.deepcopy(change.old)
                gone["metadata"]["resourceVersion"] = str(change.rv)
                return ("DELETED", gone)
            return None

        queue = self.store.subscribe()
        first_table = [True]

        def frame(kind: str, obj: Obj) -> bytes:
            if as_table and kind != "BOOKMARK":
                obj = tables.table(
                    t.rt,
                    [obj],
                    obj["metadata"].get("resourceVersion", ""),
                    include=include,
                    with_columns=first_table[0],
                )
                first_table[0] = False
            return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

        resp = web.StreamResponse(headers={"Content-Type": JSON_CT, "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        try:
            rv_param = request.query.get("resourceVersion", "")
            initial = request.query.get("sendInitialEvents") == "true"
            sent_upto = self.store.resource_version
            replay: list[bytes] = []
            if initial or rv_param in ("", "0"):
                for obj in self._select(request, t):
                    replay.append(frame("ADDED", obj))
            else:
                for change in self.store.history_since(int(rv_param)):
                    event = translate(change)
                    if event is not None:
                        replay.append(frame(*event))
            if initial:
                replay.append(
                    frame(
                        "BOOKMARK",
                        {
                            "kind": t.rt.kind,
                            "apiVersion": t.rt.api_version,
                            "metadata": {
                                "resourceVersion": sent_upto,
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    )
                )
            await resp.prepare(request)
            self.open_watches += 1
            for chunk in replay:
                await resp.write(chunk)
            timeout = float(request.query.get("timeoutSeconds", "1800") or 1800)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that aiohttp sends when the client hangs up while an item is being delivered.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not self._stopping.is_set():
                        item = await queue.get()
                        if item is None:
                            break
                        event = translate(item) if item.rv > int(sent_upto) else None
                        if event is not None:
                            await resp.write(frame(*event))
        except ConnectionError:
            log.debug("watch client went away")
        except ApiError as err:
            if not resp.prepared:
                return error_response(err)
            await resp.write(json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n")
        finally:
            if resp.prepared:
                self.open_watches -= 1
            self.store.unsubscribe(queue)
        return resp
