"""The planner's reads skip the signature check of events it never acts upon
(services/planner/domain.NOT_ACTED_UPON). That is safe only while it is true: both of the
planner's folds come out the same without those events, and its code never names them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from schemas import catalogue
from schemas import events as E
from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
    ToolClassified,
)
from schemas.base import Event, Target
from schemas.execution import PreviewRecorded, ToolResult, ToolStarted, ToolVerified
from schemas.session import SessionStarted, UserMessage
from services.planner import agent, domain

SID = "s_unacted"
PLANNER = Path(__file__).resolve().parents[3] / "services" / "planner"


def _session(user: UserMessage) -> list[Event]:
    """A model-driven write from question to verification, every other service's event in it."""
    args = {"name": "web", "namespace": "shop", "replicas": 4, "rationale": "load",
            "evidence": ["web runs 3 replicas at 95% cpu"], "expected_outcome": "4 pods"}
    step = agent.plan_step(agent.ModelAnswer(text="scaling", calls=(
        agent.ModelCall("scale", json.dumps(args)),)), agent.fold([user]), user, "m")
    assert step.calls[0].rejected == ""
    cid = step.calls[0].call_id
    canon = {"cluster": "", "kind": "deployment", "name": "web", "namespace": "shop",
             "replicas": 4}
    target = Target(namespace="shop", kind="deployment", name="web")
    request = ApprovalRequested(
        session_id=SID, approval_id="a_1", expires_at=datetime.now(UTC) + timedelta(hours=1),
        calls=(ApprovalCall(call_id=cid, tool="scale", args=canon,
                            call_hash=catalogue.call_hash("scale", canon), target=target),))
    return [
        SessionStarted(session_id=SID, actor="alice"), user, step, *agent.project(step),
        ToolClassified(session_id=SID, call_id=cid, access="write", rule="scale is a write"),
        PreviewRecorded(session_id=SID, call_id=cid, ok=True),
        request,
        DecisionRejected(session_id=SID, approval_id="a_1", approver="alice", reason="own"),
        ApprovalDecided(session_id=SID, approval_id="a_1", decision="approve", approver="bob"),
        ApprovalGranted(session_id=SID, approval_id="a_1", approver="bob", grants=()),
        ToolStarted(session_id=SID, call_id=cid, approval_id="a_1"),
        ToolResult(session_id=SID, call_id=cid, tool="scale", status="ok", output="scaled"),
        ToolVerified(session_id=SID, call_id=cid, tool="scale", outcome="verified"),
    ]


def test_both_folds_are_the_same_without_the_events_not_acted_upon() -> None:
    user = UserMessage(session_id=SID, text="web runs 3 replicas at 95% cpu: add one",
                       actor="alice")
    events = _session(user)
    assert {e.type for e in events} >= domain.NOT_ACTED_UPON  # every one is exercised
    acted = [e for e in events if e.type not in domain.NOT_ACTED_UPON]
    assert agent.fold(events) == agent.fold(acted)
    trigger = next(e for e in events if isinstance(e, ToolResult))
    for t, model in ((trigger, True), (trigger, False), (user, False)):
        assert _timeless(domain.decide(t, events, model=model)) == \
            _timeless(domain.decide(t, acted, model=model))


def _timeless(events: list[Event]) -> list[dict[str, object]]:
    """Decided events without the time they were made at (two calls, two clocks)."""
    return [{k: v for k, v in msgspec.to_builtins(e).items() if k != "occurred_at"}
            for e in events]


def test_the_planner_never_names_an_event_it_does_not_verify() -> None:
    source = "\n".join(p.read_text() for p in sorted(PLANNER.glob("*.py")))
    for tag in domain.NOT_ACTED_UPON:
        name = E.BY_TAG[tag].__name__
        uses = re.findall(rf"\b{name}\b|[\"']{re.escape(tag)}[\"']", source)
        # The tag itself appears once, in NOT_ACTED_UPON.
        assert len(uses) <= 1, f"the planner now uses {name} ({tag}): verify it again"
