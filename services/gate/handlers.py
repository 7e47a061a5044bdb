"""The gate's handlers: one per event type it consumes. All state comes from the log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from schemas import catalogue
from schemas import subjects as S
from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    BlastRadius,
    DecisionRejected,
    Grant,
    ToolClassified,
    ToolRefused,
)
from schemas.base import Event
from schemas.commands import ExecCommand, command_encoder
from schemas.execution import PreviewRecorded
from schemas.planning import ToolProposed
from services.gate import domain
from services.gate.settings import GateSettings
from services.runtime import signing
from services.runtime.bus import Bus, decode_stored
from services.runtime.errors import ConcurrencyConflict, PoisonMessage

log = logging.getLogger(__name__)

ACTOR = "gate"
OCC_ATTEMPTS = 20


class Gate:
    def __init__(self, bus: Bus, settings: GateSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.key = signing.load_private(settings.key_file)
        self._cursor = 1
        self._watch: dict[str, ApprovalRequested] = {}

    async def handle(self, msg: Msg) -> None:
        event = decode_stored(msg.subject, msg.data)
        match event:
            case ToolProposed():
                await self.on_proposed(event)
            case PreviewRecorded():
                await self.on_preview(event)
            case ApprovalDecided():
                await self.on_decided(event)
            case _:
                raise PoisonMessage(f"the gate does not handle {event.type}")

    # -- proposals ---------------------------------------------------------------------------

    async def on_proposed(self, p: ToolProposed) -> None:
        c = domain.classify(p)
        classified = ToolClassified(
            session_id=p.session_id, call_id=p.call_id, access=c.access, rule=c.rule,
            actor=ACTOR, causation_id=p.event_id, correlation_id=p.correlation_id,
        )
        await self._append_once(classified)
        log.info("classified %s as %s", p.tool, c.access,
                 extra={"session_id": p.session_id, "call_id": p.call_id})
        if c.access == "refused" or c.args is None:
            await self._append_once(
                ToolRefused(
                    session_id=p.session_id, call_id=p.call_id, tool=p.tool[:200],
                    reason=c.rule[:2000], actor=ACTOR, causation_id=classified.event_id,
                    correlation_id=p.correlation_id,
                )
            )
            return
        kind = "read" if c.access == "read" else "preview"
        cmd = ExecCommand(
            kind=kind, session_id=p.session_id, call_id=p.call_id, tool=p.tool, args=c.args,
            target=c.target or p.target, causation_id=p.event_id,
        )
        # The Msg-Id makes a re-publish after a redelivery a no-op on the server.
        await self.bus.publish_command(
            S.exec_subject(kind, p.session_id), command_encoder.encode(cmd),
            msg_id=f"{p.call_id}-{kind}",
        )

    # -- previews → approval requests --------------------------------------------------------

    async def on_preview(self, pv: PreviewRecorded) -> None:
        events = [s.event for s in await self.bus.session(pv.session_id)]
        proposal = next(
            (e for e in events if isinstance(e, ToolProposed) and e.call_id == pv.call_id), None
        )
        if proposal is None:
            raise PoisonMessage(f"preview for unknown call {pv.call_id}")
        c = domain.classify(proposal)
        if c.access != "write" or c.args is None:
            raise PoisonMessage(f"preview for a call that is not a write: {pv.call_id}")
        target = c.target or proposal.target
        flags: list[str] = []
        if domain.production_like(target.namespace):
            flags.append(f"production-like namespace {target.namespace!r}")
        if not pv.ok:
            flags.append(f"dry run failed: {pv.error}")
        radius = pv.blast_radius
        if radius.replicas_after == 0:
            flags.append("scales to zero: every pod will be removed")
        now = datetime.now(UTC)
        request = ApprovalRequested(
            session_id=pv.session_id,
            approval_id=domain.approval_id_for(pv.call_id),
            calls=(
                ApprovalCall(
                    call_id=proposal.call_id, tool=proposal.tool, args=c.args,
                    call_hash=catalogue.call_hash(proposal.tool, c.args), target=target,
                    diff=pv.diff,
                    blast_radius=BlastRadius(
                        replicas_before=radius.replicas_before,
                        replicas_after=radius.replicas_after,
                        pods_affected=radius.pods_affected,
                        production_like=domain.production_like(target.namespace),
                        summary=radius.summary,
                    ),
                    resource_version=pv.resource_version, preview_error=pv.error,
                ),
            ),
            rationale=proposal.rationale, evidence=proposal.evidence,
            expected_outcome=proposal.expected_outcome, requested_by=proposal.requested_by,
            risk_flags=tuple(flags),
            expires_at=now + timedelta(seconds=self.settings.approval_ttl_s),
            actor=ACTOR, causation_id=pv.event_id, correlation_id=proposal.correlation_id,
        )
        await self._append_once(request)
        log.info("approval requested", extra={"session_id": pv.session_id,
                                              "approval_id": request.approval_id})

    # -- decisions ---------------------------------------------------------------------------

    async def on_decided(self, d: ApprovalDecided) -> None:
        for _ in range(OCC_ATTEMPTS):
            stored = await self.bus.session(d.session_id)
            last_seq = stored[-1].seq if stored else 0
            views = domain.fold_approvals([s.event for s in stored])
            view = views.get(d.approval_id)
            if view is None:
                out: Event | None = DecisionRejected(
                    session_id=d.session_id, approval_id=d.approval_id, approver=d.approver,
                    reason="no such approval in this session", actor=ACTOR,
                    causation_id=d.event_id,
                )
            elif view.state == "granted":
                # Already granted (e.g. redelivered after a crash): make sure it was released.
                assert isinstance(view.outcome, ApprovalGranted)
                await self.release(view.request, view.outcome)
                return
            elif view.state != "pending":
                return
            else:
                out = self.decide(view, d)
            try:
                await self.bus.append(out, expect_session_seq=last_seq)
            except ConcurrencyConflict:
                continue  # someone appended to the session meanwhile: fold again
            if isinstance(out, ApprovalGranted) and view is not None:
                await self.release(view.request, out)
            return
        raise ConcurrencyConflict(f"could not decide {d.approval_id}: session too busy")

    def decide(self, view: domain.ApprovalView, d: ApprovalDecided) -> Event:
        req = view.request
        common = {"session_id": d.session_id, "actor": ACTOR, "causation_id": d.event_id,
                  "correlation_id": req.correlation_id}
        now = datetime.now(UTC)
        if view.is_expired(now):
            return ApprovalExpired(approval_id=req.approval_id, call_ids=req.call_ids, **common)
        if d.decision == "deny":
            return ApprovalDenied(approval_id=req.approval_id, call_ids=req.call_ids,
                                  approver=d.approver, reason=d.reason, **common)
        not_after = min(req.expires_at, now + timedelta(minutes=5))
        grants = tuple(
            signing.sign(
                Grant(call_id=c.call_id, call_hash=c.call_hash, approval_id=req.approval_id,
                      approver=d.approver, not_after=not_after,
                      resource_version=c.resource_version),
                self.key,
            )
            for c in req.calls
        )
        return ApprovalGranted(approval_id=req.approval_id, approver=d.approver, grants=grants,
                               **common)

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

    # -- expiry ------------------------------------------------------------------------------

    async def expire_due(self) -> int:
        """Records approval.expired for every pending approval past its expiry.

        Requests are learnt incrementally from the log (a cursor), so a restarted gate rebuilds
        the same watch list; each is checked once it is due and then forgotten.
        """
        async for s in self.bus.read(S.tag_filter("gate", "approval.requested"), self._cursor):
            self._cursor = s.seq + 1
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
                    await self.bus.append(out, expect_session_seq=stored[-1].seq)
                except ConcurrencyConflict:
                    continue
                expired += 1
                break
            self._watch.pop(req.approval_id, None)
        return expired

    async def _append_once(self, event: Event) -> None:
        try:
            await self.bus.append(event, once_per_key=True)
        except ConcurrencyConflict:
            log.info("already recorded %s", event.type, extra={"session_id": event.session_id})
