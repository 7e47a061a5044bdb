"""Event signatures: every event is signed by the service that wrote it, with that service's own
Ed25519 key, and believed only if the key is the one of the emitter its subject names.

Why: a subject says who wrote an event only as long as nobody else can put bytes on it, and a
JetStream reply reflected onto another service's subject did exactly that (issue 14). A
signature over the subject and the exact stored body cannot be reflected, copied onto another
subject, or made by another service.

The signature travels in a NATS header (`Interlock-Signature: <key id> <base64 signature>`), not
in the JSON body, so stored bytes, the hash chain and events written before signing existed are
unchanged. The keyring (`keyring.json`) lists every service's public keys by key id, so a key can
be rotated by adding the new one while the old one still verifies what it signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas import subjects as S
from services.runtime import signing
from services.runtime.errors import ConfigError, PoisonMessage

SIGNATURE_HEADER = "Interlock-Signature"
SIGNATURE_HEADER_BYTES = SIGNATURE_HEADER.encode()
# Versioned and unlike anything else Interlock signs (grants have their own), so an event
# signature can never be taken for another kind of signature, nor the other way round.
_DOMAIN = b"interlock.event.v1\x00"
KEYRING_FILE = "keyring.json"
KEYRING_VERSION = 1
# Who secret values in proposed writes are sealed to (services/runtime/sealing/): the executor
# (legacy mode), or in per-cluster mode (issue 21) the executor of the call's cluster, under
# `sealing_name(cluster)`.
SEALING_RECIPIENT = "executor"
_SEALING_INFO = b"interlock.sealing.x25519.v1"

Problem = Literal["unsigned", "unknown key", "wrong key", "bad signature"]


class ForgedEvent(PoisonMessage):
    """A stored event whose signature does not show that its subject's emitter wrote it."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem: Problem = problem
        self.detail = detail


def signed_bytes(subject: str, data: bytes) -> bytes:
    """What an event signature covers: the domain, the subject, then the exact stored body.
    A subject holds no NUL, so the split between subject and body is unambiguous."""
    return b"".join((_DOMAIN, subject.encode(), b"\x00", data))


def emitter_of(subject: str) -> str:
    """The emitter an event subject names (`evt.<session>.<emitter>.…`), or "" if none."""
    parts = subject.split(".", 3)
    return parts[2] if len(parts) > 3 else ""


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """One service's private key: signs what that service appends."""

    service: str
    kid: str
    key: Ed25519PrivateKey

    def sign(self, subject: str, data: bytes) -> str:
        sig = base64.b64encode(self.key.sign(signed_bytes(subject, data))).decode()
        return f"{self.kid} {sig}"


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    service: str
    key: Ed25519PublicKey
    # Per-cluster mode (issue 21): the cluster whose executor holds this key; it signs only
    # events on that cluster's subjects. "" = not bound to a cluster (every other key, and the
    # legacy `executor` key).
    cluster: str = ""


def executor_key_file(cluster: str) -> str:
    """The file of a cluster's executor signing key in the keys dir (per-cluster mode): given
    to that cluster's spoke alone."""
    return f"{SEALING_RECIPIENT}.{S.cluster_token(cluster)}.key"


def sealing_name(cluster: str) -> str:
    """Under what name the keyring publishes the sealing key of a cluster's executor ("" =
    the legacy executor's)."""
    return f"{SEALING_RECIPIENT}.{S.cluster_token(cluster)}" if cluster else SEALING_RECIPIENT


class Keyring:
    """Every service's public keys, by key id.

    unsigned_before: stream sequences below it were written before signing existed (a data dir
    upgraded in place); an unsigned event there is still read. 0: every event must be signed.
    """

    def __init__(self, entries: Iterable[KeyEntry], unsigned_before: int = 0,
                 sealing: Mapping[str, X25519PublicKey] | None = None) -> None:
        self.entries = {e.kid: e for e in entries}
        self.unsigned_before = unsigned_before
        # service -> the X25519 public key secret values are sealed to (the executor's).
        self.sealing = dict(sealing or {})

    def check(self, subject: str, data: bytes, signature: str | None, seq: int = 0) -> None:
        """Raises ForgedEvent unless `signature` is the subject's emitter's over subject+data."""
        emitter = emitter_of(subject)
        if not signature:
            if 0 < seq < self.unsigned_before:
                return  # written before signing existed (see unsigned_before)
            raise ForgedEvent("unsigned", f"no {SIGNATURE_HEADER} on a {emitter or '?'} event")
        kid, _, sig_text = signature.strip().partition(" ")
        entry = self.entries.get(kid)
        if entry is None:
            raise ForgedEvent("unknown key", f"signed with key {kid[:40]!r}, which no service "
                              "has in the keyring")
        if entry.service != emitter:
            raise ForgedEvent("wrong key", f"signed with the {entry.service}'s key {kid}, but "
                              f"the subject names the {emitter or '?'}")
        if entry.cluster:
            # A cluster's executor key speaks for that cluster only: never on another
            # cluster's subject, nor on one bound to no cluster (6 tokens).
            token = S.subject_cluster(subject)
            if token != S.cluster_token(entry.cluster):
                where = f"cluster token {token!r}" if token else "no cluster"
                raise ForgedEvent("wrong key", f"signed with the key {kid} of cluster "
                                  f"{entry.cluster!r}'s {entry.service}, but the subject "
                                  f"names {where}")
        try:
            entry.key.verify(base64.b64decode(sig_text, validate=True),
                             signed_bytes(subject, data))
        except (InvalidSignature, ValueError, binascii.Error) as exc:
            raise ForgedEvent("bad signature", f"the {emitter}'s key {kid} did not sign this "
                              "subject and body") from exc

    def to_json(self) -> dict[str, object]:
        return {
            "version": KEYRING_VERSION,
            "unsigned_before": self.unsigned_before,
            "keys": [{"kid": e.kid, "service": e.service, "public_key": base64.b64encode(
                e.key.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw)).decode(),
                      **({"cluster": e.cluster} if e.cluster else {})}
                     for e in self.entries.values()],
            "sealing": {service: base64.b64encode(key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
                for service, key in self.sealing.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Keyring:
        if doc.get("version") != KEYRING_VERSION or not isinstance(doc.get("keys"), list):
            raise ConfigError(f"not an Interlock keyring (version {KEYRING_VERSION})")
        entries = []
        for item in doc["keys"]:  # type: ignore[attr-defined]
            try:
                key = Ed25519PublicKey.from_public_bytes(
                    base64.b64decode(str(item["public_key"]), validate=True))
                # "cluster": absent in keyrings from before issue 21 (no key bound to one).
                entries.append(KeyEntry(str(item["kid"]), str(item["service"]), key,
                                        str(item.get("cluster") or "")))
            except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                raise ConfigError(f"a keyring entry is not a valid key: {exc}") from exc
        before = doc.get("unsigned_before", 0)
        sealing = {}
        raw = doc.get("sealing") or {}  # absent in keyrings from before issue 16
        if not isinstance(raw, dict):
            raise ConfigError("the keyring's sealing keys are not a mapping")
        for service, text in raw.items():
            try:
                sealing[str(service)] = X25519PublicKey.from_public_bytes(
                    base64.b64decode(str(text), validate=True))
            except (ValueError, binascii.Error) as exc:
                raise ConfigError(f"the sealing key of {service} is not valid: {exc}") from exc
        return cls(entries, before if isinstance(before, int) else 0, sealing)


def load_keyring(path: Path) -> Keyring:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keyring {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not an Interlock keyring")
    try:
        return Keyring.from_json(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_signer(path: Path, service: str) -> Signer:
    key = signing.load_private(path, f"the {service}'s event signing key")
    return Signer(service, key_id(key.public_key()), key)


def executor_key_problem(ring: Keyring, kid: str, cluster: str) -> tuple[bool, str] | None:
    """Whether an executor serving `cluster` ("" = legacy mode) holds the right key: None if
    so; else (fatal, why). Fatal: a key bound to another cluster (or to one in legacy mode) —
    nothing it signs would be believed. Not fatal: the legacy key in per-cluster mode while
    the keyring has the cluster's own — its events verify, but secrets sealed for the
    cluster will not open (refused, never run)."""
    entry = ring.entries.get(kid)
    if entry is None:
        return True, f"the keyring does not list the executor's key {kid}"
    if entry.cluster and S.cluster_token(entry.cluster) != S.cluster_token(cluster):
        where = f"cluster {cluster!r}" if cluster else "no cluster (legacy mode)"
        own = executor_key_file(cluster) if cluster else f"{SEALING_RECIPIENT}.key"
        return True, (f"the executor serves {where} but holds the key {kid} of cluster "
                      f"{entry.cluster!r}: give it {own}")
    if cluster and not entry.cluster and sealing_name(cluster) in ring.sealing:
        return False, (f"the executor of cluster {cluster!r} holds the legacy executor key "
                       f"{kid}, not its cluster's own ({executor_key_file(cluster)}): writes "
                       "with sealed secret values will be refused")
    return None


def sealing_key(signing_key: Ed25519PrivateKey) -> X25519PrivateKey:
    """The X25519 key secret values are sealed to, derived from a service's signing key with
    HKDF-SHA256 under its own label: a key independent of the signing key (HKDF is a PRF), yet
    with nothing new to distribute, store or rotate — the service that holds the signing key
    (the executor) alone can derive it; the keyring publishes its public half."""
    seed = signing_key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEALING_INFO).derive(seed)
    return X25519PrivateKey.from_private_bytes(raw)


def write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """Writes a private key readable by its owner alone (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def provision_keys(keys_dir: Path, services: Iterable[str],
                   clusters: Iterable[str] = ()) -> Keyring:
    """Creates `<service>.key` for each service that has none, and writes `keyring.json` with
    every service's public key. Existing keys are kept (re-running never rotates a live key), and
    so are keyring entries of keys no longer on disk: what an old key signed still verifies.

    clusters (per-cluster mode, issue 21): one executor key per cluster, `executor_key_file(c)`,
    recorded in the keyring as that cluster's (it signs that cluster's subjects only) with its
    own sealing key (`sealing_name(c)`): a spoke holds its own cluster's key alone, so it can
    neither speak for another cluster nor open a secret sealed for a write on one. The legacy
    `executor` key is still made and still verifies (what it signed in legacy mode, old logs);
    in per-cluster mode no process is given it (the hub runs no executor, and no spoke gets
    it), so nothing signs with it."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    ring_path = keys_dir / KEYRING_FILE
    ring = load_keyring(ring_path) if ring_path.exists() else Keyring([])
    entries = dict(ring.entries)
    for service in services:
        path = keys_dir / f"{service}.key"
        if not path.exists():
            write_private(path, Ed25519PrivateKey.generate())
        signer = load_signer(path, service)
        entries.setdefault(signer.kid, KeyEntry(signer.kid, service, signer.key.public_key()))
        if service == SEALING_RECIPIENT:
            # Always the current key's: a blob sealed to a rotated-away key fails cleanly.
            ring.sealing[service] = sealing_key(signer.key).public_key()
    for cluster in clusters:
        path = keys_dir / executor_key_file(cluster)
        if not path.exists():
            write_private(path, Ed25519PrivateKey.generate())
        signer = load_signer(path, SEALING_RECIPIENT)
        entries.setdefault(signer.kid, KeyEntry(signer.kid, SEALING_RECIPIENT,
                                                signer.key.public_key(), cluster))
        ring.sealing[sealing_name(cluster)] = sealing_key(signer.key).public_key()
    ring = Keyring(entries.values(), ring.unsigned_before, ring.sealing)
    write_keyring(ring_path, ring)
    return ring


def write_keyring(path: Path, ring: Keyring) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ring.to_json(), indent=2) + "\n")
    os.chmod(tmp, 0o644)  # public keys: every service and the audit read it
    tmp.replace(path)
