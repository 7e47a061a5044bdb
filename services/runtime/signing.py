"""Ed25519 keys for the gate's grants. The gate holds the private key, the executor the public."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.approval import Grant
from services.runtime.errors import ConfigError


def generate_keypair(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(private_path, 0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private(path: Path, what: str = "the gate signing key") -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load {what} {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the gate public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def sign(grant: Grant, key: Ed25519PrivateKey) -> Grant:
    # replace, not a field-by-field copy: a field added to Grant must never be dropped here.
    sig = base64.b64encode(key.sign(grant.signed_bytes())).decode()
    return msgspec.structs.replace(grant, signature=sig)


def verify(grant: Grant, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(base64.b64decode(grant.signature, validate=True), grant.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True
