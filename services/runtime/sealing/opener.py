"""The executor's side: a call's references resolved to their values, and every event about
the call scrubbed of them before it is recorded."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from schemas import subjects as S
from services.runtime import identity
from services.runtime.bus import Bus
from services.runtime.credentials import REDACTED
from services.runtime.errors import ConfigError, RetryableError
from services.runtime.sealing.blobs import (
    MIN_SCRUBBED,
    SHOWN_DIGITS,
    Ref,
    SealError,
    forms,
    open_blob,
    scrub_text,
    subject,
)
from services.runtime.sealing.slots import copy, is_secret, slots

T = TypeVar("T")

Get = Callable[[str], Awaitable[bytes | None]]


@dataclass
class Unsealed:
    """A call's args with their references resolved, and what the executor must never echo."""

    args: dict[str, Any]
    values: dict[str, Ref] = field(default_factory=dict)  # real value -> its reference
    where: dict[str, Ref] = field(default_factory=dict)  # "data:<key>" / "env:<name>" -> ref

    def scrub(self, event: T) -> T:
        """An event (or any JSON-like value) about this call as it may be recorded: every
        resolved value replaced by what the card shows for it, and in every field change
        (diffs, a result's changes, a verification's `differs`) at a place where a secret sits
        — one sealed in this call, or an env/ConfigMap value that is a credential by name or
        shape (another write's secret observed there, the old value) — the value masked,
        wherever else the event repeats it too."""
        raw = msgspec.to_builtins(event) if isinstance(event, msgspec.Struct) else event
        masked: dict[str, str] = {}
        self._mask_changes(raw, masked)
        if not self.values and not masked:
            return event
        walked = self._walk(raw, masked)
        if isinstance(event, msgspec.Struct):
            out: T = msgspec.convert(walked, type(event), strict=False)
            return out
        result: T = walked
        return result

    def _mask_changes(self, node: Any, masked: dict[str, str]) -> None:
        """Finds the field changes in an event and what each must show instead of a value."""
        if isinstance(node, list | tuple):  # to_builtins keeps a Struct's tuples
            for v in node:
                self._mask_changes(v, masked)
            return
        if not isinstance(node, dict):
            return
        path = node.get("path")
        if isinstance(path, str):
            ref = self._at(path)
            real = {r: v for v, r in self.values.items()}.get(ref) if ref else None
            for f in ("before", "after", "approved", "observed"):
                value = node.get(f)
                if not isinstance(value, str) or not value or value in (REDACTED,):
                    continue
                if ref is not None:
                    masked[value] = ref.shown if value == real else REDACTED
                elif _credential_at(path, value):
                    masked[value] = REDACTED
        for v in node.values():
            self._mask_changes(v, masked)

    def _walk(self, node: Any, masked: dict[str, str]) -> Any:
        if isinstance(node, str):
            if node in masked:
                return masked[node]
            return _replace(scrub_text(node, self.values), masked)
        if isinstance(node, list | tuple):
            return [self._walk(v, masked) for v in node]
        if isinstance(node, dict):
            out = {k: self._walk(v, masked) for k, v in node.items()}
            if isinstance(out.get("path"), str) and out.get("after") is not None:
                ref = self._at(out["path"])
                if ref is not None:  # a Secret's value the diff already masked, say
                    out["after"] = ref.shown
            return out
        return node

    def _at(self, path: str) -> Ref | None:
        """The sealed value a diff path sets, if any (Secret data, env value, ConfigMap)."""
        m = _ENV_PATH.search(path)
        if m:
            return self.where.get(f"env:{m.group(1)}")
        m = _DATA_PATH.fullmatch(path)
        return self.where.get(f"data:{m.group(1)}") if m else None


_ENV_PATH = re.compile(r"\.env\[name=([^\]]+)\]\.value$")
_DATA_PATH = re.compile(r"(?:data|stringData)\.(.+)")


def _credential_at(path: str, value: str) -> bool:
    """A value of an env var or a data key that is a credential by its name or shape."""
    m = _ENV_PATH.search(path) or _DATA_PATH.fullmatch(path)
    return bool(m) and is_secret(m.group(1) if m else "", value)


def _replace(text: str, masked: dict[str, str]) -> str:
    for value in sorted(masked, key=len, reverse=True):
        if len(value) >= MIN_SCRUBBED:
            for form in forms(value):
                text = text.replace(form, masked[value])
    return text


class Opener:
    """The executor's side: fetches blobs of its own session and opens them."""

    def __init__(self, private: X25519PrivateKey, get: Get) -> None:
        self.private = private
        self.get = get

    async def args(self, session_id: str, tool: str, args: dict[str, Any]) -> Unsealed:
        out = copy(args)
        result = Unsealed(out)
        for slot in list(slots(tool, out)):
            ref = Ref.parse(slot.value)
            if ref is None:
                continue
            blob = await self.get(subject(ref.sealer, session_id, ref.blob_id))
            if blob is None:
                raise SealError(f"the sealed value {ref.fingerprint[:SHOWN_DIGITS]} of "
                                f"{slot.name} is not available (expired, or never stored for "
                                "this session); nothing was run — propose the write again")
            value = open_blob(ref, blob, self.private, session_id)
            slot.holder[slot.key] = value
            result.values[value] = ref
            result.where[slot.where] = ref
        return result



def opener_for(bus: Bus) -> Opener:
    """The executor's opener: its sealing key is derived from its own signing key."""
    if bus.signer is None:
        raise ConfigError(f"{bus.service}: no signing key, so no sealing key to open secrets")

    async def get(subj: str) -> bytes | None:
        try:
            return await bus.last_in(S.SEALED_STREAM, subj)
        except TimeoutError as exc:
            raise RetryableError(f"reading a sealed value timed out: {exc}") from exc

    return Opener(identity.sealing_key(bus.signer.key), get)
