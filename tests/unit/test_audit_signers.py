"""Who signed each decision, in the audit (issue 18): the signer, the key's fingerprint and kind,
and whether the signature counts — checked with the approver registry as the log holds it and
the admin keys the reader trusts. A decision the gate acted on without a valid signature makes
the session's verdict not intact; an export re-checks it all offline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas import catalogue, chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
)
from schemas.approvers import REGISTRY_SESSION, ApproverEnrolled, ApproverRevoked, Signature
from schemas.base import Event, Target
from services.runtime import approvers, audit, audit_signers, identity
from services.runtime.identity import Keyring, Signer

SID = "s_audit1"
ADMIN = Ed25519PrivateKey.generate()
ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()
MALLORY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    identity.provision_keys(out, S.SERVICES)
    return out


def ring(keys: Path) -> Keyring:
    return identity.load_keyring(keys / identity.KEYRING_FILE)


def admins() -> dict[str, Ed25519PublicKey]:
    pub = ADMIN.public_key()
    return {approvers.fingerprint_of("ed25519", approvers.raw_public(pub)): pub}


@dataclass
class Log:
    """A stream of stored events across sessions, each chained and signed by its writer."""

    keys: Path
    links: list[chain.Link] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def append(self, ev: Event, *, writer: str | None = None) -> Event:
        seq = len(self.links) + 1
        if (head := self.heads.get(ev.session_id)) is not None:
            ev = msgspec.structs.replace(ev, prev_seq=head[0], prev_hash=chain.event_hash(head[1]))
        subject, raw = S.event_subject(ev), E.encode(ev)
        signer: Signer = identity.load_signer(self.keys / f"{writer or ev.emitter}.key",
                                              writer or ev.emitter)
        self.links.append(chain.Link(seq, subject, raw, signer.sign(subject, raw)))
        self.heads[ev.session_id] = (seq, raw)
        return ev

    def of(self, session: str) -> list[chain.Link]:
        return [x for x in self.links if x.subject.split(".")[1] == session]

    def enrol(self, principal: str, key: Ed25519PrivateKey, label: str = "",
              by: Ed25519PrivateKey = ADMIN) -> None:
        cred = approvers.ed25519_key(key.public_key(), label)
        self.append(ApproverEnrolled(
            session_id=REGISTRY_SESSION, principal=principal, credential=cred,
            admin=approvers.sign_statement(approvers.enrol_statement(principal, cred), by)))

    def revoke(self, principal: str, key: Ed25519PrivateKey) -> None:
        key_id = approvers.ed25519_key(key.public_key()).key_id
        self.append(ApproverRevoked(
            session_id=REGISTRY_SESSION, principal=principal, key_id=key_id,
            admin=approvers.sign_statement(approvers.revoke_statement(principal, key_id), ADMIN)))


def request(approval_id: str = "a_1", required: int = 1) -> ApprovalRequested:
    args = {"cluster": "", "kind": "deployment", "name": "web", "namespace": "shop",
            "replicas": 4}
    return ApprovalRequested(
        session_id=SID, approval_id=approval_id, required_approvals=required,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=15),
        calls=(ApprovalCall(call_id="c_1", tool="scale", args=args,
                            call_hash=catalogue.call_hash("scale", args),
                            target=Target(namespace="shop", kind="deployment", name="web")),))


def decided(req: ApprovalRequested, approver: str, key: Ed25519PrivateKey | None,
            decision: str = "approve", reason: str = "", **statement: Any) -> ApprovalDecided:
    signed: Signature | None = None
    if key is not None:
        text = approvers.decision_statement(req, approver=approver, decision=decision,
                                            reason=reason)
        signed = approvers.sign_statement(json.dumps(json.loads(text) | statement), key)
    return ApprovalDecided(session_id=SID, approval_id=req.approval_id,
                           decision=decision,  # type: ignore[arg-type]
                           reason=reason, approver=approver, actor=approver, signed=signed)


def granted(req: ApprovalRequested, approver: str) -> ApprovalGranted:
    # The grants' own (gate) signatures are test_audit_describe's subject: none here.
    return ApprovalGranted(session_id=SID, approval_id=req.approval_id, approver=approver,
                           grants=())


def fingerprint(key: Ed25519PrivateKey) -> str:
    return approvers.ed25519_key(key.public_key()).key_id


def report(log: Log, keys: Path, trust: dict[str, Ed25519PublicKey] | None = None,
           ) -> audit.AuditReport:
    people = audit_signers.Approvers(admins() if trust is None else trust, log.of(REGISTRY_SESSION),
                             ring(keys))
    return audit.audit(SID, log.of(SID), keyring=ring(keys), approvers=people)


def test_a_signed_decision_shows_its_signer_key_and_kind_and_the_session_is_intact(
        keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE, "laptop")
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    r = report(log, keys)
    assert r.ok, r.problems
    [d] = r.decisions
    assert (d.approver, d.key_id, d.kind, d.label, d.verdict, d.counted) == (
        "alice", fingerprint(ALICE), "ed25519", "laptop", "valid", "granted")
    text = r.render()
    assert f"alice approved a_1 · signed by alice with ed25519 key {fingerprint(ALICE)} " \
           "(laptop)" in text
    assert "Integrity: intact" in text
    body = r.to_json()
    [entry] = [e for e in body["timeline"] if e["type"] == "approval.decided"]
    assert entry["signature"]["verdict"] == "valid"
    assert entry["signature"]["key_id"] == fingerprint(ALICE)
    assert body["writes"][0]["signatures"] == [
        {"principal": "alice", "key_id": fingerprint(ALICE), "kind": "ed25519",
         "verdict": "valid"}]


@pytest.mark.parametrize("case", ["unsigned", "not enrolled", "another's key", "other session",
                                  "revoked before", "forged enrolment"])
def test_a_decision_the_gate_acted_on_without_a_valid_signature_breaks_the_verdict(
        keys: Path, case: str) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE)
    log.enrol("bob", BOB)
    if case == "revoked before":
        log.revoke("alice", ALICE)
    if case == "forged enrolment":  # by a key that is no admin's: it counts for nobody
        log.enrol("mallory", MALLORY, by=MALLORY)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    d = {"unsigned": decided(req, "alice", None),
         "not enrolled": decided(req, "alice", MALLORY),
         "another's key": decided(req, "alice", BOB),
         "other session": decided(req, "alice", ALICE, session_id="s_other"),
         "revoked before": decided(req, "alice", ALICE),
         "forged enrolment": decided(req, "mallory", MALLORY)}[case]
    approver = d.approver
    log.append(d)
    seq = len(log.links)
    log.append(granted(req, approver))  # a gate that acted on it anyway
    r = report(log, keys)
    assert not r.ok
    [problem] = r.problems
    assert problem["seq"] == seq
    assert problem["approval_id"] == "a_1"
    why = {"unsigned": "not signed by alice", "not enrolled": "is not enrolled",
           "another's key": "is enrolled for bob, not alice",
           "other session": "for another session", "revoked before": "was revoked",
           "forged enrolment": "is not enrolled"}[case]
    assert f"approval a_1 was granted on a decision by {approver} that does not count" in \
        str(problem["problem"])
    assert why in str(problem["problem"]), problem
    assert "signature REJECTED" in r.render()
    assert "decision problem at #" in r.render()


def test_a_decision_the_gate_rejected_is_shown_rejected_and_breaks_nothing(keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    forged = log.append(decided(req, "alice", None))
    log.append(DecisionRejected(session_id=SID, approval_id="a_1", approver="alice",
                                reason="not signed", causation_id=forged.event_id))
    log.append(decided(req, "alice", ALICE, decision="deny", reason="not now"))
    log.append(ApprovalDenied(session_id=SID, approval_id="a_1", approver="alice",
                              reason="not now", call_ids=("c_1",)))
    r = report(log, keys)
    assert r.ok, r.problems
    assert [(d.verdict, d.counted) for d in r.decisions] == [("rejected", ""),
                                                             ("valid", "denied")]


def test_a_key_revoked_after_the_decision_still_signed_it_then(keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    log.revoke("alice", ALICE)
    r = report(log, keys)
    assert r.ok, r.problems
    assert r.decisions[0].verdict == "valid"


def test_two_approvers_each_show_their_signature(keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE)
    log.enrol("bob", BOB)
    req = log.append(request(required=2))
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(decided(req, "bob", BOB))
    log.append(granted(req, "alice+bob"))
    r = report(log, keys)
    assert r.ok, r.problems
    assert [(d.approver, d.verdict, d.counted) for d in r.decisions] == [
        ("alice", "valid", "granted"), ("bob", "valid", "granted")]
    assert [s["principal"] for s in r.writes[0].signatures] == ["alice", "bob"]


def test_an_old_log_decided_before_anyone_was_enrolled_is_read_as_such(keys: Path) -> None:
    log = Log(keys)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", None))
    log.append(granted(req, "alice"))
    log.enrol("alice", ALICE)  # the upgrade enrols keys after the old log
    r = report(log, keys)
    assert r.ok, r.problems
    assert r.decisions[0].verdict == "before signing"
    assert "unsigned: recorded before any approver was enrolled" in r.render()


def test_without_admin_keys_nothing_is_checked_and_the_verdict_says_so(keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    r = audit.audit(SID, log.of(SID), keyring=ring(keys))  # no registry, no admin keys
    assert not r.ok
    assert [p["signature"] for p in r.problems] == ["unchecked"]
    assert r.decisions[0].verdict == "unchecked"
    r = report(log, keys, trust={})  # admin keys that signed none of it
    assert not r.ok
    assert "is not enrolled" in str(r.problems[0]["problem"])


def _export(log: Log) -> str:
    return audit.export_lines(log.of(SID) + log.of(REGISTRY_SESSION))


def test_an_export_carries_the_registry_and_verifies_offline(keys: Path) -> None:
    log = Log(keys)
    log.enrol("alice", ALICE, "laptop")
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    text = _export(log)
    session, registry = audit.audit_file(text, keyring=ring(keys), admins=admins())
    assert (session.session_id, registry.session_id) == (SID, REGISTRY_SESSION)
    assert session.ok, session.problems
    assert registry.ok, registry.problems
    assert session.decisions[0].verdict == "valid"
    assert f"enrolled ed25519 key {fingerprint(ALICE)} (laptop) for alice" in registry.render()
    # Without the admin keys: not checked, and it names the admin key to get.
    session, registry = audit.audit_file(text, keyring=ring(keys))
    assert not session.ok
    assert not registry.ok
    assert fingerprint(ADMIN) in str(session.problems[0]["problem"])
    # The registry cut from the file: the decisions cannot be checked.
    only = audit.export_lines(log.of(SID))
    [cut] = audit.audit_file(only, keyring=ring(keys), admins=admins())
    assert not cut.ok
    assert [p["problem"] for p in cut.problems] == [audit_signers.NO_REGISTRY]


def test_an_export_whose_decision_was_re_signed_fails_naming_the_approval(keys: Path) -> None:
    """The decision's human signature replaced, and the event re-signed with the gateway's
    writer key, so that only the human signature is wrong."""
    log = Log(keys)
    log.enrol("alice", ALICE)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    lines = _export(log).splitlines()
    i = next(n for n, line in enumerate(lines) if '"approval.decided"' in line)
    row = json.loads(lines[i])
    ev = E.decode(row["raw"].encode())
    assert isinstance(ev, ApprovalDecided)
    assert ev.signed is not None
    forged = msgspec.structs.replace(ev, signed=approvers.sign_statement(ev.signed.statement,
                                                                         MALLORY))
    raw = E.encode(forged)
    gateway = identity.load_signer(keys / "gateway.key", "gateway")
    row.update(raw=raw.decode(), event=json.loads(raw), signature=gateway.sign(row["subject"],
                                                                                raw))
    lines[i] = json.dumps(row)
    session, _ = audit.audit_file("\n".join(lines) + "\n", keyring=ring(keys), admins=admins())
    assert not session.ok
    named = [p for p in session.problems if p.get("approval_id") == "a_1"]
    assert named
    assert "is not enrolled" in str(named[0]["problem"])
    # Its writer signature holds: only the human signature (and the chain) say it was altered.
    assert not [p for p in session.problems if p.get("signature")]


def test_verify_re_checks_signatures_offline_with_the_admin_keys_file(
        keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`interlock audit --verify FILE --admin-keys admins.pub` (launcher/verify.py)."""
    import io

    monkeypatch.chdir(tmp_path)  # no ./.interlock/keys/admins.pub to fall back on

    from clients.output import Out
    from launcher import verify

    log = Log(keys)
    log.enrol("alice", ALICE)
    req = log.append(request())
    assert isinstance(req, ApprovalRequested)
    log.append(decided(req, "alice", ALICE))
    log.append(granted(req, "alice"))
    trust = tmp_path / "admins.pub"
    trust.write_text(approvers.public_line(ADMIN.public_key(), "admin") + "\n")
    good = tmp_path / "good.jsonl"
    good.write_text(_export(log))

    def run(path: Path, admin_keys: Path | None) -> tuple[int, str]:
        buf = io.StringIO()
        code = verify.verify_export(path, None, Out(buf), keys / identity.KEYRING_FILE,
                                    admin_keys)
        return code, buf.getvalue()

    code, text = run(good, trust)
    assert code == 0, text
    assert f"{SID}: intact" in text
    assert f"approval a_1: approve by alice (#3, granted) · signed by alice with ed25519 key " \
           f"{fingerprint(ALICE)}" in text
    code, text = run(good, None)  # no admin keys (and none in ./.interlock): not checked
    assert code == 1
    assert "decision signatures were not checked" in text

    # A gate that granted on a decision signed with a key nobody enrolled.
    bad_log = Log(keys)
    bad_log.enrol("alice", ALICE)
    req = bad_log.append(request())
    assert isinstance(req, ApprovalRequested)
    bad_log.append(decided(req, "alice", MALLORY))
    bad_log.append(granted(req, "alice"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_export(bad_log))
    code, text = run(bad, trust)
    assert code == 1
    assert f"  #3: approval a_1 was granted on a decision by alice that does not count: key " \
           f"{fingerprint(MALLORY)} is not enrolled" in text
