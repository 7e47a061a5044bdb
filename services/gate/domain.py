"""The gate's pure core: classification and the approval state folded from a session's events.

No I/O here: `classify` and `fold_approvals` are functions of their inputs, so the same rules
run live, on replay and in tests.
"""

from __future__ import annotations

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
)
from schemas.base import Event, Target
from schemas.ids import derived_id
from schemas.planning import ToolProposed


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
