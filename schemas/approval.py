"""Events of the gate: classification, approvals, decisions and their outcome."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

import msgspec

from schemas.approvers import Signature
from schemas.base import Emitter, Event, LongText, ShortText, Target, UtcTime


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One leaf of the object that a write changes: `spec.replicas: 3 → 5`."""

    path: str
    before: Any = None
    after: Any = None

    def describe(self) -> str:
        return f"{self.path}: {self.before!r} → {self.after!r}"


class BlastRadius(msgspec.Struct, frozen=True, kw_only=True):
    """What a write touches beyond its object, as the executor's dry run found it. The gate turns
    these facts into risk flags; a human reads both."""

    replicas_before: int | None = None
    replicas_after: int | None = None
    pods_affected: tuple[str, ...] = ()
    production_like: bool = False
    summary: ShortText = ""
    # Objects of the same kind and name in other namespaces (the wrong-namespace failure).
    same_name_namespaces: tuple[str, ...] = ()
    # Workloads whose pod template still mounts a PVC being deleted, with their replicas.
    mounted_by: tuple[ShortText, ...] = ()
    # A service being deleted is headless (clusterIP: None): used for DNS-based discovery.
    headless: bool = False
    # Pods a service being deleted selects.
    selects: tuple[str, ...] = ()
    # The ownership chain of the object (e.g. "CronJob/nightly-reconcile", "Job/...").
    owners: tuple[ShortText, ...] = ()
    # Namespaces the write's effect lands in, beyond its target's own namespace field: a
    # Namespace object's own name, the namespaces of the pods a node drain/cordon evicts or
    # strands. The gate protects their union with the target's namespace; it only ever adds.
    affected_namespaces: tuple[str, ...] = ()
    # What is deleted along with a namespace, one line per sort ("4 deployments: a, b, c, d").
    deletes_contents: tuple[ShortText, ...] = ()
    # The autoscaler that owns the target's replica count, in words (e.g.
    # "HorizontalPodAutoscaler/order-service (min 3, max 6, cpu 70%)"): a manual scale is undone.
    autoscaler: ShortText = ""
    # A write by label selector: each object it matched, with its own blast radius in words
    # ("pod/web-1: deleted; owned by ReplicaSet/web-7d4b9, which will replace it").
    selected: tuple[ShortText, ...] = ()


class ToolClassified(Event, frozen=True, kw_only=True, tag="tool.classified"):
    """Emitted by the gate for every proposal: read, write, or refused (fail closed).

    It is also what releases the call: the executor consumes it (issue 17, commands are events)
    and runs a read, or the dry run of a write, exactly as classified here — the gate's parsed,
    canonical args and target, signed by the gate like every event it writes. Unset for a
    refusal. A classification of an old log carries no args and is never run."""

    emitter: ClassVar[Emitter] = "gate"
    call_id: str
    access: Literal["read", "write", "refused"]
    rule: ShortText
    tool: ShortText = ""
    args: dict[str, Any] | None = None
    target: Target = msgspec.field(default_factory=Target)

    def key(self) -> str:
        return self.call_id

    def cluster(self) -> str:
        return self.target.cluster


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
    # The cluster (kubeconfig context) the executor will run it on, from its dry run: "where"
    # for the approver. Display only: the grant binds the call's own target.
    context: ShortText = ""
    # Every object the write acts on, as its dry run enumerated them (sorted
    # "namespace/kind/name" refs; () for a write that acts on its target alone): a drain's node
    # and the pods it evicts. The grant binds their digest (`effect_digest`), and the executor
    # runs the call only while it would act on exactly these.
    effect: tuple[str, ...] = ()


class ApprovalRequested(Event, frozen=True, kw_only=True, tag="approval.requested"):
    """Emitted by the gate when a write (or batch) waits for a human decision."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    calls: tuple[ApprovalCall, ...]
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""
    requested_by: ShortText = ""
    # When an agent asked for the person: the MCP client that made the call, as it named itself
    # ("claude-code 2.1.0 (MCP)"; issue 19). Empty when they asked in their own words.
    requested_via: ShortText = ""
    risk_flags: tuple[ShortText, ...] = ()
    history: tuple[ShortText, ...] = ()
    expires_at: UtcTime
    # Policy, fixed when the request is made so that every reader applies the same rules:
    required_approvals: int = 1
    forbidden_approvers: tuple[ShortText, ...] = ()  # separation of duties
    policy: tuple[ShortText, ...] = ()  # the rules that applied, in words
    batch_id: str = ""
    # Facts the executor read from the cluster about the targets during the dry run (restarts
    # and their reasons, usage against limits, an autoscaler, references): gathered by
    # Interlock, unlike `evidence`, which the model quoted.
    gathered_evidence: tuple[LongText, ...] = ()
    # What the request does in one line ("Delete 3 PVCs, 5 services, 12 pods in staging"),
    # computed by the gate from the calls; the card's heading. Empty in logs from before it.
    title: ShortText = ""
    # Policy (`key_signed_namespaces`, issue 20): the write's effect lands where only a decision
    # signed by a person's own key counts (a passkey or `interlock keys`), not a Slack click,
    # whose HMAC the gate itself could forge.
    key_signed_only: bool = False

    def key(self) -> str:
        return self.approval_id

    @property
    def call_ids(self) -> tuple[str, ...]:
        return tuple(c.call_id for c in self.calls)


class ApprovalDecided(Event, frozen=True, kw_only=True, tag="approval.decided"):
    """Emitted by the gateway when a principal with the approver role decides.

    All decisions of one approval share one subject and are appended with optimistic
    concurrency on it, so concurrent deciders are serialised: one wins, the other is told 409.
    `args` set on an approval means "approve these modified args instead" (a new proposal).

    The gateway records who it says decided; only `signed` makes it count (issue 18): the
    approver's own signature over a decision statement (schemas/approvers.py), which the gate
    verifies against the approver registry. `edits` are the changes the approver signed, `args`
    the recorded args with those edits applied (the gate checks they agree).
    """

    emitter: ClassVar[Emitter] = "gateway"
    approval_id: str
    decision: Literal["approve", "deny"]
    reason: LongText = ""
    approver: ShortText
    args: dict[str, Any] | None = None
    signed: Signature | None = None
    # Who acted, readably (an OIDC principal's name from its provider's ID token; "" for a
    # static token): shown beside `actor`, never taken for who acted (issue 20).
    actor_name: ShortText = ""
    edits: dict[str, Any] | None = None

    def key(self) -> str:
        return self.approval_id


# The grant version the gate signs and the executor runs (see Grant).
GRANT_VERSION = 2


def effect_digest(effect: tuple[str, ...]) -> str:
    """The digest of a write's enumerated effect (ApprovalCall.effect) that a grant binds; ""
    for none, so a grant of a write that enumerates nothing signs the bytes it always did."""
    if not effect:
        return ""
    body = b"interlock-effect-v1\n" + msgspec.json.encode(sorted(effect))
    return hashlib.sha256(body).hexdigest()


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate signs for one call. The executor verifies every field.

    Version 2 binds the grant to the session, and to the target, that the human approved: a v1
    grant (signed bytes without them) copied into another session's command would still verify.
    Grants of old logs are v1 (the field is absent there); the audit still verifies them, the
    executor runs only v2.
    """

    call_id: str
    call_hash: str
    approval_id: str
    approver: str
    not_after: UtcTime
    resource_version: str = ""
    signature: str = ""
    # Defaults keep a v1 grant of an old log decoding exactly as it was signed.
    session_id: str = ""
    target: Target = msgspec.field(default_factory=Target)
    version: int = 1
    # The digest of the objects the approved call acts on (`effect_digest` of its `effect`):
    # a drain's previewed pods. Signed only when set, so every older grant keeps its bytes.
    effect_digest: str = ""

    def signed_bytes(self) -> bytes:
        fields: dict[str, Any] = {
            "call_id": self.call_id,
            "call_hash": self.call_hash,
            "approval_id": self.approval_id,
            "approver": self.approver,
            "not_after": self.not_after.isoformat(),
            "resource_version": self.resource_version,
        }
        if self.effect_digest:  # absent from every grant signed before effects were bound
            fields["effect_digest"] = self.effect_digest
        if self.version == 1:
            return b"interlock-grant-v1\n" + msgspec.json.encode(fields, order="sorted")
        # Any other version signs as v2 under its own domain string, so a grant claiming to be
        # v3 can never verify against bytes the gate signed for v2 (or the reverse).
        fields["session_id"] = self.session_id
        fields["target"] = {"cluster": self.target.cluster, "namespace": self.target.namespace,
                            "kind": self.target.kind, "name": self.target.name}
        domain = f"interlock-grant-v{self.version}\n".encode()
        return domain + msgspec.json.encode(fields, order="sorted")


class ApprovalGranted(Event, frozen=True, kw_only=True, tag="approval.granted"):
    """Emitted by the gate, at most once per approval: the signed calls it releases. The
    executor consumes it and runs each grant's call as the approval request recorded it."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    approver: ShortText
    grants: tuple[Grant, ...]

    def key(self) -> str:
        return self.approval_id

    def cluster(self) -> str:
        """The cluster of its grants: the gate makes one approval per cluster (issue 21); an
        approval of an older log naming several is filed under its first call's."""
        return self.grants[0].target.cluster if self.grants else ""


class ApprovalDenied(Event, frozen=True, kw_only=True, tag="approval.denied"):
    """Emitted by the gate when a human denied the request; the planner gets it as the result."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    call_ids: tuple[str, ...]
    approver: ShortText
    reason: LongText = ""
    # Set when the approver approved changed args instead: the call that replaces this one
    # (a `tool.amended` follows). The original is settled; the work goes on under the new call.
    superseded_by: str = ""

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
    """Emitted by the gate when a recorded decision cannot take effect (late, unknown, or not
    allowed)."""

    emitter: ClassVar[Emitter] = "gate"
    approval_id: str
    approver: ShortText = ""
    reason: ShortText

    def key(self) -> str:
        return self.event_id


class ToolAmended(Event, frozen=True, kw_only=True, tag="tool.amended"):
    """Emitted by the gate when an approver approved modified args: a new call that replaces the
    original, with its own hash, dry run and approval."""

    emitter: ClassVar[Emitter] = "gate"
    call_id: str
    replaces: str
    tool: ShortText
    args: dict[str, Any]
    target: Target = msgspec.field(default_factory=Target)
    amended_by: ShortText
    requested_by: ShortText = ""
    rationale: LongText = ""
    evidence: tuple[LongText, ...] = ()
    expected_outcome: LongText = ""

    def key(self) -> str:
        return self.call_id
