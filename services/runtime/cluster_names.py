"""Cluster names as people type them (issue 21): a kubeconfig context's name locally (EKS ARNs
hold `:` and `/`), a spoke's own label in a deployment; and the hub's list of allowed clusters,
INTERLOCK_CLUSTERS (comma list, first = the deployment's default; unset = legacy mode)."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping

from services.runtime.errors import ConfigError

MAX_LENGTH = 253
# As `interlock up` checks a context before it names a cluster (launcher/contexts.unusable):
# INTERLOCK_CLUSTERS is a comma list, and a name is shown on cards.
RULE = (f"1 to {MAX_LENGTH} characters, without a comma, white space or a control "
        "character")


def valid(name: str) -> bool:
    return 0 < len(name) <= MAX_LENGTH and "," not in name and not any(
        ch.isspace() or unicodedata.category(ch).startswith("C") for ch in name)


def allowed(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """INTERLOCK_CLUSTERS as a tuple; () when unset (legacy mode: any name the executor's
    allow-list takes)."""
    env = os.environ if env is None else env
    names = tuple(dict.fromkeys(n.strip() for n in env.get("INTERLOCK_CLUSTERS", "").split(",")
                                if n.strip()))
    bad = [n for n in names if not valid(n)]
    if bad:
        raise ConfigError(f"INTERLOCK_CLUSTERS: {', '.join(map(repr, bad))}: a cluster name "
                          f"is {RULE}")
    return names


def not_allowed(name: str, clusters: tuple[str, ...]) -> str | None:
    """Why a session or a call may not name `name` here, or None ("" is always fine: the
    deployment's default)."""
    if not name:
        return None
    if not valid(name):
        return f"cluster {name[:80]!r} is not a cluster name: {RULE}"
    if clusters and name not in clusters:
        return f"cluster {name!r} is not allowed here (allowed: {', '.join(clusters)})"
    return None


def resolve(named: object, session_default: str, clusters: tuple[str, ...] | list[str]) -> str:
    """Where a call runs — the one definition the gate (which classifies the call, and so binds
    its grant to the cluster) and the sealers (which seal its secret values to that cluster's
    executor) share: the cluster the call names (`args.cluster`, kubectl's --context), else
    its session's default (`SessionStarted.cluster_name`), else the deployment's (the first of
    INTERLOCK_CLUSTERS; "" in legacy mode: the executor's current context)."""
    if isinstance(named, str) and named:
        return named
    return session_default or (clusters[0] if clusters else "")
