"""The approval lifecycle, one for every reader: the gate decides with it, the gateway serves
and checks decisions with it, the audit and the executor judge the log with it.

An approval is requested by the gate (`approval.requested`), decided by people
(`approval.decided`, recorded by the gateway) and settled by the gate (`approval.granted`,
`approval.denied`, `approval.expired`). `evolve` is the one fold of those events; the rules that
fold people's decisions (separation of duties, distinct approvers, the first deny or modify
settles it) are `decision_state`; `is_expired` is the one definition of expiry. Pure: `now` is
always an argument, so a live service, a replay and a test apply the same rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

import msgspec

from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
    ToolClassified,
)
from schemas.base import Event

# Why a new decision would not count, by kind (the gateway answers 410, 409 or 403 from it).
RefusalKind = Literal["expired", "settled", "decided", "separation", "repeat"]


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    reason: str

Verdict = Literal["pending", "approved", "denied", "modified"]


class DecisionState(msgspec.Struct, kw_only=True):
    """The decisions of one approval, folded by the rules every reader applies."""

    verdict: Verdict = "pending"
    approved_by: tuple[str, ...] = ()
    deciding: ApprovalDecided | None = None  # the decision that settled the verdict
    rejected: tuple[tuple[ApprovalDecided, str], ...] = ()

    def check(self, request: ApprovalRequested, approver: str) -> str | None:
        """Why a new decision by `approver` would not count, or None if it would."""
        refusal = self.refusal(request, approver)
        return None if refusal is None else refusal.reason

    def refusal(self, request: ApprovalRequested, approver: str) -> Refusal | None:
        if self.verdict != "pending":
            return Refusal("decided", f"already {self.verdict}")
        if approver in request.forbidden_approvers:
            return Refusal("separation", f"separation of duties: {approver} requested or "
                           "changed this call and may not approve it")
        if approver in self.approved_by:
            return Refusal("repeat", f"{approver} has already approved; another approver is "
                           "required")
        return None


# Why a decision's signature does not count (None: it does) — the gate's registry check
# (services/runtime/approvers.py), which only the gate and the audit can make.
Verifier = Callable[[ApprovalRequested, ApprovalDecided], "str | None"]


def decision_state(request: ApprovalRequested, decisions: list[ApprovalDecided],
                   verify: Verifier | None = None) -> DecisionState:
    """Folds decisions in log order: the first valid deny or modify settles it; approvals from
    distinct permitted approvers count until `required_approvals` is reached. With `verify`,
    a decision whose signature does not count is rejected and changes nothing."""
    state = DecisionState()
    approved: list[str] = []
    rejected: list[tuple[ApprovalDecided, str]] = []
    for d in decisions:
        if d.approval_id != request.approval_id:
            continue
        state.approved_by = tuple(approved)
        why = state.check(request, d.approver) or (verify(request, d) if verify else None)
        if why is not None:
            rejected.append((d, why))
            continue
        if d.decision == "deny":
            state.verdict, state.deciding = "denied", d
        elif d.args is not None and len(request.calls) != 1:
            rejected.append((d, "modified args are accepted only for a single-call approval"))
        elif d.args is not None and d.args != request.calls[0].args:
            state.verdict, state.deciding = "modified", d
        else:
            approved.append(d.approver)
            if len(approved) >= request.required_approvals:
                state.verdict, state.deciding = "approved", d
    state.approved_by = tuple(approved)
    state.rejected = tuple(rejected)
    return state


# -- the lifecycle -----------------------------------------------------------------------------

Outcome = ApprovalGranted | ApprovalDenied | ApprovalExpired
# What the gate recorded: nothing yet, or the outcome it appended.
Recorded = Literal["pending", "granted", "denied", "expired"]
# What a reader shows at a time: "decided" once the decisions settle it but before the gate
# recorded the outcome; "expired" once its time is past with nothing decided.
Status = Literal["pending", "decided", "granted", "denied", "expired"]

_RECORDED: dict[type[Event], Recorded] = {ApprovalGranted: "granted", ApprovalDenied: "denied",
                                          ApprovalExpired: "expired"}


def is_expired(request: ApprovalRequested, now: datetime) -> bool:
    """The one definition of an approval's expiry, for every reader: due at `expires_at`."""
    return now >= request.expires_at


@dataclass(frozen=True)
class ApprovalState:
    """One approval as the log has it: the request, the decisions people recorded for it (in
    log order) and the outcome the gate recorded, if any."""

    request: ApprovalRequested
    decisions: tuple[ApprovalDecided, ...] = ()
    outcome: Outcome | None = None
    # Decisions the gate rejected (`decision.rejected` names them): they count for no reader.
    refused: frozenset[str] = frozenset()

    @property
    def recorded(self) -> Recorded:
        return "pending" if self.outcome is None else _RECORDED[type(self.outcome)]

    def decision(self, verify: Verifier | None = None) -> DecisionState:
        """The decisions folded by the rules (`decision_state`), leaving out those the gate
        rejected; `verify` checks each one's signature (the gate's registry)."""
        return decision_state(self.request, [d for d in self.decisions
                                             if d.event_id not in self.refused], verify)

    def status(self, now: datetime) -> Status:
        if self.outcome is not None:
            return self.recorded
        if self.decisions and self.decision().verdict != "pending":
            return "decided"
        return "expired" if is_expired(self.request, now) else "pending"

    def check(self, approver: str, now: datetime) -> Refusal | None:
        """Why a new decision by `approver` at `now` would not count, or None if it would: the
        one check of a decision, made early by the gateway (to answer at once) and applied by
        the gate's fold (which decides)."""
        return self.settled(now) or self.decision().refusal(self.request, approver)

    def settled(self, now: datetime) -> Refusal | None:
        """Why no decision at all would count any more (expired, or an outcome recorded)."""
        status = self.status(now)
        if status == "expired":
            return Refusal("expired", "expired")
        if status not in ("pending", "decided"):
            return Refusal("settled", f"already {status}")
        return None


def evolve(state: ApprovalState | None, event: Event) -> ApprovalState | None:
    """The next state of one approval after an event of its session (None: not requested yet).
    Events of other approvals, and decisions or outcomes before their request, change nothing."""
    match event:
        case ApprovalRequested():
            return ApprovalState(event)
        case _ if state is None or getattr(event, "approval_id", None) != \
                state.request.approval_id:
            return state
        case ApprovalDecided():
            return replace(state, decisions=(*state.decisions, event))
        case DecisionRejected():
            return replace(state, refused=state.refused | {event.causation_id})
        case ApprovalGranted() | ApprovalDenied() | ApprovalExpired():
            return replace(state, outcome=event)
    return state


def fold(events: Iterable[Event]) -> dict[str, ApprovalState]:
    """Every approval of a stream of events, by approval id."""
    states: dict[str, ApprovalState] = {}
    for ev in events:
        aid = getattr(ev, "approval_id", None)
        if isinstance(aid, str) and (isinstance(ev, ApprovalRequested) or aid in states):
            new = evolve(states.get(aid), ev)
            if new is not None:
                states[aid] = new
    return states


# -- which cluster a call's executor events must come from (issue 21) -------------------------

def classified_clusters(events: Iterable[Event]) -> dict[str, str]:
    """call id -> the cluster the gate classified that call for ("" in legacy mode: any)."""
    return {e.call_id: e.target.cluster for e in events
            if isinstance(e, ToolClassified) and e.access != "refused"}


def misrouted(event: Event, classified: dict[str, str]) -> bool:
    """Whether `event` is an executor event about a call that the gate classified for another
    cluster: written by another cluster's executor (a compromised spoke can write on its own
    subjects a "result" for any call id), so no reader believes it. A call classified for no
    cluster (legacy mode) or not classified in this session is judged as before."""
    if event.emitter != "executor":
        return False
    call_id = getattr(event, "call_id", "")
    want = classified.get(call_id, "") if isinstance(call_id, str) else ""
    return bool(want) and (event.cluster() or "") != want


def believed(events: Sequence[Event]) -> list[Event]:
    """A session's events as every reader folds them (gate, planner, executor): without an
    executor event about a call that the gate classified for another cluster (`misrouted`)."""
    where = classified_clusters(events)
    return [e for e in events if not misrouted(e, where)]
