"""The gate's handlers: one per event type it consumes. All state comes from the log."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from schemas import catalogue
from schemas import subjects as S
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
    decision_state,
    effect_digest,
)
from schemas.base import Event
from schemas.commands import ExecCommand, command_encoder
from schemas.events import AnyEvent
from schemas.execution import PreviewRecorded
from schemas.ids import derived_id
from schemas.planning import ToolProposed
from services.gate import domain, risk
from services.gate.policy import Effect
from services.gate.settings import GateSettings
from services.runtime import signing
from services.runtime.bus import Bus, Link
from services.runtime.delivery import Delivery, Poisoned
from services.runtime.errors import ConcurrencyConflict, PoisonMessage
from services.runtime.identity import ForgedEvent
from services.runtime.log import Expect

log = logging.getLogger(__name__)

ACTOR = "gate"
OCC_ATTEMPTS = 20
Proposal = ToolProposed | ToolAmended


class Gate:
    def __init__(self, bus: Bus, settings: GateSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.policy = settings.policy
        self.key = signing.load_private(settings.key_file)
        # Rebuildable from the log at any time (cursors start at 1 on every start).
        self._expiry_cursor = 1
        self._watch: dict[str, ApprovalRequested] = {}
        self._history_cursor = 1
        # Previews of different sessions may be handled at once: one reader of the history.
        self._history_lock = asyncio.Lock()
        self._requests: dict[str, ApprovalRequested] = {}
        self._changes: list[risk.Change] = []

    async def handle(self, d: Delivery[AnyEvent]) -> None:
        # Decoded and signed by the emitter its subject names: the consume loop checked it.
        event = d.event
        if not isinstance(event, ToolProposed) or event.batch_id:
            # What follows reads the session, which must include this event (a replica may
            # lag the leader); a lone proposal is classified without reading it.
            await self.bus.catch_up(event.session_id, d.seq)
        match event:
            case ToolProposed():
                # The proposal is the event its classification follows: chain to it directly.
                await self.on_proposed(event, hint=d.link)
            case PreviewRecorded():
                await self.on_preview(event)
            case ApprovalDecided():
                await self.on_decided(event)
            case _:
                raise PoisonMessage(f"the gate does not handle {event.type}")

    async def on_poison(self, p: Poisoned[AnyEvent]) -> None:
        """A message the gate can never handle is recorded, so no session waits on it forever.
        Fails closed: a proposal that cannot be handled is refused, a decision rejected. A
        forged event (not signed by its emitter) is recorded the same way, naming the forgery,
        so the session shows that something was rejected rather than waiting on it."""
        event, exc = p.event, p.error
        if event is None:
            return  # undecodable or misrouted: nothing trustworthy to attach it to (logged)
        if isinstance(exc, ForgedEvent):
            reason = (f"rejected a forged {event.type} at seq {p.seq} ({exc.problem}): "
                      f"{exc.detail}; it was not acted upon")[:2000]
        else:
            reason = f"the gate could not handle this: {exc}"[:2000]
        match event:
            case ToolProposed():
                await self.bus.append_once(ToolRefused(
                    session_id=event.session_id, call_id=event.call_id, tool=event.tool[:200],
                    reason=reason, actor=ACTOR, causation_id=event.event_id))
            case PreviewRecorded() | ApprovalDecided():
                await self.bus.append_once(DecisionRejected(
                    session_id=event.session_id,
                    approval_id=getattr(event, "approval_id", "") or domain.approval_id_for(
                        getattr(event, "call_id", "")),
                    reason=reason, actor=ACTOR, causation_id=event.event_id,
                    event_id=derived_id("e", event.event_id, "poison")))

    # -- classification ----------------------------------------------------------------------

    def classify(self, p: Proposal) -> domain.Classification:
        if self.policy.forbids(p.tool):
            return domain.Classification("refused", f"policy forbids the tool {p.tool!r}")
        return domain.classify_call(p.tool, p.args)

    async def on_proposed(self, p: Proposal, hint: Link | None = None) -> None:
        c = self.classify(p)
        classified = ToolClassified(
            session_id=p.session_id, call_id=p.call_id, access=c.access, rule=c.rule[:2000],
            actor=ACTOR, causation_id=p.event_id, correlation_id=p.correlation_id,
        )
        link = await self.bus.append_once(classified, Expect.new_key(hint=hint))
        # Reads are the bulk of the traffic and their record is the log: debug, not info.
        log.log(logging.DEBUG if c.access == "read" else logging.INFO,
                "classified %s as %s", p.tool, c.access,
                extra={"session_id": p.session_id, "call_id": p.call_id})
        if c.access == "refused" or c.args is None:
            await self.bus.append_once(
                ToolRefused(
                    session_id=p.session_id, call_id=p.call_id, tool=p.tool[:200],
                    reason=c.rule[:2000], actor=ACTOR, causation_id=classified.event_id,
                    correlation_id=p.correlation_id,
                )
            )
            if isinstance(p, ToolProposed) and p.batch_id:
                # Its batch may have had every other preview already, waiting only for this
                # member to be recorded: it will get no preview, so decide the rest now.
                await self.request_approval(p.session_id, p.call_id, p.event_id)
            return
        kind: S.ExecKind = "read" if c.access == "read" else "preview"
        cmd = ExecCommand(
            kind=kind, session_id=p.session_id, call_id=p.call_id, tool=p.tool, args=c.args,
            target=c.target or p.target, causation_id=p.event_id,
            after_seq=link[0] if link else 0, after_hash=link[1] if link else "",
        )
        # The Msg-Id makes a re-publish after a redelivery a no-op on the server.
        await self.bus.publish_command(
            S.exec_subject(kind, p.session_id), command_encoder.encode(cmd),
            msg_id=f"{p.call_id}-{kind}",
        )

    # -- previews → approval requests --------------------------------------------------------

    async def on_preview(self, pv: PreviewRecorded) -> None:
        await self.request_approval(pv.session_id, pv.call_id, pv.event_id)

    async def request_approval(self, session_id: str, call_id: str, cause: str) -> None:
        """Asks for the approval of a call, or of its whole batch once every write member has
        its dry run (members the gate refused are left out and named on the card)."""
        events = [s.event for s in await self.bus.session(session_id)]
        proposals: dict[str, Proposal] = {
            e.call_id: e for e in events if isinstance(e, ToolProposed | ToolAmended)
        }
        proposal = proposals.get(call_id)
        if proposal is None:
            raise PoisonMessage(f"preview for unknown call {call_id}")
        members: list[Proposal] = [proposal]
        approval_id = domain.approval_id_for(call_id)
        batch_id = ""
        if isinstance(proposal, ToolProposed) and proposal.batch_id:
            batch_id = proposal.batch_id
            members = [p for p in proposals.values()
                       if isinstance(p, ToolProposed) and p.batch_id == batch_id]
            if len(members) < proposal.batch_size:
                return  # the rest of the batch is not recorded yet; its previews will come
            approval_id = domain.approval_id_for(f"batch-{batch_id}")
        classified = [(m, self.classify(m)) for m in members]
        writes = [(m, c) for m, c in classified if c.access == "write" and c.args is not None]
        # A member the gate refused (on_proposed recorded why) never gets a preview: the batch
        # does not wait for it. The rest is decided, and the card says what is not in it.
        refused = [(m, c) for m, c in classified
                   if m.call_id not in {w.call_id for w, _ in writes}]
        previews = {e.call_id: e for e in events if isinstance(e, PreviewRecorded)}
        if not writes or any(m.call_id not in previews for m, _ in writes):
            return  # wait for every write's dry run: one decision covers the whole batch
        # A write by label selector whose dry run failed enumerated no set ("no objects
        # matched"): no approval could ever run it (the executor acts only on a previewed set),
        # so it is refused with the dry run's words — never a card that approves nothing.
        unset = [(m, c) for m, c in writes
                 if c.args and c.args.get("selector") and not previews[m.call_id].ok]
        for m, _ in unset:
            p = previews[m.call_id]
            await self.bus.append_once(ToolRefused(
                session_id=session_id, call_id=m.call_id, tool=m.tool[:200],
                reason=f"nothing to approve: {p.error}"[:2000], actor=ACTOR,
                causation_id=p.event_id, correlation_id=m.correlation_id))
        writes = [(m, c) for m, c in writes if (m, c) not in unset]
        if not writes:
            return
        await self.refresh_history()
        now = datetime.now(UTC)
        calls: list[ApprovalCall] = []
        effects: dict[str, Effect] = {}
        flags: list[str] = []
        lines: list[str] = []
        for m, c in writes:
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
                production_like=any(risk.production_like(ns) for ns in landed))
            call = ApprovalCall(
                call_id=m.call_id, tool=m.tool, args=c.args,
                call_hash=catalogue.call_hash(m.tool, c.args), target=target, diff=p.diff,
                blast_radius=radius, resource_version=p.resource_version, preview_error=p.error,
                context=p.context, effect=p.effect,
            )
            calls.append(call)
            flags += risk.flags_for(call, m.tool)
            flags += risk.autoscaler_flags(call, m.tool)
            h_lines, h_flags = risk.history(self._changes, call, m.tool, now,
                                            self.settings.history_window_s)
            lines += h_lines
            flags += h_flags
        for m, c in refused:
            what = (c.target or m.target).describe()
            flags.append(f"not in this batch, refused by the gate and never run: {m.tool} "
                         f"{what} ({c.rule[:300]})".replace("  ", " "))
        for m, c in unset:
            what = (c.target or m.target).describe()
            flags.append(f"not in this batch, refused by the gate and never run: {m.tool} "
                         f"{what} (nothing to approve: {previews[m.call_id].error[:300]})")
        # Who asked comes from the gateway's records in the log, not the planner's field.
        requester = domain.asker_of(events, proposal).requested_by
        forbidden: set[str] = set()
        for m, _ in writes:
            if self.policy.protects(effects[m.call_id]):
                forbidden |= domain.asker_of(events, m).barred
        required = max(self.policy.approvals_for(effects[m.call_id]) for m, _ in writes)
        policy_lines: list[str] = []
        for m, _ in writes:
            for line in self.policy.describe_effect(effects[m.call_id]):
                if line not in policy_lines:
                    policy_lines.append(line)
        request = ApprovalRequested(
            session_id=session_id, approval_id=approval_id, calls=tuple(calls),
            rationale="\n".join(dict.fromkeys(m.rationale for m, _ in writes if m.rationale)),
            evidence=tuple(dict.fromkeys(e for m, _ in writes for e in m.evidence)),
            expected_outcome="\n".join(
                dict.fromkeys(m.expected_outcome for m, _ in writes if m.expected_outcome)),
            requested_by=requester, risk_flags=tuple(dict.fromkeys(f[:2000] for f in flags)),
            history=tuple(lines[-20:]),
            expires_at=now + timedelta(seconds=self.settings.approval_ttl_s),
            required_approvals=required, forbidden_approvers=tuple(sorted(forbidden)),
            policy=tuple(policy_lines), batch_id=batch_id, title=domain.title_of(calls),
            actor=ACTOR, causation_id=cause, correlation_id=proposal.correlation_id,
            gathered_evidence=_gathered(writes, previews),
        )
        await self.bus.append_once(request)
        log.info("approval requested", extra={"session_id": session_id,
                                              "approval_id": request.approval_id})

    # -- decisions ---------------------------------------------------------------------------

    async def on_decided(self, d: ApprovalDecided) -> None:
        for _ in range(OCC_ATTEMPTS):
            stored = await self.bus.session(d.session_id)
            views = domain.fold_approvals([s.event for s in stored])
            view = views.get(d.approval_id)
            if view is None:
                await self._reject(d, "no such approval in this session")
                return
            if view.state == "granted":
                # Already granted (e.g. redelivered after a crash): make sure it was released.
                assert isinstance(view.outcome, ApprovalGranted)
                await self.release(view.request, view.outcome)
                return
            if view.state != "pending":
                await self._reject(d, f"approval {d.approval_id} is already {view.state}")
                return
            outputs = self.decide(view, d)
            if not outputs:
                return  # a valid approval that still waits for another approver
            try:
                await self.bus.append(outputs[0], Expect.after(stored[-1].link))
            except ConcurrencyConflict:
                continue  # someone appended to the session meanwhile: fold again
            for out in outputs[1:]:
                await self.bus.append_once(out)
            first = outputs[0]
            if isinstance(first, ApprovalGranted):
                await self.release(view.request, first)
            for out in outputs[1:]:
                if isinstance(out, ToolAmended):
                    await self.on_proposed(out)
            return
        raise ConcurrencyConflict(f"could not decide {d.approval_id}: session too busy")

    def decide(self, view: domain.ApprovalView, d: ApprovalDecided) -> list[Event]:
        req = view.request
        common: dict[str, Any] = {"session_id": d.session_id, "actor": ACTOR,
                                  "causation_id": d.event_id,
                                  "correlation_id": req.correlation_id}
        now = datetime.now(UTC)
        if view.is_expired(now):
            return [ApprovalExpired(approval_id=req.approval_id, call_ids=req.call_ids, **common)]
        state = decision_state(req, view.decisions)
        for rejected, why in state.rejected:
            if rejected.event_id == d.event_id:
                return [self._rejection(d, why)]
        if state.verdict == "pending":
            return []
        decider = state.deciding
        assert decider is not None
        if state.verdict == "denied":
            return [ApprovalDenied(approval_id=req.approval_id, call_ids=req.call_ids,
                                   approver=decider.approver, reason=decider.reason, **common)]
        if state.verdict == "modified":
            assert decider.args is not None
            original = req.calls[0]
            new_id = derived_id("c", decider.event_id, "amended")
            return [
                ApprovalDenied(approval_id=req.approval_id, call_ids=req.call_ids,
                               approver=decider.approver,
                               reason=f"modified by {decider.approver}: replaced by call {new_id}"
                                      + (f" — {decider.reason}" if decider.reason else ""),
                               superseded_by=new_id, **common),
                ToolAmended(call_id=new_id, replaces=original.call_id, tool=original.tool,
                            args=decider.args, target=original.target,
                            amended_by=decider.approver, requested_by=req.requested_by,
                            rationale=req.rationale, evidence=req.evidence,
                            expected_outcome=req.expected_outcome,
                            event_id=derived_id("e", decider.event_id, "amended"), **common),
            ]
        approver = "+".join(state.approved_by)
        not_after = min(req.expires_at, now + timedelta(minutes=5))
        grants = tuple(
            signing.sign(
                Grant(call_id=c.call_id, call_hash=c.call_hash, approval_id=req.approval_id,
                      approver=approver, not_after=not_after,
                      resource_version=c.resource_version, session_id=req.session_id,
                      target=c.target, version=GRANT_VERSION,
                      effect_digest=effect_digest(c.effect)),
                self.key,
            )
            for c in req.calls
        )
        return [ApprovalGranted(approval_id=req.approval_id, approver=approver, grants=grants,
                                **common)]

    def _rejection(self, d: ApprovalDecided, why: str) -> DecisionRejected:
        return DecisionRejected(session_id=d.session_id, approval_id=d.approval_id,
                                approver=d.approver, reason=why[:2000], actor=ACTOR,
                                causation_id=d.event_id,
                                event_id=derived_id("e", d.event_id, "rejected"))

    async def _reject(self, d: ApprovalDecided, why: str) -> None:
        log.warning("decision rejected: %s", why, extra={"approval_id": d.approval_id})
        await self.bus.append_once(self._rejection(d, why))

    async def release(self, req: ApprovalRequested, granted: ApprovalGranted) -> None:
        calls = {c.call_id: c for c in req.calls}
        for grant in granted.grants:
            call = calls[grant.call_id]
            cmd = ExecCommand(
                kind="write", session_id=req.session_id, call_id=call.call_id, tool=call.tool,
                args=call.args, target=call.target, grant=grant, causation_id=granted.event_id,
            )
            await self.bus.publish_command(
                S.exec_subject("write", req.session_id), command_encoder.encode(cmd),
                msg_id=f"{call.call_id}-write",
            )
            log.info("released", extra={"session_id": req.session_id, "call_id": call.call_id,
                                        "approval_id": req.approval_id})

    # -- the gate's memory of released changes (rebuilt from the log) ------------------------

    async def refresh_history(self) -> None:
        async with self._history_lock:
            await self._refresh_history()

    async def _refresh_history(self) -> None:
        async for s in self.bus.read(f"{S.EVENTS_PREFIX}.*.gate.approval.*.*",
                                     self._history_cursor):
            self._history_cursor = s.seq + 1
            ev = s.event
            if isinstance(ev, ApprovalRequested):
                self._requests[ev.approval_id] = ev
            elif isinstance(ev, ApprovalGranted) and ev.approval_id in self._requests:
                req = self._requests.pop(ev.approval_id)
                for c in req.calls:
                    before, after = _change_of(c)
                    self._changes.append(risk.Change(
                        at=ev.occurred_at, tool=c.tool, target=c.target, before=before,
                        after=after, approver=ev.approver, session_id=ev.session_id))
            elif isinstance(ev, ApprovalDenied | ApprovalExpired):
                self._requests.pop(ev.approval_id, None)
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.history_window_s)
        self._changes = [c for c in self._changes if c.at >= horizon]

    # -- expiry ------------------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Records approval.expired for every pending approval past its expiry.

        Requests are learnt incrementally from the log (a cursor), so a restarted gate rebuilds
        the same watch list; each is checked once it is due and then forgotten.
        """
        async for s in self.bus.read(S.tag_filter("gate", "approval.requested"),
                                     self._expiry_cursor):
            self._expiry_cursor = s.seq + 1
            assert isinstance(s.event, ApprovalRequested)
            self._watch[s.event.approval_id] = s.event
        now = datetime.now(UTC)
        expired = 0
        for req in [r for r in self._watch.values() if r.expires_at <= now]:
            for _ in range(OCC_ATTEMPTS):
                stored = await self.bus.session(req.session_id)
                view = domain.fold_approvals([s.event for s in stored]).get(req.approval_id)
                if view is None or view.state != "pending":
                    break
                out = ApprovalExpired(session_id=req.session_id, approval_id=req.approval_id,
                                      call_ids=req.call_ids, actor=ACTOR,
                                      causation_id=req.event_id,
                                      correlation_id=req.correlation_id)
                try:
                    await self.bus.append(out, Expect.after(stored[-1].link))
                except ConcurrencyConflict:
                    continue
                expired += 1
                break
            self._watch.pop(req.approval_id, None)
        return expired


def _change_of(c: ApprovalCall) -> tuple[object, object]:
    r = c.blast_radius
    if r.replicas_before is not None or r.replicas_after is not None:
        return r.replicas_before, r.replicas_after
    if c.diff:
        return c.diff[0].before, c.diff[0].after
    return None, None


def _gathered(writes: list[tuple[Proposal, domain.Classification]],
              previews: dict[str, PreviewRecorded]) -> tuple[str, ...]:
    """The executor's gathered facts of every call, each once; in a batch of several targets
    each line already names its object, so they are simply listed in call order."""
    lines: list[str] = []
    for m, _ in writes:
        lines += previews[m.call_id].gathered
    return tuple(dict.fromkeys(lines))[:50]
