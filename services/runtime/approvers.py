"""The approver registry and the verification of people's signatures (issue 18).

The gate holds the registry: it folds `approver.enrolled` / `approver.revoked` from the log,
believing only statements signed by an admin key it was given at provisioning (the trust roots,
`INTERLOCK_ADMIN_KEYS_FILE`: OpenSSH or PEM Ed25519 public keys, one per line or block). A
decision counts only with a valid signature, by a key enrolled for its approver and not revoked,
over a `decision/v1` statement naming exactly that approval, session, calls, expiry, decision,
reason and edits. The audit folds the same registry offline to re-check every decision.

Ed25519 via `cryptography`; passkeys (WebAuthn assertions and registrations) via the `webauthn`
library. Nothing here is hand-rolled crypto: only the comparison of what was signed with what
the log says.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.approval import ApprovalDecided, ApprovalRequested
from schemas.approvers import (
    DECISION_V1,
    ENROL_V1,
    REGISTER_V1,
    REVOKE_V1,
    ApproverEnrolled,
    ApproverKey,
    ApproverRevoked,
    Signature,
)
from schemas.base import Event
from services.runtime.errors import ConfigError


class Rejected(Exception):
    """A signature or statement that does not count, with the reason a person reads."""


# -- keys and fingerprints ---------------------------------------------------------------------

def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (browsers send base64url without padding)."""
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_")
                                        + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise Rejected(f"not base64: {exc}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fingerprint_of(kind: str, public_key: bytes) -> str:
    """`SHA256:…` as `ssh-keygen -l` prints it for an Ed25519 key (over the OpenSSH key blob);
    over the COSE key for a passkey."""
    blob = _ssh_blob(public_key) if kind == "ed25519" else public_key
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _ssh_blob(raw: bytes) -> bytes:
    name = b"ssh-ed25519"
    return len(name).to_bytes(4, "big") + name + len(raw).to_bytes(4, "big") + raw


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_key(public: Ed25519PublicKey, label: str = "") -> ApproverKey:
    raw = raw_public(public)
    return ApproverKey(key_id=fingerprint_of("ed25519", raw), kind="ed25519",
                       public_key=_b64(raw), label=label)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A person's Ed25519 key: PEM (PKCS#8, `interlock keys init`) or OpenSSH (`ssh-keygen -t
    ed25519`, unencrypted)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the key {path}: {exc}") from exc
    try:
        key: object = (serialization.load_ssh_private_key(data, password=None)
                       if b"OPENSSH PRIVATE KEY" in data
                       else serialization.load_pem_private_key(data, password=None))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load the key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def public_line(key: Ed25519PublicKey, comment: str = "") -> str:
    """The OpenSSH one-line form (`ssh-ed25519 AAAA… comment`), as the trust roots file holds."""
    line = key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def load_admin_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The trust roots: admin public keys by fingerprint. OpenSSH lines or PEM blocks."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the admin keys {path}: {exc}") from exc
    keys: dict[str, Ed25519PublicKey] = {}
    blocks = [b + "-----END PUBLIC KEY-----" for b in text.split("-----END PUBLIC KEY-----")
              if "-----BEGIN PUBLIC KEY-----" in b]
    lines = [ln for ln in text.splitlines() if ln.startswith("ssh-ed25519 ")]
    for item in blocks + lines:
        try:
            key: object = (
                serialization.load_ssh_public_key(item.encode()) if item.startswith("ssh-")
                else serialization.load_pem_public_key(item[item.index("-----BEGIN"):].encode()))
        except ValueError as exc:
            raise ConfigError(f"{path}: not a public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: admin keys must be Ed25519")
        keys[fingerprint_of("ed25519", raw_public(key))] = key
    if not keys:
        raise ConfigError(f"{path} holds no admin public key")
    return keys


# -- signing (what a CLI, `interlock up` and the tests do) -------------------------------------

def sign_statement(statement: str, key: Ed25519PrivateKey) -> Signature:
    return Signature(statement=statement,
                     key_id=fingerprint_of("ed25519", raw_public(key.public_key())),
                     signature=_b64(key.sign(statement.encode())))


def enrol_statement(principal: str, key: ApproverKey) -> str:
    return json.dumps({"interlock": ENROL_V1, "principal": principal, "key": _key_fields(key)})


def revoke_statement(principal: str, key_id: str) -> str:
    return json.dumps({"interlock": REVOKE_V1, "principal": principal, "key_id": key_id})


def decision_statement(request: ApprovalRequested, *, approver: str, decision: str,
                       reason: str = "", edits: dict[str, Any] | None = None) -> str:
    """The statement an approver signs for `request` (what a client builds from the card)."""
    return json.dumps({
        "interlock": DECISION_V1, "approval_id": request.approval_id,
        "session_id": request.session_id, "approver": approver, "decision": decision,
        "reason": reason, "call_hashes": [c.call_hash for c in request.calls],
        "expires_at": request.expires_at.isoformat(), "edits": edits,
    })


def _key_fields(key: ApproverKey) -> dict[str, str]:
    """What an admin's enrolment binds: the key itself and, for a passkey, where it signs."""
    return {"kind": key.kind, "public_key": key.public_key, "credential_id": key.credential_id,
            "rp_id": key.rp_id, "origin": key.origin}


# -- verification ------------------------------------------------------------------------------

def _statement(sig: Signature, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(sig.statement)
    except ValueError as exc:
        raise Rejected(f"the signed statement is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("interlock") != kind:
        raise Rejected(f"the signed statement is not a {kind} statement")
    return doc


def _verify_ed25519(public: Ed25519PublicKey, sig: Signature) -> None:
    try:
        public.verify(_b64decode(sig.signature), sig.statement.encode())
    except InvalidSignature as exc:
        raise Rejected(f"the signature by {sig.key_id} does not verify") from exc


def _verify_passkey(key: ApproverKey, sig: Signature) -> None:
    from webauthn import verify_authentication_response
    from webauthn.helpers import bytes_to_base64url
    from webauthn.helpers.exceptions import WebAuthnException

    if not (sig.authenticator_data and sig.client_data_json):
        raise Rejected("a passkey signature needs its authenticator data and client data")
    if _b64decode(sig.credential_id or key.credential_id) != _b64decode(key.credential_id):
        raise Rejected(f"the assertion is by another passkey than {key.key_id}")
    cred_id = bytes_to_base64url(_b64decode(key.credential_id))
    credential = {
        "id": cred_id, "rawId": cred_id, "type": "public-key",
        "response": {
            "authenticatorData": bytes_to_base64url(_b64decode(sig.authenticator_data)),
            "clientDataJSON": bytes_to_base64url(_b64decode(sig.client_data_json)),
            "signature": bytes_to_base64url(_b64decode(sig.signature)),
        },
    }
    try:
        verify_authentication_response(
            credential=credential, expected_challenge=challenge_of(sig.statement),
            expected_rp_id=key.rp_id, expected_origin=key.origin,
            credential_public_key=_b64decode(key.public_key), credential_current_sign_count=0)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise Rejected(f"the passkey assertion by {key.key_id} does not verify: {exc}") from exc


def challenge_of(statement: str) -> bytes:
    """The WebAuthn challenge a passkey signs for a statement."""
    return hashlib.sha256(statement.encode()).digest()


def registration_challenge(principal: str, nonce: str) -> bytes:
    """The challenge of a passkey registration: the gateway's nonce, bound to the principal."""
    return hashlib.sha256(f"{REGISTER_V1}\n{principal}\n{nonce}".encode()).digest()


def verify_registration(principal: str, nonce: str, registration: str, rp_id: str,
                        origin: str, label: str = "") -> ApproverKey:
    """The passkey a WebAuthn registration response creates (checked with the `webauthn`
    library against the challenge derived from `nonce`, the relying party and the origin)."""
    from webauthn import verify_registration_response
    from webauthn.helpers import bytes_to_base64url
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        verified = verify_registration_response(
            credential=registration, expected_challenge=registration_challenge(principal, nonce),
            expected_rp_id=rp_id, expected_origin=origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise Rejected(f"the passkey registration does not verify: {exc}") from exc
    cose = verified.credential_public_key
    return ApproverKey(key_id=fingerprint_of("passkey", cose), kind="passkey",
                       public_key=_b64(cose),
                       credential_id=bytes_to_base64url(verified.credential_id),
                       rp_id=rp_id, origin=origin, label=label)


@dataclass(frozen=True)
class Enrolled:
    principal: str
    key: ApproverKey
    by: str  # the admin key's fingerprint
    at: datetime


@dataclass
class Registry:
    """Who may approve, with which keys: folded from the log, trusting only the admin keys."""

    admins: dict[str, Ed25519PublicKey]
    keys: dict[str, Enrolled] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)  # key id → the admin who revoked it
    # Registry events that did not verify, with why (the audit shows them).
    refused: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        try:
            if isinstance(event, ApproverEnrolled):
                self._enrol(event)
            elif isinstance(event, ApproverRevoked):
                self._revoke(event)
        except Rejected as exc:
            self.refused.append((event.event_id, str(exc)))

    def fold(self, events: Iterable[Event]) -> Registry:
        for ev in events:
            self.apply(ev)
        return self

    def _admin(self, sig: Signature, kind: str) -> dict[str, Any]:
        admin = self.admins.get(sig.key_id)
        if admin is None:
            raise Rejected(f"{sig.key_id} is not an admin key")
        _verify_ed25519(admin, sig)
        return _statement(sig, kind)

    def _enrol(self, ev: ApproverEnrolled) -> None:
        doc = self._admin(ev.admin, ENROL_V1)
        if doc.get("principal") != ev.principal or doc.get("key") != _key_fields(ev.credential):
            raise Rejected("the admin signed another enrolment than this one")
        key_id = fingerprint_of(ev.credential.kind, _b64decode(ev.credential.public_key))
        if key_id != ev.credential.key_id:
            raise Rejected(f"the key's fingerprint is {key_id}, not {ev.credential.key_id}")
        held = self.keys.get(key_id)
        if held is not None and held.principal != ev.principal:
            raise Rejected(f"{key_id} is already enrolled for {held.principal}")
        if held is None:
            self.keys[key_id] = Enrolled(ev.principal, ev.credential, ev.admin.key_id,
                                         ev.occurred_at)

    def _revoke(self, ev: ApproverRevoked) -> None:
        doc = self._admin(ev.admin, REVOKE_V1)
        if doc.get("principal") != ev.principal or doc.get("key_id") != ev.key_id:
            raise Rejected("the admin signed another revocation than this one")
        self.revoked[ev.key_id] = ev.admin.key_id

    def active(self, principal: str | None = None) -> list[Enrolled]:
        return [e for k, e in self.keys.items() if k not in self.revoked
                and (principal is None or e.principal == principal)]

    def key_for(self, principal: str, key_id: str) -> ApproverKey:
        """The enrolled, unrevoked key `key_id` of `principal`, or Rejected saying why not."""
        if key_id in self.revoked:
            raise Rejected(f"key {key_id} was revoked")
        held = self.keys.get(key_id)
        if held is None:
            raise Rejected(f"key {key_id} is not enrolled")
        if held.principal != principal:
            raise Rejected(f"key {key_id} is enrolled for {held.principal}, not {principal}")
        return held.key

    def verify_decision(self, request: ApprovalRequested, d: ApprovalDecided) -> ApproverKey:
        """The key that signed decision `d` of `request`, or Rejected saying why it does not
        count: unsigned, a key not enrolled for its approver (or revoked), a signature that does
        not verify, or a statement about anything else than exactly this decision."""
        sig = d.signed
        if sig is None:
            raise Rejected(f"not signed by {d.approver}: a decision counts only with the "
                           "approver's own signature (a passkey, or `interlock keys`)")
        key = self.key_for(d.approver, sig.key_id)
        if key.kind == "ed25519":
            _verify_ed25519(Ed25519PublicKey.from_public_bytes(_b64decode(key.public_key)),
                            sig)
        else:
            _verify_passkey(key, sig)
        doc = _statement(sig, DECISION_V1)
        _same(doc, "approval_id", request.approval_id, "approval")
        _same(doc, "session_id", request.session_id, "session")
        _same(doc, "approver", d.approver, "approver")
        _same(doc, "decision", d.decision, "decision")
        _same(doc, "reason", d.reason, "reason")
        _same(doc, "call_hashes", [c.call_hash for c in request.calls], "calls")
        _same(doc, "edits", d.edits, "modified args")
        try:
            expires = datetime.fromisoformat(str(doc.get("expires_at")))
        except ValueError as exc:
            raise Rejected("the signed expiry is not a time") from exc
        if expires != request.expires_at:
            raise Rejected("the signature is for an approval with another expiry")
        return key


def _same(doc: dict[str, Any], name: str, expected: object, what: str) -> None:
    if doc.get(name) != expected:
        raise Rejected(f"the signature is for another {what} than this decision's")
