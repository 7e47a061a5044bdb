"""PodDisruptionBudgets as the disruption controller computes them: how many of the pods a budget
selects are healthy, how many must stay so, and so how many may be disrupted. Read by the PDB
controller (workloads.py) and by the Eviction API (apiserver/policy.py)."""

from __future__ import annotations

from typing import Any

from sandbox.state.resources import by_plural
from sandbox.state.selectors import labels_match, selector_from_spec
from sandbox.state.store import Obj, Store

PDBS = by_plural("policy", "poddisruptionbudgets")
PODS = by_plural("", "pods")


def ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = int(value[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return int(value)


def budget_status(store: Store, pdb: Obj) -> dict[str, int]:
    """A PDB's status as the disruption controller computes it, from the pods it selects."""
    ns = pdb["metadata"]["namespace"]
    reqs = selector_from_spec((pdb.get("spec") or {}).get("selector"))
    pods = [p for p in store.list(PODS, ns) if labels_match(reqs, p["metadata"].get("labels"))
            and not p["metadata"].get("deletionTimestamp")]
    expected = len(pods)
    healthy = sum(1 for p in pods if ready(p))
    spec = pdb.get("spec") or {}
    if "minAvailable" in spec:
        desired = _int_or_percent(spec["minAvailable"], expected, round_up=True)
    elif "maxUnavailable" in spec:
        desired = expected - _int_or_percent(spec["maxUnavailable"], expected, round_up=True)
    else:
        desired = expected
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": max(healthy - desired, 0)}
