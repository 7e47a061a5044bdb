"""The approver registry and the signatures of people (issue 18).

A decision counts only when the approver signed it with a key enrolled for them: an Ed25519 key
(`interlock keys`) or a passkey (WebAuthn, in the Command Center). Who holds which key is an
admin act recorded in the log: `approver.enrolled` and `approver.revoked` carry a statement
signed by an admin key the gate was given at provisioning (never a service's key). The gateway
carries these events (it is where people reach Interlock) but cannot make one: the gate, and the
audit, fold the registry only from statements whose admin signature verifies.

Every signed statement is a JSON text carried verbatim — the bytes that were signed — which the
verifier parses and compares field by field with the event it came with and the approval it is
for. Nobody has to reproduce anyone else's canonical encoding (a browser, a shell script and the
gate each build or read JSON their own way); the statement formats are documented in
docs/architecture.md ("Decisions signed by people").

Verification itself (Ed25519, WebAuthn assertions) is services/runtime/approvers.py.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from schemas.base import Emitter, Event, LongText, ShortText
from schemas.ids import derived_id

# The registry's events are not any session's: they live under this session id, which no
# `POST /v1/sessions` can create (session ids are `s_…`).
REGISTRY_SESSION = "approvers"

# What each statement says it is ("interlock": …), so a signature over one kind of statement can
# never be presented as another.
DECISION_V1 = "decision/v1"
ENROL_V1 = "enrol/v1"
REVOKE_V1 = "revoke/v1"
# The WebAuthn challenge a passkey registration answers: the gateway's nonce, bound to the
# principal (see services/runtime/approvers.registration_challenge).
REGISTER_V1 = "passkey-registration/v1"

# `slack`: a Slack user (issue 20). Its key id is `slack:<team_id>/<user_id>` and it has no
# public key: Slack signs each interaction request with the app's signing secret (HMAC), which
# only the gate holds, so only the gate (and an audit given the secret) can check it.
KeyKind = Literal["ed25519", "passkey", "slack"]

# A signed statement, bounded so one event can never be huge: a decision statement is small, a
# Slack interaction request (the raw body Slack signed, kept verbatim) is a few kilobytes.
Statement = LongText
_B64 = ShortText


class ApproverKey(msgspec.Struct, frozen=True, kw_only=True):
    """One public key of a person. `key_id` is its fingerprint, computed by every verifier from
    `public_key` (never believed as sent): `SHA256:` + unpadded base64 of the SHA-256 of the
    OpenSSH public key blob for Ed25519 (what `ssh-keygen -l` prints), of the COSE key for a
    passkey."""

    key_id: ShortText
    kind: KeyKind
    public_key: _B64  # base64: the raw 32-byte Ed25519 key, or the passkey's COSE key
    credential_id: _B64 = ""  # passkey: its credential id (base64url)
    rp_id: ShortText = ""  # passkey: the relying party (the Command Center's host)
    origin: ShortText = ""  # passkey: the Command Center's origin it was registered on
    label: ShortText = ""  # what the person called it ("laptop", "yubikey")


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    """A person's (or an admin's) signature: the statement exactly as signed, the key that
    signed it and the signature. For a passkey, the authenticator signed its authenticator data
    and client data, whose challenge is the SHA-256 of the statement. For a Slack click, the
    statement is Slack's request body verbatim, `signature` its `X-Slack-Signature` and
    `timestamp` its `X-Slack-Request-Timestamp` (Slack signed `v0:<timestamp>:<body>`)."""

    statement: Statement
    key_id: ShortText
    signature: _B64  # Ed25519: base64; passkey: base64url of the assertion signature
    authenticator_data: _B64 = ""  # passkey only (base64url)
    client_data_json: _B64 = ""  # passkey only (base64url)
    credential_id: _B64 = ""  # passkey only (base64url)
    timestamp: ShortText = ""  # Slack only: X-Slack-Request-Timestamp, as sent


class ApproverEnrolled(Event, frozen=True, kw_only=True, tag="approver.enrolled"):
    """An admin enrolled `key` for `principal`: from now on it may sign that person's decisions.
    Carried by the gateway; counts only if `admin` is a valid signature by an admin key over an
    `enrol/v1` statement naming exactly this principal and key."""

    emitter: ClassVar[Emitter] = "gateway"
    principal: ShortText
    credential: ApproverKey
    admin: Signature

    def key(self) -> str:
        return derived_id("k", self.principal, self.credential.key_id)


class ApproverRevoked(Event, frozen=True, kw_only=True, tag="approver.revoked"):
    """An admin revoked a key: no decision it signs counts from now on, and it can never be
    enrolled again (a replayed enrolment stays revoked)."""

    emitter: ClassVar[Emitter] = "gateway"
    principal: ShortText
    key_id: ShortText
    admin: Signature

    def key(self) -> str:
        return derived_id("r", self.principal, self.key_id)


class PasskeyRegistered(Event, frozen=True, kw_only=True, tag="approver.registered"):
    """A signed-in person registered a passkey in the Command Center. It signs nothing until an
    admin enrols it (`interlock keys enroll --request ID` checks its fingerprint with the
    person): a compromised gateway could register a passkey of its own for anyone."""

    emitter: ClassVar[Emitter] = "gateway"
    principal: ShortText
    credential: ApproverKey
    # The WebAuthn registration response as the browser sent it (JSON), and the gateway's
    # nonce its challenge was derived from: anyone can re-check it with the `webauthn` library.
    registration: ShortText
    nonce: ShortText

    def key(self) -> str:
        return derived_id("p", self.principal, self.credential.key_id)

