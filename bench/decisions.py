"""CPU per human decision for its signature (issue 18): what the gate (and the audit) spend to
decide whether a decision counts — the registry lookup of the key, the signature check and the
comparison of the signed statement with the approval, field by field — for an Ed25519 key
(`interlock keys`) and for a passkey (a WebAuthn assertion, checked by the `webauthn` library),
on a one-call approval and on a batch of ten; and the fold of one registry event (an admin's
enrolment, whose admin signature is checked once, when the gate reads it).

Usage: python -m bench.decisions [N]
Prints µs per decision (process CPU time, one core). The passkey's assertion is test data made
here the way an authenticator makes one: an ES256 key from `cryptography`, authenticator data
(relying party hash, flags, counter) and client data JSON whose challenge is the statement's
SHA-256, signed together; nothing here verifies anything by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.approval import ApprovalCall, ApprovalDecided, ApprovalRequested
from schemas.approvers import REGISTRY_SESSION, ApproverEnrolled, ApproverKey, Signature
from schemas.base import Target
from schemas.catalogue import call_hash
from services.runtime import approvers

RP_ID = "localhost"
ORIGIN = "http://localhost:8080"
# Principals enrolled besides the one deciding: the lookup is a dict, but the bench says so.
OTHERS = 50


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def request(calls: int) -> ApprovalRequested:
    items = []
    for i in range(calls):
        args = {"cluster": "", "kind": "deployment", "name": f"web-{i}", "namespace": "shop",
                "replicas": 4}
        items.append(ApprovalCall(call_id=f"c_{i}", tool="scale", args=args,
                                  call_hash=call_hash("scale", args),
                                  target=Target(namespace="shop", kind="deployment",
                                                name=f"web-{i}")))
    return ApprovalRequested(session_id="s_bench", approval_id=f"a_bench{calls}",
                             calls=tuple(items),
                             expires_at=datetime.now(UTC) + timedelta(minutes=15))


class Passkey:
    """A software authenticator's P-256 key, enough to make assertions as a browser returns
    them (test data for the verifier)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        nums = self.key.public_key().public_numbers()
        # COSE_Key: kty EC2, alg ES256, crv P-256, x, y.
        self.cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"),
                                 -3: nums.y.to_bytes(32, "big")})
        self.credential_id = _b64url(hashlib.sha256(self.cose).digest()[:16])

    def approver_key(self) -> ApproverKey:
        return ApproverKey(key_id=approvers.fingerprint_of("passkey", self.cose), kind="passkey",
                           public_key=base64.b64encode(self.cose).decode(),
                           credential_id=self.credential_id, rp_id=RP_ID, origin=ORIGIN,
                           label="bench")

    def sign(self, statement: str) -> Signature:
        auth = hashlib.sha256(RP_ID.encode()).digest() + bytes([0x05]) + (1).to_bytes(4, "big")
        client = json.dumps({"type": "webauthn.get",
                             "challenge": _b64url(approvers.challenge_of(statement)),
                             "origin": ORIGIN, "crossOrigin": False}).encode()
        sig = self.key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return Signature(statement=statement, key_id=self.approver_key().key_id,
                         signature=_b64url(sig), authenticator_data=_b64url(auth),
                         client_data_json=_b64url(client), credential_id=self.credential_id)


def _enrolment(principal: str, key: ApproverKey, admin: Ed25519PrivateKey) -> ApproverEnrolled:
    return ApproverEnrolled(session_id=REGISTRY_SESSION, principal=principal, credential=key,
                            admin=approvers.sign_statement(
                                approvers.enrol_statement(principal, key), admin))


def cpu_us(fn: Any, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6


def measure(n: int = 1000) -> dict[str, Any]:
    admin = Ed25519PrivateKey.generate()
    admin_pub = admin.public_key()
    trust = {approvers.fingerprint_of("ed25519", approvers.raw_public(admin_pub)): admin_pub}
    alice, passkey = Ed25519PrivateKey.generate(), Passkey()
    events = [_enrolment(f"p{i}", approvers.ed25519_key(Ed25519PrivateKey.generate()
                                                         .public_key()), admin)
              for i in range(OTHERS)]
    events.append(_enrolment("alice", approvers.ed25519_key(alice.public_key(), "cli"), admin))
    events.append(_enrolment("bob", passkey.approver_key(), admin))
    registry = approvers.Registry(dict(trust)).fold(events)
    assert not registry.refused, registry.refused
    out: dict[str, Any] = {"registry_keys": len(registry.keys), "decisions": {}}
    fold_n = max(20, n // 10)
    out["fold_enrolment_us"] = cpu_us(
        lambda: approvers.Registry(dict(trust)).apply(events[-2]), fold_n)
    for calls in (1, 10):
        req = request(calls)
        for who, kind in (("alice", "ed25519"), ("bob", "passkey")):
            statement = approvers.decision_statement(req, approver=who, decision="approve")
            signed = (approvers.sign_statement(statement, alice) if kind == "ed25519"
                      else passkey.sign(statement))
            d = ApprovalDecided(session_id=req.session_id, approval_id=req.approval_id,
                                decision="approve", approver=who, signed=signed)
            assert registry.verify_decision(req, d).kind == kind  # it verifies before it is timed
            runs = n if kind == "ed25519" else max(50, n // 4)
            out["decisions"][f"{kind}, {calls} call(s)"] = {
                "verify_us": cpu_us(lambda r=req, x=d: registry.verify_decision(r, x), runs),
                "statement_bytes": len(statement)}
            if kind == "ed25519":
                out["decisions"][f"{kind}, {calls} call(s)"]["sign_us"] = cpu_us(
                    lambda s=statement: approvers.sign_statement(s, alice), n)
    return out


def report(r: dict[str, Any]) -> str:
    lines = [f"{'decision':<26} {'statement B':>11} {'verify µs':>10} {'sign µs':>8}"]
    for name, d in r["decisions"].items():
        sign = f"{d['sign_us']:>8.1f}" if "sign_us" in d else f"{'—':>8}"
        lines.append(f"{name:<26} {d['statement_bytes']:>11} {d['verify_us']:>10.1f} {sign}")
    lines.append(f"registry of {r['registry_keys']} keys; folding one enrolment (admin "
                 f"signature): {r['fold_enrolment_us']:.0f} µs, once per registry event")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
