"""Label and field selectors as the apiserver parses them from `?labelSelector=` and
`?fieldSelector=`, plus matching of structured `LabelSelector` objects from specs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.state.errors import bad_request

Requirement = tuple[str, str, tuple[str, ...]]  # (key, op, values)

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_labels(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        for op in ("!=", "==", "="):
            if op in part and "(" not in part:
                key, _, value = part.partition(op)
                reqs.append((key.strip(), "!=" if op == "!=" else "=", (value.strip(),)))
                break
        else:
            m = _SET_RE.match(part)
            if not m:
                raise bad_request(f"unable to parse requirement: {part!r}")
            neg, key, setop, values = m.groups()
            if setop:
                vals = tuple(v.strip() for v in values.split(",") if v.strip())
                reqs.append((key, setop, vals))
            else:
                reqs.append((key, "!exists" if neg else "exists", ()))
    return reqs


def _requirement_ok(op: str, present: bool, value: str | None, values: tuple[str, ...]) -> bool:
    if op == "=":
        return present and value == values[0]
    if op == "!=":
        return not present or value != values[0]
    if op == "in":
        return present and value in values
    if op == "notin":
        return not present or value not in values
    if op == "exists":
        return present
    return not present  # !exists


def labels_match(reqs: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(
        _requirement_ok(op, key in labels, labels.get(key), values) for key, op, values in reqs
    )


def selector_from_spec(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """A `LabelSelector` (matchLabels + matchExpressions) as requirements."""
    if not selector:
        return []
    reqs: list[Requirement] = [
        (k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append((expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return reqs


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """The `app=web,tier in (a,b)` form that Scale.status.selector and describe show."""
    parts = []
    for key, op, values in selector_from_spec(selector):
        if op == "=":
            parts.append(f"{key}={values[0]}")
        elif op in ("in", "notin"):
            parts.append(f"{key} {op} ({','.join(values)})")
        elif op == "exists":
            parts.append(key)
        else:
            parts.append(f"!{key}")
    return ",".join(parts)


def _field(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_fields(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Field selectors support only `=`, `==` and `!=` on dotted paths, as upstream does."""
    reqs: list[tuple[str, bool, str]] = []
    for part in _split_top(text or ""):
        if "!=" in part:
            key, _, value = part.partition("!=")
            reqs.append((key.strip(), False, value.strip()))
        elif "=" in part:
            key, _, value = part.partition("==" if "==" in part else "=")
            reqs.append((key.strip(), True, value.strip()))
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")

    def match(obj: Mapping[str, Any]) -> bool:
        return all((_field(obj, k) == v) == eq for k, eq, v in reqs)

    return match
