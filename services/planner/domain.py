"""The planner's decisions in direct mode, as a pure function of the trigger and the session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import catalogue, ids
from schemas.approval import ApprovalDenied, ApprovalExpired, ToolAmended, ToolRefused
from schemas.base import Event
from schemas.execution import ToolResult
from schemas.planning import CommandRejected, ToolProposed
from schemas.session import AssistantMessage, SessionCancelled, TurnCompleted, UserMessage
from services.planner import direct

ACTOR = "planner"
# Other services' events that neither `decide` nor `agent.fold` ever looks at. The planner's
# reads return them without verifying their signatures (Bus.not_acted_upon): verification
# protects what it acts on, and on a gated read `tool.classified` alone was a third of the
# signature cost. tests/unit/planner/test_not_acted_upon.py keeps this true.
NOT_ACTED_UPON: frozenset[str] = frozenset({
    "tool.classified", "preview.recorded", "approval.decided", "decision.rejected",
    "tool.started", "tool.verified",
})
NO_MODEL = (
    "No model is configured, so I work in direct mode: send kubectl-style commands such as "
    "`kubectl get pods -n shop` or `kubectl scale deploy/web --replicas=3 -n shop`. "
    "Set OPENAI_API_KEY (and OPENAI_BASE_URL / INTERLOCK_MODEL) to chat in plain language."
)


def derived_id(prefix: str, trigger: Event, index: int) -> str:
    """Ids derived from the trigger, so a redelivered trigger yields the same events."""
    return ids.derived_id(prefix, trigger.event_id, str(index))


def _proposal_of(events: Sequence[Event], call_id: str) -> ToolProposed | None:
    """The planner's proposal behind a call, following approvers' amendments back to it."""
    amended = {e.call_id: e.replaces for e in events if isinstance(e, ToolAmended)}
    seen: set[str] = set()
    while call_id in amended and call_id not in seen:
        seen.add(call_id)
        call_id = amended[call_id]
    return next((e for e in events if isinstance(e, ToolProposed) and e.call_id == call_id), None)


def _direct(events: Sequence[Event], call_ids: tuple[str, ...]) -> bool:
    return any((p := _proposal_of(events, c)) is not None and p.source == "direct"
               for c in call_ids)


def decide(trigger: Event, events: Sequence[Event], *, model: bool = False) -> list[Event]:
    """The direct-mode step for a trigger. With a model configured (`model`), only direct
    commands and the outcomes of their calls are decided here; the model loop does the rest."""
    common: dict[str, Any] = {
        "session_id": trigger.session_id, "actor": ACTOR, "causation_id": trigger.event_id,
        "correlation_id": trigger.correlation_id or trigger.event_id}
    out: list[Event] = []

    def say(text: str) -> None:
        out.append(AssistantMessage(text=text[:64_000], event_id=derived_id("e", trigger, 0),
                                    **common))

    def done(reason: str) -> None:
        out.append(TurnCompleted(reason=reason, event_id=derived_id("e", trigger, 9), **common))

    match trigger:
        case UserMessage() if direct.is_command(trigger.text):
            parsed = direct.parse(trigger.text)
            if isinstance(parsed, direct.Refusal):
                out.append(CommandRejected(text=trigger.text[:64_000], reason=parsed.reason[:2000],
                                           event_id=derived_id("e", trigger, 1), **common))
                say(f"I did not run that: {parsed.reason}.")
                done("refused")
            else:
                call_id = derived_id("c", trigger, 0)
                out.append(ToolProposed(
                    call_id=call_id, tool=parsed.tool, args=parsed.args, source="direct",
                    rationale=f"direct command from {trigger.actor}: {trigger.text.strip()}"[
                        :64_000],
                    requested_by=trigger.actor, event_id=derived_id("e", trigger, 2), **common,
                ))
        case UserMessage():
            if model:
                return []
            say(NO_MODEL)
            done("no model")
        case ToolResult():
            if not _direct(events, (trigger.call_id,)):
                return []
            head = {"ok": "Done.", "error": "The call failed.",
                    "unknown": "The outcome is unknown — verify."}[trigger.status]
            tool = catalogue.lookup(trigger.tool)
            if trigger.status == "ok" and tool is not None and tool.access == "read":
                say(head)  # the result itself is the answer; don't repeat it
            else:
                say(f"{head}\n{trigger.output[:4000]}")
            done(trigger.status)
        case ToolRefused() | ApprovalDenied() | ApprovalExpired() if not _direct(
            events, (trigger.call_id,) if isinstance(trigger, ToolRefused) else trigger.call_ids
        ):
            return []
        case ToolRefused():
            say(f"The gate refused {trigger.tool}: {trigger.reason}")
            done("refused")
        case ApprovalDenied() if trigger.superseded_by:
            say(f"{trigger.approver} changed the arguments: call {trigger.superseded_by} replaces "
                "it and waits for its own approval. Nothing has run yet.")
        case ApprovalDenied():
            why = f": {trigger.reason}" if trigger.reason else ""
            say(f"{trigger.approver} denied the change{why}. Nothing was executed.")
            done("denied")
        case ApprovalExpired():
            say("Nobody decided in time; the approval expired. Nothing was executed.")
            done("expired")
        case SessionCancelled():
            done("cancelled")
    return out
