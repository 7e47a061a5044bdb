"""Deletion with garbage collection, as apiserver and the garbage collector do it together: a
namespace takes its objects along, and dependents found through ownerReferences are deleted
(Background/Foreground) or released (Orphan). A function of the store alone, so that every
path that deletes (the resource API, an eviction) deletes the same way."""

from __future__ import annotations

from sandbox.state.resources import RESOURCES, VIRTUAL_GROUPS, ResourceType
from sandbox.state.store import Obj, Store
from sandbox.state.timeutil import now_iso


def delete(store: Store, rt: ResourceType, obj: Obj, policy: str = "Background") -> Obj:
    """Delete with garbage collection: dependents found through ownerReferences are
    deleted too (Background/Foreground) or released (Orphan)."""
    meta = obj["metadata"]
    if rt.kind == "Namespace":
        for other in RESOURCES:
            if other.namespaced and other.group not in VIRTUAL_GROUPS:
                for child in store.list(other, meta["name"]):
                    store.delete(other, meta["name"], child["metadata"]["name"])
    deleted = store.delete(rt, meta.get("namespace", ""), meta["name"])
    deleted["metadata"]["deletionTimestamp"] = now_iso()
    uid = meta["uid"]
    for other in RESOURCES:
        if other.group in VIRTUAL_GROUPS or (not other.namespaced and rt.namespaced):
            continue
        for child in store.list(other, meta.get("namespace") or None):
            refs = child["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs):
                continue
            if policy == "Orphan":
                child["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                store.update(other, child, check_rv=False)
            elif (
                store.get(
                    other, child["metadata"].get("namespace", ""), child["metadata"]["name"]
                )
                is not None
            ):
                delete(store, other, child, policy)
    return deleted
