"""The person's signing key in the client commands (issue 18): `interlock keys`, and the signed
body of a decision that `approve`, `deny`, `chat` and `keys sign-decision` send."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients import keys, safe_text
from clients.http import Gateway
from clients.output import Out, UsageError


class Signer:
    """The person's key and how a decision is signed with it (clients/keys builds the
    statement: exactly this approval, session, calls, expiry, decision, reason and edits)."""

    def __init__(self, key: Ed25519PrivateKey, path: Path) -> None:
        self.key = key
        self.path = path
        self.key_id = keys.fingerprint(key.public_key())

    @classmethod
    def load(cls, explicit: str | None) -> Signer:
        """`--key`, else $INTERLOCK_KEY, else the config dir's; KeyProblem saying how to get
        one when there is none."""
        path = keys.key_path(explicit)
        return cls(keys.load_key(path), path)

    def sign(self, approval: dict[str, Any], approver: str, decision: str, reason: str,
             edits: dict[str, Any] | None = None) -> dict[str, str]:
        statement = keys.decision_statement(approval, approver=approver, decision=decision,
                                            reason=reason, edits=edits)
        return keys.sign(statement, self.key)


def _modified(args: argparse.Namespace) -> dict[str, Any] | None:
    if not getattr(args, "args", None):
        return None
    modified = json.loads(args.args)
    if not isinstance(modified, dict):
        raise UsageError("--args must be a JSON object, e.g. '{\"replicas\": 4}'")
    return modified


async def signed_decision(gw: Gateway, args: argparse.Namespace,
                          decision: str) -> tuple[dict[str, Any], Signer]:
    """The body of POST /v1/approvals/{id}/decision, signed with the person's key over the
    approval as the gateway shows it. The key is loaded first: without one nothing is asked
    of the gateway, let alone posted."""
    modified = _modified(args)
    signer = Signer.load(args.key)
    me = await gw.me()
    approval = await gw.approval(args.approval_id)
    if modified is not None:  # a secret value typed here is signed as its sealed reference
        modified = await gw.sealed_edits(args.approval_id, modified)
    reason = args.reason or ""
    body: dict[str, Any] = {"decision": decision, "reason": reason}
    if modified is not None:
        body["args"] = modified
    body["signature"] = signer.sign(approval, str(me["name"]), decision, reason, modified)
    return body, signer


# -- keys --------------------------------------------------------------------------------------


def keys_init(args: argparse.Namespace, out: Out) -> int:
    """Creates the person's key, or imports an SSH Ed25519 key; offline."""
    path = keys.key_path(args.key)
    if args.from_ssh:
        key = keys.import_ssh_key(Path(args.from_ssh).expanduser(), path, args.force)
        what = f"imported {args.from_ssh} as {path}"
    elif path.exists() and not args.force:
        key = keys.load_key(path)
        what = f"a key is already at {path} (--force replaces it)"
    else:
        key = keys.create_key(path, args.force)
        what = f"created {path} (mode 0600)"
    public = key.public_key()
    line = keys.public_line(public)
    if out.as_json:
        out.data({"path": str(path), "key_id": keys.fingerprint(public), "public_key": line})
        return 0
    out.line(safe_text.line(what))
    out.line(f"  fingerprint  {keys.fingerprint(public)}")
    out.line(f"  public key   {line}")
    out.line("It signs nothing until an admin enrols it for you:")
    out.line(f"  interlock keys enroll --principal YOUR_NAME --public-key '{line}'")
    return 0


async def keys_enroll(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    admin = keys.load_key(keys.admin_key_path(args.admin_key))
    s = safe_text.line
    principal = args.principal or args.principal_arg
    if args.principal and args.principal_arg and args.principal != args.principal_arg:
        raise UsageError("name the principal once: PRINCIPAL or --principal")
    if args.key and (args.request or args.public_key or args.slack):
        raise UsageError("name one key to enrol: --key, --public-key, --request or --slack")
    if args.slack:
        if not principal:
            raise UsageError("whose Slack user is it? `interlock keys enroll PRINCIPAL --slack "
                             "TEAM_ID/USER_ID`")
        cred = keys.slack_credential(args.slack, args.label[:100])
        out.line(s(f"Slack user {args.slack} for {principal}: their clicks on Approve and "
                   "Deny in Slack count as their decisions (not where a passkey or "
                   "`interlock approve` is required)"))
    elif args.request:
        registered = (await gw.approvers()).get("registered", [])
        found = [r for r in registered if r.get("request_id") == args.request]
        if not found:
            raise UsageError(f"no passkey registration {args.request} is waiting "
                             "(`interlock keys list` shows them)")
        reg = found[0]
        if principal and principal != reg["principal"]:
            raise UsageError(f"registration {args.request} is {reg['principal']}'s, "
                             f"not {principal}'s")
        principal = str(reg["principal"])
        cred = dict(reg["credential"])
        key_id = keys.credential_fingerprint(cred)
        if key_id != cred.get("key_id"):
            raise UsageError(f"registration {args.request} says {cred.get('key_id')} but its "
                             f"key's fingerprint is {key_id}: not enrolled")
        if args.label:
            cred["label"] = args.label
        out.line(s(f"passkey of {principal}, registered {reg.get('registered_at', '?')}: "
                   f"{key_id} {cred.get('label') or ''}".rstrip()))
        out.line(s(f"  credential id {cred.get('credential_id')} for {cred.get('origin')}"))
        out.line("  (check this fingerprint with its owner: the Command Center shows it)")
    else:
        public = (keys.parse_public_line(args.public_key) if args.public_key
                  else keys.public_key_of(keys.key_path(args.key)))
        label = args.label
        if not label and args.public_key and len(args.public_key.split()) > 2:
            label = " ".join(args.public_key.split()[2:])  # the .pub line's comment
        cred = keys.credential(public, label[:100])
    if not principal:
        principal = str((await gw.me())["name"])
    admin_sig = keys.sign(keys.enrol_statement(principal, cred), admin)
    res = await gw.enrol(principal, cred, admin_sig)
    if out.as_json:
        out.data(res)
        return 0
    out.line(s(f"enrolled {cred['key_id']} ({cred['kind']}) for {principal}; signed by the "
               f"admin key {admin_sig['key_id']}"))
    return 0


async def keys_list(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    data = await gw.approvers()
    if out.as_json:
        out.data(data)
        return 0
    s = safe_text.line
    enrolled = data.get("approvers", [])
    if not enrolled:
        out.line("no keys enrolled")
    for a in enrolled:
        state = "REVOKED" if a.get("revoked") else "active"
        out.line(s(f"{a.get('principal', '?'):<12} {a.get('kind', '?'):<8} {a.get('key_id')}  "
                   f"{state}  {a.get('label') or '-'}"))
        out.line(s(f"    enrolled by {a.get('enrolled_by') or '?'} at "
                   f"{str(a.get('enrolled_at') or '?')[:19].replace('T', ' ')}"))
    registered = data.get("registered", [])
    if registered:
        out.line("")
        out.line("passkeys waiting to be enrolled (interlock keys enroll --request ID):")
    for r in registered:
        cred = r.get("credential", {})
        out.line(s(f"  {r.get('request_id')}  {r.get('principal')}  {cred.get('key_id')}  "
                   f"{cred.get('label') or '-'}  registered "
                   f"{str(r.get('registered_at') or '?')[:19].replace('T', ' ')}"))
    admins = data.get("admin_keys", [])
    if admins:
        out.line("")
        out.line(s(f"admin keys (trusted to enrol and revoke): {', '.join(admins)}"))
    return 0


async def keys_revoke(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    admin = keys.load_key(keys.admin_key_path(args.admin_key))
    principal = args.principal
    if not principal:
        held = [a for a in (await gw.approvers()).get("approvers", [])
                if a.get("key_id") == args.key_id]
        if not held:
            raise UsageError(f"{args.key_id} is not enrolled (`interlock keys list`); name its "
                             "owner with --principal to revoke it anyway")
        principal = str(held[0]["principal"])
    admin_sig = keys.sign(keys.revoke_statement(principal, args.key_id), admin)
    res = await gw.revoke(principal, args.key_id, admin_sig)
    if out.as_json:
        out.data(res)
        return 0
    out.line(safe_text.line(f"revoked {args.key_id} of {principal}: no decision it signs "
                            f"counts from now on (signed by the admin key {admin_sig['key_id']})"))
    return 0


async def keys_sign_decision(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    """Prints the signed body of a decision for a script to POST (`curl -d @-`)."""
    body, signer = await signed_decision(gw, args, args.decision)
    sys.stderr.write(safe_text.line(f"signed with {signer.key_id} ({signer.path})") + "\n")
    out.data(body)
    return 0


KEY_COMMANDS: dict[str, Callable[[Gateway, argparse.Namespace, Out], Any]] = {
    "enroll": keys_enroll,
    "list": keys_list,
    "revoke": keys_revoke,
    "sign-decision": keys_sign_decision,
}


async def cmd_keys(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    return int(await KEY_COMMANDS[args.keys_command](gw, args, out))


def add_keys_parsers(sub: Any, common: argparse.ArgumentParser,
                      signing: argparse.ArgumentParser) -> None:
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--admin-key", metavar="PATH",
                       help="the admin's signing key (default: $INTERLOCK_ADMIN_KEY)")
    k = sub.add_parser("keys", help="signing keys: yours, and who may approve with which")
    ks = k.add_subparsers(dest="keys_command", required=True)
    p = ks.add_parser("init", parents=[common, signing],
                      help="create your signing key (or import an SSH Ed25519 key)")
    p.add_argument("--from-ssh", metavar="PATH",
                   help="use this OpenSSH Ed25519 private key (e.g. ~/.ssh/id_ed25519)")
    p.add_argument("--force", action="store_true", help="replace the key already there")
    p = ks.add_parser("enroll", parents=[common, signing, admin],
                      help="(admin) let a key (or a Slack user) sign a principal's decisions")
    p.add_argument("principal_arg", nargs="?", metavar="PRINCIPAL",
                   help="whose key it is (or --principal)")
    p.add_argument("--principal", help="whose key it is (default: the token's principal; "
                                       "with --request, who registered the passkey)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--public-key", metavar="'ssh-ed25519 …'",
                       help="enrol this public key (a .pub line)")
    which.add_argument("--request", metavar="REQUEST_ID",
                       help="enrol the passkey registered in the Command Center under this id")
    which.add_argument("--slack", metavar="TEAM_ID/USER_ID",
                       help="link this Slack user: their Approve and Deny clicks in Slack "
                            "count as PRINCIPAL's decisions")
    p.add_argument("--label", default="", help="what to call the key (laptop, yubikey)")
    ks.add_parser("list", parents=[common], help="enrolled keys and waiting passkeys")
    p = ks.add_parser("revoke", parents=[common, admin],
                      help="(admin) a key signs nothing from now on")
    p.add_argument("key_id", metavar="KEY_ID", help="its fingerprint, SHA256:…")
    p.add_argument("--principal", help="whose key it is (default: looked up)")
    p = ks.add_parser("sign-decision", parents=[common, signing],
                      help="print a signed decision body for a script to POST")
    p.add_argument("approval_id")
    p.add_argument("decision", choices=("approve", "deny"))
    p.add_argument("--reason", default="")
    p.add_argument("--args", help="modified args (JSON object), with approve")
