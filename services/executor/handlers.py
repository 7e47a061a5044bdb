"""The executor's handlers: verify, claim, run, record. Nothing runs that fails verification.

Its work is the gate's own recorded facts, consumed from the log (issue 17, commands are
events): a `tool.classified` releases a read or a write's dry run, an `approval.granted`
releases each call it grants — as the `approval.requested` it answers recorded that call. Both
are signed by the gate; the consume loop checks that before a handler sees them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
)

from schemas import catalogue, lifecycle
from schemas import subjects as S
from schemas.approval import GRANT_VERSION, ApprovalGranted, ToolClassified
from schemas.base import Event, Target
from schemas.events import AnyEvent
from schemas.execution import (
    CommandRefused,
    PreviewRecorded,
    ToolResult,
    ToolStarted,
    ToolVerified,
)
from schemas.ids import derived_id
from services.executor import domain, evidence, kube_write
from services.executor.domain import Work
from services.executor.kube import Kube, KubeError, Outcome, Preview
from services.executor.redact import scrub
from services.executor.results import (
    ACTOR,
    MAX_OUTPUT,
    bounded_data,
    clean,
    result_of,
)
from services.executor.selector import READERS  # kube_read's, with `logs -l`
from services.executor.settings import ExecutorSettings
from services.runtime import signing
from services.runtime.bus import Bus, Link
from services.runtime.connection import TRANSIENT
from services.runtime.delivery import Delivery, Poisoned
from services.runtime.errors import ConcurrencyConflict, PoisonMessage, RetryableError
from services.runtime.identity import ForgedEvent
from services.runtime.log import Expect
from services.runtime.sealing.blobs import SealError
from services.runtime.sealing.opener import Opener, Unsealed, opener_for
from services.runtime.stored import Misrouted

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)
# How long the result of a write that ran is retried while the log cannot be reached (a spoke
# whose leaf connection to the hub dropped): the same event, so the same Nats-Msg-Id — a
# retry after a lost ack is deduplicated, and a result recorded meanwhile (a redelivery to
# another instance said "outcome unknown") makes it a no-op. Never a second run.
RESULT_RETRY_S = 120.0


class Refused(Exception):
    """Work that fails verification: recorded, never executed."""


class Executor:
    def __init__(self, bus: Bus, settings: ExecutorSettings, kube: Kube) -> None:
        self.bus = bus
        self.settings = settings
        self.kube = kube
        self.public_key = signing.load_public(settings.gate_public_key)
        self._opener: Opener | None = None
        # What this executor's role runs (S.EXECUTOR_ROLES): the rest of what its consumer
        # delivers is another role's, acked unread.
        self.kinds = S.EXECUTOR_ROLES[settings.role][1]
        self._current: str | None = None  # the kubeconfig's current context, once read

    async def unseal(self, work: Work, tool: catalogue.Tool) -> tuple[Any, Unsealed]:
        """The call's args with its sealed secret values (runtime/sealing/) resolved: the real args
        for the cluster, and what every event about this call must not repeat. SealError when
        a value cannot be had exactly as approved (missing, expired, swapped)."""
        if self._opener is None:
            self._opener = opener_for(self.bus)
        unsealed = await self._opener.args(work.session_id, work.tool, work.args)
        if not unsealed.values:
            return tool.parse_args(work.args), unsealed
        try:
            return tool.parse_args(unsealed.args), unsealed
        except (msgspec.ValidationError, ValueError) as exc:
            raise SealError(f"with its sealed values, the call's args are not valid: "
                            f"{unsealed.scrub(str(exc))}") from exc

    # -- clusters (issue 21) -----------------------------------------------------------------

    def cluster_of(self, work: Work) -> str:
        """The cluster stamped on every event about this work: this executor's own in
        per-cluster mode; else the context the call resolves to (its own, or the current one)."""
        if self.settings.cluster:
            return self.settings.cluster
        named = work.args.get("cluster") if isinstance(work.args, dict) else ""
        if isinstance(named, str) and named:
            return named[:200]
        if self._current is None:
            # Read once, like the client it names (Kube keeps one per context).
            self._current = self.kube.context_name("")[:200]
        return self._current

    def _stamp(self, work: Work, event: E) -> E:
        return msgspec.structs.replace(event, cluster_name=self.cluster_of(work))

    async def _append_once(self, work: Work, event: Event, expect: Expect) -> Link | None:
        return await self.bus.append_once(self._stamp(work, event), expect)

    def foreign(self, clusters: list[str], subject: str) -> str | None:
        """Why a command is not this executor's to run (None: it is). In per-cluster mode the
        gate's signed target must name this executor's cluster, and the command must come on
        this cluster's subject; a grant or classification for another cluster (a compromised
        gate re-emitting it here) is refused, never run. Legacy mode: nothing to check here
        (the allow-list of contexts is)."""
        own = self.settings.cluster
        if not own:
            return None
        return domain.cluster_problem(own, clusters, S.subject_cluster(subject))

    def acts_on(self, event: AnyEvent) -> bool:
        """Whether this executor acts on a consumed event: the consume loop verifies the
        gate's signature of exactly these, and acks the rest unverified, without the handler —
        refusals, the other role's classifications (a split layout delivers every one to both),
        and an old log's classifications, which carry no call and were run from EXEC then."""
        if isinstance(event, ToolClassified):
            if event.access != "refused" and event.args is None:
                log.debug("a classification without its call (an old log's): not run",
                          extra={"session_id": event.session_id, "call_id": event.call_id})
            return domain.released(event, self.kinds) is not None
        return isinstance(event, ApprovalGranted) and "write" in self.kinds

    async def handle(self, d: Delivery[AnyEvent]) -> None:
        # Decoded, and checked to be signed by the gate, by the consume loop (which hands over
        # only what acts_on selects); it also keeps the message alive however long the cluster
        # takes.
        event = d.event
        if isinstance(event, ApprovalGranted):
            await self.on_granted(event, d)
            return
        if not isinstance(event, ToolClassified):
            raise PoisonMessage(f"the executor does not handle {event.type}")
        kind = domain.released(event, self.kinds)
        if kind is None:
            return  # not this executor's (acts_on says so too)
        # The result (or preview) chains directly after the classification that released it.
        work = domain.work_of(event, kind, d.link)
        try:
            why = self.foreign([event.target.cluster], d.subject)
            if why is not None:
                raise Refused(why)
            if kind == "read":
                await self.run_read(work)
            else:
                await self.run_preview(work)
        except Refused as exc:
            await self.refuse(work, str(exc), d.subject)

    async def on_poison(self, p: Poisoned[AnyEvent]) -> None:
        """What the executor will never run is recorded where its session sees it: a forged
        classification or grant (not signed by the gate key), or one that failed every time.
        Nothing of it ran."""
        event, exc = p.event, p.error
        if event is None and isinstance(exc, Misrouted):
            # On a subject it does not belong on — a command for another cluster re-published
            # on this one's (issue 21): never run; refused where its session sees it.
            event = exc.event
        if event is None:
            return  # undecodable: nothing trustworthy to attach it to (logged)
        what = (f"rejected a forged {event.type} at seq {p.seq} ({exc.problem}): {exc.detail}"
                if isinstance(exc, ForgedEvent) else
                f"rejected a {event.type} at seq {p.seq} stored where it does not belong "
                f"({exc})" if isinstance(exc, Misrouted) else
                f"could not handle {event.type} at seq {p.seq}: {exc}")
        calls = [g.call_id for g in event.grants] if isinstance(event, ApprovalGranted) else \
            [event.call_id] if isinstance(event, ToolClassified) else []
        for call_id in calls:
            await self.refuse(Work(kind="write", session_id=event.session_id, call_id=call_id,
                                   tool="", args={}, target=Target(),
                                   causation_id=event.event_id),
                              f"{what}; it was not run", p.subject)

    async def refuse(self, work: Work, reason: str, subject: str) -> None:
        reason = scrub(reason)
        log.warning("refused: %s", reason, extra={"session_id": work.session_id,
                                                  "call_id": work.call_id, "subject": subject})
        # Derived from what released it: a redelivery records the same refusal once.
        await self._append_once(work, CommandRefused(
            session_id=work.session_id, call_id=work.call_id, reason=reason[:2000],
            subject=subject[:200], actor=ACTOR, causation_id=work.causation_id,
            # Per cluster: another cluster's executor refusing the same command (a replay)
            # records its own refusal, not a duplicate of this one.
            event_id=derived_id("e", work.causation_id, work.call_id, "refused",
                                *((self.settings.cluster,) if self.settings.cluster else ())),
        ), Expect.new_key())

    def _tool(self, work: Work, access: str) -> tuple[catalogue.Tool, Any]:
        tool = catalogue.lookup(work.tool)
        if tool is None:
            raise Refused(f"unknown tool {work.tool!r}")
        if tool.access != access:
            raise Refused(f"{work.tool} is a {tool.access}, not allowed as a {work.kind}")
        try:
            args = tool.parse_args(work.args)
        except msgspec.ValidationError as exc:
            raise Refused(f"invalid args for {work.tool}: {exc}") from exc
        return tool, args

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        """Runs a blocking Kubernetes call in a thread: the event loop stays free, and with it
        the consume loop's heartbeat that keeps the delivery alive meanwhile."""
        return await asyncio.to_thread(fn)

    # -- reads -------------------------------------------------------------------------------

    async def run_read(self, work: Work) -> None:
        tool, args = self._tool(work, "read")
        reader = READERS.get(type(args))
        if reader is None:
            raise Refused(f"no reader for {tool.name}")
        await self._record(work, lambda: reader(self.kube, args), write=False)

    def _result(self, work: Work, out: Outcome) -> ToolResult:
        return result_of(work, out)

    def _failure(self, work: Work, exc: KubeError, write: bool) -> ToolResult:
        return clean(self._failed(work, exc, write))

    def _failed(self, work: Work, exc: KubeError, write: bool) -> ToolResult:
        if isinstance(exc, kube_write.EffectChanged):
            # Nothing was sent; what changed is data too, so a client (or the planner) can
            # show the objects added and removed without parsing the text.
            return ToolResult(
                session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="error",
                output=f"{exc.reason}: {exc.message}"[:MAX_OUTPUT],
                data=bounded_data({"effect_changed": {"added": list(exc.added),
                                                      "removed": list(exc.removed)}})[0],
                actor=ACTOR, causation_id=work.causation_id,
            )
        if write and exc.uncertain:
            return ToolResult(
                session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="unknown",
                output=f"outcome unknown — verify: {exc.reason}: {exc.message}"[:MAX_OUTPUT],
                actor=ACTOR, causation_id=work.causation_id,
            )
        return ToolResult(
            session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="error",
            output=f"{exc.reason}: {exc.message}"[:MAX_OUTPUT], actor=ACTOR,
            causation_id=work.causation_id,
        )

    async def _record(self, work: Work, call: Callable[[], Outcome],
                      write: bool) -> None:
        try:
            result = self._result(work, await self._in_thread(call))
        except KubeError as exc:
            result = self._failure(work, exc, write)
        await self._append_result(work, result, _hint(work), cleaned=True)

    async def _append_result(self, work: Work, result: ToolResult, hint: Link | None = None, *,
                             cleaned: bool = False) -> Link | None:
        """Records the result once; None if one was already recorded. Cleaned here unless it
        was built by `_result`/`_failure`, which clean (once is enough: it is idempotent)."""
        if not cleaned:
            result = clean(result)
        return await self._append_once(work, result, Expect.new_key(hint=hint))

    async def _append_write_result(self, work: Work, result: ToolResult,
                                   claim: Link) -> Link | None:
        """The result of a write that touched the cluster: the only record of what happened,
        so it is retried while the log is out of reach — a spoke whose leaf connection (or
        its own nats-server) dropped mid-write — for up to RESULT_RETRY_S: the same event,
        so the same Nats-Msg-Id, and the server keeps one copy of a retry whose first attempt
        was stored after all. Already recorded (that copy, or "outcome unknown" by another
        instance the grant went to meanwhile): None, nothing more to say. If it never gets
        through (or this process dies), the redelivered grant finds the claim without a
        result: outcome unknown, verify; never run again."""
        event = self._stamp(work, result)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESULT_RETRY_S
        pause = 0.2
        while True:
            try:
                return await self.bus.append_link(event, Expect.new_key(hint=claim),
                                                  timeout=2.0, attempts=1)
            except ConcurrencyConflict:
                # This very event, stored by an attempt whose answer was lost: go on from it
                # (the verification follows it). Anything else: said already; nothing more.
                mine = await self._stored(S.tag_filter(
                    "executor", "tool.result", work.session_id, work.call_id), event.event_id)
                if mine is None:
                    log.info("the result of this write is already recorded", extra={
                        "session_id": work.session_id, "call_id": work.call_id})
                return mine
            except (RetryableError, *TRANSIENT, ConnectionClosedError,
                    ConnectionReconnectingError, OutboundBufferLimitError) as exc:
                if loop.time() >= deadline:
                    raise RetryableError(f"the result of write {work.call_id} could not be "
                                         f"recorded: {exc}") from exc
                log.warning("the result of a write could not be recorded yet (%s); retrying "
                            "the same event", type(exc).__name__, extra={
                                "session_id": work.session_id, "call_id": work.call_id})
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    # -- previews ----------------------------------------------------------------------------

    async def run_preview(self, work: Work) -> None:
        tool, args = self._tool(work, "write")
        # Where it will run, for the approver: a kubeconfig read, no request to the cluster.
        context = self.kube.context_name(args.cluster)[:2000]
        unsealed = Unsealed(work.args)
        try:
            # The dry run needs the real values; nothing recorded below may show them.
            args, unsealed = await self.unseal(work, tool)
            pv: Preview = await self._in_thread(lambda: kube_write.preview(self.kube, args))
            # After the dry run (which decides whether there is anything to approve), the
            # facts an approver needs that no model has to be trusted for.
            found: evidence.Gathered = await self._in_thread(
                lambda: evidence.gather(self.kube, args))
            radius = pv.radius
            if found.autoscaler:
                radius = msgspec.structs.replace(radius, autoscaler=found.autoscaler[:2000])
            event = PreviewRecorded(
                session_id=work.session_id, call_id=work.call_id, ok=True, diff=pv.diff,
                blast_radius=radius, resource_version=pv.resource_version, actor=ACTOR,
                causation_id=work.causation_id, gathered=tuple(found.lines), context=context,
                effect=pv.effect,
            )
        except (KubeError, SealError) as exc:
            error = f"{exc.reason}: {exc.message}" if isinstance(exc, KubeError) else \
                f"SealedValue: {exc}"
            event = PreviewRecorded(
                session_id=work.session_id, call_id=work.call_id, ok=False,
                error=error[:2000], actor=ACTOR, causation_id=work.causation_id, context=context,
            )
        await self._append_once(work, unsealed.scrub(clean(event)),
                                Expect.new_key(hint=_hint(work)))

    # -- writes ------------------------------------------------------------------------------

    def verify(self, work: Work) -> tuple[catalogue.Tool, Any]:
        grant = work.grant
        if grant is None or not grant.signature:
            raise Refused("unsigned write command")
        if not signing.verify(grant, self.public_key):
            raise Refused("invalid gate signature")
        if grant.version != GRANT_VERSION:
            # A v1 grant names neither session nor target: it could run in any session.
            raise Refused(f"a v{grant.version} grant is not accepted for execution (only "
                          f"v{GRANT_VERSION}, bound to its session and target)")
        if grant.session_id != work.session_id:
            raise Refused(f"the grant is for session {grant.session_id}, not {work.session_id}")
        if grant.call_id != work.call_id:
            raise Refused("the grant is for another call")
        if not work.tool:
            raise Refused(f"approval {grant.approval_id} requested no call {grant.call_id} in "
                          f"session {work.session_id}; the write was not run")
        tool, args = self._tool(work, "write")
        if catalogue.call_hash(work.tool, catalogue.canonical_args(args)) != grant.call_hash:
            raise Refused("args differ from the approved call (hash mismatch)")
        if args.target() != grant.target:
            raise Refused(f"the target differs from the approved one: {args.target().describe()}"
                          f" is not {grant.target.describe()}")
        if datetime.now(UTC) >= grant.not_after:
            raise Refused(f"the grant expired at {grant.not_after.isoformat()}")
        try:
            self.kube.check_context(args.cluster)
        except KubeError as exc:
            raise Refused(exc.message) from exc
        return tool, args

    async def on_granted(self, granted: ApprovalGranted, d: Delivery[AnyEvent]) -> None:
        """Runs each call an approval grants, in order, as its request recorded it. One that
        fails verification is refused (recorded) and the others still run."""
        # Everything the checks need precedes the grant in the session: read up to it at least
        # (a replica answering the read may lag the leader; this waits for it, briefly).
        # As every reader folds it: another cluster's executor's word on a call is not
        # believed (a compromised spoke's "claim" or "result" for this cluster's call).
        events = lifecycle.believed([s.event for s in await self.bus.session(
            granted.session_id, at_least=d.seq)])
        request = domain.request_of(events, granted.approval_id)
        calls = {c.call_id: c for c in request.calls} if request else {}
        for grant in granted.grants:
            work = domain.write_of(granted, grant, calls.get(grant.call_id))
            why = self.foreign([grant.target.cluster], d.subject)
            if why is not None:
                await self.refuse(work, why, d.subject)
                continue
            try:
                await self.run_write(work, events)
            except Refused as exc:
                await self.refuse(work, str(exc), d.subject)

    async def run_write(self, work: Work, events: list[Event]) -> None:
        grant = work.grant
        assert grant is not None
        match domain.progress(events, work.call_id):
            case "done":
                # The same approval.granted again (a redelivery after a crash or an ack that
                # was lost): this call ran and its result is recorded. Nothing to do.
                log.info("already executed; not run again", extra={
                    "session_id": work.session_id, "call_id": work.call_id})
                return
            case "claimed":
                _, args = self._tool(work, "write")
                await self._already_claimed(work, args)
                return
        tool, args = self.verify(work)
        # The signature says the gate signed it; this says the gate also recorded it, in this
        # session, for an approval a human made through the gateway.
        why = domain.approval_problem(events, work.session_id, grant,
                                      self.settings.key_signed_namespaces,
                                      self.settings.key_signed_clusters)
        if why is not None:
            raise Refused(why)
        effect = domain.approved_effect(events, grant)
        # Before the claim: a sealed value that is gone or not the approved one (its keyed
        # fingerprint is in the approved, hashed args) means the write never runs.
        try:
            real, unsealed = await self.unseal(work, tool)
        except SealError as exc:
            raise Refused(str(exc)) from exc
        # Claim the call exactly once, in the log, before touching the cluster — once across
        # ALL sessions: the server refuses the claim if any session's claim subject of this
        # call id holds anything. Always checked on the server (no chain hint). An executor of
        # one cluster claims on its own cluster's subjects only, which only it can write: a
        # compromised spoke's claim of this call on its own subjects cannot block it. (One
        # executor for every context claims under any token: the context it stamps is read
        # from its kubeconfig and could change across a restart.)
        claims = S.tag_filter("executor", "tool.started", "*", work.call_id,
                              cluster=self.settings.cluster or None)
        try:
            claim = await self.bus.append_link(
                self._stamp(work, ToolStarted(session_id=work.session_id, call_id=work.call_id,
                                              approval_id=grant.approval_id, actor=ACTOR,
                                              causation_id=work.causation_id)),
                Expect.new_key(claims),
            )
        except ConcurrencyConflict:
            await self._claimed_before(work, args, claims)
            return
        try:
            out, plan, after = await self._in_thread(
                lambda: kube_write.execute(self.kube, real, grant.resource_version, effect))
        except KubeError as exc:
            await self._append_write_result(
                work, unsealed.scrub(self._failure(work, exc, write=True)), claim)
            return
        recorded = await self._append_write_result(work, unsealed.scrub(self._result(work, out)),
                                                   claim)
        if recorded is None:
            return
        await self._verify_write(work, real, plan, after, recorded, unsealed)

    async def _verify_write(self, work: Work, args: Any,
                            plan: kube_write.Plan, after: Any, result: Link,
                            unsealed: Unsealed | None = None) -> None:
        timeout = self.settings.verify_timeout_s
        try:
            v = await self._in_thread(
                lambda: kube_write.verify(self.kube, args, plan, after, timeout))
        except KubeError as exc:
            v = kube_write.Verification("failed", f"re-reading {plan.ref}",
                                        f"{exc.reason}: {exc.message}")
        observed, _ = bounded_data(v.observed)
        verified = clean(ToolVerified(
            session_id=work.session_id, call_id=work.call_id, tool=work.tool,
            outcome=v.outcome, check=scrub(v.check)[:2000], detail=scrub(v.detail)[:MAX_OUTPUT],
            observed=observed, actor=ACTOR, causation_id=work.causation_id,
        ))
        await self._append_once(work, unsealed.scrub(verified) if unsealed else verified,
                                Expect.new_key(hint=result))

    async def _stored(self, subject_filter: str, event_id: str) -> Link | None:
        """Where event `event_id` is stored, if it is the last message on the filter."""
        last = await self.bus.last_stored(subject_filter)
        if last is None:
            return None
        async for stored in self.bus.read(subject_filter, last[0], batch=1):
            if stored.seq == last[0] and stored.event.event_id == event_id:
                return stored.link
        return None

    async def _stored_last(self, subject_filter: str) -> tuple[int, Event | None] | None:
        """The last message STORED on a filter — (seq, its event, or None when that message
        is not a decodable event on its subject) — or None when nothing is stored there.

        Read raw first: a decoding read skips what it cannot decode, and so would report an
        empty subject where the server sees it taken."""
        last = await self.bus.last_stored(subject_filter)
        if last is None:
            return None
        seq = last[0]
        async for stored in self.bus.read(subject_filter, seq, batch=1):
            return seq, stored.event if stored.seq == seq else None
        return seq, None

    async def _claimed_before(self, work: Work, args: Any,
                              claims: str) -> None:
        """The server refused the claim: say what really holds the claim subject."""
        held = await self._stored_last(claims)
        if held is None:
            # Refused, yet nothing visible: a replica behind the leader. Look again later.
            raise RetryableError(f"the claim of {work.call_id} was refused but {claims} "
                                 "shows nothing stored yet")
        seq, event = held
        if not (isinstance(event, ToolStarted) and event.call_id == work.call_id):
            # Something other than the executor's claim squats the subject: the call was never
            # claimed, so it did not run — say exactly that, not "stopped after claiming".
            await self._append_result(work, ToolResult(
                session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="error",
                output=f"the claim subject {claims} holds something that is not a claim "
                       f"(seq {seq}); the write was not run",
                actor=ACTOR, causation_id=work.causation_id,
            ))
            return
        if event.session_id != work.session_id:
            raise Refused(f"call {work.call_id} was already claimed in session "
                          f"{event.session_id} (seq {seq}); a call runs at most once across "
                          "all sessions")
        await self._already_claimed(work, args)

    async def _already_claimed(self, work: Work, args: Any) -> None:
        """A claimed call delivered again: never run it again. Claimed without a recorded
        result means the claimant stopped in between: said once (append_once)."""
        results = S.tag_filter("executor", "tool.result", work.session_id, work.call_id)
        held = await self._stored_last(results)
        if held is not None:
            seq, event = held
            if isinstance(event, ToolResult):
                # Its session's read did not show the result yet (a lagging replica): the call
                # ran; nothing to do, nothing to refuse.
                log.info("already executed; not run again", extra={
                    "session_id": work.session_id, "call_id": work.call_id})
                return
            # Not "the claimant died": something else was stored where the result goes, and
            # no result can be recorded there now.
            raise Refused(f"the result subject {results} holds something that is not a result "
                          f"(seq {seq}); this claimed call was not run again")
        # The claimant died between calling the cluster and recording: say so, don't guess —
        # but show what the cluster looks like now, so the human can tell.
        try:
            observed = await self._in_thread(lambda: kube_write.observe(self.kube, args))
        except KubeError as exc:
            observed = {"error": f"{exc.reason}: {exc.message}"}
        await self._append_result(work, ToolResult(
            session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="unknown",
            output="outcome unknown — verify: the executor stopped after claiming this call "
                   "and before recording its result; it was not run again. The target now: "
                   + json.dumps(observed, sort_keys=True)[:2000],
            data={"observed": observed}, actor=ACTOR, causation_id=work.causation_id,
        ))


def _hint(work: Work) -> Link | None:
    """The event that released this work (its classification): what its answer follows."""
    return work.hint
