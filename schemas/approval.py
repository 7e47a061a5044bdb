"""Events of the gate: classification, approvals, decisions and their outcome."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from schemas.base import Emitter, Event, LongText, ShortText, Target, UtcTime


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One leaf of the object that a write changes: `spec.replicas: 3 → 5`."""

    path: str
    before: Any = None
    after: Any = None

    def describe(self) -> str:
        return f"{self.path}: {self.before!r} → {self.after!r}"


class BlastRadius(msgspec.Struct, frozen=True, kw_only=True):
    """What a write touches beyond its object."""

    replicas_before: int | None = None
    replicas_after: int | None = None
    pods_affected: tuple[str, ...] = ()
    production_like: bool = False
    summary: ShortText = ""


class ToolClassified(Event, frozen=True, kw_only=True, tag="tool.classified"):
    """Emitted by the gate for every proposal: read, write, or refused (fail closed)."""

    emitter: ClassVar[Emitter] = "gate"
    call_id: str
    access: Literal["read", "write", "refused"]
    rule: ShortText

    def key(self) -> str:
        return self.call_id


class ToolRefused(Event, frozen=True, kw_only=True, tag="tool.refused"):
    """Emitted by the gate when a proposal can never run (unknown tool, invalid args, policy)."""

    emitter: ClassVar[Emitter] = "gate"
    call_id: str
    tool: ShortText
    reason: ShortText

    def key(self) -> str:
        return self.call_id


class ApprovalCall(msgspec.Struct, frozen=True, kw_only=True):
    """One call of an approval batch, exactly as it will run."""

    call_id: str
    tool: str
    args: dict[str, Any]
    call_hash: str
    target: Target
    diff: tuple[FieldChange, ...] = ()
    blast_radius: BlastRadius = msgspec.field(default_factory=BlastRadius)
    resource_version: str = ""
    preview_error: ShortText = ""


class ApprovalRequested(Event, frozen=True, kw_only=True, tag="approval.requested"):
    """Emitted by the gate when a write (or batch) waits for a human decision."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    calls: tuple[ApprovalCall, ...]
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""
    requested_by: ShortText = ""
    risk_flags: tuple[ShortText, ...] = ()
    history: tuple[ShortText, ...] = ()
    expires_at: UtcTime

    def key(self) -> str:
        return self.approval_id

    @property
    def call_ids(self) -> tuple[str, ...]:
        return tuple(c.call_id for c in self.calls)


class ApprovalDecided(Event, frozen=True, kw_only=True, tag="approval.decided"):
    """Emitted by the gateway when a principal with the approver role decides; first one wins."""

    emitter: ClassVar[Emitter] = "gateway"
    approval_id: str
    decision: Literal["approve", "deny"]
    reason: LongText = ""
    approver: ShortText
    args: dict[str, Any] | None = None

    def key(self) -> str:
        return self.approval_id


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate signs for one call. The executor verifies every field."""

    call_id: str
    call_hash: str
    approval_id: str
    approver: str
    not_after: UtcTime
    resource_version: str = ""
    signature: str = ""

    def signed_bytes(self) -> bytes:
        body = msgspec.json.encode(
            {
                "call_id": self.call_id,
                "call_hash": self.call_hash,
                "approval_id": self.approval_id,
                "approver": self.approver,
                "not_after": self.not_after.isoformat(),
                "resource_version": self.resource_version,
            },
            order="sorted",
        )
        return b"interlock-grant-v1\n" + body


class ApprovalGranted(Event, frozen=True, kw_only=True, tag="approval.granted"):
    """Emitted by the gate, at most once per approval, just before it releases the signed calls."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    approver: ShortText
    grants: tuple[Grant, ...]

    def key(self) -> str:
        return self.approval_id


class ApprovalDenied(Event, frozen=True, kw_only=True, tag="approval.denied"):
    """Emitted by the gate when a human denied the request; the planner gets it as the result."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    call_ids: tuple[str, ...]
    approver: ShortText
    reason: LongText = ""

    def key(self) -> str:
        return self.approval_id


class ApprovalExpired(Event, frozen=True, kw_only=True, tag="approval.expired"):
    """Emitted by the gate when nobody decided in time; a denial for the planner."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    call_ids: tuple[str, ...]

    def key(self) -> str:
        return self.approval_id


class DecisionRejected(Event, frozen=True, kw_only=True, tag="decision.rejected"):
    """Emitted by the gate when a recorded decision cannot take effect (late, unknown, not allowed)."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    approver: ShortText = ""
    reason: ShortText

    def key(self) -> str:
        return self.event_id
