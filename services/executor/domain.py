"""The executor's pure checks of a write against the session's log. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.approval import (
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
    effect_digest,
)
from schemas.base import Event
from schemas.lifecycle import decision_state


def approval_problem(events: Sequence[Event], session_id: str, grant: Grant) -> str | None:
    """Why the session's log does not show a human approval of exactly this grant, or None.

    A valid signature says the gate signed it; this says the gate also recorded it, in this
    session, for an approval a human made through the gateway — so the gate's key alone (a
    compromised gate) is not enough to run a write.
    """
    aid = grant.approval_id
    request: ApprovalRequested | None = None
    decisions: list[ApprovalDecided] = []
    granted = False
    for ev in events:
        match ev:
            case ApprovalRequested() if ev.approval_id == aid:
                request = ev
            case ApprovalDecided() if ev.approval_id == aid:
                decisions.append(ev)
            case ApprovalGranted() if ev.approval_id == aid:
                # Equality covers every field, the signature included: exactly this grant.
                granted = granted or grant in ev.grants
    if not granted:
        return (f"session {session_id} holds no approval.granted of {aid} carrying this grant; "
                "the write was not run")
    if request is None:
        return f"session {session_id} holds no approval.requested {aid}; the write was not run"
    call = next((c for c in request.calls if c.call_id == grant.call_id), None)
    if call is None or call.call_hash != grant.call_hash or call.target != grant.target:
        return (f"the grant is not for a call that approval {aid} requested in session "
                f"{session_id}; the write was not run")
    if effect_digest(call.effect) != grant.effect_digest:
        # The objects the card listed are what the human approved; a grant for another set
        # (or none) is not theirs.
        return (f"the grant does not bind the objects that approval {aid} listed for call "
                f"{grant.call_id}; the write was not run")
    # The same fold the gateway and the gate apply: only the gateway's approval.decided count.
    state = decision_state(request, decisions)
    if state.verdict != "approved":
        return (f"session {session_id} records no human approval of {aid} (the decisions "
                f"recorded leave it {state.verdict}); the write was not run")
    if "+".join(state.approved_by) != grant.approver:
        return (f"the grant names {grant.approver!r} but {aid} was approved by "
                f"{'+'.join(state.approved_by)!r}; the write was not run")
    return None


def approved_effect(events: Sequence[Event], grant: Grant) -> tuple[str, ...]:
    """The objects the approved call acts on, as its card listed them (`approval_problem` has
    checked that the grant binds exactly these); () when it listed none."""
    for ev in events:
        if isinstance(ev, ApprovalRequested) and ev.approval_id == grant.approval_id:
            for call in ev.calls:
                if call.call_id == grant.call_id:
                    return call.effect
    return ()
