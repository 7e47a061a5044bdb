"""A Slack click as a decision (issue 20): the gate checks Slack's signature over the request
body the gateway kept verbatim (slack_sdk's SignatureVerifier, 5 minutes against the gate's
clock), then reads the payload and compares it with the decision recorded and the approval:
the Slack user is the enrolled key, the button or dialog names this approval, its calls and
expiry, and the decision and reason are the person's. The attacks come first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.approval import ApprovalCall, ApprovalDecided, ApprovalRequested
from schemas.approvers import ApproverEnrolled, ApproverRevoked, Signature
from schemas.base import Target
from services.runtime import approvers
from tests.slack_fake import block_actions, form_body, sign, view_submission

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM, USER = "T0INTERLOCK", "U0ALICE"
KEY_ID = f"slack:{TEAM}/{USER}"
NOW = 1_800_000_000.0
ADMIN = Ed25519PrivateKey.generate()


def _admins() -> dict[str, Any]:
    pub = ADMIN.public_key()
    return {approvers.fingerprint_of("ed25519", approvers.raw_public(pub)): pub}


def _registry(secret: str | None = SECRET, now: float = NOW) -> approvers.Registry:
    reg = approvers.Registry(_admins(), slack_secret=secret, clock=lambda: now)
    key = approvers.slack_key(TEAM, USER, label="alice in Slack")
    reg.apply(ApproverEnrolled(
        session_id="approvers", principal="alice", credential=key,
        admin=approvers.sign_statement(approvers.enrol_statement("alice", key), ADMIN)))
    assert not reg.refused, reg.refused
    return reg


def _request(key_signed_only: bool = False) -> ApprovalRequested:
    return ApprovalRequested(
        session_id="s_1", approval_id="a_1",
        calls=(ApprovalCall(call_id="c_1", tool="scale", args={"replicas": 5}, call_hash="h1",
                            target=Target(namespace="shop", kind="deployment", name="web")),),
        expires_at=datetime(2027, 1, 15, 8, 0, tzinfo=UTC), key_signed_only=key_signed_only)


def _value(req: ApprovalRequested, **over: Any) -> str:
    doc = {"approval_id": req.approval_id, "call_hashes": [c.call_hash for c in req.calls],
           "expires_at": req.expires_at.isoformat(), **over}
    return json.dumps(doc)


def _decided(req: ApprovalRequested, payload: dict[str, Any], *, decision: str = "approve",
             reason: str = "", approver: str = "alice", ts: int = int(NOW),
             secret: str = SECRET, **kw: Any) -> ApprovalDecided:
    body = form_body(payload)
    return ApprovalDecided(
        session_id=req.session_id, approval_id=req.approval_id, decision=decision,  # type: ignore[arg-type]
        reason=reason, approver=approver, actor="gateway",
        signed=Signature(statement=body.decode(), key_id=KEY_ID,
                         signature=sign(secret, body, ts), timestamp=str(ts)), **kw)


def _click(req: ApprovalRequested, action: str = "interlock.approve", user: str = USER,
           **over: Any) -> dict[str, Any]:
    return block_actions(action_id=action, value=_value(req, **over), team=TEAM, user=user,
                         response_url="https://hooks.slack.com/actions/T/1/x")


def _rejected(reg: approvers.Registry, req: ApprovalRequested, d: ApprovalDecided) -> str:
    with pytest.raises(approvers.Rejected) as exc:
        reg.verify_decision(req, d)
    return str(exc.value)


# -- the attacks -----------------------------------------------------------------------------

def test_a_forged_signature_does_not_count() -> None:
    req = _request()
    forged = _decided(req, _click(req), secret="not-the-signing-secret")
    assert "does not verify" in _rejected(_registry(), req, forged)
    # The body changed after Slack signed it (the gateway edited the approval it names).
    real = _decided(req, _click(req))
    assert real.signed is not None
    edited = msgspec.structs.replace(real, signed=msgspec.structs.replace(
        real.signed, statement=real.signed.statement.replace("approve", "approvE")))
    assert "does not verify" in _rejected(_registry(), req, edited)
    # A timestamp moved to look fresh no longer matches what Slack signed.
    moved = msgspec.structs.replace(real, signed=msgspec.structs.replace(
        real.signed, timestamp=str(int(NOW) + 1)))
    assert "does not verify" in _rejected(_registry(), req, moved)


def test_a_stale_request_does_not_count() -> None:
    req = _request()
    old = _decided(req, _click(req), ts=int(NOW) - 301)
    assert "more than 5 minutes" in _rejected(_registry(), req, old)
    ahead = _decided(req, _click(req), ts=int(NOW) + 301)
    assert "more than 5 minutes" in _rejected(_registry(), req, ahead)
    assert _registry().verify_decision(req, _decided(req, _click(req), ts=int(NOW) - 299))
    # Re-checked later (a gate folding decisions it already judged), the window is not applied.
    later = _registry(now=NOW + 3600)
    assert later.verify_decision(req, _decided(req, _click(req)), fresh=False).kind == "slack"


def test_a_replayed_request_is_named() -> None:
    req = _request()
    first = _decided(req, _click(req))
    again = msgspec.structs.replace(first, event_id="e_again")
    other = _decided(req, _click(req))
    assert approvers.replayed([first], first) is None  # itself, redelivered
    assert approvers.replayed([first, again], first) is None
    why = approvers.replayed([first, other, again], again)
    assert why is not None
    assert "already used" in why
    assert approvers.replayed([first, other], other) is None


def test_the_click_must_be_this_decision_by_this_slack_user() -> None:
    req, reg = _request(), _registry()
    # Another Slack user's click presented as alice's key.
    d = _decided(req, _click(req, user="U0MALLORY"))
    assert "Slack user" in _rejected(reg, req, d)
    # The button of another approval, other calls, another expiry.
    for over in ({"approval_id": "a_2"}, {"call_hashes": ["h2"]},
                 {"expires_at": (req.expires_at + timedelta(hours=1)).isoformat()}):
        assert "another" in _rejected(reg, req, _decided(req, _click(req, **over)))
    # An approve click recorded as a denial, or with a reason or edits it did not carry.
    assert "decision" in _rejected(reg, req, _decided(req, _click(req), decision="deny",
                                                        reason="x"))
    assert "reason" in _rejected(reg, req, _decided(req, _click(req), reason="because"))
    assert "edit" in _rejected(reg, req, _decided(req, _click(req), args={"replicas": 9},
                                                  edits={"replicas": 9}))
    # A click on Deny only opens the dialog: it decides nothing.
    assert "dialog" in _rejected(reg, req, _decided(req, _click(req, "interlock.deny"),
                                                    decision="deny", reason="x"))
    assert "not an Interlock" in _rejected(reg, req, _decided(req, _click(req, "interlock.open")))
    # A Slack user who is not enrolled, or is enrolled for someone else.
    assert "not enrolled" in _rejected(reg, req, msgspec.structs.replace(
        _decided(req, _click(req)), signed=msgspec.structs.replace(
            _decided(req, _click(req)).signed, key_id="slack:T0INTERLOCK/U0BOB")))
    assert "enrolled for alice" in _rejected(reg, req, _decided(req, _click(req), approver="bob"))


def test_a_revoked_slack_key_counts_no_more() -> None:
    req, reg = _request(), _registry()
    reg.apply(ApproverRevoked(
        session_id="approvers", principal="alice", key_id=KEY_ID,
        admin=approvers.sign_statement(approvers.revoke_statement("alice", KEY_ID), ADMIN)))
    assert "revoked" in _rejected(reg, req, _decided(req, _click(req)))


def test_a_card_for_key_signed_namespaces_refuses_slack() -> None:
    req = _request(key_signed_only=True)
    why = _rejected(_registry(), req, _decided(req, _click(req)))
    assert "passkey" in why
    assert "interlock approve" in why


def test_without_the_secret_the_gate_refuses_and_the_audit_says_unchecked() -> None:
    req = _request()
    with pytest.raises(approvers.Unchecked) as exc:
        _registry(secret=None).verify_decision(req, _decided(req, _click(req)))
    assert "cannot check Slack signatures here" in str(exc.value)
    assert isinstance(exc.value, approvers.Rejected)  # the gate counts it as a refusal


def test_a_slack_enrolment_binds_the_slack_user() -> None:
    key = approvers.slack_key(TEAM, USER)
    assert key.key_id == approvers.fingerprint_of("slack", f"{TEAM}/{USER}".encode()) == KEY_ID
    assert key.public_key == ""
    stmt = approvers.sign_statement(approvers.enrol_statement("alice", key), ADMIN)
    # The admin's enrolment of U0ALICE replayed for another Slack user does not count.
    reg = approvers.Registry(_admins())
    reg.apply(ApproverEnrolled(session_id="approvers", principal="alice",
                               credential=approvers.slack_key(TEAM, "U0MALLORY"), admin=stmt))
    assert reg.refused
    assert "another enrolment" in reg.refused[0][1]
    bad = approvers.Registry(_admins())
    for k in (msgspec.structs.replace(key, key_id="slack:T/U/../x"),
              msgspec.structs.replace(key, public_key="AAAA")):
        bad.apply(ApproverEnrolled(
            session_id="approvers", principal="alice", credential=k,
            admin=approvers.sign_statement(approvers.enrol_statement("alice", k), ADMIN)))
    assert len(bad.refused) == 2
    assert not bad.keys


# -- what counts -------------------------------------------------------------------------------

def test_a_valid_approve_click_counts() -> None:
    req = _request()
    key = _registry().verify_decision(req, _decided(req, _click(req)))
    assert key.key_id == KEY_ID
    assert key.kind == "slack"


def test_the_deny_dialog_is_the_denial_with_its_reason() -> None:
    req, reg = _request(), _registry()
    sub = view_submission(private_metadata=_value(req), reason="not during the freeze",
                          team=TEAM, user=USER)
    assert reg.verify_decision(req, _decided(req, sub, decision="deny",
                                             reason="not during the freeze"))
    assert "reason" in _rejected(reg, req, _decided(req, sub, decision="deny",
                                                    reason="something else"))
    assert "decision" in _rejected(reg, req, _decided(req, sub, decision="approve",
                                                      reason="not during the freeze"))
    other = view_submission(private_metadata=_value(req), reason="x", callback_id="other",
                            team=TEAM, user=USER)
    assert "not an Interlock" in _rejected(reg, req, _decided(req, other, decision="deny",
                                                              reason="x"))


def test_the_payload_is_parsed_strictly() -> None:
    p = approvers.slack_payload("payload=" + "%7B%7D")
    assert p == {}
    for bad in ("", "payload=1", "payload=%7B&payload=%7B%7D", "x=1", "payload=%5B%5D",
                "payload=%7Bnot-json"):
        with pytest.raises(approvers.Rejected):
            approvers.slack_payload(bad)
    body = form_body(view_submission(private_metadata="{}", reason="r")).decode()
    click = approvers.slack_click(approvers.slack_payload(body))
    assert (click.team, click.user, click.action, click.reason) == (
        "T0INTERLOCK", "U0APPROVER", "interlock.deny", "r")
    assert click.kind == "view_submission"


def test_the_cli_enrols_a_slack_user_as_the_registry_reads_it() -> None:
    from clients import keys as client_keys

    cred = client_keys.slack_credential(f"{TEAM}/{USER}", "alice in Slack")
    key = msgspec.convert(cred, approvers.ApproverKey)
    assert key == approvers.slack_key(TEAM, USER, label="alice in Slack")
    # The statement the admin signs in the CLI is the one the registry checks.
    stmt = client_keys.enrol_statement("alice", cred)
    assert stmt == approvers.enrol_statement("alice", key)
    reg = approvers.Registry(_admins())
    reg.apply(ApproverEnrolled(session_id="approvers", principal="alice", credential=key,
                               admin=approvers.sign_statement(stmt, ADMIN)))
    assert reg.slack_keys() == {KEY_ID: "alice"}
    for bad in ("T1", "t0/u0", "T0/U0/x", "T0 /U0", ""):
        with pytest.raises(client_keys.KeyProblem):
            client_keys.slack_credential(bad)


# -- the audit -----------------------------------------------------------------------------------

def test_the_audit_says_who_clicked_in_slack_and_who_checked_it(tmp_path: Any) -> None:
    from schemas import subjects as S
    from services.runtime import audit_signers, identity
    from tests.unit.test_audit_signers import Log

    identity.provision_keys(tmp_path, S.SERVICES)
    log = Log(tmp_path)
    key = approvers.slack_key(TEAM, USER)
    log.append(ApproverEnrolled(
        session_id="approvers", principal="alice", credential=key,
        admin=approvers.sign_statement(approvers.enrol_statement("alice", key), ADMIN)))
    req = _request()
    at = datetime.fromtimestamp(NOW + 2, UTC)  # recorded 2 s after Slack signed it
    d = _decided(req, _click(req), occurred_at=at)
    blind = audit_signers.Approvers(_admins(), log.of("approvers"))
    who = blind.check(100, req, d)
    assert who.verdict == audit_signers.GATE_CHECKED
    assert who.kind == "slack"
    assert who.text() == ("approved in Slack by alice (slack:T0INTERLOCK/U0ALICE), Slack "
                          "signature checked by the gate")
    # Without the secret, all the rest is still checked: a click recorded as something else.
    assert blind.check(100, req, _decided(req, _click(req), decision="deny", reason="x",
                                          occurred_at=at)).verdict == "rejected"
    sighted = audit_signers.Approvers(_admins(), log.of("approvers"), slack_secret=SECRET)
    assert sighted.check(100, req, d).text().endswith("Slack signature re-checked")
    forged = _decided(req, _click(req), secret="guess", occurred_at=at)
    assert sighted.check(100, req, forged).verdict == "rejected"
    late = _decided(req, _click(req), occurred_at=datetime.fromtimestamp(NOW + 900, UTC))
    assert "more than 5 minutes" in sighted.check(100, req, late).reason
