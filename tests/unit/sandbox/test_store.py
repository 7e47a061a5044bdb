from __future__ import annotations

from collections import deque

import pytest

from sandbox.state.errors import ApiError
from sandbox.state.resources import by_plural
from sandbox.state.store import Store

CM = by_plural("", "configmaps")


def cm(name: str, **data: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns"}, "data": data}


def test_one_counter_across_kinds_and_noop_updates() -> None:
    store = Store()
    a = store.create(CM, cm("a"))
    sa = store.create(by_plural("", "serviceaccounts"), cm("b"))
    assert int(sa["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1
    same = store.update(CM, a)
    assert same["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]
    changed = store.update(CM, {**a, "data": {"k": "v"}})
    assert changed["metadata"]["resourceVersion"] == "3"


def test_conflicts_and_duplicates() -> None:
    store = Store()
    a = store.create(CM, cm("a"))
    store.update(CM, {**a, "data": {"k": "v"}})
    with pytest.raises(ApiError) as exc:
        store.update(CM, {**a, "data": {"k": "w"}})
    assert (exc.value.code, exc.value.reason) == (409, "Conflict")
    with pytest.raises(ApiError) as exc:
        store.create(CM, cm("a"))
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists")


def test_history_expires_with_410() -> None:
    store = Store()
    store._history = deque(maxlen=3)
    for i in range(6):
        store.create(CM, cm(f"c{i}"))
    assert [c.rv for c in store.history_since(3)] == [4, 5, 6]
    with pytest.raises(ApiError) as exc:
        store.history_since(1)
    assert (exc.value.code, exc.value.reason) == (410, "Expired")
