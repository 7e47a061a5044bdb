"""The gate's pure core: classification and the approval state folded from a session's events.

No I/O here: `classify` and `fold_approvals` are functions of their inputs, so the same rules
run live, on replay and in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import msgspec

from schemas import catalogue
from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    ToolAmended,
)
from schemas.base import Event, Target
from schemas.ids import derived_id
from schemas.planning import ToolProposed
from schemas.session import SessionStarted, UserMessage


@dataclass(frozen=True)
class Classification:
    access: Literal["read", "write", "refused"]
    rule: str
    args: dict[str, object] | None = None  # canonical args when valid
    target: Target | None = None


def classify(proposal: ToolProposed) -> Classification:
    return classify_call(proposal.tool, proposal.args)


def classify_call(name: str, raw_args: dict[str, object]) -> Classification:
    """Fails closed: only a known read tool with args that convert exactly is a read."""
    tool = catalogue.lookup(name)
    if tool is None:
        return Classification("refused", f"unknown tool {name!r}: not in the catalogue")
    try:
        args = tool.parse_args(raw_args)
    except msgspec.ValidationError as exc:
        return Classification("refused", f"invalid args for {tool.name}: {exc}")
    canonical = catalogue.canonical_args(args)
    return Classification(tool.access, f"catalogue: {tool.name} is a {tool.access}", canonical,
                          args.target())


def approval_id_for(call_id: str) -> str:
    """Deterministic, so a redelivered preview can never open a second approval."""
    return derived_id("a", call_id)


@dataclass(frozen=True)
class Asker:
    """Who asked for a proposal, from what the gateway recorded for people — never from the
    proposal's own `requested_by`, which is the planner's say-so (issue 14: a planner that
    wrote "" let the requester approve their own production write)."""

    requested_by: str
    # Everyone the log says may have asked for it or changed it: barred from approving it where
    # separation of duties applies. Which message a proposal answers is the planner's to say
    # (its correlation id), so the last person who spoke before it is barred as well.
    barred: frozenset[str]


def asker_of(events: Sequence[Event], proposal: ToolProposed | ToolAmended) -> Asker:
    """The person behind a proposal: the author of the `user.message` it answers (matched by
    correlation or causation id), else of the latest `user.message` before it, else whoever
    started the session. An amendment is followed back to the proposal it replaces; its
    approver is barred too."""
    amended_by: set[str] = set()
    current: ToolProposed | ToolAmended = proposal
    seen: set[str] = set()
    while isinstance(current, ToolAmended) and current.call_id not in seen:
        seen.add(current.call_id)
        amended_by.add(current.amended_by)
        replaces = current.replaces
        original = next((e for e in events if isinstance(e, ToolProposed | ToolAmended)
                         and e.call_id == replaces), None)
        if original is None:
            # Not in this session's log: the gate's own record of the requester is all there is.
            return Asker(current.requested_by,
                         frozenset({current.requested_by, *amended_by}) - {""})
        current = original
    started = ""
    messages: dict[str, UserMessage] = {}
    latest = ""
    for ev in events:
        if ev.event_id == current.event_id:
            break  # a message recorded after the proposal cannot be what it answers
        if isinstance(ev, SessionStarted) and not started:
            started = ev.actor
        elif isinstance(ev, UserMessage):
            messages[ev.event_id] = ev
            latest = ev.actor
    answered = messages.get(current.correlation_id) or messages.get(current.causation_id)
    requested_by = answered.actor if answered is not None else latest or started
    return Asker(requested_by, frozenset({requested_by, latest, *amended_by}) - {""})


State = Literal["pending", "granted", "denied", "expired"]


@dataclass
class ApprovalView:
    request: ApprovalRequested
    state: State = "pending"
    decision: ApprovalDecided | None = None
    outcome: Event | None = None
    decisions: list[ApprovalDecided] = field(default_factory=list)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.request.expires_at


def fold_approvals(events: list[Event]) -> dict[str, ApprovalView]:
    views: dict[str, ApprovalView] = {}
    for ev in events:
        match ev:
            case ApprovalRequested():
                views[ev.approval_id] = ApprovalView(ev)
            case ApprovalDecided() if ev.approval_id in views:
                views[ev.approval_id].decisions.append(ev)
            case ApprovalGranted() if ev.approval_id in views:
                views[ev.approval_id].state = "granted"
                views[ev.approval_id].outcome = ev
            case ApprovalDenied() if ev.approval_id in views:
                views[ev.approval_id].state = "denied"
                views[ev.approval_id].outcome = ev
            case ApprovalExpired() if ev.approval_id in views:
                views[ev.approval_id].state = "expired"
                views[ev.approval_id].outcome = ev
    return views


def amended_call(req: ApprovalRequested, decider: ApprovalDecided) -> ToolAmended:
    """The call that replaces a single-call request whose approver approved changed args. Its
    ids derive from the deciding decision, so rebuilding it after a crash gives the same event
    (appended once)."""
    assert decider.args is not None
    original = req.calls[0]
    return ToolAmended(
        session_id=req.session_id, call_id=derived_id("c", decider.event_id, "amended"),
        replaces=original.call_id, tool=original.tool, args=decider.args,
        target=original.target, amended_by=decider.approver, requested_by=req.requested_by,
        rationale=req.rationale, evidence=req.evidence, expected_outcome=req.expected_outcome,
        actor="gate", causation_id=decider.event_id, correlation_id=req.correlation_id,
        event_id=derived_id("e", decider.event_id, "amended"))
