"""core/v1 Events, recorded the way kubelet and controllers do: repeats of the same
reason/message on the same object bump `count` and `lastTimestamp` instead of adding rows."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sandbox.state.resources import by_plural
from sandbox.state.store import Obj, Store
from sandbox.state.timeutil import iso, now

EVENTS = by_plural("", "events")


class Recorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._index: dict[tuple[str, str, str, str], str] = {}  # dedup key -> event name

    def record(
        self,
        obj: Obj,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str = "",
        field_path: str = "",
        count: int = 1,
        first: datetime | None = None,
        last: datetime | None = None,
    ) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid", meta["name"]), type_, reason, message)
        t_last = iso(last or now())
        existing_name = self._index.get(key)
        if existing_name:
            existing = self.store.get(EVENTS, namespace, existing_name)
            if existing is not None:
                existing["count"] = existing.get("count", 1) + count
                existing["lastTimestamp"] = t_last
                self.store.update(EVENTS, existing, check_rv=False)
                return
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        involved: dict[str, Any] = {
            "kind": obj.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source: dict[str, str] = {"component": component}
        if host:
            source["host"] = host
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": iso(first or last or now()),
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": iso(first or last or now()),
            "lastTimestamp": t_last,
            "count": count,
            "type": type_,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host,
        }
        if self.store.get(by_plural("", "namespaces"), "", namespace) is None:
            return  # the namespace is gone; upstream would reject the event too
        self.store.create(EVENTS, event)
        self._index[key] = name
