"""Events of the planner's proposals."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from schemas.base import Emitter, Event, LongText, ShortText, Target


class ToolProposed(Event, frozen=True, kw_only=True, tag="tool.proposed"):
    """Emitted by the planner when it wants a tool to run. Args are kept raw so that the gate,
    not the planner, decides whether they are valid (and fails closed when they are not)."""

    emitter: ClassVar[Emitter] = "planner"
    call_id: str
    tool: ShortText
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    target: Target = msgspec.field(default_factory=Target)
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""
    source: Literal["direct", "llm", "mcp"] = "direct"
    requested_by: ShortText = ""
    # Proposals made together (one model step) share a batch: their writes are approved in one
    # decision, each call still shown and hashed. batch_size counts every proposal of the batch.
    batch_id: str = ""
    batch_size: int = 1

    def key(self) -> str:
        return self.call_id


class ToolRequested(Event, frozen=True, kw_only=True, tag="tool.requested"):
    """Emitted by the gateway when an MCP client calls a tool (services/gateway/mcp.py): what
    the client asked for, raw like a model's call, for the planner to propose or reject by the
    rules it applies to its model's calls. The actor is the token's principal; `client` is the
    MCP client as it named itself (never proof of anything). Secret values arrive sealed."""

    emitter: ClassVar[Emitter] = "gateway"
    tool: ShortText
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""
    client: ShortText = ""
    # Who acted, readably (an OIDC principal's name from its provider's ID token; "" for a
    # static token): shown beside `actor`, never taken for who acted (issue 20).
    actor_name: ShortText = ""


class CommandRejected(Event, frozen=True, kw_only=True, tag="command.rejected"):
    """Emitted by the planner when a direct command cannot be parsed safely; nothing is guessed."""

    emitter: ClassVar[Emitter] = "planner"
    text: LongText
    reason: ShortText


class PlannedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of a model step, as the model asked for it (args raw, like a proposal)."""

    call_id: str
    tool: ShortText
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""
    # Set when the planner itself declined to propose the call (e.g. a write without quoted
    # evidence); the reason goes back to the model as the call's result.
    rejected: ShortText = ""


StepStop = Literal["", "answered", "max_iterations", "model_error"]


class StepPlanned(Event, frozen=True, kw_only=True, tag="step.planned"):
    """Emitted by the planner, once per step of its model loop, with the model's whole answer.

    Appended with optimistic concurrency on the session, so of several planner instances exactly
    one takes the step; the `assistant.message`, `tool.proposed` and `turn.completed` events that
    follow are derived from it alone, so a crash half-way is completed without asking the model
    again."""

    emitter: ClassVar[Emitter] = "planner"
    step_id: str
    anchor_id: str
    text: LongText = ""
    calls: tuple[PlannedCall, ...] = ()
    stop: StepStop = ""
    model: ShortText = ""
    requested_by: ShortText = ""
    iteration: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def key(self) -> str:
        return self.step_id


class ModelRetried(Event, frozen=True, kw_only=True, tag="model.retried"):
    """Emitted by the planner when a model call failed transiently and will be retried."""

    emitter: ClassVar[Emitter] = "planner"
    anchor_id: str
    attempt: int
    delay_s: float
    error: ShortText
    status: int = 0
