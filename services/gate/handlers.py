"""The gate's handlers: one per event type it consumes. All state comes from the log."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import msgspec

from schemas import lifecycle
from schemas import subjects as S
from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
    ToolAmended,
    ToolClassified,
    ToolRefused,
)
from schemas.approvers import REGISTRY_SESSION
from schemas.base import Event, Target
from schemas.events import AnyEvent
from schemas.execution import PreviewRecorded
from schemas.ids import derived_id
from schemas.planning import ToolProposed
from services.gate import domain, risk
from services.gate.settings import GateSettings
from services.runtime import approvers, signing
from services.runtime.bus import Bus, Link, Stored
from services.runtime.delivery import Delivery, Poisoned
from services.runtime.errors import ConcurrencyConflict, PoisonMessage
from services.runtime.identity import ForgedEvent
from services.runtime.log import Expect

log = logging.getLogger(__name__)

ACTOR = domain.ACTOR
OCC_ATTEMPTS = 20
Proposal = domain.Proposal


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
        # Who may approve, with which keys: folded from the log (admin-signed enrolments and
        # revocations), trusting only the admin keys it was provisioned with (issue 18).
        # Slack clicks are checked with Slack's signing secret, the gate's alone (issue 20).
        self.registry = approvers.Registry(approvers.load_admin_keys(settings.admin_keys_file),
                                           slack_secret=settings.slack_signing_secret)
        self._registry_cursor = 1
        self._registry_lock = asyncio.Lock()

    async def handle(self, d: Delivery[AnyEvent]) -> None:
        # Decoded and signed by the emitter its subject names: the consume loop checked it.
        event = d.event
        if not isinstance(event, ToolProposed) or event.batch_id:
            # What follows reads the session, which must include this event (a replica may
            # lag the leader); a lone proposal is classified without reading it.
            await self.bus.catch_up(event.session_id, d.seq)
        match event:
            case ToolProposed() | ToolAmended():
                # The proposal (or the gate's own amended call, consumed from the log like any
                # other) is the event its classification follows: chain to it directly.
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
            case ToolProposed() | ToolAmended():
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

    async def on_proposed(self, p: Proposal, hint: Link | None = None) -> None:
        c = domain.classify(self.policy, p)
        runs = c.access != "refused" and c.args is not None
        # The classification is also what releases the call: the executor consumes it and runs
        # a read, or a write's dry run, exactly as recorded here (the parsed, canonical args).
        # Nothing else is published (issue 17: commands are events).
        classified = ToolClassified(
            session_id=p.session_id, call_id=p.call_id, access=c.access, rule=c.rule[:2000],
            tool=p.tool[:200] if runs else "", args=c.args if runs else None,
            target=(c.target or p.target) if runs else Target(),
            actor=ACTOR, causation_id=p.event_id, correlation_id=p.correlation_id,
        )
        await self.bus.append_once(classified, Expect.new_key(hint=hint))
        # Reads are the bulk of the traffic and their record is the log: debug, not info.
        log.log(logging.DEBUG if c.access == "read" else logging.INFO,
                "classified %s as %s", p.tool, c.access,
                extra={"session_id": p.session_id, "call_id": p.call_id})
        if not runs:
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

    # -- previews → approval requests --------------------------------------------------------

    async def on_preview(self, pv: PreviewRecorded) -> None:
        await self.request_approval(pv.session_id, pv.call_id, pv.event_id)

    async def request_approval(self, session_id: str, call_id: str, cause: str) -> None:
        """Asks for the approval of a call, or of its whole batch once every write member has
        its dry run (members the gate refused are left out and named on the card)."""
        events = [s.event for s in await self.bus.session(session_id)]
        try:
            batch = domain.batch_of(events, call_id, self.policy)
        except domain.UnknownCall as exc:
            raise PoisonMessage(str(exc)) from exc
        if batch is None:
            return
        for refused in batch.refusals():
            await self.bus.append_once(refused)
        if not batch.writes:
            return
        await self.refresh_history()
        request = domain.approval_request(
            events, batch, self.policy, self._changes, datetime.now(UTC),
            self.settings.approval_ttl_s, self.settings.history_window_s, cause)
        await self.bus.append_once(request)
        log.info("approval requested", extra={"session_id": session_id,
                                              "approval_id": request.approval_id})

    # -- decisions ---------------------------------------------------------------------------

    async def on_decided(self, d: ApprovalDecided) -> None:
        await self.refresh_registry()
        for _ in range(OCC_ATTEMPTS):
            stored = await self.bus.session(d.session_id)
            # A Slack request that is not Slack's own (forged, stale or replayed) is said to
            # be that first, whatever else is true of it: the gateway answers such a request
            # 401 and tells nobody anything.
            forged = self._not_from_slack(stored, d)
            if forged is not None:
                await self._reject(d, forged)
                return
            state = lifecycle.fold(s.event for s in stored).get(d.approval_id)
            if state is None:
                await self._reject(d, "no such approval in this session")
                return
            verify = self._verifier(stored, d)
            if isinstance(state.outcome, ApprovalGranted):
                # Already granted (e.g. redelivered after a crash): the grant is recorded, and
                # that is what releases it — the executor consumes approval.granted itself. A
                # decision recorded after the grant is too late: said so (a Slack user is told).
                if _after(stored, state.outcome, d):
                    await self._reject(d, f"approval {d.approval_id} is already granted "
                                          f"(by {state.outcome.approver})")
                return
            if isinstance(state.outcome, ApprovalDenied) and state.outcome.superseded_by:
                # Denied by modification: the amended call it names must exist. A gate killed
                # between the two appends left only the denial; this completes it (once).
                await self.bus.append_once(domain.amended_of(state, verify))
                if state.outcome.causation_id == d.event_id:
                    return  # the deciding decision itself, redelivered: nothing to reject
            if state.recorded != "pending":
                await self._reject(d, f"approval {d.approval_id} is already {state.recorded}")
                return
            # A decision counts only with its approver's own signature, by a key enrolled for
            # them, over exactly this approval (there is no setting that skips this): one that
            # does not is recorded as rejected and changes nothing.
            why = verify(state.request, d)
            if why is not None:
                await self._reject(d, why)
                return
            outputs = [self._signed(out)
                       for out in domain.decide(state, d, datetime.now(UTC), verify)]
            if not outputs:
                return  # a valid approval that still waits for another approver
            try:
                await self.bus.append(outputs[0], Expect.after(stored[-1].link))
            except ConcurrencyConflict:
                continue  # someone appended to the session meanwhile: fold again
            for out in outputs[1:]:
                await self.bus.append_once(out)
            # A grant, once recorded, is released: the executor consumes approval.granted. An
            # amended call is classified when the gate consumes its `tool.amended` from the
            # log, like any proposal: a crash between here and there loses nothing.
            return
        raise ConcurrencyConflict(f"could not decide {d.approval_id}: session too busy")

    def unsigned(self, request: ApprovalRequested, d: ApprovalDecided,
                 fresh: bool = True) -> str | None:
        """Why decision `d` has no valid signature of its approver (None: it has one). A Slack
        click's timestamp is held to the gate's clock only when `fresh` (the decision being
        handled now, not one it already judged)."""
        try:
            self.registry.verify_decision(request, d, fresh=fresh)
        except approvers.Rejected as exc:
            return f"{exc}; the decision was not counted"
        return domain.edits_problem(request, d)

    def _not_from_slack(self, stored: list[Stored], d: ApprovalDecided) -> str | None:
        """Why Slack decision `d`'s request is not Slack's own, now: a replay of a request
        already used in this session, a signature that does not verify, a stale timestamp.
        None: it is, or `d` is no Slack decision, or the gate cannot tell (no secret: the
        registry's check rejects it then)."""
        sig = d.signed
        if sig is None or not sig.key_id.startswith("slack:"):
            return None
        replay = approvers.replayed(
            (s.event for s in stored if isinstance(s.event, ApprovalDecided)), d)
        if replay is not None:
            return replay
        if not self.registry.slack_secret:
            return None
        try:
            self.registry.check_slack_request(sig)
        except approvers.Rejected as exc:
            return f"{exc}; the decision was not counted"
        return None

    def _verifier(self, stored: list[Stored], current: ApprovalDecided) -> lifecycle.Verifier:
        """The check of every decision of the approval `current` is for, as the gate folds it:
        a replayed Slack request never counts; the Slack timestamp window applies to `current`,
        the decision handled now (the earlier ones were judged when they were handled, and a
        rejection recorded for those that did not count)."""
        decided = [s.event for s in stored if isinstance(s.event, ApprovalDecided)]

        def verify(request: ApprovalRequested, d: ApprovalDecided) -> str | None:
            replay = approvers.replayed(decided, d)
            if replay is not None:
                return replay
            return self.unsigned(request, d, fresh=d.event_id == current.event_id)
        return verify

    async def refresh_registry(self) -> None:
        async with self._registry_lock:
            async for s in self.bus.read(
                    f"{S.EVENTS_PREFIX}.{REGISTRY_SESSION}.gateway.approver.*.*",
                    self._registry_cursor):
                self._registry_cursor = s.seq + 1
                self.registry.apply(s.event)

    def _signed(self, out: Event) -> Event:
        """A grant's calls signed with the gate's key (the domain returns them unsigned)."""
        if not isinstance(out, ApprovalGranted):
            return out
        return msgspec.structs.replace(
            out, grants=tuple(signing.sign(g, self.key) for g in out.grants))

    async def _reject(self, d: ApprovalDecided, why: str) -> None:
        log.warning("decision rejected: %s", why, extra={"approval_id": d.approval_id})
        await self.bus.append_once(domain.rejection(d, why))

    # -- the gate's memory of released changes (rebuilt from the log) ------------------------

    async def refresh_history(self) -> None:
        async with self._history_lock:
            await self._refresh_history()

    async def _refresh_history(self) -> None:
        async for s in self.bus.read(f"{S.EVENTS_PREFIX}.*.gate.approval.*.>",
                                     self._history_cursor):
            self._history_cursor = s.seq + 1
            ev = s.event
            if isinstance(ev, ApprovalRequested):
                self._requests[ev.approval_id] = ev
            elif isinstance(ev, ApprovalGranted) and ev.approval_id in self._requests:
                self._changes += domain.changes_of(self._requests.pop(ev.approval_id), ev)
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
        for req in [r for r in self._watch.values() if lifecycle.is_expired(r, now)]:
            for _ in range(OCC_ATTEMPTS):
                stored = await self.bus.session(req.session_id)
                state = lifecycle.fold(s.event for s in stored).get(req.approval_id)
                if state is None or state.recorded != "pending":
                    break
                out = domain.expiry(req)
                try:
                    await self.bus.append(out, Expect.after(stored[-1].link))
                except ConcurrencyConflict:
                    continue
                expired += 1
                break
            self._watch.pop(req.approval_id, None)
        return expired



def _after(stored: list[Stored], outcome: Event, d: ApprovalDecided) -> bool:
    """Whether decision `d` was stored after `outcome` (a late decision, not a redelivered one
    the outcome was decided on)."""
    at = {s.event.event_id: s.seq for s in stored}
    return at.get(d.event_id, 0) > at.get(outcome.event_id, 0)
