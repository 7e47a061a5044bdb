"""What a credential looks like: names and values. Pure functions, shared by every service that
must keep a secret out of the log (the executor's reads, the planner's and gateway's writes)."""

from __future__ import annotations

import re

REDACTED = "<redacted>"
SENSITIVE = re.compile(r"(password|passwd|secret|token|api[-_]?key|credential|private[-_]?key)",
                        re.IGNORECASE)

_TEXT_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # key=value / key: value pairs whose key names a secret (log lines, error messages)
    re.compile(r"(?i)\b((?:password|passwd|secret|token|api[-_]?key|access[-_]?key)"
               r"[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]{3,}"),
    # JWTs (service-account tokens) and PEM private keys
    re.compile(r"()eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"()-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
)


def is_secret_name(name: str) -> bool:
    """A key, env or annotation name that says its value is a credential."""
    return bool(SENSITIVE.search(name))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Masks credentials in free text (logs, messages): known values and recognisable shapes."""
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def contains_credential(value: str) -> bool:
    """A value that carries a credential by its shape, whatever its name."""
    return redact_text(value) != value
