"""GET /v1/clusters (issue 21): the clusters this deployment serves (INTERLOCK_CLUSTERS, the
first the default) and whether each has an executor connected, from the executors' presence
beats (services/runtime/presence.py). Without INTERLOCK_CLUSTERS: the one executor of before,
named "" (its kubeconfig's contexts)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.runtime import presence

if TYPE_CHECKING:
    from services.gateway.routes import Api


def cluster_rows(clusters: Sequence[str], seen: dict[str, list[presence.ClusterStatus]],
                 now: datetime, interval_s: float) -> list[dict[str, Any]]:
    """One row per cluster served, in the configured order; a beat of a cluster not served is
    not listed (no spoke identity exists for it)."""
    names = list(clusters) or [""]
    out: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        statuses = seen.get(name, [])
        last = max(statuses, key=lambda s: s.seen_at, default=None)
        row: dict[str, Any] = {
            "name": name,
            "default": i == 0,
            "connected": presence.connected(statuses, now, interval_s),
            "last_seen": last.seen_at.isoformat().replace("+00:00", "Z") if last else None,
            "roles": sorted({s.role for s in statuses}),
            "version": last.version if last else "",
        }
        if not clusters:  # the single executor: which contexts it allows
            row["contexts"] = sorted({c for s in statuses for c in s.contexts})
        out.append(row)
    return out


async def list_clusters(api: Api, interval_s: float, request: web.Request) -> web.Response:
    api.principal(request, None)  # any signed-in person
    seen = await presence.read_clusters(api.bus)
    rows = cluster_rows(api.clusters, seen, datetime.now(UTC), interval_s)
    return web.json_response({"clusters": rows}, headers={"Cache-Control": "no-store"})


CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["name", "default", "connected", "last_seen", "roles", "version"],
    "properties": {
        "name": {"type": "string", "description": "the cluster (a kubeconfig context locally); "
                                                  "\"\" without INTERLOCK_CLUSTERS"},
        "default": {"type": "boolean",
                    "description": "where a call naming no cluster goes (the first)"},
        "connected": {"type": "boolean",
                      "description": "an executor of it reported within three intervals"},
        "last_seen": {"type": ["string", "null"], "format": "date-time"},
        "roles": {"type": "array", "items": {"type": "string",
                                              "enum": ["all", "read", "write"]}},
        "version": {"type": "string"},
        "contexts": {"type": "array", "items": {"type": "string"},
                     "description": "without INTERLOCK_CLUSTERS: the executor's allowed "
                                    "contexts"},
    },
}


def install(app: web.Application, api: Api, spec: dict[str, Any] | None = None,
            env: Mapping[str, str] | None = None) -> None:
    """Adds GET /v1/clusters (and its path to the OpenAPI document). The executors beat every
    INTERLOCK_PRESENCE_INTERVAL seconds (as the gate reads it)."""
    interval = presence.interval_from_env(env)
    app.router.add_get("/v1/clusters", functools.partial(list_clusters, api, interval))
    if spec is None:
        return
    spec.setdefault("paths", {})["/v1/clusters"] = {"get": {
        "summary": "The clusters served, and whether each has an executor connected",
        "tags": ["ops"],
        "description": "Any signed-in principal.",
        "responses": {
            "200": {"description": "the clusters, the default first", "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["clusters"],
                    "properties": {"clusters": {"type": "array", "items": CLUSTER_SCHEMA}}}}}},
            "401": {"description": "missing or unknown token", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
        },
    }}
