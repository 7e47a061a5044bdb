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
    source: Literal["direct", "llm"] = "direct"
    requested_by: ShortText = ""

    def key(self) -> str:
        return self.call_id


class CommandRejected(Event, frozen=True, kw_only=True, tag="command.rejected"):
    """Emitted by the planner when a direct command cannot be parsed safely; nothing is guessed."""

    emitter: ClassVar[Emitter] = "planner"
    text: LongText
    reason: ShortText
