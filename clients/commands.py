"""The client commands of `interlock`: chat, approvals, approve, deny, watch, audit, sessions,
keys.

They talk to a gateway over HTTP and SSE only (INTERLOCK_URL, INTERLOCK_TOKEN), so they work
against any Interlock, local or remote.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from clients import keys, render, safe_text
from clients.clusters import add_parser as add_clusters_parser
from clients.clusters import cmd_clusters
from clients.http import ApiError, Gateway
from clients.key_commands import (
    Signer,
    add_keys_parsers,
    cmd_keys,
    keys_init,
    signed_decision,
)
from clients.output import Out, UsageError


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines typed by the person, read in a daemon thread (None at end of input)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


class Chat:
    """An interactive session: what you type is sent; the session's events are printed as they
    happen; an approval is asked for inline when you hold the approver role."""

    def __init__(self, gw: Gateway, out: Out, me: dict[str, Any],
                 signer: Signer | None = None, no_key: str = "") -> None:
        self.gw = gw
        self.out = out
        self.me = me
        # The approver's key, loaded (and its passphrase asked) before stdin is read; else why
        # there is none, said again at each decision.
        self.signer = signer
        self.no_key = no_key
        self.to_ask: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.asked: set[str] = set()

    async def watch(self, session_id: str) -> None:
        async for ev in self.gw.events(session_id):
            self.out.event(ev)
            if ev.type == "approval.requested":
                if self.me.get("can_decide"):
                    await self.to_ask.put(ev.data)
                else:
                    self.out.line("  (an approver must decide; you may not)")

    async def run(self, session_id: str, lines: asyncio.Queue[str | None]) -> int:
        watcher = asyncio.create_task(self.watch(session_id))
        asking: dict[str, Any] | None = None
        want_reason = False
        line_task: asyncio.Task[str | None] | None = None
        ask_task: asyncio.Task[dict[str, Any]] | None = None
        self.out.prompt("> ")
        try:
            while True:
                if line_task is None:
                    line_task = asyncio.create_task(lines.get())
                waits: set[asyncio.Task[Any]] = {line_task, watcher}
                if asking is None:
                    if ask_task is None:
                        ask_task = asyncio.create_task(self.to_ask.get())
                    waits.add(ask_task)
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    watcher.result()  # raises the stream's error (e.g. 404)
                    return 0
                if ask_task is not None and ask_task in done:
                    asking, ask_task = ask_task.result(), None
                    if asking["approval_id"] in self.asked:
                        asking = None
                        continue
                    self.asked.add(asking["approval_id"])
                    self.out.line("")
                    self.out.line(render.approval(asking))
                    self.out.prompt("Approve? [y]es / [n]o / [s]kip: ")
                    continue
                if line_task not in done:
                    continue
                text, line_task = line_task.result(), None
                if text is None:
                    return 0
                text = text.strip()
                if asking is not None:
                    asking, want_reason = await self.answer(asking, text, want_reason)
                    if asking is None:
                        self.out.prompt("> ")
                    continue
                if text in ("/quit", "/exit"):
                    return 0
                if text == "/approvals":
                    for a in await self.gw.approvals():
                        self.out.line(render.approval(a))
                elif text:
                    try:
                        await self.gw.say(session_id, text)
                    except ApiError as exc:
                        self.out.line(f"not sent: {safe_text.line(exc)}")
                self.out.prompt("> ")
        finally:
            for task in (watcher, line_task, ask_task):
                if task is not None:
                    task.cancel()

    async def answer(self, a: dict[str, Any], text: str,
                     want_reason: bool) -> tuple[dict[str, Any] | None, bool]:
        """Handles one typed line while an approval is being asked; returns what is still
        being asked (None when settled) and whether a reason is awaited."""
        aid = a["approval_id"]
        if want_reason:
            if not text:
                self.out.prompt("A denial needs a reason: ")
                return a, True
            await self.decide(a, "deny", text)
            return None, False
        choice = text.lower()[:1]
        if choice == "y":
            await self.decide(a, "approve", "")
            return None, False
        if choice == "n":
            self.out.prompt("Reason for denying: ")
            return a, True
        if choice == "s":
            self.out.line(f"skipped; decide later with: interlock approve {safe_text.line(aid)}")
            return None, False
        self.out.prompt("Please answer y, n or s: ")
        return a, False

    async def decide(self, a: dict[str, Any], decision: str, reason: str) -> None:
        """Signs the decision over the card as it was shown (the approval.requested event) and
        sends it; without a key nothing is sent."""
        approval_id = str(a["approval_id"])
        if self.signer is None:
            self.out.line(f"decision not sent: {safe_text.line(self.no_key)}")
            return
        try:
            signature = self.signer.sign(a, self.me["name"], decision, reason)
            res = await self.gw.decide(approval_id, decision, reason, signature=signature)
        except (ApiError, keys.KeyProblem) as exc:
            self.out.line(f"decision not recorded: {safe_text.line(exc)}")
            return
        self.out.line(safe_text.line(
            f"recorded: {decision} {approval_id} "
            f"({res.get('approvals', 0)} of {res.get('required_approvals', 1)}); "
            f"signed with {self.signer.key_id}"))


# -- the commands ------------------------------------------------------------------------------


async def cmd_chat(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    me = await gw.me()
    if not me["can_chat"]:
        out.line(safe_text.line(f"{me['name']} may not chat (roles: {', '.join(me['roles'])})"))
        return 2
    cluster = getattr(args, "cluster", None) or ""
    if args.session and cluster:
        raise UsageError("--cluster names a new session's default cluster: not with --session")
    sid = args.session or await gw.new_session(args.title or "", cluster)
    on = f" on cluster {safe_text.line(cluster)}" if cluster else ""
    out.line(f"Session {safe_text.line(sid)}{on} as {safe_text.line(me['name'])}"
             f"{' (approver)' if me['can_decide'] else ''}. "
             "Type a question or a kubectl command; /approvals, /quit.")
    signer, no_key = None, ""
    if me["can_decide"]:
        try:
            signer = Signer.load(getattr(args, "key", None))
            out.line(safe_text.line(f"Decisions are signed with {signer.key_id} "
                                    f"({signer.path})."))
        except keys.KeyProblem as exc:
            no_key = f"you cannot sign decisions here: {exc}"
            out.line(safe_text.line(no_key))
    lines = _stdin_lines(asyncio.get_running_loop())
    return await Chat(gw, out, me, signer, no_key).run(sid, lines)


async def cmd_approvals(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    items = await gw.approvals(args.state)
    if out.as_json:
        out.data({"approvals": items})
        return 0
    if not items:
        out.line(f"no {args.state} approvals")
    for a in items:
        out.line(render.approval(a) + (f"\n  state:   {safe_text.line(a['state'])}"
                                       if args.state != "pending" else ""))
        out.line("")
    return 0


async def cmd_decide(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    decision = "approve" if args.command == "approve" else "deny"
    body, signer = await signed_decision(gw, args, decision)
    res = await gw.decide(args.approval_id, decision, body["reason"], body.get("args"),
                          body["signature"])
    if out.as_json:
        out.data({**res, "signed_with": signer.key_id})
    else:
        what = "approved" if decision == "approve" else "denied"
        out.line(safe_text.line(f"{what} {args.approval_id} ({res.get('approvals', 0)} of "
                                f"{res.get('required_approvals', 1)} approvals; "
                                f"event {res['event_id']}); signed with {signer.key_id}"))
    return 0


async def cmd_watch(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    async for ev in gw.events(args.session, after=args.after):
        out.event(ev)
        if args.until and ev.type in args.until:
            return 0
    return 0


async def cmd_audit(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    if not args.session:
        return await _audit_search(gw, args, out)
    path = f"/v1/sessions/{args.session}/audit"
    if args.export:
        body = await gw.text(path + "?format=jsonl")
        try:
            await asyncio.to_thread(Path(args.export).write_text, body)
        except OSError as exc:
            raise UsageError(f"cannot write {args.export}: {exc.strerror or exc}") from exc
        out.line(f"exported session {args.session} to {args.export}")
        return 0
    try:
        if out.as_json:
            out.data(await gw.call("GET", path))
        else:
            out.line((await gw.text(path + "?format=text")).rstrip("\n"))
        return 0
    except ApiError as exc:
        if exc.code not in ("no_route", "method_not_allowed"):
            raise
    # A gateway without the audit endpoint: the session's events, in order, are the audit.
    view = await gw.call("GET", f"/v1/sessions/{args.session}")
    events = [ev async for ev in gw.events(args.session, stop_at=view["last_seq"])]
    if out.as_json:
        out.data({"session_id": args.session,
                  "events": [{"seq": e.id, "type": e.type, "data": e.data} for e in events]})
        return 0
    out.line(safe_text.line(f"Session {args.session} — {len(events)} events, "
                            f"started by {view['started_by']}"))
    for e in events:
        out.line(_audit_line(e.id, e.type, e.data))
    return 0


async def _audit_search(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    """Writes across sessions, filtered (GET /v1/audit)."""
    query = {k: v for k, v in (("since", args.since), ("until", args.until),
                               ("namespace", args.namespace), ("approver", args.approver),
                               ("cluster", args.cluster)) if v}
    data = await gw.call("GET", "/v1/audit?" + urlencode(query))
    if out.as_json:
        out.data(data)
        return 0
    s = safe_text.line
    for w in data["writes"]:
        t = w["target"]
        cluster = w.get("cluster") or t.get("cluster")
        where = s(f"{t.get('kind')}/{t.get('name')} in {t.get('namespace') or '-'}"
                  + (f" on cluster {cluster}" if cluster else ""))
        who = s(", ".join(w["approvers"]) or "-")
        out.line(f"{s(w['requested_at'][:19].replace('T', ' '))}  {s(w['tool']):<16} {where}")
        out.line(f"    asked by {s(w['requested_by'] or '-')}; {s(w['decision'])} by {who}; "
                 f"result {s(w['result'] or '-')}; "
                 f"{s('; '.join(w['diff']) or 'no field changes')}")
    broken = [s(sid) for sid, ok in data["integrity"].items() if not ok]
    out.line(f"{len(data['writes'])} write(s); integrity broken in: {', '.join(broken)}"
             if broken else f"{len(data['writes'])} write(s); every session's log is intact")
    return 1 if broken else 0


def _audit_line(seq: int, kind: str, d: dict[str, Any]) -> str:
    try:
        at = datetime.fromisoformat(str(d.get("occurred_at", "")).replace("Z", "+00:00"))
        when = f"{at:%Y-%m-%d %H:%M:%S}"
    except ValueError:
        when = "?"
    text = render.event(seq, kind, d) or f"[{seq}] {safe_text.line(kind)}"
    head, _, rest = text.partition("] ")
    return (f"{head}] {when}  {safe_text.line(d.get('actor') or '-'):<10} "
            f"{safe_text.line(kind):<20} {rest}")


async def cmd_sessions(gw: Gateway, args: argparse.Namespace, out: Out) -> int:
    data = await gw.call("GET", f"/v1/sessions?limit={args.limit}")
    if out.as_json:
        out.data(data)
        return 0
    for s in data["sessions"]:
        on = f"[{s['cluster']}] " if s.get("cluster") else ""
        out.line(safe_text.line(f"{s['session_id']}  {s['started_at'][:19].replace('T', ' ')}  "
                                f"{s['started_by']:<10} {on}{s['title']}"))
    return 0


COMMANDS: dict[str, Callable[[Gateway, argparse.Namespace, Out], Any]] = {
    "chat": cmd_chat,
    "approvals": cmd_approvals,
    "approve": cmd_decide,
    "deny": cmd_decide,
    "watch": cmd_watch,
    "audit": cmd_audit,
    "sessions": cmd_sessions,
    "keys": cmd_keys,
    "clusters": cmd_clusters,
}


def add_parsers(sub: Any, audit_options: Callable[[argparse.ArgumentParser], None] | None = None
                ) -> None:
    """The client commands' parsers. `audit_options` adds what `audit` does offline (verifying an
    exported file needs the runtime's audit code, which a client that speaks HTTP has not)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (default: $INTERLOCK_URL or "
                                      "http://127.0.0.1:8080)")
    common.add_argument("--token", help="bearer token (default: $INTERLOCK_TOKEN)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    signing = argparse.ArgumentParser(add_help=False)
    signing.add_argument("--key", metavar="PATH",
                         help="your signing key (default: $INTERLOCK_KEY, else "
                              "${XDG_CONFIG_HOME:-~/.config}/interlock/key)")
    p = sub.add_parser("chat", parents=[common, signing],
                       help="talk to Interlock; approve inline")
    p.add_argument("--session", help="continue this session instead of starting one")
    p.add_argument("--title", help="title of a new session")
    p.add_argument("--cluster", help="the new session's default cluster: a call that names "
                                     "none goes there (see `interlock clusters`)")
    p = sub.add_parser("approvals", parents=[common], help="list approvals")
    p.add_argument("--state", default="pending",
                   choices=("pending", "granted", "denied", "expired", "decided", "all"))
    p = sub.add_parser("approve", parents=[common, signing],
                       help="approve a pending approval (signed with your key)")
    p.add_argument("approval_id")
    p.add_argument("--reason", default="")
    p.add_argument("--args", help="approve these modified args instead (JSON object)")
    p = sub.add_parser("deny", parents=[common, signing],
                       help="deny a pending approval (signed with your key)")
    p.add_argument("approval_id")
    p.add_argument("--reason", required=True)
    add_keys_parsers(sub, common, signing)
    p = sub.add_parser("watch", parents=[common], help="follow a session's events")
    p.add_argument("session")
    p.add_argument("--after", type=int, default=0, help="start after this event id")
    p.add_argument("--until", action="append", help="stop after an event of this type")
    p = sub.add_parser("audit", parents=[common],
                       help="a session's timeline, writes across sessions, export and verify")
    p.add_argument("session", nargs="?", help="a session (omit to search writes)")
    p.add_argument("--export", metavar="FILE", help="write the session's events as JSON lines")
    if audit_options is not None:
        audit_options(p)
    p.add_argument("--since", help="ISO time, e.g. 2026-11-25T00:00:00Z")
    p.add_argument("--until", help="ISO time")
    p.add_argument("--namespace")
    p.add_argument("--cluster", help="writes on this cluster only")
    p.add_argument("--approver")
    p = sub.add_parser("mcp", parents=[common],
                       help="serve Interlock's MCP tools over stdio (for a local MCP client)")
    p.add_argument("--session", help="record the calls in this session (default: a new one "
                                     "per run of the command)")
    p.add_argument("--title", help="title of the new session")
    p = sub.add_parser("sessions", parents=[common], help="list sessions")
    p.add_argument("--limit", type=int, default=50)
    add_clusters_parser(sub, common)


def run(args: argparse.Namespace) -> int:
    out = Out(as_json=args.json)

    async def main() -> int:
        if args.command == "keys" and args.keys_command == "init":
            return keys_init(args, out)  # a key is made on this machine: no gateway
        async with aiohttp.ClientSession() as http:
            gw = Gateway.from_env(http, args.url, args.token)
            return int(await COMMANDS[args.command](gw, args, out))

    try:
        return asyncio.run(main())
    except ApiError as exc:
        sys.stderr.write(f"interlock {args.command}: {safe_text.line(exc)}\n")
        return 1
    except UsageError as exc:
        sys.stderr.write(f"interlock {args.command}: {safe_text.line(exc)}\n")
        return 2
    except keys.KeyProblem as exc:
        sys.stderr.write(f"interlock {args.command}: {safe_text.line(exc)}\n")
        return 1
    except json.JSONDecodeError as exc:
        sys.stderr.write(f"interlock {args.command}: --args is not JSON: "
                         f"{safe_text.line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        return 130
