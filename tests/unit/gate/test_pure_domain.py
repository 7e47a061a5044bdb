"""The gate's domain with a fixed clock and policy, no NATS and no key: the approval request built
from a session's events, and the verdict on each decision (issue 17, "done when" 1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from schemas import lifecycle
from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    BlastRadius,
    DecisionRejected,
    FieldChange,
    ToolAmended,
)
from schemas.base import Event, Target
from schemas.execution import PreviewRecorded
from schemas.planning import ToolProposed
from schemas.session import SessionStarted, UserMessage
from services.gate import domain, risk
from services.gate.policy import Policy, TwoApprovers

SID = "s_pure"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TTL = 900.0
WINDOW = 3600.0
POLICY = Policy()  # production is protected: the asker may not approve there


def _asked(who: str = "alice") -> list[Event]:
    return [SessionStarted(session_id=SID, actor="ops", title="t"),
            UserMessage(session_id=SID, actor=who, text="scale web")]


def _scale(call_id: str, ns: str = "production", replicas: int = 5, batch: str = "",
           size: int = 0) -> ToolProposed:
    return ToolProposed(session_id=SID, call_id=call_id, tool="scale", source="llm",
                        args={"name": "web", "namespace": ns, "replicas": replicas},
                        requested_by="planner-says-nobody", batch_id=batch, batch_size=size)


def _preview(call_id: str, before: int = 3, after: int = 5) -> PreviewRecorded:
    return PreviewRecorded(session_id=SID, call_id=call_id, ok=True,
                           diff=(FieldChange(path="spec.replicas", before=before, after=after),),
                           blast_radius=BlastRadius(replicas_before=before,
                                                    replicas_after=after))


def _request(events: list[Event], call_id: str, policy: Policy = POLICY,
             changes: list[risk.Change] | None = None) -> ApprovalRequested:
    batch = domain.batch_of(events, call_id, policy)
    assert batch is not None
    return domain.approval_request(events, batch, policy, changes or [], NOW, TTL, WINDOW,
                                   cause="e_cause")


def _decided(req: ApprovalRequested, who: str, decision: str = "approve",
             args: dict[str, object] | None = None, reason: str = "") -> ApprovalDecided:
    return ApprovalDecided(session_id=SID, approval_id=req.approval_id,
                           decision=decision,  # type: ignore[arg-type]
                           approver=who, args=args, reason=reason, actor=who)


def _state(req: ApprovalRequested, *events: Event) -> lifecycle.ApprovalState:
    state = lifecycle.fold([req, *events]).get(req.approval_id)
    assert state is not None
    return state


def _single(policy: Policy = POLICY, ns: str = "production") -> ApprovalRequested:
    events = [*_asked(), _scale("c_1", ns), _preview("c_1")]
    return _request(events, "c_1", policy)


def test_the_request_is_built_from_the_log_with_the_clock_and_ttl_given() -> None:
    req = _single()
    assert req.approval_id == domain.approval_id_for("c_1")
    assert req.expires_at == NOW + timedelta(seconds=TTL)
    assert req.requested_by == "alice"  # from the user.message, not the planner's field
    assert req.title == "Scale deployment web in production"
    assert req.calls[0].diff[0].after == 5
    assert req.required_approvals == 1


def test_separation_of_duties_bars_the_asker_in_a_protected_namespace() -> None:
    req = _single()
    assert req.forbidden_approvers == ("alice",)
    d = _decided(req, "alice")
    (out,) = domain.decide(_state(req, d), d, NOW)
    assert isinstance(out, DecisionRejected)
    assert "separation of duties" in out.reason
    assert _state(req).check("alice", NOW) == lifecycle.Refusal(
        "separation", out.reason)  # the gateway's early check is the same function
    # Outside a protected namespace the asker may approve.
    assert _single(ns="staging").forbidden_approvers == ()


def test_two_approvers_distinct_then_a_grant_returned_unsigned() -> None:
    req = _single(Policy(two_approvers=TwoApprovers(namespaces=("production",))))
    assert req.required_approvals == 2
    first = _decided(req, "bob")
    assert domain.decide(_state(req, first), first, NOW) == []  # waits for a second approver
    again = _decided(req, "bob")
    (out,) = domain.decide(_state(req, first, again), again, NOW)
    assert isinstance(out, DecisionRejected)
    assert "already approved" in out.reason
    second = _decided(req, "carol")
    (granted,) = domain.decide(_state(req, first, again, second), second, NOW)
    assert isinstance(granted, ApprovalGranted)
    assert granted.approver == "bob+carol"
    (grant,) = granted.grants
    assert grant.signature == ""  # the handler signs; the domain holds no key
    assert grant.session_id == SID
    assert grant.target == req.calls[0].target
    assert grant.not_after == NOW + timedelta(minutes=5)


def test_batch_completeness_waits_for_every_member_and_every_dry_run() -> None:
    a, b = _scale("c_a", "staging", batch="b_1", size=2), _scale("c_b", "shop", batch="b_1",
                                                                   size=2)
    assert domain.batch_of([*_asked(), a, _preview("c_a")], "c_a", POLICY) is None
    assert domain.batch_of([*_asked(), a, b, _preview("c_a")], "c_a", POLICY) is None
    events = [*_asked(), a, b, _preview("c_a"), _preview("c_b")]
    req = _request(events, "c_b")
    assert req.call_ids == ("c_a", "c_b")
    assert req.approval_id == domain.approval_id_for("batch-b_1")
    assert req.batch_id == "b_1"


def test_forbidden_tool_is_refused_and_named_on_its_batchs_card() -> None:
    policy = Policy(forbid_tools=("delete",))
    gone = ToolProposed(session_id=SID, call_id="c_d", tool="delete", source="llm",
                        args={"kind": "pod", "name": "x", "namespace": "staging"},
                        batch_id="b_2", batch_size=2)
    c = domain.classify(policy, gone)
    assert c.access == "refused"
    assert "policy forbids" in c.rule
    ok = _scale("c_s", "staging", batch="b_2", size=2)
    req = _request([*_asked(), ok, gone, _preview("c_s")], "c_s", policy)
    assert req.call_ids == ("c_s",)
    assert any("not in this batch" in f and "policy forbids" in f for f in req.risk_flags)


def test_modified_args_deny_the_original_and_amend_it_deterministically() -> None:
    req = _single()
    d = _decided(req, "bob", args={**req.calls[0].args, "replicas": 4}, reason="too many")
    denied, amended = domain.decide(_state(req, d), d, NOW)
    assert isinstance(denied, ApprovalDenied)
    assert isinstance(amended, ToolAmended)
    assert denied.superseded_by == amended.call_id
    assert amended.replaces == "c_1"
    assert amended.args["replicas"] == 4
    assert amended.amended_by == "bob"
    # After a crash the amended call is rebuilt from the recorded denial: the same event (ids
    # and all; only the moment it is made differs), so appending it again is a no-op.
    rebuilt = domain.amended_of(_state(req, d, denied))
    assert msgspec.structs.replace(rebuilt, occurred_at=amended.occurred_at) == amended
    # The amended call's own request bars its amender where duties are separated.
    events = [*_asked(), _scale("c_1", "production"), _preview("c_1"), d, denied, amended,
              _preview(amended.call_id, 3, 4)]
    second = _request(events, amended.call_id)
    assert set(second.forbidden_approvers) == {"alice", "bob"}
    assert second.calls[0].args["replicas"] == 4


def test_expiry_is_decided_from_the_clock_given() -> None:
    req = _single()
    d = _decided(req, "bob")
    late = req.expires_at
    (out,) = domain.decide(_state(req, d), d, late)
    assert isinstance(out, ApprovalExpired)
    assert _state(req).status(late) == "expired"
    assert _state(req).status(late - timedelta(seconds=1)) == "pending"
    assert _state(req).check("bob", late) == lifecycle.Refusal("expired", "expired")


def test_history_flags_a_repeated_scale_up_of_the_same_target() -> None:
    target = Target(namespace="production", kind="deployment", name="web")
    changes = [risk.Change(at=NOW - timedelta(minutes=10), tool="scale", target=target,
                           before=1, after=3, approver="bob", session_id="s_old")]
    req = _request([*_asked(), _scale("c_1"), _preview("c_1")], "c_1", changes=changes)
    assert req.history == ("11:50:00 scale 1→3 approved by bob",)
    assert any("second consecutive scale-up" in f for f in req.risk_flags)
    # Outside the window it is forgotten.
    old = [risk.Change(at=NOW - timedelta(hours=2), tool="scale", target=target, before=1,
                       after=3, approver="bob", session_id="s_old")]
    assert _request([*_asked(), _scale("c_1"), _preview("c_1")], "c_1",
                    changes=old).history == ()


def test_the_lifecycle_is_one_fold_for_every_reader() -> None:
    req = _single(ns="staging")
    d = _decided(req, "bob")
    (granted,) = domain.decide(_state(req, d), d, NOW)
    state = _state(req, d)
    assert state.recorded == "pending"
    assert state.status(NOW) == "decided"  # settled by people, not yet recorded by the gate
    assert state.check("carol", NOW) == lifecycle.Refusal("decided", "already approved")
    done = _state(req, d, granted)
    assert done.recorded == "granted"
    assert done.status(NOW + timedelta(days=1)) == "granted"
    assert done.check("carol", NOW) == lifecycle.Refusal("settled", "already granted")
    # Events of another approval, or before any request, change nothing.
    other = ApprovalDecided(session_id=SID, approval_id="a_other", decision="approve",
                            approver="x", actor="x")
    assert lifecycle.evolve(state, other) is state
    assert lifecycle.evolve(None, d) is None


def test_the_card_says_when_only_a_persons_own_key_counts() -> None:
    # key_signed_namespaces (default production): a Slack click does not count there.
    assert _single().key_signed_only
    assert not _single(ns="shop").key_signed_only
    assert _single(Policy(key_signed_namespaces=("shop",)), ns="shop").key_signed_only
    # A protected namespace always is, whatever the list says (policy only tightens).
    assert _single(Policy(key_signed_namespaces=())).key_signed_only
    assert not _single(Policy(key_signed_namespaces=(), protected_namespaces=())).key_signed_only
