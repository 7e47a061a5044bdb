"""A person's signing key for the CLI (issue 18): where it lives, loading it, its fingerprint,
and the statements it signs.

A decision counts only with the approver's own signature. The CLI keeps an Ed25519 key in a
file that only its owner may read — `--key PATH`, else `$INTERLOCK_KEY`, else
`${XDG_CONFIG_HOME:-~/.config}/interlock/key` — as PEM (PKCS#8, what `interlock keys init`
writes) or as an OpenSSH private key (`ssh-keygen -t ed25519`; with a passphrase it is asked
for on the terminal). Its fingerprint is what `ssh-keygen -l` prints.

Every statement is a JSON text that is signed as it is and carried verbatim; the verifier (the
gate, the audit) parses it and compares each field with what the log says, so nothing here has
to reproduce anyone's byte encoding — only the fields and their values. The formats are the
ones docs/architecture.md documents ("Decisions signed by people"). This module speaks no HTTP
and imports nothing of the services: the crypto is `cryptography`'s.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DECISION_V1 = "decision/v1"
ENROL_V1 = "enrol/v1"
REVOKE_V1 = "revoke/v1"

# What a person without a key is told, wherever a decision needs one.
HOW_TO_GET_ONE = ("create one with `interlock keys init` (or import an SSH key: `interlock keys "
                  "init --from-ssh ~/.ssh/id_ed25519`), then ask an admin to enrol it: "
                  "`interlock keys enroll --principal YOU --public-key 'ssh-ed25519 …'`")


class KeyProblem(Exception):
    """A key that cannot be used (missing, unreadable, not Ed25519), with what to do about it."""


# -- where keys live ---------------------------------------------------------------------------

def default_key_path(env: Mapping[str, str] | None = None) -> Path:
    """`$INTERLOCK_KEY`, else `${XDG_CONFIG_HOME:-~/.config}/interlock/key`."""
    env = os.environ if env is None else env
    if env.get("INTERLOCK_KEY"):
        return Path(env["INTERLOCK_KEY"]).expanduser()
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "interlock" / "key"


def key_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    return Path(explicit).expanduser() if explicit else default_key_path(env)


def admin_key_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """`--admin-key`, else `$INTERLOCK_ADMIN_KEY` (which `interlock up` prints)."""
    env = os.environ if env is None else env
    text = explicit or env.get("INTERLOCK_ADMIN_KEY", "")
    if not text:
        raise KeyProblem("enrolling and revoking keys is an admin's act: pass --admin-key PATH "
                         "or set INTERLOCK_ADMIN_KEY (`interlock up` prints it)")
    return Path(text).expanduser()


# -- loading and writing -----------------------------------------------------------------------

Passphrase = Callable[[Path], bytes | None]


def ask_passphrase(path: Path) -> bytes | None:
    """The passphrase of an encrypted key, asked on the terminal (None when there is none)."""
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(f"passphrase for {path}: ").encode()


def parse_private_key(data: bytes, path: Path,
                      passphrase: Passphrase = ask_passphrase) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or OpenSSH bytes; an encrypted one asks for its
    passphrase."""
    ssh = b"OPENSSH PRIVATE KEY" in data
    if not ssh and b"PRIVATE KEY" not in data:
        raise KeyProblem(f"{path} is not a private key (PEM or OpenSSH)")

    def load(password: bytes | None) -> object:
        if ssh:
            return serialization.load_ssh_private_key(data, password=password)
        return serialization.load_pem_private_key(data, password=password)

    try:
        try:
            key = load(None)
        except TypeError:  # encrypted: cryptography asks for the password this way
            if ssh and importlib.util.find_spec("bcrypt") is None:
                raise UnsupportedAlgorithm("an encrypted OpenSSH key needs bcrypt") from None
            secret = passphrase(path)
            if secret is None:
                raise KeyProblem(f"{path} is encrypted and there is no terminal to ask its "
                                 "passphrase on") from None
            key = load(secret)
    except UnsupportedAlgorithm as exc:
        # cryptography opens an encrypted OpenSSH key only with the optional bcrypt package.
        raise KeyProblem(f"cannot open the key {path}: {exc} (install the bcrypt package, or "
                         "`ssh-keygen -p -f` a copy without a passphrase)") from exc
    except (ValueError, TypeError) as exc:  # a wrong passphrase, a damaged file
        raise KeyProblem(f"cannot load the key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{path} is not an Ed25519 key (Interlock signs with Ed25519; "
                         "`ssh-keygen -t ed25519` makes one)")
    return key


def load_key(path: Path, passphrase: Passphrase = ask_passphrase) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyProblem(f"no signing key at {path}: {HOW_TO_GET_ONE}") from None
    except OSError as exc:
        raise KeyProblem(f"cannot read the key {path}: {exc.strerror or exc}") from exc
    return parse_private_key(data, path, passphrase)


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Writes a private key readable by its owner alone (0600 from the first byte)."""
    if path.exists() and not force:
        raise KeyProblem(f"{path} exists; pass --force to replace it (a key enrolled for you "
                         "stops counting once replaced)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    path.chmod(0o600)


def create_key(path: Path, force: bool = False) -> Ed25519PrivateKey:
    """A new Ed25519 key written as PEM (PKCS#8) at `path`, mode 0600."""
    key = Ed25519PrivateKey.generate()
    _write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), force)
    return key


def import_ssh_key(source: Path, path: Path, force: bool = False,
                   passphrase: Passphrase = ask_passphrase) -> Ed25519PrivateKey:
    """An existing OpenSSH Ed25519 key, copied to `path` as it is (a passphrase stays on it)."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"cannot read {source}: {exc.strerror or exc}") from exc
    key = parse_private_key(data, source, passphrase)
    if source.resolve() != path.resolve():
        _write_private(path, data, force)
    return key


# -- public keys and fingerprints --------------------------------------------------------------

def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _ssh_blob(public: Ed25519PublicKey) -> bytes:
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def fingerprint(public: Ed25519PublicKey) -> str:
    """`SHA256:…` exactly as `ssh-keygen -l` prints it: over the OpenSSH public key blob,
    unpadded base64."""
    digest = hashlib.sha256(_ssh_blob(public)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_line(public: Ed25519PublicKey, comment: str = "") -> str:
    """The OpenSSH one-line form, `ssh-ed25519 AAAA… comment`."""
    line = public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def parse_public_line(text: str) -> Ed25519PublicKey:
    """`ssh-ed25519 AAAA… [comment]` (a line of a `.pub` file) or a PEM public key."""
    data = text.strip().encode()
    try:
        key: object = (serialization.load_pem_public_key(data) if data.startswith(b"-----")
                       else serialization.load_ssh_public_key(data))
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"not a public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem("not an Ed25519 public key (`ssh-ed25519 AAAA…`)")
    return key


def public_key_of(path: Path) -> Ed25519PublicKey:
    """The public key of a key file: a private key (PEM, OpenSSH) or a public one (`.pub`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyProblem(f"no key at {path}: {HOW_TO_GET_ONE}") from None
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.lstrip().startswith((b"ssh-ed25519 ", b"-----BEGIN PUBLIC KEY-----")):
        return parse_public_line(data.decode(errors="replace"))
    return parse_private_key(data, path).public_key()


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (a browser's credential is base64url)."""
    try:
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_")
                                        + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise KeyProblem(f"not base64: {exc}") from exc


def credential_fingerprint(cred: Mapping[str, Any]) -> str:
    """The fingerprint of an enrolment's key computed from its public key, never believed as
    sent: as `ssh-keygen -l` for Ed25519, over the COSE key for a passkey."""
    raw = _b64decode(str(cred.get("public_key", "")))
    if cred.get("kind") == "ed25519":
        try:
            return fingerprint(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise KeyProblem(f"not an Ed25519 public key: {exc}") from exc
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def credential(public: Ed25519PublicKey, label: str = "") -> dict[str, str]:
    """The ApproverKey an admin enrols for an Ed25519 key (its JSON form)."""
    return {"key_id": fingerprint(public), "kind": "ed25519",
            "public_key": base64.b64encode(raw_public(public)).decode(),
            "credential_id": "", "rp_id": "", "origin": "", "label": label}


# -- statements and signatures -----------------------------------------------------------------

def sign(statement: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """The `signature` object the gateway takes: the statement as signed, the key, the
    signature (base64)."""
    return {"statement": statement, "key_id": fingerprint(key.public_key()),
            "signature": base64.b64encode(key.sign(statement.encode())).decode()}


def decision_statement(approval: Mapping[str, Any], *, approver: str, decision: str,
                       reason: str = "", edits: Mapping[str, Any] | None = None) -> str:
    """What an approver signs for a card (the JSON of GET /v1/approvals): exactly this approval,
    session, every call (its hash, in the card's order), expiry, decision, reason and edits."""
    try:
        doc = {"interlock": DECISION_V1, "approval_id": str(approval["approval_id"]),
               "session_id": str(approval["session_id"]), "approver": approver,
               "decision": decision, "reason": reason,
               "call_hashes": [str(c["call_hash"]) for c in approval["calls"]],
               "expires_at": str(approval["expires_at"]),
               "edits": dict(edits) if edits is not None else None}
    except (KeyError, TypeError) as exc:
        raise KeyProblem(f"the approval lacks what a decision signs: {exc}") from exc
    return json.dumps(doc)


def _key_fields(cred: Mapping[str, Any]) -> dict[str, str]:
    """What an enrolment binds: the key and, for a passkey, where it signs; for a Slack user
    (no key), the Slack user itself."""
    names: tuple[str, ...] = ("kind", "public_key", "credential_id", "rp_id", "origin")
    if cred.get("kind") == "slack":
        names += ("key_id",)
    return {name: str(cred.get(name) or "") for name in names}


SLACK_USER = re.compile(r"([A-Z0-9][A-Z0-9_]{1,39})/([A-Z0-9][A-Z0-9_]{1,39})")


def slack_credential(team_user: str, label: str = "") -> dict[str, str]:
    """The ApproverKey an admin enrols for a Slack user, `TEAM_ID/USER_ID` (`T0123/U0456`: the
    IDs Slack shows in a member's profile, "Copy member ID", and the workspace's settings)."""
    if not SLACK_USER.fullmatch(team_user.strip()):
        raise KeyProblem(f"--slack takes TEAM_ID/USER_ID (e.g. T0123ABC/U0456DEF), not "
                         f"{team_user[:80]!r}")
    return {"key_id": f"slack:{team_user.strip()}", "kind": "slack", "public_key": "",
            "credential_id": "", "rp_id": "", "origin": "", "label": label}


def enrol_statement(principal: str, cred: Mapping[str, Any]) -> str:
    return json.dumps({"interlock": ENROL_V1, "principal": principal, "key": _key_fields(cred)})


def revoke_statement(principal: str, key_id: str) -> str:
    return json.dumps({"interlock": REVOKE_V1, "principal": principal, "key_id": key_id})
