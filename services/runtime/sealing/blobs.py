"""References, fingerprints and blobs: what stands for a secret value in the log, and the
sealed blob only the executor opens (the package's docstring says why each piece is so)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from schemas import subjects as S
from services.runtime.errors import InterlockError, RetryableError

REF = re.compile(r"sealed:(gateway|planner):([0-9a-f]{32}):([0-9a-f]{64})")
SHOWN_DIGITS = 12
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_INFO = b"interlock.sealed.v1\x00"
_FP = b"interlock.fingerprint.v1\x00"


class SealError(InterlockError):
    """A reference that cannot be resolved to the value it was approved with."""


class SealingUnavailable(RetryableError):
    """No executor key to seal to, or the SEALED stream cannot be written: nothing is stored."""


class Unsealable(ValueError):
    """Input that may hold a secret the sealer cannot find exactly (an unreadable manifest)."""



@dataclass(frozen=True)
class Ref:
    sealer: str
    blob_id: str
    fingerprint: str

    @property
    def text(self) -> str:
        return f"sealed:{self.sealer}:{self.blob_id}:{self.fingerprint}"

    @property
    def shown(self) -> str:
        """What a card says in place of the value: that a value is set, and which one."""
        return f"<sealed value, fingerprint {self.fingerprint[:SHOWN_DIGITS]}…>"

    @classmethod
    def parse(cls, text: Any) -> Ref | None:
        m = REF.fullmatch(text) if isinstance(text, str) else None
        return cls(m.group(1), m.group(2), m.group(3)) if m else None


def show_refs(text: str) -> str:
    """Text with every reference written as a card shows it (the fingerprint's first digits)."""
    return REF.sub(lambda m: Ref(m.group(1), m.group(2), m.group(3)).shown, text)


def fingerprint(key: bytes, value: str) -> str:
    return hmac.new(key, _FP + value.encode(), hashlib.sha256).hexdigest()


def subject(sealer: str, session_id: str, blob_id: str) -> str:
    return S.sealed_subject(sealer, session_id, blob_id)


def _info(sealer: str, session_id: str, blob_id: str) -> bytes:
    return _INFO + f"{sealer}\x00{session_id}\x00{blob_id}".encode()


def seal(value: str, recipient: X25519PublicKey, sealer: str, session_id: str) -> tuple[Ref, bytes]:
    """The reference that stands for `value` in the log, and the blob only the executor opens."""
    key = secrets.token_bytes(32)
    blob_id = secrets.token_hex(16)
    plain = json.dumps({"v": 1, "value": value, "key": base64.b64encode(key).decode()}).encode()
    blob = _SUITE.encrypt(plain, recipient, info=_info(sealer, session_id, blob_id))
    return Ref(sealer, blob_id, fingerprint(key, value)), blob


def open_blob(ref: Ref, blob: bytes, private: X25519PrivateKey, session_id: str) -> str:
    """The value a blob holds, if it is this reference's blob, in this session, and its value
    has the approved fingerprint; else SealError."""
    try:
        plain = _SUITE.decrypt(blob, private, info=_info(ref.sealer, session_id, ref.blob_id))
        doc = json.loads(plain)
        key = base64.b64decode(doc["key"], validate=True)
        value = doc["value"]
    except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SealError(f"the sealed value {ref.fingerprint[:SHOWN_DIGITS]} does not open with "
                        "the executor's key for this session and reference") from exc
    if not isinstance(value, str) or not hmac.compare_digest(fingerprint(key, value),
                                                             ref.fingerprint):
        raise SealError(f"the sealed value does not match the approved fingerprint "
                        f"{ref.fingerprint[:SHOWN_DIGITS]}: it was replaced after approval")
    return value



# Shorter values are not replaced in free text: "app" as a Secret's user would mangle every
# "apps/v1" of a result, and a value that short is no credential worth a fingerprint.
MIN_SCRUBBED = 4


def scrub_text(text: str, refs: dict[str, Ref]) -> str:
    """Text with each sealed value (and its base64) replaced by what a card shows for it."""
    for value, ref in sorted(refs.items(), key=lambda kv: -len(kv[0])):
        if len(value) < MIN_SCRUBBED:
            continue
        for form in forms(value):
            text = text.replace(form, ref.shown)
    return text


def forms(value: str) -> tuple[str, ...]:
    return (value, base64.b64encode(value.encode()).decode()) if value else ()

