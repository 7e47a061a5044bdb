"""The audit timeline says in words what each event means, verification included; the audit
verifies grants of both versions."""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import catalogue, chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
)
from schemas.base import Target
from schemas.execution import ToolVerified
from services.runtime import signing
from services.runtime.audit import AuditReport, audit, describe


def test_a_verification_is_described_not_just_named() -> None:
    ok = ToolVerified(session_id="s_1", call_id="c_1", tool="scale", outcome="verified",
                      check="rollout status of deployment/web", detail="5/5 ready")
    assert describe(ok) == ("executor checked c_1 (rollout status of deployment/web): "
                            "verified — 5/5 ready")
    bad = ToolVerified(session_id="s_1", call_id="c_2", tool="set_image", outcome="failed",
                       check="rollout status of deployment/api", detail="CrashLoopBackOff")
    assert describe(bad) == ("executor checked c_2 (rollout status of deployment/api): "
                             "failing — CrashLoopBackOff")
    assert describe(ToolVerified(session_id="s_1", call_id="c_3", tool="label",
                                 outcome="skipped")) == "executor checked c_3: nothing to wait for"


def _granted_session(grant_fields: dict[str, object]) -> list[chain.Link]:
    from datetime import UTC, datetime, timedelta

    args = {"cluster": "", "kind": "deployment", "name": "web", "namespace": "shop",
            "replicas": 4}
    target = Target(namespace="shop", kind="deployment", name="web")
    req = ApprovalRequested(
        session_id="s_1", approval_id="a_1", expires_at=datetime.now(UTC) + timedelta(hours=1),
        calls=(ApprovalCall(call_id="c_1", tool="scale", args=args,
                            call_hash=catalogue.call_hash("scale", args), target=target),))
    fields: dict[str, object] = {"call_id": "c_1", "call_hash": req.calls[0].call_hash,
                                 "approval_id": "a_1", "approver": "bob",
                                 "not_after": req.expires_at, **grant_fields}
    grant = signing.sign(Grant(**fields), KEY)  # type: ignore[arg-type]
    granted = ApprovalGranted(session_id="s_1", approval_id="a_1", approver="bob",
                              grants=(grant,))
    return [chain.Link(seq, S.event_subject(ev), E.encode(ev))
            for seq, ev in ((1, req), (2, granted))]


KEY = Ed25519PrivateKey.generate()


def _grant_problems(report: AuditReport) -> list[dict[str, object]]:
    """The grant checks alone: these events carry no writer signatures (test_identity's
    subject), so the audit's "not signed" problems are left aside here."""
    return [p for p in report.problems if "signature" not in p]


def test_the_audit_verifies_old_v1_grants_and_v2_grants_with_their_binding() -> None:
    shop = Target(namespace="shop", kind="deployment", name="web")
    v2 = {"session_id": "s_1", "target": shop, "version": GRANT_VERSION}
    for fields in ({}, v2):  # an old log's v1 grant, and a v2 grant
        report = audit("s_1", _granted_session(fields), KEY.public_key())
        assert _grant_problems(report) == []
    report = audit("s_1", _granted_session({**v2, "session_id": "s_2"}), KEY.public_key())
    assert _grant_problems(report) == [
        {"seq": 2, "problem": "grant for c_1 is bound to session s_2, not this one"}]
    report = audit("s_1", _granted_session({**v2, "target": Target(namespace="production")}),
                   KEY.public_key())
    assert _grant_problems(report) == [
        {"seq": 2, "problem": "grant for c_1 is not for the target that was requested"}]
    report = audit("s_1", _granted_session(v2), Ed25519PrivateKey.generate().public_key())
    assert _grant_problems(report) == [
        {"seq": 2, "problem": "grant for c_1: invalid gate signature"}]


def test_the_audit_checks_that_a_grant_binds_the_objects_its_request_listed() -> None:
    """The request listed no objects (a scale acts on its target alone): a grant binding some
    set is not for what was requested, even with a valid signature."""
    from schemas.approval import effect_digest

    shop = Target(namespace="shop", kind="deployment", name="web")
    v2 = {"session_id": "s_1", "target": shop, "version": GRANT_VERSION}
    bound = {**v2, "effect_digest": effect_digest(("shop/pod/web-1",))}
    report = audit("s_1", _granted_session(bound), KEY.public_key())
    assert _grant_problems(report) == [
        {"seq": 2, "problem": "grant for c_1 does not bind the objects the request listed"}]


def test_an_mcp_call_names_its_client_and_requester_in_the_timeline_and_the_write() -> None:
    from datetime import UTC, datetime, timedelta

    from schemas.planning import ToolProposed, ToolRequested

    args = {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 5}
    asked = ToolRequested(session_id="s_1", actor="alice", tool="scale", args=args,
                          evidence=("3/3",), client="claude-code 2.1")
    proposed = ToolProposed(session_id="s_1", call_id="c_1", tool="scale", args=args,
                            source="mcp", requested_by="alice", evidence=("3/3",),
                            causation_id=asked.event_id)
    req = ApprovalRequested(
        session_id="s_1", approval_id="a_1", requested_by="alice",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        calls=(ApprovalCall(call_id="c_1", tool="scale", args=args,
                            call_hash=catalogue.call_hash("scale", args),
                            target=Target(namespace="shop", kind="deployment", name="web")),))
    assert describe(asked) == ("alice asked over MCP via claude-code 2.1: scale(kind=deployment, "
                               "name=web, namespace=shop, replicas=5); evidence: 3/3")
    assert describe(proposed).startswith("planner proposed scale(kind=deployment, name=web, "
                                         "namespace=shop, replicas=5) for alice's MCP call")
    links = [chain.Link(seq, S.event_subject(ev), E.encode(ev))
             for seq, ev in enumerate((asked, proposed, req), start=1)]
    [write] = audit("s_1", links).writes
    assert (write.requested_by, write.requested_via) == ("alice", "MCP: claude-code 2.1")
    # Another source's write names no client.
    other = msgspec.structs.replace(proposed, source="llm")
    links[1] = chain.Link(2, S.event_subject(other), E.encode(other))
    [write] = audit("s_1", links).writes
    assert write.requested_via == ""
