"""`interlock audit --verify FILE`: an exported session checked offline, on this machine, with the
runtime's own audit (chain, writer signatures, call hashes, gate signatures, and who signed each
decision). It needs no gateway and no token, and it is the one audit command that is not HTTP, so
it lives here and not in clients/.

Who signed a decision is re-checked with the approver registry's events, which the export
carries, trusted with the admin public keys (`--admin-keys`, the `keys/admins.pub` that
`interlock up` writes): never with keys taken from the file, which anyone could have edited. A
decision the gate acted on whose signature does not count fails the verification, with a line
naming the approval and why."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from clients import safe_text
from clients.output import Out
from services.runtime import approvers, audit, identity, signing
from services.runtime.errors import ConfigError

# Where `interlock up` keeps the keyring and the admin keys (launcher/stack.py): the defaults.
LOCAL_KEYRING = Path(".interlock") / "keys" / identity.KEYRING_FILE
LOCAL_ADMIN_KEYS = Path(".interlock") / "keys" / "admins.pub"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify", metavar="FILE", help="verify an exported file offline")
    p.add_argument("--gate-key", metavar="PEM", help="the gate's public key, for --verify")
    p.add_argument("--keyring", metavar="JSON",
                   help="every service's public keys (keys/keyring.json), for --verify "
                        f"(default: {LOCAL_KEYRING} if it exists)")
    p.add_argument("--admin-keys", metavar="FILE",
                   help="the admin public keys the approver registry is trusted with "
                        "(keys/admins.pub), to re-check who signed each decision, for --verify "
                        f"(default: {LOCAL_ADMIN_KEYS} if it exists)")


def verify_export(path: Path, gate_key: Path | None, out: Out,
                  keyring: Path | None = None, admin_keys: Path | None = None) -> int:
    """Verifies an exported file offline: chain, every event's writer signature (with the
    keyring: --keyring, else the local data dir's), call hashes, gate signatures, both copies,
    and every decision's signature by its approver (with the admin keys: --admin-keys, else the
    local data dir's). Without a keyring or admin keys the verdict says what was not checked,
    and is not ok."""
    key = signing.load_public(gate_key) if gate_key else None
    if keyring is None and LOCAL_KEYRING.is_file():
        keyring = LOCAL_KEYRING
    ring = identity.load_keyring(keyring) if keyring is not None else None
    if admin_keys is None and LOCAL_ADMIN_KEYS.is_file():
        admin_keys = LOCAL_ADMIN_KEYS
    admins = approvers.load_admin_keys(admin_keys) if admin_keys is not None else None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        # A wrong path is a typo, not a broken log: say so, and exit as a usage error.
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    # Slack clicks are re-checked only by an auditor who has Slack's signing secret.
    secret = os.environ.get("INTERLOCK_SLACK_SIGNING_SECRET", "").strip() or None
    reports = audit.audit_file(text, key, ring, admins, secret)
    if out.as_json:
        out.data([r.to_json()["integrity"] | {"session_id": r.session_id,
                                              "decisions": [d.to_json() for d in r.decisions]}
                  for r in reports])
    else:
        for r in reports:
            verdict = "intact" if r.ok else "BROKEN"
            # An exported file is anyone's text: its session ids and problems are shown escaped.
            s = safe_text.line
            out.line(f"{s(r.session_id)}: {verdict} ({r.chain.checked} events)")
            for d in r.decisions:
                acted = f", {d.counted}" if d.counted else ""
                out.line(f"  approval {s(d.approval_id)}: {s(d.decision)} by {s(d.approver)} "
                         f"(#{d.seq}{acted}) · {s(d.text())}")
            for b in r.chain.breaks:
                out.line(f"  #{s(b['seq'])}: {s(b['problem'])}")
            for p in r.problems:
                out.line(f"  #{s(p['seq'])}: {s(p['problem'])}" if p["seq"]
                         else f"  {s(p['problem'])}")
    return 0 if reports and all(r.ok for r in reports) else 1


def run(args: argparse.Namespace) -> int:
    # Offline: an exported file needs no gateway (nor a token) to be verified.
    try:
        return verify_export(Path(args.verify), Path(args.gate_key) if args.gate_key else None,
                             Out(as_json=args.json),
                             Path(args.keyring) if args.keyring else None,
                             Path(args.admin_keys) if args.admin_keys else None)
    except ConfigError as exc:
        sys.stderr.write(f"interlock audit: {safe_text.line(exc)}\n")
        return 2
