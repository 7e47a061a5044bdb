"""The executor's handlers: verify, claim, run, record. Nothing runs that fails verification."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.msg import Msg

from schemas import catalogue
from schemas import subjects as S
from schemas.catalogue import GetArgs, ListArgs, ScaleArgs
from schemas.commands import ExecCommand, command_decoder
from schemas.execution import CommandRefused, PreviewRecorded, ToolResult, ToolStarted
from services.executor.kube import Kube, KubeError, Outcome
from services.executor.settings import ExecutorSettings
from services.runtime import signing
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict, PoisonMessage

log = logging.getLogger(__name__)

ACTOR = "executor"
MAX_OUTPUT = 16_000


class Refused(Exception):
    """A command that fails verification: recorded, never executed."""


class Executor:
    def __init__(self, bus: Bus, settings: ExecutorSettings, kube: Kube) -> None:
        self.bus = bus
        self.settings = settings
        self.kube = kube
        self.public_key = signing.load_public(settings.gate_public_key)

    async def handle(self, msg: Msg) -> None:
        try:
            cmd = command_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PoisonMessage(f"undecodable command: {exc}") from exc
        expected = S.exec_subject(cmd.kind, cmd.session_id)
        try:
            if msg.subject != expected:
                raise Refused(f"command of kind {cmd.kind} on the wrong subject {msg.subject}")
            if cmd.kind == "read":
                await self.run_read(cmd, msg)
            elif cmd.kind == "preview":
                await self.run_preview(cmd, msg)
            else:
                await self.run_write(cmd, msg)
        except Refused as exc:
            await self.refuse(cmd, str(exc), msg.subject)

    async def refuse(self, cmd: ExecCommand, reason: str, subject: str) -> None:
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

    async def _in_thread(self, msg: Msg, fn: Callable[[], Any]) -> Any:
        """Runs a blocking Kubernetes call, telling JetStream we are still working on it."""
        task = asyncio.create_task(asyncio.to_thread(fn))
        while True:
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if done:
                return task.result()
            await msg.in_progress()

    # -- reads -------------------------------------------------------------------------------

    async def run_read(self, cmd: ExecCommand, msg: Msg) -> None:
        tool, args = self._tool(cmd, "read")

        def call() -> Outcome:
            match args:
                case GetArgs():
                    return self.kube.get(args)
                case ListArgs():
                    return self.kube.list(args)
            raise Refused(f"no reader for {tool.name}")

        await self._record(cmd, msg, call)

    async def _record(self, cmd: ExecCommand, msg: Msg, call: Callable[[], Outcome]) -> None:
        try:
            out: Outcome = await self._in_thread(msg, call)
            result = ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="ok",
                output=out.text[:MAX_OUTPUT], truncated=len(out.text) > MAX_OUTPUT,
                data=out.data, before=out.before, after=out.after, actor=ACTOR,
                causation_id=cmd.causation_id,
            )
        except KubeError as exc:
            result = ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="error",
                output=f"{exc.reason}: {exc.message}"[:MAX_OUTPUT], actor=ACTOR,
                causation_id=cmd.causation_id,
            )
        try:
            await self.bus.append(result, once_per_key=True)
        except ConcurrencyConflict:
            log.info("result already recorded", extra={"call_id": cmd.call_id})

    # -- previews ----------------------------------------------------------------------------

    async def run_preview(self, cmd: ExecCommand, msg: Msg) -> None:
        _, args = self._tool(cmd, "write")
        try:
            if not isinstance(args, ScaleArgs):
                raise KubeError("NotSupported", f"no preview for {cmd.tool}")
            pv = await self._in_thread(msg, lambda: self.kube.preview_scale(args))
            event = PreviewRecorded(
                session_id=cmd.session_id, call_id=cmd.call_id, ok=True, diff=pv.diff,
                blast_radius=pv.radius, resource_version=pv.resource_version, actor=ACTOR,
                causation_id=cmd.causation_id,
            )
        except KubeError as exc:
            event = PreviewRecorded(
                session_id=cmd.session_id, call_id=cmd.call_id, ok=False,
                error=f"{exc.reason}: {exc.message}"[:2000], actor=ACTOR,
                causation_id=cmd.causation_id,
            )
        try:
            await self.bus.append(event, once_per_key=True)
        except ConcurrencyConflict:
            log.info("preview already recorded", extra={"call_id": cmd.call_id})

    # -- writes ------------------------------------------------------------------------------

    def verify(self, cmd: ExecCommand) -> tuple[catalogue.Tool, Any]:
        grant = cmd.grant
        if grant is None or not grant.signature:
            raise Refused("unsigned write command")
        if not signing.verify(grant, self.public_key):
            raise Refused("invalid gate signature")
        if grant.call_id != cmd.call_id:
            raise Refused("the grant is for another call")
        tool, args = self._tool(cmd, "write")
        if catalogue.call_hash(cmd.tool, catalogue.canonical_args(args)) != grant.call_hash:
            raise Refused("args differ from the approved call (hash mismatch)")
        if datetime.now(UTC) >= grant.not_after:
            raise Refused(f"the grant expired at {grant.not_after.isoformat()}")
        return tool, args

    async def run_write(self, cmd: ExecCommand, msg: Msg) -> None:
        _, args = self.verify(cmd)
        assert cmd.grant is not None
        # Claim the call exactly once, in the log, before touching the cluster.
        try:
            await self.bus.append(
                ToolStarted(session_id=cmd.session_id, call_id=cmd.call_id,
                            approval_id=cmd.grant.approval_id, actor=ACTOR,
                            causation_id=cmd.causation_id),
                once_per_key=True,
            )
        except ConcurrencyConflict:
            await self._already_claimed(cmd)
            return
        grant = cmd.grant

        def call() -> Outcome:
            if isinstance(args, ScaleArgs):
                return self.kube.scale(args, grant.resource_version)
            raise KubeError("NotSupported", f"no writer for {cmd.tool}")

        await self._record(cmd, msg, call)

    async def _already_claimed(self, cmd: ExecCommand) -> None:
        """A second delivery of a claimed call: never run it again."""
        result = await self.bus.first(S.tag_filter("executor", "tool.result", cmd.session_id,
                                                   cmd.call_id))
        if result is not None:
            raise Refused("replayed command: this call has already been executed")
        # The claimant died between calling the cluster and recording: say so, don't guess.
        try:
            await self.bus.append(ToolResult(
                session_id=cmd.session_id, call_id=cmd.call_id, tool=cmd.tool, status="unknown",
                output="outcome unknown — verify: the executor stopped after claiming this call "
                       "and before recording its result; it was not run again",
                actor=ACTOR, causation_id=cmd.causation_id,
            ), once_per_key=True)
        except ConcurrencyConflict:
            pass
