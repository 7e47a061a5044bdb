"""Secrets never leave the executor: Secret values and credential-looking fields are masked."""

from __future__ import annotations

from typing import Any

from services.runtime.credentials import REDACTED, SENSITIVE, redact_text

__all__ = ["REDACTED", "SENSITIVE", "redact", "redact_metadata", "redact_text"]


def redact(obj: Any) -> Any:
    if isinstance(obj, list):
        return [redact(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("kind") == "Secret":
        out = dict(obj)
        for field in ("data", "stringData"):
            if isinstance(out.get(field), dict):
                out[field] = {k: REDACTED for k in out[field]}
        if "metadata" in out:
            out["metadata"] = redact_metadata(out["metadata"])
        return out
    out = {}
    for k, v in obj.items():
        if k == "env" and isinstance(v, list):
            out[k] = [_redact_env(e) for e in v]
        elif k == "metadata" and isinstance(v, dict):
            out[k] = redact(redact_metadata(v))
        else:
            out[k] = redact(v)
    return out


def redact_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    # last-applied-configuration repeats the whole object, Secret values included.
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and annotations:
        meta = dict(meta)
        meta["annotations"] = {
            k: (REDACTED if k.endswith("last-applied-configuration") or SENSITIVE.search(k) else v)
            for k, v in annotations.items()
        }
    return meta


def _redact_env(entry: Any) -> Any:
    if isinstance(entry, dict) and "value" in entry and SENSITIVE.search(str(entry.get("name"))):
        return {**entry, "value": REDACTED}
    return entry
