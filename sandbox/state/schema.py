"""Schema checks borrowed from the official client's models (pydantic, extra="forbid"): what
apiserver's decoder would reject. Unknown fields are dropped, as decoding into Go structs
drops them, and reported per `fieldValidation` (Strict: 400, Warn: a warning header, which is
the default). Values of the wrong type get 400, missing required fields 422.

Stripping matters beyond realism: a stored unknown field would make every later read fail in
the client, whose models refuse extra keys."""

from __future__ import annotations

from typing import Any

import pydantic
from kubernetes import client as k8s

from sandbox.state.errors import bad_request, invalid
from sandbox.state.resources import ResourceType

Obj = dict[str, Any]
_TYPE_ERRORS = ("_type", "_parsing", "model_attributes_type", "dict_type", "list_type")


def model_for(rt: ResourceType) -> Any | None:
    if rt.kind == "Event":
        return k8s.CoreV1Event
    prefix = "V2" if rt.version == "v2" else "V1"
    return getattr(k8s, prefix + rt.kind, None)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _drop(obj: Any, loc: tuple[int | str, ...]) -> None:
    for part in loc[:-1]:
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(obj, dict):
        obj.pop(loc[-1], None)


def check(rt: ResourceType, obj: Obj, validation: str = "Warn") -> list[str]:
    """Strips unknown fields from `obj` in place and returns the warnings to send; raises
    ApiError for what apiserver would refuse outright."""
    model = model_for(rt)
    if model is None:
        return []
    try:
        model.model_validate(obj)
        return []
    except pydantic.ValidationError as exc:
        errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    name = (obj.get("metadata") or {}).get("name", "")
    if unknown and validation == "Strict":
        fields = ", ".join(f'unknown field "{_path(e["loc"])}"' for e in unknown)
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {fields}"
        )
    for e in unknown:
        _drop(obj, e["loc"])
    wrong = [e for e in errors if any(e["type"].endswith(t) for t in _TYPE_ERRORS)]
    if wrong:
        e = wrong[0]
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"{_path(e['loc'])}: {e['msg']} (got {e['input']!r})"
        )
    missing = [e for e in errors if e["type"] == "missing"]
    if missing:
        raise invalid(
            rt.kind, rt.group, name, [(_path(e["loc"]), "Required value") for e in missing]
        )
    if validation == "Ignore":
        return []
    return [f'unknown field "{_path(e["loc"])}"' for e in unknown]
