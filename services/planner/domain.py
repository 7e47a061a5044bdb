"""The planner's decisions in direct mode, as a pure function of the trigger and the session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import catalogue, ids, kubectl
from schemas.approval import ApprovalDenied, ApprovalExpired, ToolAmended, ToolRefused
from schemas.base import Event
from schemas.execution import CommandRefused, ToolResult, ToolVerified
from schemas.planning import CommandRejected, ToolProposed, ToolRequested
from schemas.session import AssistantMessage, SessionCancelled, TurnCompleted, UserMessage
from services.planner import agent, direct

ACTOR = "planner"
# Other services' events that neither `decide` nor `agent.fold` ever looks at. The planner's
# reads return them without verifying their signatures (Bus.not_acted_upon): verification
# protects what it acts on, and on a gated read `tool.classified` alone was a third of the
# signature cost. tests/unit/planner/test_not_acted_upon.py keeps this true.
NOT_ACTED_UPON: frozenset[str] = frozenset({
    "tool.classified", "preview.recorded", "approval.decided", "decision.rejected",
    "tool.started",
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


def _settled_by(events: Sequence[Event]) -> dict[str, int]:
    """For each call that will never run again, the index of the event that settled it."""
    out: dict[str, int] = {}
    for i, e in enumerate(events):
        match e:
            case ToolResult() | ToolRefused() | CommandRefused():
                out.setdefault(e.call_id, i)
            case ApprovalDenied() if not e.superseded_by:
                for c in e.call_ids:
                    out.setdefault(c, i)
            case ApprovalExpired():
                for c in e.call_ids:
                    out.setdefault(c, i)
    return out


def _last_of_message(trigger: Event, events: Sequence[Event], call_ids: tuple[str, ...]) -> bool:
    """Whether the trigger settles the last open call of the message its calls came from, so
    that a message of several commands ends its turn once, after every command has an outcome
    (whichever handler runs later sees the whole message settled, yet only the delivery of the
    last settling event completes the turn). A lone command: always."""
    first = next((p for c in call_ids if (p := _proposal_of(events, c)) is not None), None)
    if first is None:
        return True
    siblings = [e.call_id for e in events if isinstance(e, ToolProposed)
                and e.source == "direct" and e.causation_id == first.causation_id]
    if len(siblings) < 2:
        return True
    successor = {e.replaces: e.call_id for e in events if isinstance(e, ToolAmended)}
    settled = _settled_by(events)
    here = next((i for i, e in enumerate(events) if e.event_id == trigger.event_id),
                len(events))
    for cid in siblings:
        seen: set[str] = set()
        while cid in successor and cid not in seen:  # an amended call lives on as its successor
            seen.add(cid)
            cid = successor[cid]
        if cid not in settled or settled[cid] > here:
            return False
    return True


def _proposals(trigger: UserMessage, parsed: list[direct.Call], commands: list[str],
               common: dict[str, Any]) -> list[Event]:
    """The calls of a direct message. Several writes in one message are one batch: the gate asks
    once for all of them, and none runs unless that one decision approves (reads run at once).
    The first call keeps the ids a one-command message always had."""
    writes = [c for c in parsed if (t := catalogue.lookup(c.tool)) and t.access == "write"]
    batch_id = ids.derived_id("b", trigger.event_id, "0") if len(writes) > 1 else ""
    out: list[Event] = []
    for i, (call, text) in enumerate(zip(parsed, commands, strict=True)):
        member = bool(batch_id) and call in writes
        out.append(ToolProposed(
            call_id=derived_id("c", trigger, i), tool=call.tool, args=call.args, source="direct",
            rationale=f"direct command from {trigger.actor}: {text.strip()}"[:64_000],
            requested_by=trigger.actor, batch_id=batch_id if member else "",
            batch_size=len(writes) if member else 1,
            event_id=derived_id("e", trigger, 2 if i == 0 else 100 + i), **common,
        ))
    return out


def _requested(trigger: ToolRequested, events: Sequence[Event],
               common: dict[str, Any]) -> list[Event]:
    """An MCP client's call, proposed like a model's: the gate classifies it (an unknown tool,
    an approval tool or args its type refuses are refused there, recorded), a write is held.
    Evidence, when given, must be quoted verbatim from what this session has read, the rule
    the model's calls follow; otherwise nothing is proposed and the rejection is recorded."""
    here = next((i for i, e in enumerate(events) if e.event_id == trigger.event_id), len(events))
    corpus = [e.output for e in events[:here] if isinstance(e, ToolResult)]
    corpus += [e.detail for e in events[:here] if isinstance(e, ToolVerified)]
    if trigger.evidence and (bad := agent.unquoted(trigger.evidence, corpus)):
        return [CommandRejected(
            text=f"{trigger.tool} (MCP call)"[:64_000],
            reason=(f"evidence must be quoted verbatim from what this session has read; not "
                    f"found: {bad[0][:200]!r}; nothing was proposed")[:2000],
            event_id=derived_id("e", trigger, 1), **common)]
    via = f" via {trigger.client}" if trigger.client else ""
    return [ToolProposed(
        call_id=derived_id("c", trigger, 0), tool=trigger.tool, args=trigger.args,
        source="mcp", requested_by=trigger.actor,
        rationale=trigger.rationale or f"MCP call from {trigger.actor}{via}",
        evidence=trigger.evidence, expected_outcome=trigger.expected_outcome,
        event_id=derived_id("e", trigger, 2), **common)]


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

    # Without a model, `get pods -n shop` means what `kubectl get pods -n shop` means.
    text = kubectl.implied(trigger.text) if isinstance(trigger, UserMessage) and not model \
        else ""
    match trigger:
        case ToolRequested():
            out += _requested(trigger, events, common)
        case UserMessage() if kubectl.is_command(text or trigger.text):
            commands = direct.split_commands(text or trigger.text)
            parsed = [direct.parse(c) for c in commands]
            bad = next(((i, p) for i, p in enumerate(parsed) if isinstance(p, direct.Refusal)),
                       None)
            if bad is not None:
                # One line that cannot run refuses the message: its commands were meant
                # together, so none runs rather than a part the person did not ask for alone.
                i, refusal = bad
                reason = refusal.reason if len(commands) == 1 else (
                    f"line {i + 1} ({commands[i][:200]}): {refusal.reason}; nothing in this "
                    "message was run")
                out.append(CommandRejected(text=trigger.text[:64_000], reason=reason[:2000],
                                           event_id=derived_id("e", trigger, 1), **common))
                say(f"I did not run that: {reason}." + (
                    f" I read it as `kubectl {trigger.text.strip()[:200]}`: with no model "
                    "configured I take kubectl commands only." if text and text != trigger.text
                    else ""))
                done("refused")
            else:
                out += _proposals(trigger, [p for p in parsed if isinstance(p, direct.Call)],
                                  commands, common)
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
            if _last_of_message(trigger, events, (trigger.call_id,)):
                done(trigger.status)
        case ToolRefused() | ApprovalDenied() | ApprovalExpired() if not _direct(
            events, (trigger.call_id,) if isinstance(trigger, ToolRefused) else trigger.call_ids
        ):
            return []
        case ToolRefused():
            say(f"The gate refused {trigger.tool}: {trigger.reason}")
            if _last_of_message(trigger, events, (trigger.call_id,)):
                done("refused")
        case ApprovalDenied() if trigger.superseded_by:
            say(f"{trigger.approver} changed the arguments: call {trigger.superseded_by} replaces "
                "it and waits for its own approval. Nothing has run yet.")
        case ApprovalDenied():
            why = f": {trigger.reason}" if trigger.reason else ""
            n = len(trigger.call_ids)
            what = "the change" if n == 1 else f"the {n} changes of this batch"
            say(f"{trigger.approver} denied {what}{why}. Nothing was executed.")
            if _last_of_message(trigger, events, trigger.call_ids):
                done("denied")
        case ApprovalExpired():
            say("Nobody decided in time; the approval expired. Nothing was executed.")
            if _last_of_message(trigger, events, trigger.call_ids):
                done("expired")
        case SessionCancelled():
            done("cancelled")
        case ToolVerified() if trigger.outcome not in ("verified", "skipped") and _direct(
                events, (trigger.call_id,)):
            # The result said "Done." when the call ran; what settled afterwards is the verdict.
            out.append(AssistantMessage(
                text=f"Verification of {trigger.tool}: {VERDICTS[trigger.outcome]} — "
                     f"{trigger.detail}"[:64_000],
                event_id=derived_id("e", trigger, 0), **common))
    return out


VERDICTS = {"failed": "FAILED", "timed_out": "not done in time",
            "not_as_approved": "NOT AS APPROVED", "verified": "verified",
            "skipped": "nothing to check"}
