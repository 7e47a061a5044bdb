"""The event union, one encoder and one decoder, built once."""

from __future__ import annotations

from typing import TypeAlias

import msgspec

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
from schemas.approvers import ApproverEnrolled, ApproverRevoked, PasskeyRegistered
from schemas.base import Event
from schemas.execution import (
    CommandRefused,
    PreviewRecorded,
    ToolResult,
    ToolStarted,
    ToolVerified,
)
from schemas.planning import (
    CommandRejected,
    ModelRetried,
    StepPlanned,
    ToolProposed,
    ToolRequested,
)
from schemas.session import (
    AssistantMessage,
    SessionCancelled,
    SessionStarted,
    TurnCompleted,
    UserMessage,
)

AnyEvent: TypeAlias = (
    SessionStarted
    | UserMessage
    | SessionCancelled
    | AssistantMessage
    | TurnCompleted
    | ToolRequested
    | ToolProposed
    | CommandRejected
    | StepPlanned
    | ModelRetried
    | ToolClassified
    | ToolRefused
    | ToolAmended
    | ApprovalRequested
    | ApprovalDecided
    | ApprovalGranted
    | ApprovalDenied
    | ApprovalExpired
    | DecisionRejected
    | PreviewRecorded
    | ToolStarted
    | ToolResult
    | ToolVerified
    | CommandRefused
    | ApproverEnrolled
    | ApproverRevoked
    | PasskeyRegistered
)

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__
BY_TAG: dict[str, type[Event]] = {t.__struct_config__.tag: t for t in EVENT_TYPES}  # type: ignore[misc]

decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
encoder = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    return encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    return decoder.decode(data)
