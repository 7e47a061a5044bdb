"""Secrets never leave the executor: Secret values and credential-looking fields are masked.

Two passes, both cheap (services/runtime/credentials.py):
- `redact(obj)` knows Kubernetes objects: a Secret's values, ConfigMap values under a secret
  name or holding a credential (whole embedded files are masked line by line), env entries by
  name and by value (`valueFrom` stays: a reference, not a value), `--password VALUE` argument
  pairs, secret-named annotations and last-applied-configuration, and every other string leaf
  by its shape;
- `scrub(value)` masks credential shapes in every string leaf of anything (texts, results,
  errors, diffs); the executor runs it on every event it appends, so no read path can skip it."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from services.runtime.credentials import (
    REDACTED,
    SENSITIVE,
    contains_credential,
    is_placeholder,
    is_secret_name,
    redact_text,
    redact_value,
)

__all__ = ["REDACTED", "SENSITIVE", "redact", "redact_metadata", "redact_text", "scrub",
           "secret_file"]

# Files that are credentials whatever they hold: private keys, keystores, password files.
_SECRET_FILE = re.compile(r"(?i)(?:^|[/.])(?:id_(?:rsa|dsa|ecdsa|ed25519)|htpasswd|pgpass|netrc|"
                          r"git-credentials)$|\.(?:key|p12|pfx|jks|keystore|kdbx|ppk)$")
_FLAG = re.compile(r"^--?([A-Za-z][\w.-]*)$")


def redact(obj: Any, kind: str = "") -> Any:
    """A Kubernetes object (or list of them) with its credentials masked. `kind` names the
    object's kind when it does not say so itself (items of a list response carry none)."""
    if isinstance(obj, list):
        return [redact(x, kind) for x in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    if not isinstance(obj, dict):
        return obj
    kind = str(obj.get("kind") or kind)
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if kind == "Secret" and k in ("data", "stringData") and isinstance(v, dict):
            out[k] = {name: REDACTED for name in v}
        elif kind == "ConfigMap" and k == "data" and isinstance(v, dict):
            out[k] = {name: _file(str(name), x) if isinstance(x, str) else redact(x)
                      for name, x in v.items()}
        elif kind == "ConfigMap" and k == "binaryData" and isinstance(v, dict):
            out[k] = {name: _binary(str(name), x) for name, x in v.items()}
        elif k == "env" and isinstance(v, list):
            out[k] = [_env(e) for e in v]
        elif k in ("args", "command") and isinstance(v, list):
            out[k] = _argv(v)
        elif k == "metadata" and isinstance(v, dict):
            out[k] = redact(redact_metadata(v))
        elif isinstance(v, str) and is_secret_name(str(k)) and not is_placeholder(v):
            out[k] = REDACTED  # a field named for a secret: a CRD's spec.password, a token
        else:
            out[k] = redact(v)
    return out


def redact_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    # last-applied-configuration repeats the whole object, Secret values included.
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and annotations:
        meta = dict(meta)
        meta["annotations"] = {
            k: (REDACTED if k.endswith("last-applied-configuration") or SENSITIVE.search(k)
                else redact_value(k.rsplit("/", 1)[-1], v) if isinstance(v, str) else v)
            for k, v in annotations.items()
        }
    return meta


def secret_file(name: str) -> bool:
    """A file name that is a credential whatever it holds (id_rsa, tls.key, keystore.p12)."""
    return bool(_SECRET_FILE.search(name))


def _file(name: str, value: str) -> str:
    """A ConfigMap value: one setting, or a whole file (.properties, .env, yaml, json, ini)."""
    if secret_file(name) and value.strip():
        return REDACTED
    return redact_value(name, value)


def _binary(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if secret_file(name) or is_secret_name(name):
        return REDACTED
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError):  # not text: nothing we can judge by its shape
        return value
    return REDACTED if contains_credential(text) else value


def _env(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return redact(entry)
    out = {k: redact(v) for k, v in entry.items() if k != "value"}
    if "value" in entry:
        value = entry["value"]
        out["value"] = redact_value(str(entry.get("name", "")), value) \
            if isinstance(value, str) else value
    return {k: out[k] for k in entry}


def _argv(items: list[Any]) -> list[Any]:
    """`--db-password=X` is masked by its shape; `--db-password X` needs the pair."""
    out: list[Any] = []
    hide_next = False
    for x in items:
        if not isinstance(x, str):
            out.append(x)
            hide_next = False
            continue
        if hide_next and not x.startswith("-") and not is_placeholder(x):
            out.append(REDACTED)
            hide_next = False
            continue
        m = _FLAG.match(x)
        hide_next = bool(m and is_secret_name(m.group(1)))
        out.append(redact_text(x))
    return out


def scrub(value: Any) -> Any:
    """Every string leaf of `value` with credential shapes masked (keys are kept)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value
