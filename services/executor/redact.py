"""Secrets never leave the executor: Secret values and credential-looking fields are masked."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SENSITIVE = re.compile(r"(password|passwd|secret|token|api[-_]?key|credential|private[-_]?key)",
                        re.IGNORECASE)


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


_TEXT_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # key=value / key: value pairs whose key names a secret (log lines, error messages)
    re.compile(r"(?i)\b((?:password|passwd|secret|token|api[-_]?key|access[-_]?key)"
               r"[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]{3,}"),
    # JWTs (service-account tokens) and PEM private keys
    re.compile(r"()eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"()-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Masks credentials in free text (logs, messages): known values and recognisable shapes."""
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text
