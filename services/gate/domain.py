"""The gate's pure core: classification with the policy, the approval request built from a
session's events, and the verdict on a decision.

No I/O here — no clock, no key, no bus: `now`, the policy and the history are arguments and
grants are returned unsigned (the handlers sign), so the same rules run live, on replay and in
tests. The approval's state is the shared lifecycle (schemas.lifecycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from schemas import catalogue, lifecycle
from schemas.approval import (
    GRANT_VERSION,
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
from schemas.execution import PreviewRecorded
from schemas.ids import derived_id
from schemas.planning import ToolProposed, ToolRequested
from schemas.session import SessionStarted, UserMessage
from services.gate import card, risk
from services.gate.policy import Effect, Policy
from services.runtime import cluster_names

ACTOR = "gate"
Proposal = ToolProposed | ToolAmended


@dataclass(frozen=True)
class Classification:
    access: Literal["read", "write", "refused"]
    rule: str
    args: dict[str, object] | None = None  # canonical args when valid
    target: Target | None = None


def classify(policy: Policy, p: Proposal, cluster: str = "") -> Classification:
    """A proposal's access under the policy: a tool the policy forbids is refused first.
    `cluster`: where a call that names no cluster runs (see `resolve_cluster`); it becomes the
    call's own, so the hash, the target and the grant's signature bind it."""
    if policy.forbids(p.tool):
        return Classification("refused", f"policy forbids the tool {p.tool!r}")
    return classify_call(p.tool, p.args, cluster)


def classify_call(name: str, raw_args: dict[str, object], cluster: str = "") -> Classification:
    """Fails closed: only a known read tool with args that convert exactly is a read."""
    tool = catalogue.lookup(name)
    if tool is None:
        return Classification("refused", f"unknown tool {name!r}: not in the catalogue")
    if cluster and isinstance(raw_args, dict) and not raw_args.get("cluster"):
        raw_args = {**raw_args, "cluster": cluster}
    try:
        args = tool.parse_args(raw_args)
    except msgspec.ValidationError as exc:
        return Classification("refused", f"invalid args for {tool.name}: {exc}")
    canonical = catalogue.canonical_args(args)
    return Classification(tool.access, f"catalogue: {tool.name} is a {tool.access}", canonical,
                          args.target())


# -- clusters (issue 21) ---------------------------------------------------------------------

def session_cluster(events: Sequence[Event]) -> str:
    """The session's default cluster, as the gateway recorded it when the session started."""
    for ev in events:
        if isinstance(ev, SessionStarted):
            return ev.cluster_name
    return ""


def resolve_cluster(p: Proposal, session_default: str, clusters: Sequence[str]) -> str:
    """Where a call runs: the cluster it names, else its session's default, else the
    deployment's (the first of INTERLOCK_CLUSTERS; "" in legacy mode: the executor's current
    context)."""
    return cluster_names.resolve(p.args.get("cluster") if isinstance(p.args, dict) else None,
                                 session_default, tuple(clusters))


def cluster_refusal(cluster: str, clusters: Sequence[str], last_seen: datetime | None,
                    now: datetime, interval_s: float,
                    legacy_contexts: Sequence[str] | None = None) -> str | None:
    """Why a call for `cluster` is refused before any card or read (None: it may run).

    Per-cluster mode (`clusters` set): a cluster not in the list is not allowed; one whose
    executors last reported (`last_seen`, their presence) more than three intervals ago, or
    never, is not connected. Legacy mode: a context the executor does not allow (as its
    presence reports them, `legacy_contexts`; None when it reported nothing) is not allowed."""
    if clusters:
        if cluster not in clusters:
            return f"cluster {cluster!r} is not allowed here (allowed: {', '.join(clusters)})"
        if last_seen is None:
            return (f"cluster {cluster!r} is not connected: no executor has reported for it "
                    "(interlock clusters)")
        age = (now - last_seen).total_seconds()
        if age > 3 * interval_s:
            return (f"cluster {cluster!r} is not connected: no executor has reported for "
                    f"{age:.0f} s (interlock clusters)")
        return None
    if cluster and legacy_contexts is not None and cluster not in legacy_contexts:
        allowed = ", ".join(legacy_contexts) or "only the current context"
        return f"cluster {cluster!r} is not allowed here (allowed: {allowed})"
    return None


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
    # How they asked, when an agent asked for them: the MCP client that made the call, as it
    # named itself to the gateway ("claude-code 2.1.0 (MCP)").
    via: str = ""


def asker_of(events: Sequence[Event], proposal: ToolProposed | ToolAmended) -> Asker:
    """The person behind a proposal: the author of the `user.message` it answers (matched by
    correlation or causation id), else of the latest `user.message` before it, else whoever
    started the session. An MCP client's `tool.requested` counts as a message: its actor is the
    token's principal, as the gateway recorded it. An amendment is followed back to the proposal
    it replaces; its approver is barred too."""
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
    messages: dict[str, UserMessage | ToolRequested] = {}
    latest = ""
    for ev in events:
        if ev.event_id == current.event_id:
            break  # a message recorded after the proposal cannot be what it answers
        if isinstance(ev, SessionStarted) and not started:
            started = ev.actor
        elif isinstance(ev, UserMessage | ToolRequested):
            messages[ev.event_id] = ev
            latest = ev.actor
    answered = messages.get(current.correlation_id) or messages.get(current.causation_id)
    requested_by = answered.actor if answered is not None else latest or started
    via = f"{answered.client or 'an MCP client'} (MCP)" if isinstance(answered, ToolRequested) \
        else ""
    return Asker(requested_by, frozenset({requested_by, latest, *amended_by}) - {""}, via)


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


# -- previews → the approval request ---------------------------------------------------------

class UnknownCall(LookupError):
    """A preview for a call the session's log does not hold."""


Member = tuple[Proposal, Classification]


@dataclass(frozen=True)
class Batch:
    """What one approval covers, once every write member of the call's batch has its dry run:
    the writes to ask for, the members the gate refused (named on the card), and the selector
    writes whose dry run enumerated no set (refused now, with the dry run's words)."""

    proposal: Proposal
    approval_id: str
    batch_id: str
    writes: tuple[Member, ...]
    refused: tuple[Member, ...]
    unset: tuple[Member, ...]
    previews: dict[str, PreviewRecorded]

    def refusals(self) -> list[ToolRefused]:
        out = []
        for m, _ in self.unset:
            p = self.previews[m.call_id]
            out.append(ToolRefused(
                session_id=m.session_id, call_id=m.call_id, tool=m.tool[:200],
                reason=f"nothing to approve: {p.error}"[:2000], actor=ACTOR,
                causation_id=p.event_id, correlation_id=m.correlation_id))
        return out


def batch_of(events: Sequence[Event], call_id: str, policy: Policy,
             clusters: Sequence[str] = ()) -> Batch | None:
    """The approval a call's preview completes (on the call's cluster), or None while it
    waits; see `batches_of`."""
    found = batches_of(events, call_id, policy, clusters)
    if found is None:
        return None
    mine = [b for b in found if any(m.call_id == call_id for m, _ in (*b.writes, *b.unset))]
    return (mine or found)[0]


def batches_of(events: Sequence[Event], call_id: str, policy: Policy,
               clusters: Sequence[str] = ()) -> list[Batch] | None:
    """The approvals a call's preview completes — one per cluster its batch writes to (one
    approval = one cluster: a grant's subject names one) — or None while the call (or a
    member of its batch) still waits: for its proposal to be recorded, or for a write's dry
    run. Raises UnknownCall for a call the log does not hold."""
    proposals: dict[str, Proposal] = {
        e.call_id: e for e in events if isinstance(e, ToolProposed | ToolAmended)
    }
    proposal = proposals.get(call_id)
    if proposal is None:
        raise UnknownCall(f"preview for unknown call {call_id}")
    members: list[Proposal] = [proposal]
    approval_id = approval_id_for(call_id)
    batch_id = ""
    if isinstance(proposal, ToolProposed) and proposal.batch_id:
        batch_id = proposal.batch_id
        members = [p for p in proposals.values()
                   if isinstance(p, ToolProposed) and p.batch_id == batch_id]
        if len(members) < proposal.batch_size:
            return None  # the rest of the batch is not recorded yet; its previews will come
        approval_id = approval_id_for(f"batch-{batch_id}")
    default = session_cluster(events)
    # What the gate recorded refusing stays refused (a cluster that was not connected when
    # the call was classified): the batch never waits for a dry run that will not come.
    recorded = {e.call_id: e for e in events
                if isinstance(e, ToolClassified) and e.access == "refused"}
    classified: list[Member] = []
    for m in members:
        where = resolve_cluster(m, default, clusters)
        gone = recorded.get(m.call_id)
        classified.append((m, Classification("refused", gone.rule) if gone is not None
                           else classify(policy, m, where)))
    writes = [(m, c) for m, c in classified if c.access == "write" and c.args is not None]
    # A member the gate refused (on_proposed recorded why) never gets a preview: the batch
    # does not wait for it. The rest is decided, and the card says what is not in it.
    refused = [(m, c) for m, c in classified
               if m.call_id not in {w.call_id for w, _ in writes}]
    # Only the executor of the cluster the gate classified a call for is believed about it.
    previews = {e.call_id: e for e in lifecycle.believed(events) if isinstance(e, PreviewRecorded)}
    if not writes or any(m.call_id not in previews for m, _ in writes):
        return None  # wait for every write's dry run: one decision covers the whole batch
    # A write by label selector whose dry run failed enumerated no set ("no objects
    # matched"): no approval could ever run it (the executor acts only on a previewed set),
    # so it is refused with the dry run's words — never a card that approves nothing.
    unset = [(m, c) for m, c in writes
             if c.args and c.args.get("selector") and not previews[m.call_id].ok]
    writes = [(m, c) for m, c in writes if (m, c) not in unset]
    where_of = {m.call_id: (c.target.cluster if c.target else "") for m, c in classified}
    on = list(dict.fromkeys(where_of[m.call_id] for m, _ in (*writes, *unset)))
    if len(on) <= 1:
        return [Batch(proposal, approval_id, batch_id, tuple(writes), tuple(refused),
                      tuple(unset), previews)]
    # Writes on several clusters: one approval per cluster, each naming the calls the others
    # hold (the refused members are named on each).
    return [Batch(proposal, approval_id_for(f"batch-{batch_id}@{cluster}"), batch_id,
                  tuple(w for w in writes if where_of[w[0].call_id] == cluster),
                  tuple(refused), tuple(u for u in unset if where_of[u[0].call_id] == cluster),
                  previews)
            for cluster in on]


def approval_request(events: Sequence[Event], batch: Batch, policy: Policy,
                     changes: list[risk.Change], now: datetime, ttl_s: float,
                     history_window_s: float, cause: str) -> ApprovalRequested:
    """The request for a batch with writes: each call exactly as it will run, where its effect
    lands, the risk flags, the recent history of its targets, who may not approve it and how
    many must."""
    calls: list[ApprovalCall] = []
    effects: dict[str, Effect] = {}
    flags: list[str] = []
    lines: list[str] = []
    previews = batch.previews
    for m, c in batch.writes:
        p = previews[m.call_id]
        assert c.args is not None
        target = c.target or m.target
        # Protection follows the effect: the namespaces the write lands in, the gate's own
        # knowledge first, the dry run's only added (it can never relax anything).
        effect = risk.effect_of(m.tool, target, p.blast_radius, p.error)
        effects[m.call_id] = effect
        landed = tuple(ns for ns, _ in effect.namespaces)
        radius = msgspec.structs.replace(
            p.blast_radius, affected_namespaces=landed,
            production_like=any(risk.production_like(ns) for ns in landed)
            or risk.production_cluster(target.cluster, policy))
        call = ApprovalCall(
            call_id=m.call_id, tool=m.tool, args=c.args,
            call_hash=catalogue.call_hash(m.tool, c.args), target=target, diff=p.diff,
            blast_radius=radius, resource_version=p.resource_version, preview_error=p.error,
            context=p.context, effect=p.effect,
        )
        calls.append(call)
        flags += risk.flags_for(call, m.tool, policy)
        flags += risk.autoscaler_flags(call, m.tool)
        h_lines, h_flags = risk.history(changes, call, m.tool, now, history_window_s)
        lines += h_lines
        flags += h_flags
    for m, c in batch.refused:
        what = (c.target or m.target).describe()
        flags.append(f"not in this batch, refused by the gate and never run: {m.tool} "
                     f"{what} ({c.rule[:300]})".replace("  ", " "))
    for m, c in batch.unset:
        what = (c.target or m.target).describe()
        flags.append(f"not in this batch, refused by the gate and never run: {m.tool} "
                     f"{what} (nothing to approve: {previews[m.call_id].error[:300]})")
    writes = batch.writes
    # Who asked comes from the gateway's records in the log, not the planner's field.
    asker = asker_of(events, batch.proposal)
    requester = asker.requested_by
    forbidden: set[str] = set()
    for m, _ in writes:
        if policy.protects(effects[m.call_id]):
            forbidden |= asker_of(events, m).barred
    required = max(policy.approvals_for(effects[m.call_id]) for m, _ in writes)
    policy_lines: list[str] = []
    for m, _ in writes:
        for line in policy.describe_effect(effects[m.call_id]):
            if line not in policy_lines:
                policy_lines.append(line)
    return ApprovalRequested(
        session_id=batch.proposal.session_id, approval_id=batch.approval_id, calls=tuple(calls),
        rationale="\n".join(dict.fromkeys(m.rationale for m, _ in writes if m.rationale)),
        evidence=tuple(dict.fromkeys(e for m, _ in writes for e in m.evidence)),
        expected_outcome="\n".join(
            dict.fromkeys(m.expected_outcome for m, _ in writes if m.expected_outcome)),
        requested_by=requester, requested_via=asker.via,
        risk_flags=tuple(dict.fromkeys(f[:2000] for f in flags)),
        history=tuple(lines[-20:]),
        expires_at=now + timedelta(seconds=ttl_s),
        required_approvals=required, forbidden_approvers=tuple(sorted(forbidden)),
        policy=tuple(policy_lines), batch_id=batch.batch_id, title=card.title_of(calls),
        key_signed_only=any(policy.key_signed_only(effects[m.call_id]) for m, _ in writes),
        actor=ACTOR, causation_id=cause, correlation_id=batch.proposal.correlation_id,
        gathered_evidence=_gathered(writes, previews),
    )


def _gathered(writes: Sequence[Member], previews: dict[str, PreviewRecorded]) -> tuple[str, ...]:
    """The executor's gathered facts of every call, each once; in a batch of several targets
    each line already names its object, so they are simply listed in call order."""
    lines: list[str] = []
    for m, _ in writes:
        lines += previews[m.call_id].gathered
    return tuple(dict.fromkeys(lines))[:50]


# -- decisions -------------------------------------------------------------------------------

def decide(state: lifecycle.ApprovalState, d: ApprovalDecided, now: datetime,
           verify: lifecycle.Verifier | None = None) -> list[Event]:
    """The outcome of a pending approval once decision `d` is in the log (`state` folds it):
    [] while it waits for another approver; a rejection of `d` if it cannot count; else the
    outcome to record — an expiry, a denial (with the amended call for modified args), or a
    grant whose per-call grants are UNSIGNED (the handler signs them). `verify` says why a
    decision's signature does not count (the handler's registry): such a decision counts for
    nothing, so two-approver rules count distinct principals with valid signatures."""
    req = state.request
    common: dict[str, Any] = {"session_id": d.session_id, "actor": ACTOR,
                              "causation_id": d.event_id,
                              "correlation_id": req.correlation_id}
    if lifecycle.is_expired(req, now):
        return [ApprovalExpired(approval_id=req.approval_id, call_ids=req.call_ids, **common)]
    folded = state.decision(verify)
    for rejected, why in folded.rejected:
        if rejected.event_id == d.event_id:
            return [rejection(d, why)]
    if folded.verdict == "pending":
        return []
    decider = folded.deciding
    assert decider is not None
    if folded.verdict == "denied":
        return [ApprovalDenied(approval_id=req.approval_id, call_ids=req.call_ids,
                               approver=decider.approver, reason=decider.reason, **common)]
    if folded.verdict == "modified":
        amended = amended_call(req, decider)
        return [
            ApprovalDenied(approval_id=req.approval_id, call_ids=req.call_ids,
                           approver=decider.approver,
                           reason=f"modified by {decider.approver}: replaced by call "
                                  f"{amended.call_id}"
                                  + (f" — {decider.reason}" if decider.reason else ""),
                           superseded_by=amended.call_id, **common),
            amended,
        ]
    approver = "+".join(folded.approved_by)
    not_after = min(req.expires_at, now + timedelta(minutes=5))
    grants = tuple(
        Grant(call_id=c.call_id, call_hash=c.call_hash, approval_id=req.approval_id,
              approver=approver, not_after=not_after, resource_version=c.resource_version,
              session_id=req.session_id, target=c.target, version=GRANT_VERSION,
              effect_digest=effect_digest(c.effect))
        for c in req.calls
    )
    return [ApprovalGranted(approval_id=req.approval_id, approver=approver, grants=grants,
                            **common)]


def amended_of(state: lifecycle.ApprovalState,
               verify: lifecycle.Verifier | None = None) -> ToolAmended:
    """The amended call of an approval denied by modification, rebuilt from the decision that
    modified it (deterministic ids: appending it again is a no-op)."""
    decider = state.decision(verify).deciding
    assert decider is not None
    return amended_call(state.request, decider)


def edits_problem(req: ApprovalRequested, d: ApprovalDecided) -> str | None:
    """Why a decision's modified args are not the recorded args with the edits its approver
    signed applied (None: they are, or nothing was modified)."""
    if d.args is None:
        return None
    tool = catalogue.lookup(req.calls[0].tool) if len(req.calls) == 1 else None
    if tool is None or d.edits is None:
        return "modified args without the approver's signed edits"
    try:
        expected = catalogue.canonical_args(tool.parse_args({**req.calls[0].args, **d.edits}))
    except msgspec.ValidationError as exc:
        return f"the signed edits are not valid args: {exc}"
    # Compared as JSON (a tuple in the canonical args is a list in the decoded event).
    if msgspec.json.encode(expected, order="sorted") != msgspec.json.encode(d.args,
                                                                           order="sorted"):
        return "the modified args are not the edits the approver signed"
    return None


def rejection(d: ApprovalDecided, why: str) -> DecisionRejected:
    return DecisionRejected(session_id=d.session_id, approval_id=d.approval_id,
                            approver=d.approver, reason=why[:2000], actor=ACTOR,
                            causation_id=d.event_id,
                            event_id=derived_id("e", d.event_id, "rejected"))


def expiry(req: ApprovalRequested) -> ApprovalExpired:
    """The outcome of a request nobody decided in time."""
    return ApprovalExpired(session_id=req.session_id, approval_id=req.approval_id,
                           call_ids=req.call_ids, actor=ACTOR, causation_id=req.event_id,
                           correlation_id=req.correlation_id)


# -- the gate's memory of released changes ---------------------------------------------------

def changes_of(req: ApprovalRequested, granted: ApprovalGranted) -> list[risk.Change]:
    """What a granted request changes, for the history flags of later requests."""
    out = []
    for c in req.calls:
        before, after = _change_of(c)
        out.append(risk.Change(at=granted.occurred_at, tool=c.tool, target=c.target,
                               before=before, after=after, approver=granted.approver,
                               session_id=granted.session_id))
    return out


def _change_of(c: ApprovalCall) -> tuple[object, object]:
    r = c.blast_radius
    if r.replicas_before is not None or r.replicas_after is not None:
        return r.replicas_before, r.replicas_after
    if c.diff:
        return c.diff[0].before, c.diff[0].after
    return None, None
