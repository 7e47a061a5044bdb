"""Where secret values sit in a tool's args: the only positions the sealer seals and the
executor resolves a reference."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from services.runtime.credentials import contains_credential, is_secret_name
from services.runtime.sealing.blobs import Ref

# Names that say "credential" beyond credentials.is_secret_name: the issue's *PASS*, *TOKEN*,
# *KEY*, *SECRET* (DB_PASS, STRIPE_KEY).
SECRET_NAME = re.compile(r"(?i)(pass|pwd|token|secret|key|credential)")
# A URL with a password in its userinfo: postgres://app:pw@db/app.
USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")

T = TypeVar("T")


def is_secret(name: str, value: str) -> bool:
    """An env var or ConfigMap entry whose name or value says it is a credential."""
    return bool(is_secret_name(name) or SECRET_NAME.search(name) or contains_credential(value)
                or USERINFO.search(value))


@dataclass
class Slot:
    """One string in the args where a secret value may sit: holder[key]."""

    holder: dict[str, Any]
    key: str
    name: str  # the env var or data key the value belongs to
    always: bool  # a Secret's data: sealed whatever it looks like
    where: str  # "data:<key>" or "env:<name>": how the preview diff addresses it

    @property
    def value(self) -> Any:
        return self.holder[self.key]


def _doc_slots(kind: str, doc: Any) -> Iterator[Slot]:
    if not isinstance(doc, dict):
        return
    kind = kind.lower()
    if kind == "secret":
        for f in ("data", "stringData"):
            data = doc.get(f)
            if isinstance(data, dict):
                for k in data:
                    yield Slot(data, k, k, True, f"data:{k}")
    if kind == "configmap" and isinstance(doc.get("data"), dict):
        for k in doc["data"]:
            yield Slot(doc["data"], k, k, False, f"data:{k}")
    yield from _env_slots(doc)


def _env_slots(node: Any) -> Iterator[Slot]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "env" and isinstance(v, list):
                for e in v:
                    if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e:
                        yield Slot(e, "value", e["name"], False, f"env:{e['name']}")
            elif k not in ("data", "stringData"):
                yield from _env_slots(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_slots(v)


def slots(tool: str, args: dict[str, Any]) -> Iterator[Slot]:
    """Every position in a call's args (a JSON dict, changed in place by the caller) where a
    secret value may sit."""
    if tool == "set_env" and isinstance(args.get("env"), dict):
        for name in args["env"]:
            yield Slot(args["env"], name, name, False, f"env:{name}")
    elif tool in ("apply", "create") and isinstance(args.get("manifest"), dict):
        yield from _doc_slots(str(args["manifest"].get("kind", "")), args["manifest"])
    elif tool == "patch":
        yield from _doc_slots(str(args.get("kind", "")), args.get("body"))


def b64_ref(value: Any) -> Ref | None:
    """A Secret `data` value that is a reference, base64-encoded (kubectl's create secret
    generic encodes every literal, and a sealed literal is a reference)."""
    if not isinstance(value, str) or not value.startswith("c2VhbGVk"):  # "sealed"
        return None
    try:
        return Ref.parse(base64.b64decode(value, validate=True).decode())
    except (ValueError, binascii.Error):
        return None


def copy(obj: T) -> T:
    out: T = json.loads(json.dumps(obj))
    return out
