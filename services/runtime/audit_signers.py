"""Who signed each decision of an audited session (issue 18): the approver registry folded as
the log holds it, trusting only the admin keys the reader was given, and each decision's
signature judged against it (services/runtime/audit.py uses it)."""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import chain, lifecycle
from schemas import events as E
from schemas.approval import ApprovalDecided, ApprovalDenied, ApprovalGranted, ApprovalRequested
from schemas.approvers import REGISTRY_SESSION, ApproverEnrolled, ApproverRevoked
from services.runtime import approvers as registry
from services.runtime.identity import ForgedEvent, Keyring

# The verdicts of a decision's signature when it could not be checked, and why.
NO_ADMIN_KEYS = ("decision signatures were not checked: no admin keys (the trust roots of the "
                 "approver registry, keys/admins.pub) were given, so who signed each decision is "
                 "unknown")
# The verdict of a Slack click the reader could check in every way but Slack's signature.
GATE_CHECKED = "checked by the gate"
NO_REGISTRY = ("decision signatures cannot be checked: the approver registry (the events of "
               "session `approvers`) is not here — an export made before decisions were signed, "
               "or one it was cut from")


@dataclass
class Signer:
    """Who signed one recorded decision, with which key, and whether that signature counts.

    verdict: "valid"; "rejected" (reason says why it does not count); "unchecked" (no admin keys
    or no registry to check it with); "before signing" (unsigned, and stored before the log held
    any enrolment: an old log, from before decisions were signed); "checked by the gate" (a
    Slack click that holds in every way the reader can check, whose Slack signature only the
    gate could check: the reader has no Slack signing secret). `counted`: "granted" or "denied"
    when the gate acted on this decision."""

    seq: int
    approval_id: str
    approver: str
    decision: str
    key_id: str = ""
    kind: str = ""
    label: str = ""
    verdict: str = "unchecked"
    reason: str = ""
    counted: str = ""

    def key_text(self) -> str:
        what = "passkey" if self.kind == "passkey" else "ed25519 key"
        label = f" ({self.label})" if self.label else ""
        return f"{what} {self.key_id}{label}"

    def text(self) -> str:
        if self.kind == "slack" and self.verdict in ("valid", GATE_CHECKED):
            how = ("Slack signature re-checked" if self.verdict == "valid"
                   else "Slack signature checked by the gate")
            verb = "approved" if self.decision == "approve" else "denied"
            return f"{verb} in Slack by {self.approver} ({self.key_id}), {how}"
        if self.verdict == "valid":
            return f"signed by {self.approver} with {self.key_text()}"
        if self.verdict == "rejected":
            return f"signature REJECTED: {self.reason}"
        if self.verdict == "before signing":
            return f"unsigned: {self.reason}"
        signed = f"signed with {self.key_text()}" if self.key_id else "unsigned"
        return f"{signed}, not checked: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Approvers:
    """The approver registry as a log holds it (the stored events of session `approvers`),
    trusted with the admin keys the reader was given — `admins` None: none, so no decision can
    be checked and the verdict says so. Registry events not signed by their writer (given a
    keyring) are left out, as every reader leaves them out; the admin signature inside each is
    what makes it count (services/runtime/approvers.Registry)."""

    admins: dict[str, Ed25519PublicKey] | None
    links: list[chain.Link] = field(default_factory=list)
    keyring: Keyring | None = None
    # Slack's signing secret, when the auditor has it (INTERLOCK_SLACK_SIGNING_SECRET): Slack
    # clicks are re-checked; else they are said to be checked by the gate.
    slack_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.chain = chain.verify_chain(self.links)
        # The stream sequence of the first enrolment an admin signed (0: none): an unsigned
        # decision stored before it was made before decisions were signed.
        self.enrolled_since = 0
        # The admin keys the registry's events say signed them (to name what is missing).
        self.signed_by: set[str] = set()
        # (seq, why) of each registry event whose admin signature does not count.
        self.refused: list[tuple[int, str]] = []
        self._seqs: list[int] = []
        self._states: list[registry.Registry] = []
        state = registry.Registry(dict(self.admins or {}))
        for link in sorted(self.links, key=lambda x: x.seq):
            if self.keyring is not None and signature_problem(link, self.keyring) is not None:
                continue
            try:
                ev = E.decode(link.raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if not isinstance(ev, ApproverEnrolled | ApproverRevoked):
                continue
            self.signed_by.add(ev.admin.key_id)
            if self.admins is None:
                continue
            state = registry.Registry(state.admins, dict(state.keys), dict(state.revoked))
            state.apply(ev)
            if state.refused:
                self.refused.append((link.seq, state.refused[0][1]))
                continue
            if isinstance(ev, ApproverEnrolled) and not self.enrolled_since:
                self.enrolled_since = link.seq
            self._seqs.append(link.seq)
            self._states.append(state)

    def at(self, seq: int) -> registry.Registry:
        """The registry as it stood just before stream sequence `seq`."""
        i = bisect.bisect_left(self._seqs, seq)
        return self._states[i - 1] if i else registry.Registry(dict(self.admins or {}))

    def check(self, seq: int, request: ApprovalRequested, d: ApprovalDecided) -> Signer:
        """Who signed decision `d` (stored at `seq`) of `request`, and whether it counts."""
        sig = d.signed
        who = Signer(seq, d.approval_id, d.approver, d.decision)
        if sig is not None:
            who.key_id = sig.key_id
            who.kind = ("slack" if sig.key_id.startswith("slack:") else
                        "passkey" if sig.authenticator_data else "ed25519")
        if self.admins is None:
            who.reason = "no admin keys were given"
        elif not self.links:
            who.reason = "the approver registry is not here"
        elif sig is None and (not self.enrolled_since or seq < self.enrolled_since):
            who.verdict = "before signing"
            who.reason = "recorded before any approver was enrolled (before decisions were signed)"
        else:
            reg = dataclasses.replace(self.at(seq), slack_secret=self.slack_secret)
            try:
                # A Slack click's timestamp is held to when it was recorded (the gate held it
                # to its own clock then).
                key = reg.verify_decision(request, d, now=d.occurred_at.timestamp())
            except registry.Unchecked as exc:
                who.verdict, who.reason = GATE_CHECKED, str(exc)
            except registry.Rejected as exc:
                who.verdict, who.reason = "rejected", str(exc)
            else:
                who.verdict, who.kind, who.label = "valid", key.kind, key.label
        return who


def acted_on(approval: lifecycle.ApprovalState, signers: dict[str, Signer]) -> list[Signer]:
    """The decisions the gate settled `approval` on, as its outcome says: those it did not
    reject (`decision.rejected`) that the rules counted (schemas.lifecycle), by the approvers
    the outcome names."""
    outcome = approval.outcome
    if not isinstance(outcome, ApprovalGranted | ApprovalDenied):
        return []
    named = set(outcome.approver.split("+"))
    folded = approval.decision()
    ruled_out = {d.event_id for d, _ in folded.rejected}
    acted = [signers[d.event_id] for d in approval.decisions
             if d.event_id not in approval.refused and d.event_id not in ruled_out
             and d.approver in named and d.event_id in signers]
    for s in acted:
        s.counted = "granted" if isinstance(outcome, ApprovalGranted) else "denied"
    return acted


def unsigned_grounds(acted: list[Signer]) -> list[dict[str, object]]:
    """A problem for every decision the gate acted on whose approver's signature does not
    count (unchecked ones are said once, by registry_problems)."""
    return [{"seq": s.seq, "approval_id": s.approval_id,
             "problem": f"approval {s.approval_id} was {s.counted} on a decision by "
                        f"{s.approver} that does not count: {s.reason}"}
            for s in acted if s.verdict == "rejected"]


def registry_problems(session_id: str, people: Approvers,
                       decisions: list[Signer]) -> list[dict[str, object]]:
    """What the reader could not check of the decisions the gate acted on (said once), and, in
    the registry's own audit, every registry event whose admin signature does not count."""
    problems: list[dict[str, object]] = []
    if session_id == REGISTRY_SESSION:
        for seq, why in people.refused:
            problems.append({"seq": seq, "approval_id": "",
                             "problem": f"a registry event that counts for nobody: {why}"})
        if people.admins is None and people.links:
            problems.append({"seq": 0, "signature": "unchecked",
                             "problem": NO_ADMIN_KEYS + named_admins(people)})
        return problems
    acted = [s for s in decisions if s.counted]
    if any(s.verdict == "unchecked" for s in acted):
        problems.append({"seq": 0, "signature": "unchecked",
                         "problem": NO_ADMIN_KEYS + named_admins(people)}
                        if people.admins is None else
                        {"seq": 0, "approval_id": "", "problem": NO_REGISTRY})
    elif acted and not people.chain.ok:
        breaks = "; ".join(f"#{b['seq']}: {b['problem']}" for b in people.chain.breaks)
        problems.append({"seq": 0, "approval_id": "", "problem": "the approver registry these "
                         f"decisions were checked with is not intact: {breaks}"})
    return problems


def named_admins(people: Approvers) -> str:
    if not people.signed_by:
        return ""
    return f" (the registry names admin key(s) {', '.join(sorted(people.signed_by))})"


def signature_problem(link: chain.Link, keyring: Keyring) -> ForgedEvent | None:
    """Why the event's writer signature does not hold, or None if it does. An event stored
    before signing existed is named unsigned too: the audit says what it can prove."""
    try:
        keyring.check(link.subject, link.raw, link.signature)
    except ForgedEvent as exc:
        return exc
    return None
