"""GET /v1/clusters' rows (issue 21): the clusters served, in order, the first the default;
connected only when one of its executors beat within three intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.gateway.clusters import cluster_rows
from services.runtime.presence import ClusterStatus

NOW = datetime(2026, 12, 7, 23, 40, tzinfo=UTC)


def _seen(cluster: str, role: str, ago_s: float, **kw: object) -> ClusterStatus:
    return ClusterStatus(cluster=cluster, role=role, version="0.1.0",
                         seen_at=NOW - timedelta(seconds=ago_s), **kw)  # type: ignore[arg-type]


def test_each_cluster_served_in_order_and_only_those() -> None:
    seen = {"b": [_seen("b", "read", 2), _seen("b", "write", 40)],
            "a": [_seen("a", "all", 16)],
            "intruder": [_seen("intruder", "all", 1)]}
    rows = cluster_rows(("a", "b", "c"), seen, NOW, 5.0)
    assert [(r["name"], r["default"], r["connected"]) for r in rows] == [
        ("a", True, False), ("b", False, True), ("c", False, False)]
    assert rows[1]["roles"] == ["read", "write"]
    assert rows[1]["last_seen"] == "2026-12-07T23:39:58Z"
    assert (rows[2]["last_seen"], rows[2]["roles"], rows[2]["version"]) == (None, [], "")
    assert "contexts" not in rows[0]


def test_without_clusters_the_one_executor_and_its_contexts() -> None:
    rows = cluster_rows((), {"": [_seen("", "all", 1, contexts=("sandbox",))]}, NOW, 5.0)
    assert rows == [{"name": "", "default": True, "connected": True,
                     "last_seen": "2026-12-07T23:39:59Z", "roles": ["all"],
                     "version": "0.1.0", "contexts": ["sandbox"]}]
