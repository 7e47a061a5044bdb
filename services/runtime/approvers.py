"""The approver registry and the verification of people's signatures (issue 18).

The gate holds the registry: it folds `approver.enrolled` / `approver.revoked` from the log,
believing only statements signed by an admin key it was given at provisioning (the trust roots,
`INTERLOCK_ADMIN_KEYS_FILE`: OpenSSH or PEM Ed25519 public keys, one per line or block). A
decision counts only with a valid signature, by a key enrolled for its approver and not revoked,
over a `decision/v1` statement naming exactly that approval, session, calls, expiry, decision,
reason and edits. The audit folds the same registry offline to re-check every decision.

Ed25519 via `cryptography`; passkeys (WebAuthn assertions and registrations) via the `webauthn`
library; Slack clicks (issue 20) via slack_sdk's SignatureVerifier, given Slack's signing secret
(the gate's alone). Nothing here is hand-rolled crypto: only the comparison of what was signed
with what the log says.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from slack_sdk.signature import Clock, SignatureVerifier

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


class Unchecked(Rejected):
    """A signature this reader cannot check (a Slack click, without Slack's signing secret):
    it does not count for the gate; the audit says it was checked by the gate."""


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
    over the COSE key for a passkey. A Slack user has no key: `slack:<team_id>/<user_id>`
    (given as `public_key`, `b"T…/U…"`)."""
    if kind == "slack":
        return "slack:" + public_key.decode(errors="replace")
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
    """What an admin's enrolment binds: the key itself and, for a passkey, where it signs; for
    a Slack user (no key), the Slack user itself."""
    fields = {"kind": key.kind, "public_key": key.public_key,
              "credential_id": key.credential_id, "rp_id": key.rp_id, "origin": key.origin}
    if key.kind == "slack":
        fields["key_id"] = key.key_id
    return fields


def _key_id_of(key: ApproverKey) -> str:
    """The key id an enrolment's key has, computed (never believed as sent): a fingerprint, or
    for a Slack user its `slack:T…/U…` checked for shape."""
    if key.kind == "slack":
        if key.public_key or not SLACK_KEY_ID.fullmatch(key.key_id):
            raise Rejected(f"{key.key_id[:80]!r} is not a Slack user (slack:TEAM_ID/USER_ID, no "
                           "public key)")
        return key.key_id
    return fingerprint_of(key.kind, _b64decode(key.public_key))


# -- Slack (issue 20) ---------------------------------------------------------------------------

# The names the notifier's message, the gateway's dialog and the gate agree on.
APPROVE_ACTION = "interlock.approve"  # the Approve button (block_actions)
DENY_ACTION = "interlock.deny"  # the Deny button: it opens the reason dialog, decides nothing
OPEN_ACTION = "interlock.open"  # the Open button (a link to the card)
DENY_CALLBACK = "interlock.deny"  # the reason dialog (view_submission): the denial
REASON_BLOCK = REASON_ACTION = "reason"
# How far a Slack request's timestamp may be from the gate's clock (Slack's own advice).
SLACK_WINDOW_S = 300
SLACK_ID = r"[A-Z0-9][A-Z0-9_]{1,39}"
SLACK_KEY_ID = re.compile(rf"slack:({SLACK_ID})/({SLACK_ID})")
# How the gate's reasons for a Slack request that is not Slack's begin (the gateway answers
# Slack 401 for these, and posts nothing).
SLACK_FORGED = "the Slack signature does not verify"
SLACK_STALE = "the Slack request is stale"
SLACK_NO_TIMESTAMP = "the Slack request has no valid timestamp"
SLACK_REPLAYED = "this Slack request was already used"
KEY_SIGNED_ONLY = ("this approval requires a passkey or `interlock approve`: where it acts, "
                   "only a decision signed with the approver's own key counts, not a Slack click")


def slack_unauthentic(reason: str) -> bool:
    """Whether the gate refused a Slack decision because its request is not Slack's own (a
    forged or changed signature, a stale timestamp, a replay)."""
    return reason.startswith((SLACK_FORGED, SLACK_STALE, SLACK_NO_TIMESTAMP, SLACK_REPLAYED))


def slack_key(team: str, user: str, label: str = "") -> ApproverKey:
    """The approver key of a Slack user (`interlock keys enroll P --slack T…/U…`)."""
    key = ApproverKey(key_id=fingerprint_of("slack", f"{team}/{user}".encode()), kind="slack",
                      public_key="", label=label)
    _key_id_of(key)
    return key


@dataclass(frozen=True)
class SlackClick:
    """What a Slack interaction payload says a person did: who (team and user), which button
    (`block_actions`: its action_id and value) or dialog (`view_submission`: its callback_id,
    private_metadata and the reason typed), and where Slack takes replies."""

    kind: str
    team: str
    user: str
    action: str
    value: str
    reason: str = ""
    response_url: str = ""
    trigger_id: str = ""

    @property
    def key_id(self) -> str:
        return fingerprint_of("slack", f"{self.team}/{self.user}".encode())


def slack_payload(body: str) -> dict[str, Any]:
    """The JSON payload of Slack's form-encoded interaction body (`payload=<JSON>`, nothing
    else), or Rejected."""
    try:
        form = urllib.parse.parse_qs(body, strict_parsing=True, max_num_fields=4)
    except ValueError as exc:
        raise Rejected(f"not a Slack interaction body: {exc}") from exc
    values = form.get("payload", [])
    if set(form) != {"payload"} or len(values) != 1:
        raise Rejected("not a Slack interaction body: it must hold one `payload` field only")
    try:
        doc = json.loads(values[0])
    except ValueError as exc:
        raise Rejected(f"the Slack payload is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise Rejected("the Slack payload is not a JSON object")
    return doc


def _text(doc: Any, *path: str) -> str:
    for name in path:
        doc = doc.get(name) if isinstance(doc, dict) else None
    return doc if isinstance(doc, str) else ""


def slack_click(payload: dict[str, Any]) -> SlackClick:
    """The click (or dialog submission) a Slack payload describes, or Rejected."""
    kind = _text(payload, "type")
    team = _text(payload, "team", "id") or _text(payload, "user", "team_id")
    user = _text(payload, "user", "id")
    if not team or not user:
        raise Rejected("the Slack payload names no team and user")
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0],
                                                                                dict):
            raise Rejected("a Slack click must carry exactly one action")
        return SlackClick(kind, team, user, _text(actions[0], "action_id"),
                          _text(actions[0], "value"),
                          response_url=_text(payload, "response_url"),
                          trigger_id=_text(payload, "trigger_id"))
    if kind == "view_submission":
        view = payload.get("view")
        return SlackClick(kind, team, user, _text(view, "callback_id"),
                          _text(view, "private_metadata"),
                          reason=_text(view, "state", "values", REASON_BLOCK, REASON_ACTION,
                                       "value"),
                          trigger_id=_text(payload, "trigger_id"))
    raise Rejected(f"not an Interlock decision: a Slack {kind[:40] or 'interaction'}")


class _At(Clock):
    """The clock slack_sdk's SignatureVerifier checks the timestamp against."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


def replayed(decisions: Iterable[ApprovalDecided], d: ApprovalDecided) -> str | None:
    """Why Slack decision `d` is a replay: an earlier decision (in log order) carries the same
    Slack request (its signature). None: it is the first use, or not a Slack decision."""
    sig = d.signed
    if sig is None or not sig.key_id.startswith("slack:"):
        return None
    for e in decisions:
        if e.event_id == d.event_id:
            return None
        if e.signed is not None and e.signed.key_id.startswith("slack:") \
                and e.signed.signature == sig.signature:
            return (f"{SLACK_REPLAYED} (decision {e.event_id}): a replayed request does not "
                    "count")
    return None


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
    # Slack's signing secret (the gate's INTERLOCK_SLACK_SIGNING_SECRET; an auditor's): without
    # it a Slack decision cannot be checked (Unchecked). And the clock its timestamps are
    # checked against (seconds since the epoch).
    slack_secret: str | None = field(default=None, repr=False)
    clock: Callable[[], float] = time.time

    def slack_keys(self) -> dict[str, str]:
        """Enrolled, unrevoked Slack users: key id (`slack:T…/U…`) → principal."""
        return {e.key.key_id: e.principal for e in self.active() if e.key.kind == "slack"}

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
        key_id = _key_id_of(ev.credential)
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

    def verify_decision(self, request: ApprovalRequested, d: ApprovalDecided, *,
                        now: float | None = None, fresh: bool = True) -> ApproverKey:
        """The key that signed decision `d` of `request`, or Rejected saying why it does not
        count: unsigned, a key not enrolled for its approver (or revoked), a signature that does
        not verify, or a statement about anything else than exactly this decision.

        A Slack click's timestamp must be within 5 minutes of `now` (default: the registry's
        clock) when `fresh`; a reader re-checking a decision it already judged fresh (the gate
        folding an approval's earlier decisions) passes `fresh=False`."""
        sig = d.signed
        if sig is None:
            raise Rejected(f"not signed by {d.approver}: a decision counts only with the "
                           "approver's own signature (a passkey, or `interlock keys`)")
        if sig.key_id.startswith("slack:") and self.slack_secret:
            # Slack's signature first: nothing else about a forged request is worth saying.
            self._slack_signature(sig, self.clock() if now is None else now, fresh)
        key = self.key_for(d.approver, sig.key_id)
        if key.kind == "slack":
            self._verify_slack(request, d, sig)
            return key
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
        _expires(doc, request)
        return key

    def check_slack_request(self, sig: Signature, *, now: float | None = None,
                            fresh: bool = True) -> None:
        """Whether a Slack decision's request is Slack's own (its signature and timestamp),
        before anything else is said of it; Unchecked without the signing secret."""
        if not self.slack_secret:
            raise Unchecked("cannot check Slack signatures here: Slack's signing secret "
                            "(INTERLOCK_SLACK_SIGNING_SECRET) was not given")
        self._slack_signature(sig, self.clock() if now is None else now, fresh)

    def _slack_signature(self, sig: Signature, now: float, fresh: bool) -> None:
        """Slack's signature over the request body, checked with slack_sdk's
        SignatureVerifier, and (when `fresh`) its timestamp within 5 minutes of `now`."""
        assert self.slack_secret
        stamp = sig.timestamp
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise Rejected(f"{SLACK_NO_TIMESTAMP}: it cannot be checked")
        drift = abs(now - int(stamp))
        if fresh and drift > SLACK_WINDOW_S:
            raise Rejected(f"{SLACK_STALE}: signed {int(drift)} s from the gate's clock, more "
                           "than 5 minutes (a replayed request, or a clock far off)")
        verifier = SignatureVerifier(self.slack_secret, clock=_At(now if fresh else int(stamp)))
        if not verifier.is_valid(body=sig.statement, timestamp=stamp, signature=sig.signature):
            raise Rejected(f"{SLACK_FORGED}: Slack did not send this request, or it was changed "
                           "after Slack signed it")

    def _verify_slack(self, request: ApprovalRequested, d: ApprovalDecided,
                      sig: Signature) -> None:
        """A Slack click (whose signature holds, if the secret is here): the card takes Slack
        decisions, and the payload is exactly this decision (who, which button or dialog, this
        approval's calls and expiry, the decision and reason) without edits. Without the
        secret, Unchecked once all of that holds."""
        if request.key_signed_only:
            raise Rejected(KEY_SIGNED_ONLY)
        click = slack_click(slack_payload(sig.statement))
        if click.key_id != sig.key_id:
            raise Rejected(f"the Slack request is by Slack user {click.team}/{click.user}, "
                           f"not {sig.key_id}")
        if click.kind == "block_actions" and click.action == APPROVE_ACTION:
            decision, reason = "approve", ""
        elif click.kind == "block_actions" and click.action == DENY_ACTION:
            raise Rejected("a click on Deny opens the reason dialog; it is not a decision")
        elif click.kind == "view_submission" and click.action == DENY_CALLBACK:
            decision, reason = "deny", click.reason
        else:
            raise Rejected(f"not an Interlock decision: a Slack {click.kind} "
                           f"{click.action[:60]!r}")
        if d.decision != decision:
            raise Rejected(f"the Slack request is a {decision} decision, not this decision's "
                           f"{d.decision}")
        if d.reason != reason:
            raise Rejected("the Slack request's reason is not this decision's")
        if d.args is not None or d.edits is not None:
            raise Rejected("a Slack click cannot edit the call: modified args need a passkey or "
                           "`interlock approve --args`")
        try:
            doc = json.loads(click.value)
        except ValueError as exc:
            raise Rejected("the Slack button names no approval") from exc
        if not isinstance(doc, dict):
            raise Rejected("the Slack button names no approval")
        _same(doc, "approval_id", request.approval_id, "approval")
        _same(doc, "call_hashes", [c.call_hash for c in request.calls], "calls")
        _expires(doc, request)
        if not self.slack_secret:
            # Everything else holds; only Slack's signature is left, which needs the secret.
            raise Unchecked("cannot check Slack signatures here: Slack's signing secret "
                            "(INTERLOCK_SLACK_SIGNING_SECRET) was not given")


def _expires(doc: dict[str, Any], request: ApprovalRequested) -> None:
    try:
        expires = datetime.fromisoformat(str(doc.get("expires_at")))
    except ValueError as exc:
        raise Rejected("the signed expiry is not a time") from exc
    if expires.tzinfo is None or expires != request.expires_at:
        raise Rejected("the signature is for an approval with another expiry")


def _same(doc: dict[str, Any], name: str, expected: object, what: str) -> None:
    if doc.get(name) != expected:
        raise Rejected(f"the signature is for another {what} than this decision's")
