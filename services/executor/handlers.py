"""The executor's handlers: verify, claim, run, record. Nothing runs that fails verification."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from schemas import catalogue
from schemas import subjects as S
from schemas.approval import GRANT_VERSION, Grant
from schemas.base import Event
from schemas.commands import ExecCommand
from schemas.execution import (
    CommandRefused,
    PreviewRecorded,
    ToolResult,
    ToolStarted,
    ToolVerified,
)
from services.executor import domain, evidence, kube_write
from services.executor.kube import Kube, KubeError, Outcome, Preview
from services.executor.redact import scrub
from services.executor.selector import READERS  # kube_read's, with `logs -l`
from services.executor.settings import ExecutorSettings
from services.runtime import signing
from services.runtime.bus import STALE_READ_WAIT_S, Bus, Link
from services.runtime.delivery import Delivery
from services.runtime.errors import ConcurrencyConflict, RetryableError
from services.runtime.log import Expect
from services.runtime.sealing.blobs import SealError
from services.runtime.sealing.opener import Opener, Unsealed, opener_for

log = logging.getLogger(__name__)

ACTOR = "executor"
E = TypeVar("E", bound=Event)
MAX_OUTPUT = 16_000
MAX_DATA = 48_000


class Refused(Exception):
    """A command that fails verification: recorded, never executed."""


class Executor:
    def __init__(self, bus: Bus, settings: ExecutorSettings, kube: Kube) -> None:
        self.bus = bus
        self.settings = settings
        self.kube = kube
        self.public_key = signing.load_public(settings.gate_public_key)
        self._opener: Opener | None = None

    async def unseal(self, cmd: ExecCommand, tool: catalogue.Tool) -> tuple[Any, Unsealed]:
        """The call's args with its sealed secret values (runtime/sealing/) resolved: the real args
        for the cluster, and what every event about this call must not repeat. SealError when
        a value cannot be had exactly as approved (missing, expired, swapped)."""
        if self._opener is None:
            self._opener = opener_for(self.bus)
        unsealed = await self._opener.args(cmd.session_id, cmd.tool, cmd.args)
        if not unsealed.values:
            return tool.parse_args(cmd.args), unsealed
        try:
            return tool.parse_args(unsealed.args), unsealed
        except (msgspec.ValidationError, ValueError) as exc:
            raise SealError(f"with its sealed values, the call's args are not valid: "
                            f"{unsealed.scrub(str(exc))}") from exc

    async def handle(self, d: Delivery[ExecCommand]) -> None:
        # Decoded by the consume loop (an undecodable command is poison there), which also
        # keeps the message alive however long the cluster takes.
        cmd = d.event
        expected = S.exec_subject(cmd.kind, cmd.session_id)
        try:
            if d.subject != expected:
                raise Refused(f"command of kind {cmd.kind} on the wrong subject {d.subject}")
            if cmd.kind == "read":
                await self.run_read(cmd)
            elif cmd.kind == "preview":
                await self.run_preview(cmd)
            else:
                await self.run_write(cmd)
        except Refused as exc:
            await self.refuse(cmd, str(exc), d.subject)

    async def refuse(self, cmd: ExecCommand, reason: str, subject: str) -> None:
        reason = scrub(reason)
        log.warning("refused: %s", reason, extra={"session_id": cmd.session_id,
                                                  "call_id": cmd.call_id, "subject": subject})
        await self.bus.append(CommandRefused(
            session_id=cmd.session_id, call_id=cmd.call_id, reason=reason[:2000],
            subject=subject[:200], actor=ACTOR, causation_id=cmd.causation_id,
        ))

    def _tool(self, cmd: ExecCommand, access: str) -> tuple[catalogue.Tool, Any]:
        tool = catalogue.lookup(cmd.tool)
        if tool is None:
            raise Refused(f"unknown tool {cmd.tool!r}")
        if tool.access != access:
            raise Refused(f"{cmd.tool} is a {tool.access}, not allowed as a {cmd.kind} command")
        try:
            args = tool.parse_args(cmd.args)
        except msgspec.ValidationError as exc:
            raise Refused(f"invalid args for {cmd.tool}: {exc}") from exc
        return tool, args

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        """Runs a blocking Kubernetes call in a thread: the event loop stays free, and with it
        the consume loop's heartbeat that keeps the command alive meanwhile."""
        return await asyncio.to_thread(fn)

    # -- reads -------------------------------------------------------------------------------

    async def run_read(self, cmd: ExecCommand) -> None:
        tool, args = self._tool(cmd, "read")
        reader = READERS.get(type(args))
        if reader is None:
            raise Refused(f"no reader for {tool.name}")
        await self._record(cmd, lambda: reader(self.kube, args), write=False)

    def _result(self, cmd: ExecCommand, out: Outcome) -> ToolResult:
        return result_of(cmd, out)

    def _failure(self, cmd: ExecCommand, exc: KubeError, write: bool) -> ToolResult:
        return clean(self._failed(cmd, exc, write))

    def _failed(self, cmd: ExecCommand, exc: KubeError, write: bool) -> ToolResult:
        if isinstance(exc, kube_write.EffectChanged):
            # Nothing was sent; what changed is data too, so a client (or the planner) can
            # show the objects added and removed without parsing the text.
            return ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="error",
                output=f"{exc.reason}: {exc.message}"[:MAX_OUTPUT],
                data=bounded_data({"effect_changed": {"added": list(exc.added),
                                                      "removed": list(exc.removed)}})[0],
                actor=ACTOR, causation_id=cmd.causation_id,
            )
        if write and exc.uncertain:
            return ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="unknown",
                output=f"outcome unknown — verify: {exc.reason}: {exc.message}"[:MAX_OUTPUT],
                actor=ACTOR, causation_id=cmd.causation_id,
            )
        return ToolResult(
            session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="error",
            output=f"{exc.reason}: {exc.message}"[:MAX_OUTPUT], actor=ACTOR,
            causation_id=cmd.causation_id,
        )

    async def _record(self, cmd: ExecCommand, call: Callable[[], Outcome],
                      write: bool) -> None:
        try:
            result = self._result(cmd, await self._in_thread(call))
        except KubeError as exc:
            result = self._failure(cmd, exc, write)
        await self._append_result(result, _hint(cmd), cleaned=True)

    async def _append_result(self, result: ToolResult, hint: Link | None = None, *,
                             cleaned: bool = False) -> Link | None:
        """Records the result once; None if one was already recorded. Cleaned here unless it
        was built by `_result`/`_failure`, which clean (once is enough: it is idempotent)."""
        if not cleaned:
            result = clean(result)
        return await self.bus.append_once(result, Expect.new_key(hint=hint))

    # -- previews ----------------------------------------------------------------------------

    async def run_preview(self, cmd: ExecCommand) -> None:
        tool, args = self._tool(cmd, "write")
        # Where it will run, for the approver: a kubeconfig read, no request to the cluster.
        context = self.kube.context_name(args.cluster)[:2000]
        unsealed = Unsealed(cmd.args)
        try:
            # The dry run needs the real values; nothing recorded below may show them.
            args, unsealed = await self.unseal(cmd, tool)
            pv: Preview = await self._in_thread(lambda: kube_write.preview(self.kube, args))
            # After the dry run (which decides whether there is anything to approve), the
            # facts an approver needs that no model has to be trusted for.
            found: evidence.Gathered = await self._in_thread(
                lambda: evidence.gather(self.kube, args))
            radius = pv.radius
            if found.autoscaler:
                radius = msgspec.structs.replace(radius, autoscaler=found.autoscaler[:2000])
            event = PreviewRecorded(
                session_id=cmd.session_id, call_id=cmd.call_id, ok=True, diff=pv.diff,
                blast_radius=radius, resource_version=pv.resource_version, actor=ACTOR,
                causation_id=cmd.causation_id, gathered=tuple(found.lines), context=context,
                effect=pv.effect,
            )
        except (KubeError, SealError) as exc:
            error = f"{exc.reason}: {exc.message}" if isinstance(exc, KubeError) else \
                f"SealedValue: {exc}"
            event = PreviewRecorded(
                session_id=cmd.session_id, call_id=cmd.call_id, ok=False,
                error=error[:2000], actor=ACTOR, causation_id=cmd.causation_id, context=context,
            )
        await self.bus.append_once(unsealed.scrub(clean(event)), Expect.new_key(hint=_hint(cmd)))

    # -- writes ------------------------------------------------------------------------------

    def verify(self, cmd: ExecCommand) -> tuple[catalogue.Tool, Any]:
        grant = cmd.grant
        if grant is None or not grant.signature:
            raise Refused("unsigned write command")
        if not signing.verify(grant, self.public_key):
            raise Refused("invalid gate signature")
        if grant.version != GRANT_VERSION:
            # A v1 grant names neither session nor target: it could run in any session.
            raise Refused(f"a v{grant.version} grant is not accepted for execution (only "
                          f"v{GRANT_VERSION}, bound to its session and target)")
        if grant.session_id != cmd.session_id:
            raise Refused(f"the grant is for session {grant.session_id}, not {cmd.session_id}")
        if grant.call_id != cmd.call_id:
            raise Refused("the grant is for another call")
        tool, args = self._tool(cmd, "write")
        if catalogue.call_hash(cmd.tool, catalogue.canonical_args(args)) != grant.call_hash:
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

    async def check_recorded(self, cmd: ExecCommand, grant: Grant) -> tuple[str, ...]:
        """Refuses unless the command's session records this grant and a human's approval;
        returns the effect that approval enumerated (what the write may act on)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALE_READ_WAIT_S
        delay = 0.05
        while True:
            events: list[Event] = [s.event for s in await self.bus.session(cmd.session_id)]
            why = domain.approval_problem(events, cmd.session_id, grant)
            if why is None:
                return domain.approved_effect(events, grant)
            # The gate records the grant before it publishes the command, but a stream replica
            # answering our read may not have applied it yet: look again, briefly. Never a
            # reason to run: only the log read decides.
            if loop.time() >= deadline or not await self.bus.may_lag():
                raise Refused(why)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def run_write(self, cmd: ExecCommand) -> None:
        tool, args = self.verify(cmd)
        grant = cmd.grant
        assert grant is not None
        effect = await self.check_recorded(cmd, grant)
        # Before the claim: a sealed value that is gone or not the approved one (its keyed
        # fingerprint is in the approved, hashed args) means the write never runs.
        try:
            real, unsealed = await self.unseal(cmd, tool)
        except SealError as exc:
            raise Refused(str(exc)) from exc
        # Claim the call exactly once, in the log, before touching the cluster — once across
        # ALL sessions: the server refuses the claim if any session's claim subject of this
        # call id holds anything. Always checked on the server (no chain hint).
        claims = S.tag_filter("executor", "tool.started", "*", cmd.call_id)
        try:
            claim = await self.bus.append_link(
                ToolStarted(session_id=cmd.session_id, call_id=cmd.call_id,
                            approval_id=grant.approval_id, actor=ACTOR,
                            causation_id=cmd.causation_id),
                Expect.new_key(claims),
            )
        except ConcurrencyConflict:
            await self._claimed_before(cmd, args, claims)
            return
        try:
            out, plan, after = await self._in_thread(
                lambda: kube_write.execute(self.kube, real, grant.resource_version, effect))
        except KubeError as exc:
            await self._append_result(unsealed.scrub(self._failure(cmd, exc, write=True)), claim,
                                      cleaned=True)
            return
        recorded = await self._append_result(unsealed.scrub(self._result(cmd, out)), claim,
                                             cleaned=True)
        if recorded is None:
            return
        await self._verify_write(cmd, real, plan, after, recorded, unsealed)

    async def _verify_write(self, cmd: ExecCommand, args: Any,
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
            session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool,
            outcome=v.outcome, check=scrub(v.check)[:2000], detail=scrub(v.detail)[:MAX_OUTPUT],
            observed=observed, actor=ACTOR, causation_id=cmd.causation_id,
        ))
        await self.bus.append_once(unsealed.scrub(verified) if unsealed else verified,
                                   Expect.new_key(hint=result))

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

    async def _claimed_before(self, cmd: ExecCommand, args: Any,
                              claims: str) -> None:
        """The server refused the claim: say what really holds the claim subject."""
        held = await self._stored_last(claims)
        if held is None:
            # Refused, yet nothing visible: a replica behind the leader. Look again later.
            raise RetryableError(f"the claim of {cmd.call_id} was refused but {claims} "
                                 "shows nothing stored yet")
        seq, event = held
        if not (isinstance(event, ToolStarted) and event.call_id == cmd.call_id):
            # Something other than the executor's claim squats the subject: the call was never
            # claimed, so it did not run — say exactly that, not "stopped after claiming".
            await self._append_result(ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="error",
                output=f"the claim subject {claims} holds something that is not a claim "
                       f"(seq {seq}); the write was not run",
                actor=ACTOR, causation_id=cmd.causation_id,
            ))
            return
        if event.session_id != cmd.session_id:
            raise Refused(f"call {cmd.call_id} was already claimed in session "
                          f"{event.session_id} (seq {seq}); a call runs at most once across "
                          "all sessions")
        await self._already_claimed(cmd, args)

    async def _already_claimed(self, cmd: ExecCommand, args: Any) -> None:
        """A second delivery of a claimed call: never run it again."""
        results = S.tag_filter("executor", "tool.result", cmd.session_id, cmd.call_id)
        held = await self._stored_last(results)
        if held is not None:
            seq, event = held
            if isinstance(event, ToolResult):
                raise Refused("replayed command: this call has already been executed")
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
        await self._append_result(ToolResult(
            session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="unknown",
            output="outcome unknown — verify: the executor stopped after claiming this call "
                   "and before recording its result; it was not run again. The target now: "
                   + json.dumps(observed, sort_keys=True)[:2000],
            data={"observed": observed}, actor=ACTOR, causation_id=cmd.causation_id,
        ))


# What each event the executor appends carries from the cluster: every string in it is masked
# (services/executor/redact.py), whichever path produced it — reads, errors, previews, checks.
_CONTENT: dict[type[Event], tuple[str, ...]] = {
    ToolResult: ("output", "data", "before", "after"),
    PreviewRecorded: ("error", "gathered"),
    ToolVerified: ("check", "detail", "observed"),
    CommandRefused: ("reason",),
}


def clean(event: E) -> E:
    """The event with credential shapes masked in every field that holds cluster content."""
    changes = {f: scrub(getattr(event, f)) for f in _CONTENT.get(type(event), ())}
    if isinstance(event, PreviewRecorded):
        changes["diff"] = tuple(msgspec.structs.replace(
            c, path=scrub(c.path), before=scrub(c.before), after=scrub(c.after))
            for c in event.diff)
    return msgspec.structs.replace(event, **changes)


def _hint(cmd: ExecCommand) -> Link | None:
    """The event the gate recorded just before this command: what its answer follows."""
    return (cmd.after_seq, cmd.after_hash) if cmd.after_seq and cmd.after_hash else None


def result_of(cmd: ExecCommand, out: Outcome) -> ToolResult:
    """A tool's outcome as its recorded result: credentials masked, sizes bounded."""
    text, truncated = bounded_text(out.text, scrub)
    data, data_cut = bounded_data(scrub(out.data))
    return ToolResult(
        session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="ok",
        output=text, truncated=truncated or data_cut, data=data,
        before=bounded_data(scrub(out.before))[0], after=bounded_data(scrub(out.after))[0],
        actor=ACTOR, causation_id=cmd.causation_id,
    )


# Masked beyond the cut by this much, so a credential across it is recognised whole (a longer
# private key is masked to the end of what is shown: its END line is not needed).
CUT_MARGIN = 4096


def bounded_text(text: str, mask: Callable[[str], str] = str) -> tuple[str, bool]:
    """At most MAX_OUTPUT characters, `mask`ed — only what is shown, and before it is cut."""
    if len(text) <= MAX_OUTPUT:
        return mask(text), False
    note = f"\n… [truncated: {len(text) - MAX_OUTPUT} more characters; narrow the query]"
    return mask(text[: MAX_OUTPUT + CUT_MARGIN])[: MAX_OUTPUT - len(note)] + note, True


def bounded_data(data: Any) -> tuple[Any, bool]:
    """Structured data small enough for one event; larger data is replaced by a note."""
    if data is None:
        return None, False
    size = len(msgspec.json.encode(data))
    if size <= MAX_DATA:
        return data, False
    return {"truncated": True, "note": f"{size} bytes of data left out (limit {MAX_DATA}); "
                                       "the text output has a summary"}, True
