"""The decision rules every reader applies (gateway and gate alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.approval import ApprovalCall, ApprovalDecided, ApprovalRequested
from schemas.base import Target
from schemas.lifecycle import decision_state

ARGS = {"kind": "deployment", "name": "web", "namespace": "production", "replicas": 5,
        "cluster": ""}


def _req(required: int = 1, forbidden: tuple[str, ...] = (), calls: int = 1) -> ApprovalRequested:
    return ApprovalRequested(
        session_id="s_1", approval_id="a_1",
        calls=tuple(ApprovalCall(call_id=f"c_{i}", tool="scale", args=ARGS, call_hash="h",
                                 target=Target(namespace="production")) for i in range(calls)),
        expires_at=datetime.now(UTC) + timedelta(minutes=15), required_approvals=required,
        forbidden_approvers=forbidden, requested_by="alice",
    )


def _d(who: str, decision: str = "approve", **kw: Any) -> ApprovalDecided:
    return ApprovalDecided(session_id="s_1", approval_id="a_1", decision=decision,  # type: ignore[arg-type]
                           approver=who, **kw)


def test_first_approval_wins() -> None:
    s = decision_state(_req(), [_d("bob"), _d("carol", "deny", reason="no")])
    assert s.verdict == "approved"
    assert s.approved_by == ("bob",)
    assert [why for _, why in s.rejected] == ["already approved"]


def test_separation_of_duties_does_not_count_the_requester() -> None:
    s = decision_state(_req(forbidden=("alice",)), [_d("alice")])
    assert s.verdict == "pending"
    assert "separation of duties" in s.rejected[0][1]
    s = decision_state(_req(forbidden=("alice",)), [_d("alice"), _d("bob")])
    assert s.verdict == "approved"
    assert s.approved_by == ("bob",)


def test_two_approvers_must_be_distinct() -> None:
    s = decision_state(_req(required=2), [_d("bob"), _d("bob")])
    assert s.verdict == "pending"
    assert s.approved_by == ("bob",)
    s = decision_state(_req(required=2), [_d("bob"), _d("carol")])
    assert s.verdict == "approved"
    assert s.approved_by == ("bob", "carol")


def test_a_deny_settles_it() -> None:
    s = decision_state(_req(required=2), [_d("bob"), _d("carol", "deny", reason="risky")])
    assert s.verdict == "denied"
    assert s.deciding is not None
    assert s.deciding.approver == "carol"


def test_modified_args_are_a_new_proposal_not_an_approval() -> None:
    s = decision_state(_req(), [_d("bob", args={**ARGS, "replicas": 4})])
    assert s.verdict == "modified"
    s = decision_state(_req(), [_d("bob", args=dict(ARGS))])  # unchanged args: a plain approval
    assert s.verdict == "approved"
    s = decision_state(_req(calls=2), [_d("bob", args={**ARGS, "replicas": 4})])
    assert s.verdict == "pending"
    assert "single-call" in s.rejected[0][1]


def test_a_verifier_leaves_out_decisions_whose_signature_does_not_count() -> None:
    """Issue 18: two-approver rules count distinct principals with valid signatures."""
    def verify(req: ApprovalRequested, d: ApprovalDecided) -> str | None:
        return None if d.approver != "mallory" else "not signed by mallory"

    s = decision_state(_req(required=2), [_d("bob"), _d("mallory")], verify)
    assert s.verdict == "pending"
    assert s.approved_by == ("bob",)
    assert [why for _, why in s.rejected] == ["not signed by mallory"]
    s = decision_state(_req(required=2), [_d("bob"), _d("mallory"), _d("carol")], verify)
    assert s.verdict == "approved"
    assert s.approved_by == ("bob", "carol")


def test_modified_args_must_be_the_signed_edits_applied() -> None:
    from schemas import catalogue
    from services.gate.domain import edits_problem

    req = _req()
    tool = catalogue.lookup("scale")
    assert tool is not None
    merged = catalogue.canonical_args(tool.parse_args({**ARGS, "replicas": 7}))
    assert edits_problem(req, _d("bob", args=merged, edits={"replicas": 7})) is None
    assert edits_problem(req, _d("bob", args=merged, edits={"replicas": 6})) is not None
    assert edits_problem(req, _d("bob", args=merged)) is not None  # no signed edits
    assert edits_problem(req, _d("bob")) is None  # nothing modified
