"""The executor's pure checks of a write against the session's log. No I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
    Grant,
    ToolClassified,
    effect_digest,
)
from schemas.base import Event, Target
from schemas.execution import PreviewRecorded, ToolResult, ToolStarted
from schemas.lifecycle import decision_state
from schemas.subjects import ExecKind, cluster_token

# Other services' events that none of the executor's folds of a session (`request_of`,
# `progress`, `approval_problem`, `approved_effect`) ever looks at. Its session reads return them
# without verifying their signatures (Bus.not_acted_upon): the read before each grant otherwise
# verified every event of the session, ~190 µs each. What it acts on stays verified: what it
# runs (a classification or a grant) is checked by the consume loop whatever this set says, and
# what a grant is checked against — the request, the decisions, the grants — on every read.
# tests/unit/executor/test_not_acted_upon.py keeps this true.
NOT_ACTED_UPON: frozenset[str] = frozenset({
    "session.started", "user.message", "session.cancelled", "assistant.message",
    "turn.completed", "tool.proposed", "command.rejected", "step.planned", "model.retried",
    "tool.classified", "tool.refused", "tool.amended", "approval.denied", "approval.expired",
})


@dataclass(frozen=True)
class Work:
    """One call the executor runs, as the gate's recorded facts released it (never a message
    of its own on the wire): a read or a write's dry run from its `tool.classified`, a write
    from its `approval.granted` and the `approval.requested` call that grant is for."""

    kind: ExecKind
    session_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    target: Target
    causation_id: str
    grant: Grant | None = None
    # The event this work's first record follows (the classification's seq and hash): a hint
    # for the append's chain, checked by the server; never a reason to run anything.
    hint: tuple[int, str] | None = None


def cluster_problem(own: str, clusters: Sequence[str], token: str | None) -> str | None:
    """Why a command is not for the executor of cluster `own` (None: it is): every cluster the
    gate signed into it (a classification's or a grant's target) must be `own`, and the
    subject it came on must carry `own`'s token (`token`: None for a subject without one, an
    event from before clusters). Either alone is refused: a grant for cluster A re-published on
    B's subject, or a B-subject command signed for A, runs nowhere."""
    for cluster in clusters:
        if cluster != own:
            return (f"the command is signed for cluster {cluster!r}, not this executor's "
                    f"cluster {own!r}; it was not run")
    if token != cluster_token(own):
        return (f"the command came on a subject for cluster token {token or 'none'!r}, not "
                f"this executor's cluster {own!r} ({cluster_token(own)}); it was not run")
    return None


def released(c: ToolClassified, kinds: tuple[ExecKind, ...]) -> ExecKind | None:
    """What a classification releases for an executor that runs `kinds`: a read, a preview, or
    nothing (refused, another role's, or an old log's classification without the call)."""
    if c.args is None:
        return None
    kind: ExecKind | None = "read" if c.access == "read" else \
        "preview" if c.access == "write" else None
    return kind if kind in kinds else None


def work_of(c: ToolClassified, kind: ExecKind, hint: tuple[int, str]) -> Work:
    assert c.args is not None
    return Work(kind=kind, session_id=c.session_id, call_id=c.call_id, tool=c.tool,
                args=c.args, target=c.target, causation_id=c.causation_id, hint=hint)


def write_of(granted: ApprovalGranted, grant: Grant, call: ApprovalCall | None) -> Work:
    """A granted call as it will run: the approval request's call (empty when the request has
    none of that id: verification then refuses it)."""
    return Work(kind="write", session_id=granted.session_id, call_id=grant.call_id,
                tool=call.tool if call else "", args=call.args if call else {},
                target=call.target if call else Target(), causation_id=granted.event_id,
                grant=grant)


def request_of(events: Sequence[Event], approval_id: str) -> ApprovalRequested | None:
    return next((e for e in events if isinstance(e, ApprovalRequested)
                 and e.approval_id == approval_id), None)


Progress = str  # "new" | "claimed" | "done"


def progress(events: Sequence[Event], call_id: str) -> Progress:
    """How far this session's log says a write got: not claimed, claimed without a recorded
    result (the claimant stopped in between), or done (a result is recorded: only the
    executor writes one)."""
    claimed = done = False
    for ev in events:
        if isinstance(ev, ToolStarted) and ev.call_id == call_id:
            claimed = True
        elif isinstance(ev, ToolResult) and ev.call_id == call_id:
            done = True
    return "done" if done else "claimed" if claimed else "new"


def approval_problem(events: Sequence[Event], session_id: str, grant: Grant,
                     key_signed_namespaces: Sequence[str] = ("production",),
                     key_signed_clusters: Sequence[str] = ()) -> str | None:
    """Why the session's log does not show a human approval of exactly this grant, or None.

    A valid signature says the gate signed it; this says the gate also recorded it, in this
    session, for an approval a human made through the gateway — so the gate's key alone (a
    compromised gate) is not enough to run a write. Where the write lands in one of
    `key_signed_namespaces` (as the executor's own dry run found, not as the gate's card says),
    a click in Slack is not enough either: the gate holds Slack's signing secret and could make
    one up (issue 20).
    """
    aid = grant.approval_id
    request: ApprovalRequested | None = None
    decisions: list[ApprovalDecided] = []
    refused: set[str] = set()  # decisions the gate rejected (unsigned, say): they count for none
    granted = False
    for ev in events:
        match ev:
            case ApprovalRequested() if ev.approval_id == aid:
                request = ev
            case ApprovalDecided() if ev.approval_id == aid:
                decisions.append(ev)
            case DecisionRejected() if ev.approval_id == aid:
                refused.add(ev.causation_id)
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
    state = decision_state(request, [d for d in decisions if d.event_id not in refused])
    if state.verdict != "approved":
        return (f"session {session_id} records no human approval of {aid} (the decisions "
                f"recorded leave it {state.verdict}); the write was not run")
    if "+".join(state.approved_by) != grant.approver:
        return (f"the grant names {grant.approver!r} but {aid} was approved by "
                f"{'+'.join(state.approved_by)!r}; the write was not run")
    in_slack = sorted({d.approver for d in decisions if d.event_id not in refused
                       and d.approver in state.approved_by and d.signed is not None
                       and d.signed.key_id.startswith("slack:")})
    if in_slack:
        hit = sorted(landed(events, grant, call) & set(key_signed_namespaces))
        # A protected cluster (issue 21), by the grant's signed target; a write naming none
        # (the legacy current context) counts as on one when any is listed: fail closed.
        cluster = grant.target.cluster
        if key_signed_clusters and (cluster in key_signed_clusters or not cluster):
            hit.append(f"cluster {cluster}" if cluster else "an unnamed cluster")
        if hit or request.key_signed_only:
            where = ", ".join(hit) or "where its card says"
            return (f"approval {aid} was approved in Slack by {', '.join(in_slack)}, but the "
                    f"write lands in {where}, where only a decision signed with the approver's "
                    "own key counts (a passkey or `interlock approve`); the write was not run")
    return None


def landed(events: Sequence[Event], grant: Grant, call: ApprovalCall) -> set[str]:
    """The namespaces a write lands in, from the executor's own records: its target's, a
    Namespace object's own name, and what its own dry run found it touches (the pods a drain
    evicts, the objects a selector matched)."""
    out = {grant.target.namespace}
    if grant.target.kind.lower() in ("namespace", "namespaces", "ns"):
        out.add(grant.target.name)
    out |= {ref.split("/", 1)[0] for ref in call.effect if "/" in ref}
    for ev in events:
        if isinstance(ev, PreviewRecorded) and ev.call_id == grant.call_id:
            out |= set(ev.blast_radius.affected_namespaces)
            out |= {ref.split("/", 1)[0] for ref in ev.effect if "/" in ref}
    return out - {""}


def approved_effect(events: Sequence[Event], grant: Grant) -> tuple[str, ...]:
    """The objects the approved call acts on, as its card listed them (`approval_problem` has
    checked that the grant binds exactly these); () when it listed none."""
    for ev in events:
        if isinstance(ev, ApprovalRequested) and ev.approval_id == grant.approval_id:
            for call in ev.calls:
                if call.call_id == grant.call_id:
                    return call.effect
    return ()
