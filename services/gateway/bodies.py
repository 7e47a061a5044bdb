"""The HTTP API's request and response bodies as msgspec types.

Requests are decoded with these types (unknown fields are refused), and the OpenAPI document is
generated from them, so the spec and the implementation cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas.approvers import Signature

ApprovalState = Literal["pending", "decided", "granted", "denied", "expired"]
STATE_FILTERS: tuple[str, ...] = ("pending", "granted", "denied", "expired", "decided", "all")

# -- requests ----------------------------------------------------------------------------------


class NewSession(msgspec.Struct, forbid_unknown_fields=True):
    """Starts a session."""

    title: Annotated[str, msgspec.Meta(max_length=200)] = ""
    # The session's default cluster: a call that names none goes there (issue 21). One of the
    # deployment's clusters (GET /v1/clusters); "" = the deployment's default.
    cluster: Annotated[str, msgspec.Meta(max_length=253)] = ""


class NewMessage(msgspec.Struct, forbid_unknown_fields=True):
    """A message from the person: a question, or a direct kubectl-style command."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=32_000)]


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    """An approver's decision. `args` approves a modified call (single-call approvals only):
    the gate treats it as a new proposal with its own dry run and approval."""

    decision: Literal["approve", "deny"]
    reason: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    args: dict[str, Any] | None = None
    # The approver's signature over the decision statement (schemas/approvers.py): required.
    signature: Signature | None = None


class Edits(msgspec.Struct, forbid_unknown_fields=True):
    """An approver's changes to a single-call approval's args, to be sealed before signing."""

    args: dict[str, Any]


class Cancel(msgspec.Struct, forbid_unknown_fields=True):
    """Stops the session's run."""

    reason: Annotated[str, msgspec.Meta(max_length=2_000)] = ""


# -- responses ---------------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every 4xx/5xx answer: a stable code and a message that says what is wrong."""

    error: ErrorDetail


class Health(msgspec.Struct):
    ok: bool


class Me(msgspec.Struct):
    """The principal behind the token."""

    name: str
    roles: list[str]
    can_chat: bool
    can_decide: bool


class SessionCreated(msgspec.Struct):
    session_id: str


class Accepted(msgspec.Struct):
    """The input is stored in the log as this event."""

    event_id: str
    seq: int


class DecisionAccepted(msgspec.Struct):
    """The decision is stored; `approvals` of `required_approvals` so far."""

    approval_id: str
    decision: Literal["approve", "deny"]
    event_id: str
    seq: int
    approvals: int = 0
    required_approvals: int = 1
    modified: bool = False


class SessionSummary(msgspec.Struct):
    session_id: str
    title: str
    started_by: str
    started_at: str
    seq: int
    cluster: str = ""  # the session's default cluster ("" = the deployment's default)


class SessionList(msgspec.Struct):
    """Sessions, newest first."""

    sessions: list[SessionSummary]


class SignedBy(msgspec.Struct):
    """One decision that counts so far: who, with which key (issue 18). Those the gate rejected
    are left out."""

    approver: str
    decision: Literal["approve", "deny"]
    key_id: str = ""
    kind: Literal["ed25519", "passkey", ""] = ""


class ApprovalStatus(msgspec.Struct):
    """What the gateway adds to an `approval.requested` event in its answers."""

    state: ApprovalState
    seq: int
    approvals: list[str] = msgspec.field(default_factory=list)
    decided_by: str = ""
    decision_reason: str = ""
    signatures: list[SignedBy] = msgspec.field(default_factory=list)
    # Each call, where it acts: "scale deployment/web in shop on cluster b" (issue 21).
    where: list[str] = msgspec.field(default_factory=list)
    clusters: list[str] = msgspec.field(default_factory=list)  # the clusters it acts on


class ApprovalList(msgspec.Struct):
    approvals: list[dict[str, Any]]  # items: ApprovalRequested + ApprovalStatus (see openapi)


class MessageOut(msgspec.Struct):
    role: Literal["user", "assistant", "system"]
    text: str
    seq: int
    who: str = ""
    via: str = ""  # a user's MCP call: the client that made it, e.g. "Claude Code 1.2 (MCP)"


class CallOut(msgspec.Struct):
    call_id: str
    tool: str
    args: dict[str, Any]
    status: str
    seq: int
    access: str = ""
    approval_id: str = ""
    error: str = ""
    output: str = ""


class SessionViewOut(msgspec.Struct):
    """A session's current state, folded from its events."""

    session_id: str
    started_by: str
    title: str
    started_at: str
    status: str
    cluster: str  # the session's default cluster ("" = the deployment's default)
    last_seq: int
    messages: list[MessageOut]
    calls: list[CallOut]
    pending_approvals: list[dict[str, Any]]  # items: as in ApprovalList


class ToolOut(msgspec.Struct):
    name: str
    access: Literal["read", "write"]
    summary: str
    args_schema: dict[str, Any]


class ToolList(msgspec.Struct):
    tools: list[ToolOut]
