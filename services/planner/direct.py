"""Direct mode: kubectl-style commands parsed into catalogue calls, with no model involved.

It refuses anything it cannot parse exactly (pipes, shell, unknown verbs or flags); it never
guesses. The result goes through the very same gate as a model's proposal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

KINDS = {
    "po": "pod", "pod": "pod", "pods": "pod",
    "deploy": "deployment", "deployment": "deployment", "deployments": "deployment",
    "rs": "replicaset", "replicaset": "replicaset", "replicasets": "replicaset",
    "sts": "statefulset", "statefulset": "statefulset", "statefulsets": "statefulset",
    "svc": "service", "service": "service", "services": "service",
    "ns": "namespace", "namespace": "namespace", "namespaces": "namespace",
    "no": "node", "node": "node", "nodes": "node",
    "ev": "event", "event": "event", "events": "event",
}
_SHELL = set("|;&><`$()\n")


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    reason: str


def is_command(text: str) -> bool:
    t = text.strip()
    return t.startswith(("kubectl ", "/kubectl ")) or t in ("kubectl", "/kubectl")


def parse(text: str) -> Call | Refusal:
    t = text.strip()
    if t.startswith("/"):
        t = t[1:]
    if any(ch in _SHELL for ch in t):
        return Refusal("shell syntax (pipes, redirects, substitutions) is not supported")
    try:
        words = shlex.split(t)
    except ValueError as exc:
        return Refusal(f"cannot parse the command: {exc}")
    if not words or words[0] != "kubectl":
        return Refusal("not a kubectl command")
    try:
        pos, flags = _split(words[1:])
    except ValueError as exc:
        return Refusal(str(exc))
    if not pos:
        return Refusal("missing verb")
    verb, rest = pos[0], pos[1:]
    if verb == "get":
        return _get(rest, flags)
    if verb == "scale":
        return _scale(rest, flags)
    return Refusal(f"unsupported verb {verb!r}")


_VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-l": "selector",
                "--selector": "selector", "--replicas": "replicas", "--context": "context"}
_BOOL_FLAGS = {"-A": "all_namespaces", "--all-namespaces": "all_namespaces"}


def _split(words: list[str]) -> tuple[list[str], dict[str, str]]:
    pos: list[str] = []
    flags: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("-"):
            name, eq, value = w.partition("=")
            if name in _BOOL_FLAGS and not eq:
                flags[_BOOL_FLAGS[name]] = "true"
            elif name in _VALUE_FLAGS:
                if not eq:
                    i += 1
                    if i >= len(words):
                        raise ValueError(f"flag {name} needs a value")
                    value = words[i]
                key = _VALUE_FLAGS[name]
                if key in flags:
                    raise ValueError(f"flag {name} given twice")
                flags[key] = value
            else:
                raise ValueError(f"unsupported flag {name!r}")
        else:
            pos.append(w)
        i += 1
    return pos, flags


def _common(flags: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "namespace" in flags:
        out["namespace"] = flags["namespace"]
    if "context" in flags:
        out["cluster"] = flags["context"]
    return out


def _kind_name(rest: list[str]) -> tuple[str, str | None] | Refusal:
    if not rest:
        return Refusal("missing resource kind")
    first = rest[0]
    if "/" in first:
        k, _, name = first.partition("/")
        if len(rest) > 1:
            return Refusal("too many arguments")
        kind = KINDS.get(k.lower())
        return (kind, name) if kind else Refusal(f"unsupported resource kind {k!r}")
    kind = KINDS.get(first.lower())
    if not kind:
        return Refusal(f"unsupported resource kind {first!r}")
    if len(rest) > 2:
        return Refusal("only one object name is supported")
    return kind, rest[1] if len(rest) == 2 else None


def _get(rest: list[str], flags: dict[str, str]) -> Call | Refusal:
    if "replicas" in flags:
        return Refusal("--replicas is not a flag of get")
    kn = _kind_name(rest)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    args = {"kind": kind, **_common(flags)}
    if name:
        if "selector" in flags or "all_namespaces" in flags:
            return Refusal("a name cannot be combined with -l or -A")
        return Call("get", {**args, "name": name})
    if "selector" in flags:
        args["label_selector"] = flags["selector"]
    if "all_namespaces" in flags:
        args["all_namespaces"] = True
    return Call("list", args)


def _scale(rest: list[str], flags: dict[str, str]) -> Call | Refusal:
    if "selector" in flags or "all_namespaces" in flags:
        return Refusal("scale takes exactly one named object")
    kn = _kind_name(rest)
    if isinstance(kn, Refusal):
        return kn
    kind, name = kn
    if not name:
        return Refusal("scale needs an object name, e.g. deploy/web")
    if "replicas" not in flags:
        return Refusal("scale needs --replicas=N")
    try:
        replicas = int(flags["replicas"])
    except ValueError:
        return Refusal(f"--replicas must be a whole number, not {flags['replicas']!r}")
    return Call("scale", {"kind": kind, "name": name, "replicas": replicas, **_common(flags)})
