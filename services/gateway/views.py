"""Read models folded from events: a session's view and the approvals index. Pure functions,
so any gateway instance (or an audit replay) rebuilds exactly the same view from the log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from schemas.approval import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    ToolClassified,
    ToolRefused,
)
from schemas.approvers import Signature
from schemas.base import Event
from schemas.execution import CommandRefused, ToolResult, ToolStarted
from schemas.lifecycle import ApprovalState, Status, evolve
from schemas.planning import CommandRejected, ToolProposed, ToolRequested
from schemas.session import (
    AssistantMessage,
    SessionCancelled,
    SessionStarted,
    TurnCompleted,
    UserMessage,
)


def signature_kind(sig: Signature | None) -> str:
    """What signed a decision, as the card says: a passkey, an Ed25519 key, a Slack click."""
    if sig is None:
        return ""
    if sig.key_id.startswith("slack:"):
        return "slack"
    return "passkey" if sig.authenticator_data else "ed25519"


@dataclass
class ApprovalEntry:
    """An approval as the gateway serves it: its lifecycle state (schemas.lifecycle) and the
    sequence of its request."""

    state: ApprovalState
    seq: int

    @property
    def request(self) -> ApprovalRequested:
        return self.state.request

    def effective_state(self, now: datetime) -> Status:
        return self.state.status(now)

    def decided(self) -> tuple[str, str]:
        """Who decided it and why, as the card says: the gate's recorded denial, else the
        decision that settled it (a grant names every approver)."""
        outcome = self.state.outcome
        deciding = self.state.decision().deciding if self.state.decisions else None
        reason = deciding.reason if deciding is not None else ""
        if isinstance(outcome, ApprovalDenied):
            return outcome.approver, outcome.reason
        if isinstance(outcome, ApprovalGranted):
            return outcome.approver, reason
        return (deciding.approver if deciding is not None else ""), reason

    def signatures(self) -> list[dict[str, str]]:
        """Who signed the decisions that count so far, with which key (its fingerprint and
        kind), for the card; those the gate rejected (`decision.rejected`) are left out."""
        folded = self.state.decision()
        ruled_out = {d.event_id for d, _ in folded.rejected}
        out = []
        for d in self.state.decisions:
            if d.event_id in self.state.refused or d.event_id in ruled_out:
                continue
            sig = d.signed
            out.append({"approver": d.approver, "decision": d.decision,
                        "key_id": sig.key_id if sig else "",
                        "kind": signature_kind(sig)})
        return out

    def to_json(self, now: datetime) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.to_builtins(self.request)
        body["state"] = self.effective_state(now)
        body["seq"] = self.seq
        body["approvals"] = list(self.state.decision().approved_by)
        body["signatures"] = self.signatures()
        # Where each call acts, the cluster named plainly (issue 21), and those clusters.
        calls = self.request.calls
        body["where"] = [f"{c.tool} {c.where()}" for c in calls]
        body["clusters"] = list(dict.fromkeys(c.runs_on() for c in calls
                                              if c.runs_on()))
        decided_by, reason = self.decided()
        if decided_by:
            body["decided_by"] = decided_by
        if reason:
            body["decision_reason"] = reason
        return body


def apply_approval(index: dict[str, ApprovalEntry], seq: int, ev: Event) -> None:
    """The approvals index after one more event: the lifecycle's own fold (`evolve`)."""
    if isinstance(ev, ApprovalRequested):
        index[ev.approval_id] = ApprovalEntry(ApprovalState(ev), seq)
        return
    entry = index.get(getattr(ev, "approval_id", ""))
    if entry is not None:
        state = evolve(entry.state, ev)
        assert state is not None  # evolve never forgets a requested approval
        entry.state = state


@dataclass
class SessionSummary:
    session_id: str
    title: str
    started_by: str
    started_at: str
    seq: int
    cluster: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "title": self.title,
                "started_by": self.started_by, "started_at": self.started_at, "seq": self.seq,
                "cluster": self.cluster}


def apply_session_started(index: dict[str, SessionSummary], seq: int, ev: Event) -> None:
    if isinstance(ev, SessionStarted) and ev.session_id not in index:
        index[ev.session_id] = SessionSummary(ev.session_id, ev.title, ev.actor,
                                              ev.occurred_at.isoformat(), seq, ev.cluster_name)


def requested_text(ev: ToolRequested) -> str:
    """An MCP client's call as the session view's message says it, kubectl-like and compact:
    `scale deployment/web --replicas=5 -n shop`, then the requester's why, if given. The args
    are raw (the gate has not seen them yet), shown whatever their types."""
    args = ev.args
    kind, name = args.get("kind"), args.get("name")
    words = [ev.tool, f"{kind}/{name}" if kind and name else str(name or kind or "")]

    def flags(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                flags(f"{prefix}.{k}", x)
        elif v is True:
            words.append(f"--{prefix}")
        elif v not in (None, False, "", [], {}):
            shown = v if isinstance(v, str) else msgspec.json.encode(v).decode()
            words.append(f"--{prefix}={shown}")

    for k, v in args.items():
        if k not in ("kind", "name", "namespace", "cluster"):
            flags(k, v)
    if args.get("namespace") and not args.get("all_namespaces"):
        words.append(f"-n {args['namespace']}")
    if args.get("cluster"):
        words.append(f"--context={args['cluster']}")
    text = " ".join(str(w) for w in words if w)
    return text + (f" — {ev.rationale}" if ev.rationale else "")


@dataclass
class SessionView:
    session_id: str
    started_by: str = ""
    title: str = ""
    started_at: str = ""
    cluster: str = ""
    status: str = "idle"
    last_seq: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    approvals: dict[str, ApprovalEntry] = field(default_factory=dict)

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "started_by": self.started_by,
            "title": self.title,
            "started_at": self.started_at,
            "cluster": self.cluster,
            "status": self.status,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "calls": list(self.calls.values()),
            "pending_approvals": [
                a.to_json(now) for a in self.approvals.values()
                if a.effective_state(now) == "pending"
            ],
        }


def fold_session(session_id: str, stored: list[tuple[int, Event]]) -> SessionView:
    view = SessionView(session_id)
    for seq, ev in stored:
        view.last_seq = seq
        apply_approval(view.approvals, seq, ev)
        call = view.calls.get(getattr(ev, "call_id", ""), None)
        match ev:
            case SessionStarted():
                view.started_by, view.title, view.cluster = ev.actor, ev.title, ev.cluster_name
                view.started_at = ev.occurred_at.isoformat()
            case UserMessage():
                view.messages.append({"role": "user", "who": ev.actor, "text": ev.text,
                                      "seq": seq})
                view.status = "running"
            case AssistantMessage():
                view.messages.append({"role": "assistant", "text": ev.text, "seq": seq})
            case ToolRequested():
                # An MCP client's call: a person's request, made through an agent. The planner's
                # `tool.proposed` (or its rejection) follows; the status is theirs to change.
                via = f"{ev.client} (MCP)" if ev.client else "MCP"
                view.messages.append({"role": "user", "who": ev.actor, "via": via,
                                      "text": requested_text(ev), "seq": seq})
            case CommandRejected():
                view.messages.append({"role": "system", "text": f"refused: {ev.reason}",
                                      "seq": seq})
            case ToolProposed():
                view.calls[ev.call_id] = {"call_id": ev.call_id, "tool": ev.tool,
                                          "args": ev.args, "status": "proposed", "seq": seq}
            case ToolClassified() if call:
                call["access"] = ev.access
                call["status"] = "classified"
            case ToolRefused() if call:
                call["status"] = "refused"
                call["error"] = ev.reason
            case ApprovalRequested():
                view.status = "waiting for approval"
                for c in ev.calls:
                    if c.call_id in view.calls:
                        view.calls[c.call_id]["status"] = "awaiting approval"
                        view.calls[c.call_id]["approval_id"] = ev.approval_id
            case ApprovalGranted() | ApprovalDenied() | ApprovalExpired():
                view.status = "running"
                new = {ApprovalGranted: "approved", ApprovalDenied: "denied",
                       ApprovalExpired: "expired"}[type(ev)]
                ids = ev.call_ids if not isinstance(ev, ApprovalGranted) else tuple(
                    g.call_id for g in ev.grants)
                for cid in ids:
                    if cid in view.calls:
                        view.calls[cid]["status"] = new
            case ToolStarted() if call:
                call["status"] = "running"
            case ToolResult() if call:
                call["status"] = {"ok": "done", "error": "failed", "unknown": "unknown"}[ev.status]
                call["output"] = ev.output
            case CommandRefused() if call:
                call["status"] = "refused by executor"
                call["error"] = ev.reason
            case TurnCompleted():
                view.status = "idle"
            case SessionCancelled():
                view.status = "cancelled"
    return view
