"""Readable text for events and approvals in a terminal.

Every value an event or an approval carries was written by a model, a cluster or a person, and
passes through clients.safe_text before it is part of a line: `_s` for what stays on one line,
`_lines` for texts that have lines (answers, logs, a rationale), whose later lines are indented so
that they never stand where the CLI's own labels do.

Secret values are not this module's to mask: the log never holds one. The gateway seals a
person's typed secrets and the planner a proposal's before either is recorded, and the executor
masks what it reads; what the gateway sends is what every viewer (the browser page, the audit)
sees, and the terminal shows no less and no more. It only writes a sealed value's reference the
way an approval card's diff does, so that a command and its diff can be compared.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from clients import safe_text

_s = safe_text.line
_lines = safe_text.indented

# A sealed secret value's reference, as the gateway's events carry it
# (`sealed:<sealer>:<blob id>:<fingerprint>`), and as a card's diff shows it: the fingerprint's
# first 12 digits. Part of the JSON contract; a unit test holds it to the services' own format.
_SEALED_REF = re.compile(r"sealed:(?:gateway|planner):[0-9a-f]{32}:([0-9a-f]{12})[0-9a-f]{52}")


def sealed_refs(text: str) -> str:
    """Text with every sealed value's reference written as a card shows it."""
    return _SEALED_REF.sub(lambda m: f"<sealed value, fingerprint {m.group(1)}…>", text)


def target(t: dict[str, Any] | None, args: dict[str, Any] | None = None) -> str:
    if not (t and t.get("kind")) and isinstance(args, dict) and args.get("kind"):
        # A direct command's proposal carries no target yet: its args say what and where.
        t = {"kind": args["kind"], "name": args.get("name") or "",
             "namespace": args.get("namespace") or "", "cluster": args.get("cluster") or ""}
    if not t:
        return ""
    obj = f"{t.get('kind') or 'object'}/{t['name']}" if t.get("name") else (t.get("kind") or "")
    where = f" in {t['namespace']}" if t.get("namespace") else ""
    if isinstance(args, dict) and args.get("all_namespaces"):
        # The target keeps the args' default namespace; an -A read is not "in default".
        where = " in all namespaces"
    ctx = f" on cluster {t['cluster']}" if t.get("cluster") else ""
    return _s(f"{obj}{where}{ctx}")


_WHERE = ("kind", "name", "namespace", "cluster")


def call_line(tool: Any, args: Any) -> str:
    """A call as one compact, kubectl-like line: `scale deployment/web --replicas=5 -n shop`.
    The args are raw (an MCP client's or a model's, not yet checked by the gate): every one is
    shown, nested ones as `--limits.memory=512Mi`, whatever their types."""
    if not isinstance(args, dict):
        return _s(f"{tool} {args!r}")
    kind, name = args.get("kind"), args.get("name")
    obj = f"{kind}/{name}" if kind and name else str(name or kind or "")
    flags: list[str] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif v is True:
            flags.append(f"--{prefix}")
        elif v is not None and v is not False and v != "" and v != [] and v != {}:
            shown = v if isinstance(v, str) else json.dumps(v, default=str, separators=(",", ":"))
            flags.append(f"--{prefix}={shown}")

    for k, v in args.items():
        if k not in _WHERE:
            walk(str(k), v)
    if args.get("namespace") and not args.get("all_namespaces"):
        flags.append(f"-n {args['namespace']}")
    if args.get("cluster"):
        flags.append(f"--context={args['cluster']}")
    text = " ".join(str(x) for x in (tool, obj, *flags) if x)
    return _s(sealed_refs(text if len(text) <= 400 else text[:400] + "…"))


def requested_by(d: dict[str, Any]) -> str:
    """Who asked for an MCP call: the token's principal, and the client as it named itself."""
    via = f" via {_s(d['client'])}" if d.get("client") else ""
    return f"{_s(d.get('actor') or '?')}{via} (MCP)"


def value(v: Any) -> str:
    return "∅" if v is None else _s(v)


def expires_in(iso: str, now: datetime | None = None) -> str:
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return _s(iso)
    left = int((when - (now or datetime.now(UTC))).total_seconds())
    if left <= 0:
        return "expired"
    return f"in {left // 60}m{left % 60:02d}s ({when:%H:%M:%S} UTC)"


def fingerprint(key_id: Any) -> str:
    """A key's fingerprint as a line shows it: `SHA256:` and its first 12 digits (the audit,
    `interlock audit`, shows it whole)."""
    text = str(key_id or "")
    head, _, digits = text.partition(":")
    if not digits or len(digits) <= 12:
        return _s(text)
    return _s(f"{head}:{digits[:12]}…")


def signed_with(signed: Any, kind: Any = None) -> str:
    """How a decision was signed, as the gateway's JSON carries it (an event's `signed`, or an
    approval's `signatures`): the key's kind and fingerprint. Whether the signature counts is the
    gate's to say: a `decision.rejected` follows one that does not."""
    if not isinstance(signed, dict) or not signed.get("key_id"):
        return "not signed"
    if kind is None:
        kind = ("slack" if str(signed["key_id"]).startswith("slack:") else
                "passkey" if signed.get("authenticator_data") else "ed25519")
    if kind == "slack":  # a click in Slack: Slack signed the request, the gate checks it
        return f"clicked in Slack as {_s(str(signed['key_id']).removeprefix('slack:'))}"
    what = "passkey" if kind == "passkey" else "key"
    return f"signed with {what} {fingerprint(signed['key_id'])}"


def _signer(sig: Any) -> str:
    """One entry of an approval's `signatures` ({approver, decision, key_id, kind})."""
    if not isinstance(sig, dict):
        return ""
    what = {"approve": "approved", "deny": "denied"}.get(str(sig.get("decision")), "decided")
    return f"{what} by {_s(sig.get('approver'))} · {signed_with(sig, sig.get('kind'))}"


def approval(a: dict[str, Any]) -> str:
    """An approval card: what, where, why, expected outcome, diff, blast radius, flags, expiry.

    The model's words (why, its quotes, what it expects) and the facts read from the cluster come
    first; what the gate computed — what runs where, from → to, the blast radius, the risk flags
    — comes last, so that it is the last word before any prompt to approve, whatever came
    before it."""
    lines = [f"APPROVAL {_s(a['approval_id'])}  (session {_s(a['session_id'])})"]
    calls = a.get("calls", [])
    if a.get("title"):  # a batch is one item: its summary, then every call it holds
        lines.append(f"  {_s(a['title'])}" + (f"  ({len(calls)} calls, one decision)"
                                              if len(calls) > 1 else ""))
    if a.get("requested_by"):
        via = f" via {_s(a['requested_via'])}" if a.get("requested_via") else ""
        lines.append(f"  asked:   by {_s(a['requested_by'])}{via}")
    if a.get("rationale"):
        lines.append(f"  why:     {_lines(a['rationale'], ' ' * 11)}")
    for e in a.get("evidence", []):
        lines.append(f"           - {_lines(e, ' ' * 13)}")
    if a.get("expected_outcome"):
        lines.append(f"  expect:  {_lines(a['expected_outcome'], ' ' * 11)}")
    if a.get("gathered_evidence"):
        lines.append("  facts:   (gathered by Interlock from the cluster, not by a model)")
        lines += [f"           - {_lines(g, ' ' * 13)}" for g in a["gathered_evidence"]]
    for c in calls:
        t = c.get("target") or {}
        br = c.get("blast_radius") or {}
        args = c.get("args") if isinstance(c.get("args"), dict) else {}
        if args.get("selector") and not t.get("name"):
            # A selector write acts on the set its preview matched, listed below its blast line.
            lines.append(f"  what:    {_s(c['tool'])} {_s(t.get('kind') or 'object')} matching "
                         f"{_s(args['selector'])}{target({**t, 'kind': ''})}")
        else:
            lines.append(f"  what:    {_s(c['tool'])} {target(t)}")
        cluster = t.get("cluster") or c.get("context")
        lines.append(f"  where:   namespace {_s(t.get('namespace') or '(cluster-wide)')}"
                     + (f" on cluster {_s(cluster)}" if cluster else "")
                     + ("  [PRODUCTION]" if br.get("production_like") else ""))
        for f in c.get("diff", []):
            before, after = value(f.get("before")), value(f.get("after"))
            lines.append(f"  change:  {_s(f['path'])}: {before} → {after}")
        if c.get("preview_error"):
            lines.append(f"  preview: {_s(c['preview_error'])}")
        radius = [_s(br["summary"])] if br.get("summary") else []
        if br.get("replicas_before") is not None:
            radius.append(f"replicas {_s(br['replicas_before'])} → "
                          f"{_s(br.get('replicas_after'))}")
        if br.get("pods_affected"):
            radius.append(f"{len(br['pods_affected'])} pod(s) affected")
        lines.append(f"  blast:   {'; '.join(radius) or 'this object only'}")
        lines += [f"           - {_s(x)}" for x in br.get("selected") or ()]
    if a.get("risk_flags"):
        lines.append(f"  risks:   {', '.join(_s(f) for f in a['risk_flags'])}")
    required = a.get("required_approvals", 1)
    if required and required > 1:
        lines.append(f"  needs:   {_s(required)} approvers ({len(a.get('approvals', []))} so far)")
    for sig in a.get("signatures") or ():
        lines.append(f"  signed:  {_signer(sig)}")
    lines.append(f"  expires: {expires_in(str(a.get('expires_at', '')))}")
    return "\n".join(lines)


def event(ev_id: int, kind: str, d: dict[str, Any]) -> str | None:
    """One line (or a few) for an event; None for events that say nothing to a person."""
    match kind:
        case "session.started":
            return f"[{ev_id}] session started by {_s(d.get('actor'))}"
        case "user.message":
            return (f"[{ev_id}] {_s(d.get('actor'))}: "
                    f"{_lines(sealed_refs(str(d.get('text'))), ' ' * 6)}")
        case "assistant.message":
            return f"[{ev_id}] interlock: {_lines(d.get('text'), ' ' * 6)}"
        case "tool.requested":
            call = call_line(d.get("tool"), d.get("args"))
            lines = [f"[{ev_id}] {requested_by(d)} asked: {call}"]
            if d.get("rationale"):
                lines.append(f"      why:    {_lines(d['rationale'], ' ' * 14)}")
            for e in d.get("evidence") or ():
                lines.append(f"              - {_lines(e, ' ' * 16)}")
            if d.get("expected_outcome"):
                lines.append(f"      expect: {_lines(d['expected_outcome'], ' ' * 14)}")
            return "\n".join(lines)
        case "tool.proposed":
            return (f"[{ev_id}] → {_s(d.get('tool'))} {target(d.get('target'), d.get('args'))} "
                    f"{_s(sealed_refs(str(d.get('args'))))}")
        case "tool.classified":
            return f"[{ev_id}]   {_s(d.get('access'))} ({_s(d.get('rule'))})"
        case "tool.refused" | "command.rejected" | "command.refused":
            return f"[{ev_id}] ✗ refused: {_s(d.get('reason'))}"
        case "approval.requested":
            return f"[{ev_id}] ⏸ waiting for approval {_s(d.get('approval_id'))}"
        case "approval.decided":
            how = {"approve": "approved", "deny": "denied"}.get(str(d.get("decision")),
                                                                _s(d.get("decision")))
            extra = f": {_s(d['reason'])}" if d.get("reason") else (" (modified)" if d.get("args")
                                                                   else "")
            return (f"[{ev_id}]   {how} by {_s(d.get('approver'))}{extra} · "
                    f"{signed_with(d.get('signed'))}")
        case "decision.rejected":
            return (f"[{ev_id}] ✗ decision by {_s(d.get('approver') or '?')} rejected: "
                    f"{_s(d.get('reason'))}")
        case "approval.granted":
            return f"[{ev_id}] ✓ granted by {_s(d.get('approver'))}"
        case "approval.denied":
            return f"[{ev_id}] ✗ denied by {_s(d.get('approver'))}: {_s(d.get('reason'))}"
        case "approval.expired":
            return f"[{ev_id}] ✗ approval {_s(d.get('approval_id'))} expired"
        case "tool.started":
            return f"[{ev_id}]   running…"
        case "tool.result":
            mark = {"ok": "✓", "error": "✗"}.get(str(d.get("status")), "?")
            # Split on newlines only (splitlines also breaks at CR and other controls, which
            # are shown escaped in the line they were written in).
            raw = str(d.get("output") or "").replace("\r\n", "\n")  # CRLF ends a line
            out = safe_text.block(raw).rstrip()
            body = "\n".join("      " + line for line in out.split("\n")[:40])
            return (f"[{ev_id}] {mark} result ({_s(d.get('status'))})"
                    + (f"\n{body}" if out else ""))
        case "tool.verified":
            mark = {"verified": "✓", "skipped": "✓"}.get(str(d.get("outcome")), "✗")
            label = _s(str(d.get("outcome") or "").replace("_", " "))
            # A selector write's detail has a line per object: each on its own, indented.
            return (f"[{ev_id}] {mark} verification: {label} — "
                    f"{_lines(d.get('detail') or d.get('check'), '      ')}")
        case "turn.completed":
            return f"[{ev_id}] — done"
        case "session.cancelled":
            return f"[{ev_id}] session cancelled {_s(d.get('reason') or '')}".rstrip()
        case "preview.recorded" | "step.planned" | "model.retried":
            return None
        case _:
            return f"[{ev_id}] {_s(kind)}"
