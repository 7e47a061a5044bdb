"""`interlock clusters`: the clusters this Interlock serves and whether each has an executor
connected (GET /v1/clusters), as a table or --json."""

from __future__ import annotations

import argparse
from typing import Any

from clients import safe_text
from clients.http import Gateway
from clients.output import Out

HEADINGS = ("CLUSTER", "DEFAULT", "CONNECTED", "LAST SEEN (UTC)", "ROLES", "VERSION")


def rows(clusters: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per cluster, every cell one line of plain text (a name came from a kubeconfig)."""
    out: list[tuple[str, ...]] = []
    for c in clusters:
        seen = str(c.get("last_seen") or "")
        out.append((
            # "" in a deployment without INTERLOCK_CLUSTERS: the executor's own kubeconfig.
            safe_text.line(c.get("name") or "(the executor's kubeconfig)"),
            "yes" if c.get("default") else "",
            "yes" if c.get("connected") else "NO",
            safe_text.line(seen[:19].replace("T", " ") or "never"),
            safe_text.line(",".join(c.get("roles") or ()) or "-"),
            safe_text.line(c.get("version") or "-"),
        ))
    return out


def table(clusters: list[dict[str, Any]]) -> str:
    body = rows(clusters)
    widths = [max(len(r[i]) for r in (HEADINGS, *body)) for i in range(len(HEADINGS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in (HEADINGS, *body)]
    up = sum(1 for c in clusters if c.get("connected"))
    lines.append(f"{up} of {len(clusters)} cluster(s) connected")
    return "\n".join(lines)


async def cmd_clusters(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    data = await gw.call("GET", "/v1/clusters")
    if out.as_json:
        out.data(data)
        return 0
    out.line(table(list(data.get("clusters") or ())))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("clusters", parents=[common],
                   help="the clusters served here, and whether each is connected")
