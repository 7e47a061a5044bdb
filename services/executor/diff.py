"""Field-level diff of an object before and after a write, as a human reads it:
`spec.template.spec.containers[name=app].resources.limits.memory: 256Mi → 512Mi`.

Lists of named items (containers, env, ports, volumes) are addressed by name, so a reordering
is not a change and a path says which container it is about. Server-owned bookkeeping
(resourceVersion, managedFields, status…) is not what a human approves, so it is left out."""

from __future__ import annotations

from typing import Any

from schemas.approval import FieldChange
from services.executor.redact import REDACTED, SENSITIVE, secret_file
from services.runtime.credentials import is_secret_name, redact_value

_IGNORED = {
    "metadata.resourceVersion", "metadata.generation", "metadata.managedFields",
    "metadata.uid", "metadata.creationTimestamp", "metadata.selfLink", "status",
    "metadata.deletionTimestamp",
}
_MISSING = object()
MAX_CHANGES = 200


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """A list of dicts that all carry a unique `name`, as {name: item}; else None."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    out = {i["name"]: i for i in items}
    return out if len(out) == len(items) else None


def _walk(path: str, a: Any, b: Any, out: list[FieldChange]) -> None:
    if path in _IGNORED or a == b:
        return
    if (isinstance(a, dict) or isinstance(b, dict)) and (
        (a is _MISSING or isinstance(a, dict)) and (b is _MISSING or isinstance(b, dict))
    ):
        da = a if isinstance(a, dict) else {}
        db = b if isinstance(b, dict) else {}
        for k in sorted(set(da) | set(db)):
            sub = f"{path}.{k}" if path else k
            _walk(sub, da.get(k, _MISSING), db.get(k, _MISSING), out)
        return
    if isinstance(a, list) or isinstance(b, list):
        la = a if isinstance(a, list) else []
        lb = b if isinstance(b, list) else []
        ka, kb = _keyed(la), _keyed(lb)
        if (ka is not None or not la) and (kb is not None or not lb) and (ka or kb):
            ka, kb = ka or {}, kb or {}
            for name in [*ka, *(n for n in kb if n not in ka)]:
                _walk(f"{path}[name={name}]", ka.get(name, _MISSING), kb.get(name, _MISSING),
                      out)
            return
        if la and lb and all(isinstance(x, dict) for x in la + lb) and len(la) == len(lb):
            for i, (x, y) in enumerate(zip(la, lb, strict=True)):
                _walk(f"{path}[{i}]", x, y, out)
            return
    out.append(FieldChange(path=path,
                           before=None if a is _MISSING else a,
                           after=None if b is _MISSING else b))


def _secret(name: str) -> bool:
    return bool(SENSITIVE.search(name)) or is_secret_name(name)


def _named(kind: str, path: str) -> str:
    """The name that says what a changed value is: an env entry's name, a ConfigMap's key
    (which may hold dots: data.application.properties), else the path's last step."""
    if ".env[name=" in path:
        name, _, rest = path.split(".env[name=", 1)[1].partition("]")
        return name if rest == ".value" else ""
    if kind == "ConfigMap" and path.split(".", 1)[0] in ("data", "binaryData") and "." in path:
        return path.split(".", 1)[1]
    return path.rsplit(".", 1)[-1]


def _sensitive(kind: str, path: str) -> bool:
    if kind == "Secret" and path.split(".", 1)[0] in ("data", "stringData"):
        return True
    if path.endswith("last-applied-configuration"):
        return True
    name = _named(kind, path)
    if kind == "ConfigMap" and path.split(".", 1)[0] in ("data", "binaryData") and \
            secret_file(name):
        return True
    return bool(name) and _secret(name)


def _by_value(kind: str, path: str, value: Any) -> Any:
    """A value not secret by its name, masked where its shape (or a URL name) says so."""
    return redact_value(_named(kind, path), value) if isinstance(value, str) else value


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[FieldChange, ...]:
    """The leaves that differ, secrets masked (a changed secret shows as changed, not its value)."""
    out: list[FieldChange] = []
    _walk("", before if before is not None else _MISSING, after if after is not None else
          _MISSING, out)
    kind = str((after or before or {}).get("kind", ""))
    masked = []
    for c in out[:MAX_CHANGES]:
        if _sensitive(kind, c.path):
            c = FieldChange(path=c.path, before=None if c.before is None else REDACTED,
                            after=None if c.after is None else REDACTED)
        else:
            c = FieldChange(path=c.path, before=_by_value(kind, c.path, c.before),
                            after=_by_value(kind, c.path, c.after))
        masked.append(c)
    if len(out) > MAX_CHANGES:
        masked.append(FieldChange(path=f"… {len(out) - MAX_CHANGES} more changes not shown"))
    return tuple(masked)


def value_at(obj: Any, path: str) -> Any:
    """Follows a diff path (with [name=x] and [i] steps) into an object; None if absent."""
    cur = obj
    for part in _split(path):
        if isinstance(part, int):
            cur = cur[part] if isinstance(cur, list) and part < len(cur) else None
        elif part.startswith("name="):
            name = part[5:]
            cur = next((i for i in cur if isinstance(i, dict) and i.get("name") == name),
                       None) if isinstance(cur, list) else None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def _split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    buf = ""
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "." and buf:
            parts.append(buf)
            buf = ""
        elif ch == "[":
            if buf:
                parts.append(buf)
                buf = ""
            end = path.index("]", i)
            inner = path[i + 1:end]
            parts.append(int(inner) if inner.isdigit() else inner)
            i = end
        elif ch != ".":
            buf += ch
        i += 1
    if buf:
        parts.append(buf)
    return parts
