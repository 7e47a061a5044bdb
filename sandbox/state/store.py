"""The in-memory object store: one increasing resourceVersion across all kinds, a bounded
history for watches that resume from a version, and synchronous change listeners for the
controllers. Every mutation happens on the server's event loop, so no locking is needed."""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.state.errors import already_exists, conflict, expired, not_found
from sandbox.state.resources import ResourceType
from sandbox.state.timeutil import now_iso

Obj = dict[str, Any]
HISTORY = 10_000


@dataclass(frozen=True)
class Change:
    """One stored mutation, as a watch event type plus the object after (or at) it."""

    type: str  # ADDED | MODIFIED | DELETED
    rt: ResourceType
    obj: Obj
    rv: int
    old: Obj | None = None  # the object before a MODIFIED, for watches that filter


Listener = Callable[[Change], None]


class Store:
    def __init__(self) -> None:
        self._rv = 0
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._history: deque[Change] = deque(maxlen=HISTORY)
        self._watchers: set[asyncio.Queue[Change | None]] = set()
        self._listeners: list[Listener] = []

    # ---- reads ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(rt.key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def must_get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Objects sorted by namespace then name, as the apiserver lists them."""
        items = self._objects.get(rt.key, {})
        keys = sorted(k for k in items if namespace is None or k[0] == namespace)
        return [copy.deepcopy(items[k]) for k in keys]

    def iter_raw(self, rt: ResourceType) -> Iterator[Obj]:
        """Read-only view without copying; callers must not mutate what they get."""
        return iter(list(self._objects.get(rt.key, {}).values()))

    # ---- writes --------------------------------------------------------------------------
    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def prepare_new(self, rt: ResourceType, obj: Obj) -> Obj:
        """Server-populated metadata for a create; also used for dry runs, which stop here."""
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if rt.namespaced else ""
        name = meta.get("name", "")
        if self._objects.get(rt.key, {}).get((ns, name)) is not None:
            raise already_exists(rt.plural, rt.group, name)
        meta["uid"] = str(uuid.uuid4())
        meta.setdefault("creationTimestamp", now_iso())
        meta["resourceVersion"] = str(self._rv + 1)
        if rt.has_generation:
            meta["generation"] = 1
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        return obj

    def create(self, rt: ResourceType, obj: Obj) -> Obj:
        obj = self.prepare_new(rt, copy.deepcopy(obj))
        meta = obj["metadata"]
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        self._objects.setdefault(rt.key, {})[key] = obj
        self._emit(Change("ADDED", rt, copy.deepcopy(obj), rv))
        return copy.deepcopy(obj)

    def check_precondition(self, rt: ResourceType, current: Obj, new: Obj) -> None:
        want = (new.get("metadata") or {}).get("resourceVersion")
        if want and want != current["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, current["metadata"]["name"])

    def update(self, rt: ResourceType, obj: Obj, *, check_rv: bool = True) -> Obj:
        """Replace a stored object. With `check_rv`, a resourceVersion in `obj` must match."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        current = self._objects.get(rt.key, {}).get(key)
        if current is None:
            raise not_found(rt.plural, rt.group, meta["name"])
        if check_rv:
            self.check_precondition(rt, current, obj)
        obj = copy.deepcopy(obj)
        # Identity fields are owned by the server.
        for field in ("uid", "creationTimestamp"):
            obj["metadata"][field] = current["metadata"][field]
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if _same(current, obj):
            return copy.deepcopy(current)  # a no-op write keeps its resourceVersion, as upstream
        rv = self._bump()
        obj["metadata"]["resourceVersion"] = str(rv)
        self._objects[rt.key][key] = obj
        # `current` was replaced, not mutated: nothing else holds it now.
        self._emit(Change("MODIFIED", rt, copy.deepcopy(obj), rv, old=current))
        return copy.deepcopy(obj)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        key = (namespace if rt.namespaced else "", name)
        current = self._objects.get(rt.key, {}).pop(key, None)
        if current is None:
            raise not_found(rt.plural, rt.group, name)
        rv = self._bump()
        current["metadata"]["resourceVersion"] = str(rv)
        self._emit(Change("DELETED", rt, copy.deepcopy(current), rv))
        return current

    # ---- change feeds --------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, change: Change) -> None:
        self._history.append(change)
        for q in self._watchers:
            q.put_nowait(change)
        for listener in self._listeners:
            listener(change)

    def history_since(self, rv: int) -> builtins.list[Change]:
        """Changes after `rv`; 410 Expired when the history no longer reaches back that far."""
        if rv < self._rv and self._history and self._history[0].rv > rv + 1:
            raise expired(str(rv))
        return [c for c in self._history if c.rv > rv]

    @property
    def subscribers(self) -> int:
        """Open change feeds (watches, followed logs, waiters): tests wait for a client."""
        return len(self._watchers)

    def subscribe(self) -> asyncio.Queue[Change | None]:
        q: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Change | None]) -> None:
        self._watchers.discard(q)

    def close_watchers(self) -> None:
        """Ends every open watch stream (a None sentinel), so shutdown does not wait on them."""
        for q in self._watchers:
            q.put_nowait(None)


def _same(a: Obj, b: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        o = dict(o)
        o["metadata"] = {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}
        return o

    return strip(a) == strip(b)
