"""The planner's handler: fold the session, decide the next step, append it exactly once.

Direct commands are decided by `domain.decide` (pure, ids derived from the trigger). With a model
configured, the model loop takes a step whenever the folded session needs one: the model's answer
is recorded as one `step.planned`, appended with optimistic concurrency on the whole session, and
the events it stands for are derived from the log, so a redelivered trigger never asks the model
twice for a step that was (even partly) recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from schemas import lifecycle
from schemas import subjects as S
from schemas.base import Event
from schemas.events import AnyEvent
from schemas.ids import derived_id
from schemas.planning import CommandRejected, ModelRetried, StepPlanned, ToolProposed
from services.planner import agent, direct, domain
from services.planner.llm import ChatModel, ModelError
from services.planner.settings import ModelSettings
from services.runtime.bus import Bus, Stored
from services.runtime.delivery import Delivery, Poisoned
from services.runtime.errors import ConcurrencyConflict, RetryableError
from services.runtime.identity import ForgedEvent
from services.runtime.log import Expect
from services.runtime.sealing.blobs import Ref, scrub_text
from services.runtime.sealing.sealer import Sealer, sealer_for

log = logging.getLogger(__name__)
OCC_ATTEMPTS = 20
Sleep = Callable[[float], Awaitable[None]]
E = TypeVar("E", bound=Event)


def believed(stored: list[Stored]) -> list[Event]:
    """The session as the planner folds it (schemas.lifecycle.believed)."""
    return lifecycle.believed([s.event for s in stored])


class Planner:
    def __init__(self, bus: Bus, model: ChatModel | None = None,
                 settings: ModelSettings | None = None, sleep: Sleep = asyncio.sleep) -> None:
        self.bus = bus
        self.model = model
        self.settings = settings or (ModelSettings(model=model.name) if model else None)
        self.sleep = sleep
        self.tools = agent.tool_specs()
        self.model_calls = 0  # for tests and metrics
        self._sealer: Sealer | None = None

    async def handle(self, d: Delivery[AnyEvent]) -> None:
        # Decoded and signed by the emitter its subject names: the consume loop checked it,
        # and keeps the message alive however long the model thinks.
        trigger = d.event
        # The session as read must include the trigger (a replica may lag the leader).
        await self.direct_step(trigger, at_least=d.seq)
        if self.model is not None:
            await self.model_step(trigger, at_least=d.seq)

    async def on_poison(self, p: Poisoned[AnyEvent]) -> None:
        """A forged event (a user.message or tool.result not signed by its emitter) is never
        acted upon, and the session records that it was rejected: the person sees it, and the
        model loop, which never folds it, goes on waiting for the real one. Other poison is
        only logged, as before."""
        event, exc, seq = p.event, p.error, p.seq
        if not isinstance(exc, ForgedEvent) or event is None:
            return
        # None: recorded by an earlier delivery.
        await self.bus.append_once(CommandRejected(
                session_id=event.session_id, actor="planner", causation_id=event.event_id,
                # One record per stored forgery: derived from its place in the log.
                event_id=derived_id("e", event.event_id, f"forged-{seq}"),
                text="", reason=(f"rejected a forged {event.type} at seq {seq} ({exc.problem}): "
                                 f"{exc.detail}; it was not acted upon")[:2000]),
                Expect.new_key())

    # -- secret values -----------------------------------------------------------------------

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = sealer_for(self.bus)
        return self._sealer

    async def sealed(self, event: E) -> E:
        """A proposal with its secret values sealed to the executor (runtime/sealing/): the log, the
        card and the model see a reference with a keyed fingerprint, never the value."""
        if not isinstance(event, ToolProposed):
            return event
        args, refs = await self.sealer.args(event.session_id, event.tool, event.args)
        if args == event.args:
            return event
        return msgspec.structs.replace(
            event, args=args, rationale=scrub_text(event.rationale, refs),
            evidence=tuple(scrub_text(e, refs) for e in event.evidence),
            expected_outcome=scrub_text(event.expected_outcome, refs))

    async def sealed_step(self, step: StepPlanned) -> StepPlanned:
        """A model's step with every call's secret values sealed before it is recorded, and
        not repeated in its text: what the model is sent back is folded from the log, so it
        sees its own calls sealed too."""
        refs: dict[str, Ref] = {}
        calls = []
        for c in step.calls:
            args, found = await self.sealer.args(step.session_id, c.tool, c.args)
            refs.update(found)
            calls.append(msgspec.structs.replace(c, args=args))
        if not refs:
            return step
        calls = [msgspec.structs.replace(
            c, rationale=scrub_text(c.rationale, refs),
            evidence=tuple(scrub_text(e, refs) for e in c.evidence),
            expected_outcome=scrub_text(c.expected_outcome, refs),
            rejected=scrub_text(c.rejected, refs)) for c in calls]
        return msgspec.structs.replace(step, calls=tuple(calls),
                                       text=scrub_text(step.text, refs))

    # -- direct mode -------------------------------------------------------------------------

    async def direct_step(self, trigger: Event, *, at_least: int = 0) -> None:
        for _ in range(OCC_ATTEMPTS):
            stored = await self.bus.session(trigger.session_id, at_least=at_least)
            events = believed(stored)
            if trigger.emitter == "executor" and all(e.event_id != trigger.event_id
                                                     for e in events):
                log.warning("an executor event about a call of another cluster: not believed",
                            extra={"session_id": trigger.session_id, "tag": trigger.type})
                return
            seen = {s.event.event_id for s in stored}
            # A secret typed into a command is not repeated by the planner's own events, and
            # one the gateway did not seal is sealed before it is proposed.
            todo = [await self.sealed(direct.masked(e))
                    for e in domain.decide(trigger, events, model=self.model is not None)
                    if e.event_id not in seen]
            if not todo:
                return
            try:
                # Optimistic concurrency on the whole session: of several planner instances,
                # exactly one takes the next step; the others fold again and find it done.
                await self.bus.append(todo[0], Expect.after(stored[-1].link))
            except ConcurrencyConflict:
                continue
            for event in todo[1:]:
                await self.bus.append(event)
            log.info("step taken", extra={"session_id": trigger.session_id, "tag": todo[0].type})
            return
        raise ConcurrencyConflict(f"no step for {trigger.event_id}: session too busy")

    # -- the model loop ----------------------------------------------------------------------

    async def model_step(self, trigger: Event, *, at_least: int = 0) -> None:
        """Takes every step the session needs now (usually one)."""
        assert self.settings is not None
        sid = trigger.session_id
        conflicts = calls = completions = 0
        while True:
            stored = await self.bus.session(sid, at_least=at_least)
            events: list[Event] = believed(stored)
            if await self._complete(events):
                completions += 1
                if completions > 3:  # e.g. a stored event nobody can decode any more
                    raise RetryableError(f"session {sid}: derived events keep missing")
                continue  # fold what is now in the log
            f = agent.fold(events)
            if f.need is None:
                return
            anchor = f.need
            if anchor.event_id != trigger.event_id and _delivered(anchor):
                # That event's own delivery takes the step; taking it here too would only ask
                # the model twice (one of the answers would lose the race anyway).
                return
            if f.iteration >= self.settings.max_iterations:
                step = agent.stop_step(anchor, f, "max_iterations", (
                    f"I stopped after {f.iteration} steps without finishing. Tell me how to go "
                    "on, or narrow the request."))
            else:
                calls += 1
                if calls > self.settings.max_iterations + 3:
                    raise RetryableError(f"session {sid} keeps changing under the model loop")
                step = await self.sealed_step(await self._ask(f, anchor))
            # Whatever arrived while the model was thinking may change the answer.
            later = await self.bus.session(sid, start_seq=stored[-1].seq + 1)
            last = (later or stored)[-1]
            if later:
                now = agent.fold(believed([*stored, *later]))
                if now.version != f.version or now.need is None or \
                        now.need.event_id != anchor.event_id:
                    log.info("session changed during the model call; folding again",
                             extra={"session_id": sid})
                    continue
            try:
                await self.bus.append(step, Expect.after(last.link))
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts >= OCC_ATTEMPTS:
                    raise
                continue
            log.info("model step recorded", extra={"session_id": sid, "tag": step.type})

    async def _complete(self, events: list[Event]) -> bool:
        """Appends the events of recorded steps that are missing (after a crash, or just now)."""
        missing = agent.missing_projections(events)
        for event in missing:
            # None: another instance completed it.
            await self.bus.append_once(event, Expect.new_key())
        return bool(missing)

    async def _ask(self, f: agent.Fold, anchor: Event) -> StepPlanned:
        assert self.model is not None
        assert self.settings is not None
        budget = self.settings.context_tokens * 4 - len(json.dumps(self.tools)) \
            - len(agent.SYSTEM_PROMPT)
        messages = agent.conversation(f, max(budget, 4_000))
        step_id = agent.step_id_for(anchor)
        subject = S.delta_subject(anchor.session_id)
        attempt = 0

        async def on_delta(text: str) -> None:
            body = {"session_id": anchor.session_id, "step_id": step_id, "attempt": attempt,
                    "message_id": agent.seed_id("e", step_id, 0), "text": text}
            with contextlib.suppress(Exception):  # ephemeral: a lost delta loses nothing
                await self.bus.nc.publish(subject, json.dumps(body).encode())

        while True:
            try:
                self.model_calls += 1
                answer = await self.model.complete(messages, self.tools, on_delta)
                return agent.plan_step(answer, f, anchor, self.model.name)
            except ModelError as exc:
                if not exc.transient or attempt >= self.settings.retries:
                    log.warning("model call failed: %s", exc,
                                extra={"session_id": anchor.session_id, "error": exc.status})
                    return agent.stop_step(anchor, f, "model_error", (
                        f"I could not get an answer from the model ({str(exc)[:500]}). Try "
                        "again later, or use /kubectl commands meanwhile."), self.model.name)
                attempt += 1
                delay = exc.retry_after if exc.retry_after is not None else \
                    self.settings.retry_base_s * 2 ** (attempt - 1)
                delay = min(delay, self.settings.retry_max_s)
                await self.bus.append(ModelRetried(
                    session_id=anchor.session_id, anchor_id=anchor.event_id, attempt=attempt,
                    delay_s=delay, error=str(exc)[:2000], status=exc.status,
                    actor=agent.ACTOR, causation_id=anchor.event_id,
                    correlation_id=anchor.correlation_id or anchor.event_id,
                ))
                log.info("model call retried in %.1fs", delay,
                         extra={"session_id": anchor.session_id, "error": exc.status})
                await self.sleep(delay)


_CONSUMED = frozenset(
    (f.split(".")[2], ".".join(f.split(".")[3:5])) for f in S.CONSUMER_FILTERS["planner"][1]
)


def _delivered(event: Event) -> bool:
    """Whether the planner's consumer delivers this event (so some instance handles it)."""
    return (event.emitter, event.type) in _CONSUMED

