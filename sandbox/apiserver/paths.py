"""Where a request goes: a resource API path parsed into its type, namespace, name and
subresource. Read by the resource API's routing and by the hooks that act on a stored object."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.state.resources import ResourceType, lookup


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str  # "" for cluster-scoped or all-namespaces
    name: str
    sub: str


def parse_path(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    rt = lookup(group, version, rest[0])
    if rt is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if namespace and not rt.namespaced:
        return None
    return Target(rt, namespace, name, sub)
