"""The executor's session reads skip the signature check of events it never acts upon
(services/executor/domain.NOT_ACTED_UPON). That is safe only while it is true: every fold the
executor makes of a session — the request of a grant, how far a call got, whether a human
approved exactly this grant, the effect it may act on — comes out the same without them. (What
it runs is verified by the consume loop whatever the set says:
tests/integration/executor/test_grants.py forges a classification and a grant.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import catalogue
from schemas import events as E
from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
    Grant,
    ToolAmended,
    ToolClassified,
    ToolRefused,
    effect_digest,
)
from schemas.base import Event, Target
from schemas.execution import PreviewRecorded, ToolResult, ToolStarted
from schemas.planning import CommandRejected, ModelRetried, StepPlanned, ToolProposed
from schemas.session import (
    AssistantMessage,
    SessionCancelled,
    SessionStarted,
    TurnCompleted,
    UserMessage,
)
from services.executor import domain

SID = "s_unacted"
TARGET = Target(namespace="shop", kind="deployment", name="web")
ARGS: dict[str, Any] = {"cluster": "", "kind": "deployment", "name": "web",
                        "namespace": "shop", "replicas": 4}
EFFECT = ("shop/deployment/web",)


def _grant(call_id: str, approval_id: str) -> Grant:
    return Grant(call_id=call_id, call_hash=catalogue.call_hash("scale", ARGS),
                 approval_id=approval_id, approver="bob",
                 not_after=datetime.now(UTC) + timedelta(minutes=5), session_id=SID,
                 target=TARGET, version=2, effect_digest=effect_digest(EFFECT), signature="s")


def _session() -> tuple[list[Event], list[Grant]]:
    """Two writes in one session — one denied and amended, the amended one approved and run,
    one expired — with every other service's event type in it."""
    now = datetime.now(UTC)

    def request(aid: str, cid: str) -> ApprovalRequested:
        return ApprovalRequested(
            session_id=SID, approval_id=aid, expires_at=now + timedelta(hours=1),
            calls=(ApprovalCall(call_id=cid, tool="scale", args=ARGS, target=TARGET,
                                call_hash=catalogue.call_hash("scale", ARGS), effect=EFFECT),))

    grant = _grant("c_2", "a_2")
    events: list[Event] = [
        SessionStarted(session_id=SID, actor="alice"),
        UserMessage(session_id=SID, text="scale web to 4", actor="alice"),
        StepPlanned(session_id=SID, step_id="p_1", anchor_id="e_1", model="m"),
        ModelRetried(session_id=SID, anchor_id="e_1", attempt=1, delay_s=0.5, error="429"),
        AssistantMessage(session_id=SID, text="scaling"),
        CommandRejected(session_id=SID, text="kubectl frobnicate", reason="unknown verb"),
        ToolProposed(session_id=SID, call_id="c_1", tool="scale", args=ARGS, target=TARGET),
        ToolClassified(session_id=SID, call_id="c_1", access="write", rule="a write",
                       tool="scale", args=ARGS, target=TARGET),
        PreviewRecorded(session_id=SID, call_id="c_1", ok=True, effect=EFFECT),
        request("a_1", "c_1"),
        DecisionRejected(session_id=SID, approval_id="a_1", approver="alice", reason="own"),
        ApprovalDecided(session_id=SID, approval_id="a_1", decision="approve", approver="bob",
                        args={**ARGS, "replicas": 5}),
        ApprovalDenied(session_id=SID, approval_id="a_1", call_ids=("c_1",), approver="bob",
                       superseded_by="c_2"),
        ToolAmended(session_id=SID, call_id="c_2", replaces="c_1", tool="scale", args=ARGS,
                    target=TARGET, amended_by="bob"),
        ToolClassified(session_id=SID, call_id="c_2", access="write", rule="a write",
                       tool="scale", args=ARGS, target=TARGET),
        ToolRefused(session_id=SID, call_id="c_x", tool="exec", reason="forbidden"),
        PreviewRecorded(session_id=SID, call_id="c_2", ok=True, effect=EFFECT),
        request("a_2", "c_2"),
        ApprovalDecided(session_id=SID, approval_id="a_2", decision="approve", approver="bob"),
        ApprovalGranted(session_id=SID, approval_id="a_2", approver="bob", grants=(grant,)),
        ToolStarted(session_id=SID, call_id="c_2", approval_id="a_2"),
        ToolResult(session_id=SID, call_id="c_2", tool="scale", status="ok", output="scaled"),
        request("a_3", "c_3"),
        ApprovalExpired(session_id=SID, approval_id="a_3", call_ids=("c_3",)),
        TurnCompleted(session_id=SID),
        SessionCancelled(session_id=SID, actor="alice"),
    ]
    return events, [grant, _grant("c_3", "a_3"), _grant("c_1", "a_1")]


def test_every_fold_is_the_same_without_the_events_not_acted_upon() -> None:
    events, grants = _session()
    assert {e.type for e in events} >= domain.NOT_ACTED_UPON  # every one is exercised
    acted = [e for e in events if e.type not in domain.NOT_ACTED_UPON]
    assert domain.approval_problem(events, SID, grants[0]) is None  # the approved one runs
    for g in grants:
        assert domain.request_of(events, g.approval_id) == \
            domain.request_of(acted, g.approval_id)
        assert domain.progress(events, g.call_id) == domain.progress(acted, g.call_id)
        assert domain.approval_problem(events, SID, g) == \
            domain.approval_problem(acted, SID, g)
        assert domain.approved_effect(events, g) == domain.approved_effect(acted, g)


def test_what_a_grant_is_checked_against_is_always_verified() -> None:
    """The request, the human decisions and the grants: a forged one of these must never be
    read unverified, so none may join the set."""
    for tag in ("approval.requested", "approval.decided", "approval.granted"):
        assert tag not in domain.NOT_ACTED_UPON
    assert set(E.BY_TAG) >= domain.NOT_ACTED_UPON
