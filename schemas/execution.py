"""Events of the executor: previews, claims, results and refusals."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from schemas.approval import BlastRadius, FieldChange
from schemas.base import Emitter, Event, LongText, ShortText


class PreviewRecorded(Event, frozen=True, kw_only=True, tag="preview.recorded"):
    """Emitted by the executor after a server-side dry run of a write."""

    emitter: ClassVar[Emitter] = "executor"
    # The cluster the executor that wrote it serves (issue 21), named `cluster` on the wire:
    # `cluster()` returns it, and its token is the subject's 7th.
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    call_id: str
    ok: bool
    diff: tuple[FieldChange, ...] = ()
    blast_radius: BlastRadius = msgspec.field(default_factory=BlastRadius)
    resource_version: str = ""
    error: ShortText = ""
    # Facts Interlock read from the cluster about the target (restarts, usage against limits,
    # an autoscaler, what references it): not the model's quotes, and never decisive.
    gathered: tuple[ShortText, ...] = ()
    # The kubeconfig context the call runs on, as the executor resolved it (the target's own
    # cluster, else the current context): shown to the approver, never part of the call.
    context: ShortText = ""
    # Every object the write acts on, as the dry run enumerated them: sorted
    # "namespace/kind/name" refs (a drain: its node and the pods it evicts); () when the write
    # acts on its target alone. Bound into the grant; the write runs only on exactly these.
    effect: tuple[str, ...] = ()

    def key(self) -> str:
        return self.call_id

    def cluster(self) -> str:
        return self.cluster_name


class ToolStarted(Event, frozen=True, kw_only=True, tag="tool.started"):
    """Emitted by the executor, at most once per call, before a write touches the cluster."""

    emitter: ClassVar[Emitter] = "executor"
    # The cluster the executor that wrote it serves (issue 21), named `cluster` on the wire:
    # `cluster()` returns it, and its token is the subject's 7th.
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    call_id: str
    approval_id: str = ""

    def key(self) -> str:
        return self.call_id

    def cluster(self) -> str:
        return self.cluster_name


class ToolResult(Event, frozen=True, kw_only=True, tag="tool.result"):
    """Emitted by the executor when a call has run (or its outcome could not be known)."""

    emitter: ClassVar[Emitter] = "executor"
    # The cluster the executor that wrote it serves (issue 21), named `cluster` on the wire:
    # `cluster()` returns it, and its token is the subject's 7th.
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    call_id: str
    tool: ShortText
    status: Literal["ok", "error", "unknown"]
    output: LongText = ""
    data: Any = None
    truncated: bool = False
    before: Any = None
    after: Any = None

    def key(self) -> str:
        return self.call_id

    def cluster(self) -> str:
        return self.cluster_name


class CommandRefused(Event, frozen=True, kw_only=True, tag="command.refused"):
    """Emitted by the executor when a command fails verification; nothing was executed."""

    emitter: ClassVar[Emitter] = "executor"
    # The cluster the executor that wrote it serves (issue 21), named `cluster` on the wire:
    # `cluster()` returns it, and its token is the subject's 7th.
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    call_id: str
    reason: ShortText
    subject: ShortText = ""

    def key(self) -> str:
        return self.event_id

    def cluster(self) -> str:
        return self.cluster_name


class ToolVerified(Event, frozen=True, kw_only=True, tag="tool.verified"):
    """Emitted by the executor after a write's result, when it checked that the change took hold."""

    emitter: ClassVar[Emitter] = "executor"
    # The cluster the executor that wrote it serves (issue 21), named `cluster` on the wire:
    # `cluster()` returns it, and its token is the subject's 7th.
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    call_id: str
    tool: ShortText
    # verified: the cluster reached the intended state; failed: it can't (e.g. pods crash);
    # timed_out: not yet when the deadline passed; skipped: nothing to wait for;
    # not_as_approved: it settled, but what it reads differs from the approved diff (e.g. an
    # autoscaler set the replicas back) — `detail` says what was seen and who changed it.
    outcome: Literal["verified", "failed", "timed_out", "skipped", "not_as_approved"]
    check: ShortText = ""  # what was checked, e.g. "rollout status of deployment/web"
    detail: LongText = ""
    observed: Any = None

    def key(self) -> str:
        return self.call_id

    def cluster(self) -> str:
        return self.cluster_name
