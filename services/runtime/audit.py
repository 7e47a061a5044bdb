"""The audit read model: a session as a readable timeline, its writes as records, and an
integrity verdict (hash chain, every event's writer signature, gate signatures, call hashes, and
the approver's own signature on every decision the gate acted on).
Pure functions over stored events, shared by the gateway's audit endpoints and the CLI's
export/verify, so a live log, a stream copy and an exported file are judged by the same code.

Who signed each decision (issue 18) is re-checked with the approver registry as the log has it
(session `approvers`: enrolments and revocations, each signed by an admin key) and the admin
keys the reader trusts, which are never taken from the log itself. Each decision is checked
against the registry as it stood when the decision was stored (a key revoked later still signed
it then). An export carries the registry's events next to the session's, so that `--verify`
needs only the admin public keys (`--admin-keys`, e.g. `keys/admins.pub`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import catalogue, chain, lifecycle
from schemas import events as E
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
    effect_digest,
)
from schemas.approvers import (
    REGISTRY_SESSION,
    ApproverEnrolled,
    ApproverRevoked,
    PasskeyRegistered,
)
from schemas.base import Event
from schemas.execution import (
    CommandRefused,
    PreviewRecorded,
    ToolResult,
    ToolStarted,
    ToolVerified,
)
from schemas.planning import CommandRejected, ToolProposed, ToolRequested
from schemas.session import (
    AssistantMessage,
    SessionCancelled,
    SessionStarted,
    TurnCompleted,
    UserMessage,
)
from services.runtime import signing
from services.runtime.audit_signers import (
    Approvers,
    Signer,
    acted_on,
    registry_problems,
    signature_problem,
    unsigned_grounds,
)
from services.runtime.identity import ForgedEvent, Keyring

# The verdict of an audit made without the services' public keys: it cannot say who wrote what.
UNCHECKED = ("event signatures were not checked: no keyring (every service's public key) was "
             "given, so who wrote each event is unknown")

VERIFIED = {"verified": "verified", "failed": "failing", "timed_out": "timed out",
            "skipped": "nothing to wait for", "not_as_approved": "NOT AS APPROVED"}

def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(args.items()) if v not in ("", None, False))


def _who(principal: str, name: str) -> str:
    """A person as the audit names them: the principal that acted, and beside it the readable
    name the gateway had for them (an OIDC provider's `name` claim), if any."""
    return f"{principal} ({name})" if name and name != principal else principal


def _on(ev: Event) -> str:
    """" on cluster b" for an event bound to a named cluster (issue 21), else ""."""
    cluster = ev.cluster()
    return f" on cluster {cluster}" if cluster else ""


def describe(ev: Event) -> str:
    """One line saying who did what, for the timeline (naming the cluster where it is one)."""
    match ev:
        case SessionStarted():
            return f"{_who(ev.actor, ev.actor_name)} opened the session"
        case UserMessage():
            return f"{_who(ev.actor, ev.actor_name)} asked: {_short(ev.text)}"
        case AssistantMessage():
            return f"planner said: {_short(ev.text)}"
        case CommandRejected():
            return f"planner refused the command: {ev.reason}"
        case ToolRequested():
            ev_txt = f"; evidence: {_short(' | '.join(ev.evidence), 200)}" if ev.evidence else ""
            why = f"; why: {_short(ev.rationale)}" if ev.rationale else ""
            return (f"{_who(ev.actor, ev.actor_name)} asked over MCP via "
                    f"{ev.client or 'an unnamed client'}: {ev.tool}({_args(ev.args)}){why}{ev_txt}")
        case ToolProposed():
            ev_txt = f"; evidence: {_short(' | '.join(ev.evidence), 200)}" if ev.evidence else ""
            why = f"; why: {_short(ev.rationale)}" if ev.rationale else ""
            asked = f" for {ev.requested_by}'s MCP call" if ev.source == "mcp" else ""
            return f"planner proposed {ev.tool}({_args(ev.args)}){asked}{why}{ev_txt}"
        case ToolClassified():
            return f"gate classified {ev.call_id} as {ev.access}{_on(ev)} ({ev.rule})"
        case ToolRefused():
            return f"gate refused {ev.tool} {ev.call_id}: {ev.reason}"
        case PreviewRecorded():
            diff = "; ".join(c.describe() for c in ev.diff) or "no field changes"
            gathered = (f"; gathered by Interlock: {_short(' | '.join(ev.gathered), 300)}"
                        if ev.gathered else "")
            return f"executor{_on(ev)} dry run of {ev.call_id}: {diff}" + (
                f" (error: {ev.error})" if ev.error else "") + gathered
        case ApprovalRequested():
            parts = []
            for c in ev.calls:
                diff = "; ".join(d.describe() for d in c.diff) or "no field changes"
                parts.append(f"{c.tool} {c.target.describe()}: {diff}")
            flags = f"; risks: {'; '.join(ev.risk_flags)}" if ev.risk_flags else ""
            gathered = (f"; gathered by Interlock: {' | '.join(ev.gathered_evidence)}"
                        if ev.gathered_evidence else "")
            return (f"gate asked for approval {ev.approval_id} (requested by {ev.requested_by}): "
                    f"{' | '.join(parts)}{flags}{gathered}; expires {ev.expires_at:%H:%M:%S}")
        case ApprovalDecided():
            what = "approved with changed args" if ev.args is not None else (
                "approved" if ev.decision == "approve" else "denied")
            why = f" — {ev.reason}" if ev.reason else ""
            return f"{_who(ev.approver, ev.actor_name)} {what} {ev.approval_id}{why}"
        case DecisionRejected():
            return f"gate rejected a decision by {ev.approver or '?'} on {ev.approval_id}: " \
                   f"{ev.reason}"
        case ApprovalGranted():
            return f"gate granted {ev.approval_id} (approved by {ev.approver}) and released " \
                   f"{len(ev.grants)} signed call(s){_on(ev)}"
        case ApprovalDenied():
            return f"gate recorded the denial of {ev.approval_id} by {ev.approver}: {ev.reason}"
        case ApprovalExpired():
            return f"gate expired {ev.approval_id}: nobody decided in time"
        case ToolAmended():
            return f"gate made {ev.call_id} from {ev.replaces} with args changed by " \
                   f"{ev.amended_by}: {ev.tool}({_args(ev.args)})"
        case ToolStarted():
            return f"executor{_on(ev)} claimed {ev.call_id} and called the cluster"
        case ToolResult():
            first = _short(ev.output.splitlines()[0] if ev.output else "", 200)
            return f"executor{_on(ev)} result of {ev.call_id} ({ev.tool}): {ev.status} — {first}"
        case CommandRefused():
            return f"executor{_on(ev)} refused a command for {ev.call_id}: {ev.reason}"
        case ToolVerified():
            check = f" ({ev.check})" if ev.check else ""
            detail = f" — {_short(ev.detail)}" if ev.detail else ""
            return f"executor{_on(ev)} checked {ev.call_id}{check}: {VERIFIED[ev.outcome]}{detail}"
        case TurnCompleted():
            return f"planner finished the turn ({ev.reason})" if ev.reason else \
                "planner finished the turn"
        case SessionCancelled():
            return f"{_who(ev.actor, ev.actor_name)} cancelled the run"
        case ApproverEnrolled():
            what = "passkey" if ev.credential.kind == "passkey" else "ed25519 key"
            label = f" ({ev.credential.label})" if ev.credential.label else ""
            return (f"admin key {ev.admin.key_id} enrolled {what} {ev.credential.key_id}{label} "
                    f"for {ev.principal}")
        case ApproverRevoked():
            return f"admin key {ev.admin.key_id} revoked key {ev.key_id} of {ev.principal}"
        case PasskeyRegistered():
            return (f"{ev.principal} registered passkey {ev.credential.key_id} (it signs nothing "
                    "until an admin enrols it)")
    return f"{ev.emitter}: {ev.type}"


@dataclass
class Entry:
    seq: int
    at: datetime
    actor: str
    type: str
    text: str
    signer: Signer | None = None


@dataclass
class WriteRecord:
    """One write, from proposal to result: who asked, who approved, what changed."""

    session_id: str
    call_id: str
    tool: str
    target: dict[str, str]
    args: dict[str, Any]
    # The cluster it acts on (issue 21): the target's, else the context the executor's dry run
    # resolved for a call that named none (legacy mode: the kubeconfig's current context).
    cluster: str = ""
    requested_by: str = ""
    requested_at: str = ""
    # The MCP client the requester called through, as it named itself ("" for other sources).
    requested_via: str = ""
    evidence: list[str] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)
    approval_id: str = ""
    decision: str = "pending"
    approvers: list[str] = field(default_factory=list)
    decided_at: str = ""
    reason: str = ""
    result: str = ""
    output: str = ""
    # Who signed each decision the gate acted on: principal, key_id, kind, verdict.
    signatures: list[dict[str, str]] = field(default_factory=list)


@dataclass
class AuditReport:
    session_id: str
    entries: list[Entry] = field(default_factory=list)
    writes: list[WriteRecord] = field(default_factory=list)
    chain: chain.ChainReport = field(default_factory=chain.ChainReport)
    problems: list[dict[str, object]] = field(default_factory=list)
    decisions: list[Signer] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "integrity": {"ok": self.ok, "chain": self.chain.to_json(),
                          "problems": self.problems},
            "timeline": [{"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor,
                          "type": e.type, "text": e.text}
                         | ({"signature": e.signer.to_json()} if e.signer else {})
                         for e in self.entries],
            "writes": [msgspec.to_builtins(w.__dict__) for w in self.writes],
            "decisions": [d.to_json() for d in self.decisions],
        }

    def render(self) -> str:
        lines = [f"Session {self.session_id}"]
        for e in self.entries:
            lines.append(f"{e.at:%Y-%m-%d %H:%M:%S} #{e.seq:<6} {e.text}")
        verdict = "intact" if self.ok else "BROKEN"
        lines.append(f"Integrity: {verdict} ({self.chain.checked} events, head "
                     f"#{self.chain.head_seq} {self.chain.head_hash[:16]})")
        for b in self.chain.breaks:
            lines.append(f"  chain break at #{b['seq']}: {b['problem']}")
        for p in self.problems:
            where = f"at #{p['seq']}" if p["seq"] else "overall"
            what = "decision" if "approval_id" in p else "signature"
            lines.append(f"  {what} problem {where}: {p['problem']}")
        return "\n".join(lines)


def _check_signatures(seq: int, ev: Event, approvals: dict[str, lifecycle.ApprovalState],
                      key: Ed25519PublicKey | None) -> list[dict[str, object]]:
    problems: list[dict[str, object]] = []
    if isinstance(ev, ApprovalRequested):
        for c in ev.calls:
            if catalogue.call_hash(c.tool, c.args) != c.call_hash:
                problems.append({"seq": seq, "problem": f"call {c.call_id}: args do not match "
                                 "the recorded call hash"})
    if isinstance(ev, ApprovalGranted):
        state = approvals.get(ev.approval_id)
        req = state.request if state is not None else None
        calls = {c.call_id: c for c in req.calls} if req else {}
        for g in ev.grants:
            # Verifies v1 grants of old logs as signed then, and v2 with session and target.
            if key is not None and not signing.verify(g, key):
                problems.append({"seq": seq, "problem": f"grant for {g.call_id}: invalid gate "
                                 "signature"})
            call = calls.get(g.call_id)
            if req is not None and (call is None or call.call_hash != g.call_hash):
                problems.append({"seq": seq, "problem": f"grant for {g.call_id} is not for the "
                                 "call that was requested"})
            if g.version == 1:
                continue  # a v1 grant names neither session nor target
            if g.session_id != ev.session_id:
                problems.append({"seq": seq, "problem": f"grant for {g.call_id} is bound to "
                                 f"session {g.session_id}, not this one"})
            if call is not None and call.target != g.target:
                problems.append({"seq": seq, "problem": f"grant for {g.call_id} is not for the "
                                 "target that was requested"})
            if call is not None and effect_digest(call.effect) != g.effect_digest:
                # Both are "" in logs from before effects were bound: nothing to report there.
                problems.append({"seq": seq, "problem": f"grant for {g.call_id} does not bind "
                                 "the objects the request listed"})
    return problems


def audit(session_id: str, links: list[chain.Link],
          gate_key: Ed25519PublicKey | None = None,
          keyring: Keyring | None = None,
          approvers: Approvers | None = None) -> AuditReport:
    """keyring: every service's public keys. Without it no writer signature is checked, and
    the verdict says so (never ok). approvers: the approver registry and the admin keys to trust
    it with; without them no decision's signature is checked, and a session whose approvals the
    gate settled on decisions is never ok either."""
    report = AuditReport(session_id)
    people = approvers if approvers is not None else Approvers(None)
    signers: dict[str, Signer] = {}  # decision event id -> who signed it
    report.chain = chain.verify_chain(links)
    approvals: dict[str, lifecycle.ApprovalState] = {}
    writes: dict[str, WriteRecord] = {}
    proposals: dict[str, ToolProposed | ToolAmended] = {}
    mcp_calls: dict[str, ToolRequested] = {}  # by event id: what an MCP client asked for
    ordered = sorted(links, key=lambda x: x.seq)
    forged: dict[int, ForgedEvent] = {}
    # The cluster the gate classified each call for: an executor event about that call from
    # another cluster's executor is flagged and not believed (issue 21).
    classified: dict[str, str] = {}
    if keyring is None:
        report.problems.append({"seq": 0, "problem": UNCHECKED, "signature": "unchecked"})
    else:
        for link in ordered:
            if (bad := signature_problem(link, keyring)) is not None:
                forged[link.seq] = bad
                report.problems.append({"seq": link.seq, "signature": bad.problem,
                                        "problem": _signature_text(bad)})
    # A log written before signing existed has no signed event: it is still read (its verdict
    # names every event unsigned). Once a session holds signed events, an unsigned one is a
    # forgery like any other, and never counts as a request, a decision or a result.
    legacy = len(forged) == len(ordered) and all(f.problem == "unsigned"
                                                  for f in forged.values())
    for link in ordered:
        try:
            ev = E.decode(link.raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        bad = forged.get(link.seq)
        mark = f"[NOT SIGNED BY ITS WRITER — {bad.problem}] " if bad is not None else ""
        if isinstance(ev, ToolClassified) and ev.access != "refused" and (bad is None or legacy):
            classified[ev.call_id] = ev.target.cluster
        misrouted = lifecycle.misrouted(ev, classified)
        if misrouted:
            want = classified.get(getattr(ev, "call_id", ""), "")
            came = ev.cluster() or ""
            call = getattr(ev, "call_id", "")
            if isinstance(ev, CommandRefused):
                # Cluster `came`'s executor refused a command of another cluster's call: one
                # reached it (replayed or misrouted). Nothing ran; worth a look all the same.
                report.problems.append({"seq": link.seq, "problem": (
                    f"the executor of cluster {came!r} refused a command for call {call}, "
                    f"which the gate classified for cluster {want!r}: a command reached "
                    "another cluster (replayed or misrouted); it did not run there")})
            else:
                mark += f"[NOT BELIEVED — from cluster {came!r}, but the call is for {want!r}] "
                report.problems.append({"seq": link.seq, "problem": (
                    f"{ev.type} about call {call} was written for cluster {came!r}, but the "
                    f"gate classified that call for cluster {want!r}: another cluster's "
                    "executor cannot speak for it; not believed")})
        signer = None
        if isinstance(ev, ApprovalDecided) and (bad is None or legacy):
            state = approvals.get(ev.approval_id)
            if state is not None:
                signer = signers[ev.event_id] = people.check(link.seq, state.request, ev)
                report.decisions.append(signer)
        text = mark + describe(ev) + (f" · {signer.text()}" if signer else "")
        report.entries.append(Entry(link.seq, ev.occurred_at, ev.actor or ev.emitter, ev.type,
                                    text, signer))
        if (bad is not None and not legacy) or misrouted:
            continue
        report.problems += _check_signatures(link.seq, ev, approvals, gate_key)
        # Every approval event moves its approval along the one lifecycle (schemas.lifecycle).
        aid = getattr(ev, "approval_id", None)
        if isinstance(aid, str) and (state := lifecycle.evolve(approvals.get(aid), ev)):
            approvals[aid] = state
        match ev:
            case ToolRequested():
                mcp_calls[ev.event_id] = ev
            case ToolProposed() | ToolAmended():
                proposals[ev.call_id] = ev
            case ApprovalRequested():
                for c in ev.calls:
                    p = proposals.get(c.call_id)
                    asked = mcp_calls.get(p.causation_id) if isinstance(p, ToolProposed) \
                        and p.source == "mcp" else None
                    writes[c.call_id] = WriteRecord(
                        session_id=ev.session_id, call_id=c.call_id, tool=c.tool,
                        target=msgspec.to_builtins(c.target), args=c.args,
                        cluster=c.target.cluster or c.context,
                        requested_by=ev.requested_by, requested_at=ev.occurred_at.isoformat(),
                        requested_via=f"MCP: {asked.client or 'an unnamed client'}"
                        if asked is not None else "",
                        evidence=list(p.evidence) if p else [],
                        diff=[d.describe() for d in c.diff], approval_id=ev.approval_id)
            case ApprovalGranted() | ApprovalDenied() | ApprovalExpired():
                if (approval := approvals.get(ev.approval_id)) is not None:
                    acted = acted_on(approval, signers)
                    report.problems += unsigned_grounds(acted)
                    _settle(writes, approval, acted)
            case ToolResult() if ev.call_id in writes:
                writes[ev.call_id].result = ev.status
                writes[ev.call_id].output = _short(ev.output, 500)
    report.writes = list(writes.values())
    report.problems += registry_problems(session_id, people, report.decisions)
    return report


def on_cluster(ev: ApprovalRequested, cluster: str) -> bool:
    """The request holds a call on `cluster` (its target's, or the context its dry run
    resolved): the audit's filter by cluster."""
    return any((c.target.cluster or c.context) == cluster for c in ev.calls)


def _settle(writes: dict[str, WriteRecord], approval: lifecycle.ApprovalState,
            acted: list[Signer]) -> None:
    """The writes of an approval the gate settled, as its recorded outcome says."""
    outcome = approval.outcome
    assert outcome is not None
    for cid in approval.request.call_ids:
        w = writes.get(cid)
        if w is None:
            continue
        w.decided_at = outcome.occurred_at.isoformat()
        w.signatures = [{"principal": s.approver, "key_id": s.key_id, "kind": s.kind,
                         "verdict": s.verdict} for s in acted]
        if isinstance(outcome, ApprovalGranted):
            w.decision, w.approvers = "approved", outcome.approver.split("+")
        elif isinstance(outcome, ApprovalDenied):
            w.decision, w.approvers, w.reason = "denied", [outcome.approver], outcome.reason
        else:
            w.decision = "expired"


def _signature_text(bad: ForgedEvent) -> str:
    what = {"unsigned": "unsigned event (no writer signature)",
            "unknown key": "signed with a key that is not in the keyring",
            "wrong key": "signed with another service's key (forged)",
            "bad signature": "bad signature: not what its writer signed (forged or altered)"}
    return f"{what[bad.problem]}: {bad.detail}"


def export_lines(links: Iterable[chain.Link]) -> str:
    """JSON lines for SIEM export: `event` to read, `raw` the exact stored text that the chain
    hashes, `signature` the writer's signature header (null: unsigned). `verify` checks all
    three, so editing either copy, or the signature, is caught. A session's export is its own
    events followed by the approver registry's (session `approvers`), which `verify` needs to
    re-check who signed each decision."""
    out = []
    for link in links:
        text = link.raw.decode()
        out.append(json.dumps({"seq": link.seq, "subject": link.subject,
                               "event": json.loads(text), "raw": text,
                               "signature": link.signature}, ensure_ascii=False))
    return "\n".join(out) + ("\n" if out else "")


def import_lines(text: str) -> tuple[list[chain.Link], list[dict[str, object]]]:
    """(links, problems) from an exported file."""
    links: list[chain.Link] = []
    problems: list[dict[str, object]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            sig = d.get("signature")  # absent in exports made before events were signed
            link = chain.Link(int(d["seq"]), str(d["subject"]), str(d["raw"]).encode(),
                              sig if isinstance(sig, str) else None)
            readable = d["event"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append({"seq": 0, "problem": f"line {n} is not an exported event: {exc}"})
            continue
        if json.loads(link.raw) != readable:
            problems.append({"seq": link.seq, "problem": "the readable copy of this event "
                             "differs from the stored bytes (edited)"})
        links.append(link)
    return links, problems


def audit_file(text: str, gate_key: Ed25519PublicKey | None = None,
               keyring: Keyring | None = None,
               admins: dict[str, Ed25519PublicKey] | None = None,
               slack_secret: str | None = None) -> list[AuditReport]:
    """Audits every session in an exported file. The approver registry's events (session
    `approvers`, which an export carries) are trusted with `admins`, the admin public keys
    (never with keys the file could carry itself), and audited as a session of their own."""
    links, problems = import_lines(text)
    by_session: dict[str, list[chain.Link]] = {}
    for link in links:
        by_session.setdefault(link.subject.split(".")[1], []).append(link)
    people = Approvers(admins, by_session.get(REGISTRY_SESSION, []), keyring, slack_secret)
    reports = [audit(sid, ls, gate_key, keyring, people) for sid, ls in by_session.items()]
    for p in problems:
        for r in reports:
            if any(link.seq == p["seq"] for link in by_session[r.session_id]):
                r.problems.append(p)
    if problems and not reports:
        bad = AuditReport("?")
        bad.problems = problems
        reports.append(bad)
    return reports
