"""The CLI's signing keys (clients/keys.py): files, formats, fingerprints as `ssh-keygen -l`
prints them, and statements the gate's verifier (services/runtime/approvers) accepts — built
from the approval's JSON as the gateway serves it, with nothing of the services imported by
the client."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from clients import keys
from schemas.approval import ApprovalCall, ApprovalDecided, ApprovalRequested
from schemas.approvers import ApproverEnrolled, ApproverKey, ApproverRevoked, Signature
from schemas.base import Target
from services.runtime import approvers

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")


def _request(calls: int = 2) -> ApprovalRequested:
    return ApprovalRequested(
        session_id="s_keys", approval_id="a_keys",
        calls=tuple(ApprovalCall(call_id=f"c_{i}", tool="scale",
                                 args={"kind": "deployment", "name": f"w{i}", "namespace": "shop",
                                       "replicas": 5},
                                 call_hash=f"hash-{i}", target=Target(namespace="shop"))
                    for i in range(calls)),
        expires_at=datetime.now(UTC).replace(microsecond=123456) + timedelta(minutes=15),
        requested_by="alice")


def _as_served(request: ApprovalRequested) -> dict[str, Any]:
    """The approval as GET /v1/approvals serves it: JSON over HTTP."""
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(request))
    body["state"] = "pending"
    return body


def _registry(admin: Ed25519PrivateKey) -> approvers.Registry:
    public = admin.public_key()
    return approvers.Registry(admins={keys.fingerprint(public): public})


def _enrol(registry: approvers.Registry, admin: Ed25519PrivateKey, principal: str,
           key: Ed25519PrivateKey) -> dict[str, str]:
    """Enrols `key` for `principal` exactly as `interlock keys enroll` builds the body."""
    cred = keys.credential(key.public_key(), "laptop")
    sig = keys.sign(keys.enrol_statement(principal, cred), admin)
    registry.apply(ApproverEnrolled(session_id="approvers", principal=principal,
                                    credential=msgspec.convert(cred, ApproverKey),
                                    admin=msgspec.convert(sig, Signature)))
    return cred


# -- files -------------------------------------------------------------------------------------

def test_the_default_key_path_follows_the_environment(tmp_path: Path) -> None:
    assert keys.default_key_path({"INTERLOCK_KEY": str(tmp_path / "k")}) == tmp_path / "k"
    assert (keys.default_key_path({"XDG_CONFIG_HOME": str(tmp_path)})
            == tmp_path / "interlock" / "key")
    assert keys.default_key_path({}) == Path.home() / ".config" / "interlock" / "key"
    assert keys.key_path(str(tmp_path / "x"), {"INTERLOCK_KEY": "/y"}) == tmp_path / "x"
    assert keys.admin_key_path(None, {"INTERLOCK_ADMIN_KEY": "/a"}) == Path("/a")
    with pytest.raises(keys.KeyProblem, match="--admin-key PATH or set INTERLOCK_ADMIN_KEY"):
        keys.admin_key_path(None, {})


def test_a_created_key_is_its_owners_alone_and_never_replaced_silently(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "interlock" / "key"
    key = keys.create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert keys.fingerprint(keys.load_key(path).public_key()) == keys.fingerprint(
        key.public_key())
    with pytest.raises(keys.KeyProblem, match="exists; pass --force"):
        keys.create_key(path)
    other = keys.create_key(path, force=True)
    assert keys.fingerprint(other.public_key()) != keys.fingerprint(key.public_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key"]  # no temporary file left


def test_no_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(keys.KeyProblem) as err:
        keys.load_key(tmp_path / "missing")
    assert "interlock keys init" in str(err.value)
    assert "interlock keys enroll" in str(err.value)


def test_only_ed25519_private_keys_load(tmp_path: Path) -> None:
    rsa = tmp_path / "rsa"
    rsa.write_bytes(generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(keys.KeyProblem, match="not an Ed25519 key"):
        keys.load_key(rsa)
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(keys.KeyProblem, match="not a private key"):
        keys.load_key(junk)


def test_an_encrypted_pem_key_asks_its_passphrase(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "enc"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"s3cret")))
    asked: list[Path] = []

    def answer(p: Path) -> bytes:
        asked.append(p)
        return b"s3cret"

    loaded = keys.load_key(path, passphrase=answer)
    assert asked == [path]
    assert keys.fingerprint(loaded.public_key()) == keys.fingerprint(key.public_key())
    with pytest.raises(keys.KeyProblem, match="cannot load the key"):
        keys.load_key(path, passphrase=lambda p: b"wrong")
    with pytest.raises(keys.KeyProblem, match="no terminal to ask its passphrase"):
        keys.load_key(path, passphrase=lambda p: None)


# -- fingerprints: ssh-keygen's, and the gate's ------------------------------------------------

def _ssh_keygen_fingerprint(pub: Path) -> str:
    assert SSH_KEYGEN is not None
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub)], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()[1]


@needs_ssh_keygen
def test_fingerprints_are_ssh_keygens_and_the_gates(tmp_path: Path) -> None:
    # A key `interlock keys init` made, its public line written as a .pub file…
    made = keys.create_key(tmp_path / "made")
    (tmp_path / "made.pub").write_text(keys.public_line(made.public_key(), "me@laptop") + "\n")
    # …and a key ssh-keygen made, read by the CLI from the OpenSSH private key file.
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "ops@host", "-f",
                    str(tmp_path / "ssh")], check=True)
    ssh = keys.load_key(tmp_path / "ssh")
    for key, pub in ((made, tmp_path / "made.pub"), (ssh, tmp_path / "ssh.pub")):
        fp = keys.fingerprint(key.public_key())
        assert fp == _ssh_keygen_fingerprint(pub)
        assert fp == approvers.fingerprint_of("ed25519", keys.raw_public(key.public_key()))
        assert fp == keys.credential(key.public_key())["key_id"]
        assert keys.credential_fingerprint(keys.credential(key.public_key())) == fp
        assert keys.fingerprint(keys.public_key_of(pub)) == fp
        assert keys.fingerprint(keys.parse_public_line(pub.read_text())) == fp
    # An imported SSH key is copied as it is, 0600.
    copy = tmp_path / "conf" / "key"
    keys.import_ssh_key(tmp_path / "ssh", copy)
    assert copy.read_bytes() == (tmp_path / "ssh").read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    # An encrypted OpenSSH key: opened with the passphrase when the optional bcrypt package is
    # there, else refused with what to do (never a traceback).
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "pass phrase", "-f",
                    str(tmp_path / "enc")], check=True)
    if importlib.util.find_spec("bcrypt") is None:
        with pytest.raises(keys.KeyProblem, match="install the bcrypt package"):
            keys.load_key(tmp_path / "enc", passphrase=lambda p: b"pass phrase")
    else:
        enc = keys.load_key(tmp_path / "enc", passphrase=lambda p: b"pass phrase")
        assert keys.fingerprint(enc.public_key()) == _ssh_keygen_fingerprint(
            tmp_path / "enc.pub")


def test_a_passkeys_fingerprint_is_recomputed_as_the_gate_computes_it() -> None:
    cose = bytes(range(77))
    cred = {"kind": "passkey", "public_key": base64.b64encode(cose).decode(),
            "key_id": "SHA256:claimed"}
    assert keys.credential_fingerprint(cred) == approvers.fingerprint_of("passkey", cose)
    # base64url without padding, as a browser sends it, reads the same.
    cred["public_key"] = base64.urlsafe_b64encode(cose).decode().rstrip("=")
    assert keys.credential_fingerprint(cred) == approvers.fingerprint_of("passkey", cose)


# -- statements the gate accepts ---------------------------------------------------------------

def test_an_enrolment_and_a_revocation_built_by_the_cli_are_what_the_registry_believes() -> None:
    admin, alice_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    registry = _registry(admin)
    cred = _enrol(registry, admin, "alice", alice_key)
    assert registry.refused == []
    [held] = registry.active("alice")
    assert held.key.key_id == cred["key_id"]
    assert held.by == keys.fingerprint(admin.public_key())
    # The same content as the runtime's own statements (the encoding may differ).
    assert json.loads(keys.enrol_statement("alice", cred)) == json.loads(
        approvers.enrol_statement("alice", msgspec.convert(cred, ApproverKey)))
    assert json.loads(keys.revoke_statement("alice", cred["key_id"])) == json.loads(
        approvers.revoke_statement("alice", cred["key_id"]))
    # A revocation signed by the admin, as `interlock keys revoke` signs it.
    sig = keys.sign(keys.revoke_statement("alice", cred["key_id"]), admin)
    registry.apply(ApproverRevoked(session_id="approvers", principal="alice",
                                   key_id=cred["key_id"], admin=msgspec.convert(sig, Signature)))
    assert registry.refused == []
    assert registry.active("alice") == []
    # Signed by anyone but an admin, neither counts.
    mallory = Ed25519PrivateKey.generate()
    forged = keys.sign(keys.enrol_statement("mallory", keys.credential(mallory.public_key())),
                       mallory)
    registry.apply(ApproverEnrolled(
        session_id="approvers", principal="mallory",
        credential=msgspec.convert(keys.credential(mallory.public_key()), ApproverKey),
        admin=msgspec.convert(forged, Signature)))
    assert registry.active("mallory") == []
    assert "is not an admin key" in registry.refused[-1][1]


@pytest.mark.parametrize(("decision", "reason", "edits"), [
    ("approve", "", None),
    ("deny", "not during the sale", None),
    ("approve", "fewer", {"replicas": 4}),
])
def test_a_decision_signed_from_the_approvals_json_verifies_at_the_gate(
        decision: str, reason: str, edits: dict[str, Any] | None) -> None:
    admin, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    registry = _registry(admin)
    _enrol(registry, admin, "bob", key)
    request = _request()
    statement = keys.decision_statement(_as_served(request), approver="bob", decision=decision,
                                        reason=reason, edits=edits)
    body_sig = keys.sign(statement, key)
    decided = ApprovalDecided(session_id=request.session_id, approval_id=request.approval_id,
                              decision=decision, reason=reason,  # type: ignore[arg-type]
                              approver="bob", edits=edits,
                              signed=msgspec.convert(body_sig, Signature))
    assert registry.verify_decision(request, decided).key_id == keys.fingerprint(
        key.public_key())
    # The runtime's own statement says the same; the expiry is the same time, as the gate
    # compares it (the JSON says `Z` where isoformat says `+00:00`).
    ours, theirs = json.loads(statement), json.loads(approvers.decision_statement(
        request, approver="bob", decision=decision, reason=reason, edits=edits))
    assert (datetime.fromisoformat(ours.pop("expires_at"))
            == datetime.fromisoformat(theirs.pop("expires_at")))
    assert ours == theirs


def test_a_signed_decision_counts_for_nothing_else() -> None:
    admin, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    registry = _registry(admin)
    _enrol(registry, admin, "bob", key)
    request = _request()
    sig = msgspec.convert(keys.sign(keys.decision_statement(
        _as_served(request), approver="bob", decision="approve"), key), Signature)

    def decided(**kw: Any) -> ApprovalDecided:
        fields: dict[str, Any] = {"session_id": request.session_id,
                                  "approval_id": request.approval_id, "decision": "approve",
                                  "approver": "bob", "signed": sig, **kw}
        return ApprovalDecided(**fields)

    other = msgspec.structs.replace(request, calls=request.calls[:1])
    cases = [
        (request, decided(decision="deny", reason="x"), "another decision"),
        (request, decided(approver="carol"), "enrolled for bob, not carol"),
        (request, decided(edits={"replicas": 9}), "another modified args"),
        (other, decided(), "another calls"),
        (msgspec.structs.replace(request, session_id="s_other"), decided(session_id="s_other"),
         "another session"),
        (msgspec.structs.replace(request, expires_at=request.expires_at + timedelta(seconds=1)),
         decided(), "another expiry"),
    ]
    for req, d, why in cases:
        with pytest.raises(approvers.Rejected, match=why):
            registry.verify_decision(req, d)


def test_an_approval_without_what_a_decision_signs_is_refused() -> None:
    with pytest.raises(keys.KeyProblem, match="lacks what a decision signs"):
        keys.decision_statement({"approval_id": "a_1"}, approver="bob", decision="approve")


def test_the_readmes_signing_snippet_signs_what_the_gate_verifies(tmp_path: Path) -> None:
    """The README's Python for a script without the CLI, run as it is printed there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```python\nimport base64, hashlib, json")
    snippet = readme[start + len("```python\n"):readme.index("```\n", start + 10)]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # the documented code, verbatim
    admin = Ed25519PrivateKey.generate()
    key = keys.create_key(tmp_path / "key")
    registry = _registry(admin)
    _enrol(registry, admin, "bob", key)
    request = _request()
    for decision, reason, edits in (("approve", "", None), ("deny", "no", None),
                                    ("approve", "", {"replicas": 2})):
        body = scope["signed_decision"](_as_served(request), "bob", decision,
                                        str(tmp_path / "key"), reason=reason, edits=edits)
        assert body.get("args") == edits
        decided = ApprovalDecided(session_id=request.session_id,
                                  approval_id=request.approval_id, decision=body["decision"],
                                  reason=body["reason"], approver="bob", edits=body.get("args"),
                                  signed=msgspec.convert(body["signature"], Signature))
        assert registry.verify_decision(request, decided).key_id == keys.fingerprint(
            key.public_key())
