"""Interlock as an MCP server (issue 19): the tool catalogue over the Model Context Protocol, at
`/mcp` (Streamable HTTP, the official `mcp` SDK; `interlock mcp` bridges stdio to it).

An MCP client is an operator, never an approver. Its call is recorded as `tool.requested` (the
token's principal the actor, the client as it named itself) and the planner proposes it by the
rules of its model's calls, so it meets the very same gate and executor: a read answers with its
result, a write answers "held for approval" with the card's essentials, and the client follows
it with `interlock_approval_status` (long-polled, with progress notifications while it waits).
No MCP tool decides an approval; deny and expiry come back as tool errors with the reason.

The server is stateless (any gateway replica answers any request): the 2026-07-28 revision has
no protocol session, and the SDK's stateless mode serves the 2025 revisions the same way. The
Interlock session of a call is the one its `Interlock-Session` header names (`interlock mcp`
opens one per conversation), else one per principal and client name per UTC day.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from schemas import catalogue, ids
from schemas.approval import ApprovalDenied, ApprovalRequested, ToolRefused
from schemas.base import Event
from schemas.execution import CommandRefused, ToolResult, ToolVerified
from schemas.planning import CommandRejected, ToolRequested
from schemas.session import SessionStarted
from schemas.tool_schema import parameters_schema
from services.gateway import asgi, live
from services.gateway.auth import Principal
from services.gateway.errors import HttpError
from services.gateway.views import ApprovalEntry
from services.runtime.log import Expect
from services.runtime.sealing.blobs import Unsealable
from services.runtime.sealing.sealer import sealer_for

log = logging.getLogger(__name__)

SPEC_REVISION = "2026-07-28"  # the revision implemented; the SDK also serves 2024-11-05..2025-11-25
SESSION_HEADER = "interlock-session"
STATUS_TOOL = "interlock_approval_status"

READ_WAIT_S = 120.0  # a read answers with its result; one still running after this says so
HELD_WAIT_S = 60.0  # a write answers once its card exists (the dry run done)
MAX_WAIT_S = 60  # what interlock_approval_status may be asked to wait
PROGRESS_EVERY_S = 5.0
POLL_S = live.POLL_S
_STATE = "interlock"  # the ASGI scope state key for what the gateway proved about the caller


@dataclass(frozen=True)
class Caller:
    principal: Principal
    session: str  # the Interlock-Session header, checked as an id ("" without one)
    origin: str  # for links to the Command Center


def _text(doc: dict[str, Any]) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=json.dumps(doc, indent=1, default=str))]


def _result(doc: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=_text(doc), structured_content=doc, is_error=error)


def _error(message: str, **extra: Any) -> types.CallToolResult:
    return _result({"status": "error", "error": message, **extra}, error=True)


def tools() -> list[types.Tool]:
    """The catalogue, with the schemas the planner's model is sent (meta fields optional here),
    plus the one status tool. Hints tell the client what the gate will do; the gate decides."""
    out = []
    for t in catalogue.TOOLS.values():
        write = t.access == "write"
        out.append(types.Tool(
            name=t.name, title=t.name.replace("_", " "),
            description=f"{t.summary} " + (
                "WRITE: held in Interlock until a human approves it; the result says where to "
                "follow it (interlock_approval_status). Give rationale, evidence (verbatim quotes "
                "from earlier results) and expected_outcome for the approver."
                if write else "Read: runs at once."),
            input_schema=parameters_schema(t, meta_required=False),
            annotations=types.ToolAnnotations(
                read_only_hint=not write, destructive_hint=write,
                idempotent_hint=not write, open_world_hint=False)))
    out.append(types.Tool(
        name=STATUS_TOOL, title="approval status",
        description=(
            "Where a held write stands: pending (who may decide, until when), or its outcome. "
            "Approved: the executed result and its verification. Denied or expired: an error "
            "with the reason; nothing was executed. wait_seconds (0-60) waits for a change. "
            "It cannot decide: a human approves in the Command Center or with the CLI."),
        input_schema={"type": "object", "additionalProperties": False,
                      "required": ["approval_id"],
                      "properties": {"approval_id": {"type": "string", "maxLength": 64},
                                     "wait_seconds": {"type": "integer", "minimum": 0,
                                                      "maximum": MAX_WAIT_S}}},
        annotations=types.ToolAnnotations(read_only_hint=True, destructive_hint=False,
                                          idempotent_hint=True, open_world_hint=False)))
    return out


def client_name(ctx: Any) -> str:
    """The client as it named itself, for the record (never proof of anything): 2026-07-28 in
    each request's _meta, earlier revisions in their initialize (the SDK keeps both as the
    connection's client_params); a 2025 client over stateless HTTP, whose initialize was
    another request, by its User-Agent."""
    params = getattr(ctx.session, "client_params", None)
    if params is not None:
        info = params.client_info
        return f"{info.name} {info.version or ''}".strip()[:120]
    request = getattr(ctx, "request", None)
    agent = request.headers.get("user-agent", "") if request is not None else ""
    agent = "".join(ch for ch in agent if ch.isprintable()).strip()[:120]
    return agent or "an MCP client"


class McpServer:
    """The MCP handlers over the gateway's Api (its bus, its approvals index)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.server: Server[Any] = Server(
            "interlock", version="0.1.0", title="Interlock",
            instructions=(
                "Kubernetes tools through Interlock's approval gate. Reads run at once. Every "
                "write is held until a human approves exactly that write; follow it with "
                f"{STATUS_TOOL}. You cannot approve."),
            on_list_tools=self.list_tools, on_call_tool=self.call_tool)
        self.manager = StreamableHTTPSessionManager(self.server, stateless=True)
        self._started: set[str] = set()
        self._tools = tools()

    # -- MCP handlers ------------------------------------------------------------------------

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self._tools)

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        caller: Caller = ctx.request.scope["state"][_STATE]
        args = dict(params.arguments or {})
        try:
            if params.name == STATUS_TOOL:
                return await self.status(ctx, caller, args)
            return await self.run_call(ctx, caller, params.name, args)
        except HttpError as exc:
            return _error(exc.message, code=exc.code)

    # -- a catalogue call --------------------------------------------------------------------

    async def session_for(self, ctx: Any, caller: Caller) -> tuple[str, str]:
        client = client_name(ctx)
        if caller.session:
            await self.api.require_session(caller.session)
            return caller.session, client
        who = caller.principal.name
        day = datetime.now(UTC).date().isoformat()
        sid = ids.derived_id("s", "mcp", who, client, day)
        if sid not in self._started:
            await self.api.bus.append_once(SessionStarted(
                session_id=sid, actor=who, title=f"MCP: {client} as {who} ({day})"[:200],
                event_id=ids.derived_id("e", sid, "started")), Expect.new_key())
            self._started.add(sid)
        return sid, client

    async def run_call(self, ctx: Any, caller: Caller, name: str,
                       args: dict[str, Any]) -> types.CallToolResult:
        rationale, evidence, expected = args.pop("rationale", ""), args.pop("evidence", []), \
            args.pop("expected_outcome", "")
        if isinstance(evidence, str):
            evidence = [evidence]
        if not (isinstance(rationale, str) and isinstance(expected, str)
                and isinstance(evidence, list) and all(isinstance(e, str) for e in evidence)):
            return _error("rationale and expected_outcome are text, evidence a list of quotes")
        sid, client = await self.session_for(ctx, caller)
        try:
            sealed, _ = await sealer_for(self.api.bus).args(sid, name[:200], args)
        except Unsealable as exc:
            return _error(str(exc))
        ev = ToolRequested(session_id=sid, actor=caller.principal.name,
                           actor_name=caller.principal.display, tool=name[:200],
                           args=sealed, rationale=rationale[:4000],
                           evidence=tuple(e[:1000] for e in evidence[:10]),
                           expected_outcome=expected[:4000], client=client)
        seq = await self.api.bus.append(ev)
        call_id = ids.derived_id("c", ev.event_id, "0")
        tool = catalogue.lookup(name)
        wait = HELD_WAIT_S if tool is not None and tool.access == "write" else READ_WAIT_S
        outcome = await live.first(self.api.bus, sid, seq + 1, wait,
                                   lambda e: _about(e, call_id, ev.event_id))
        base = {"session_id": sid, "call_id": call_id, "tool": name[:200]}
        match outcome:
            case None:
                return _result({**base, "status": "running", "note": (
                    "not settled yet; see the session in the Command Center")})
            case ToolResult():
                return _result({**base, "status": outcome.status, "output": outcome.output,
                                "data": outcome.data}, error=outcome.status != "ok")
            case ApprovalRequested():
                return _result({**base, **self.held(outcome, caller)})
            case ToolRefused() | CommandRefused():
                return _error(f"refused, nothing ran: {outcome.reason}", **base)
            case CommandRejected():
                return _error(f"not proposed: {outcome.reason}", **base)
        return _error("unexpected outcome", **base)

    def held(self, req: ApprovalRequested, caller: Caller) -> dict[str, Any]:
        return {
            "status": "held_for_approval", "approval_id": req.approval_id,
            "summary": req.title or " + ".join(f"{c.tool} {c.target.kind}/{c.target.name}"
                                               for c in req.calls),
            "diff": [{"call_id": c.call_id, "tool": c.tool, "where": {
                "context": c.context, "namespace": c.target.namespace,
                "kind": c.target.kind, "name": c.target.name},
                "changes": [d.describe() for d in c.diff],
                "preview_error": c.preview_error or None} for c in req.calls],
            "risk_flags": list(req.risk_flags), "expires_at": req.expires_at.isoformat(),
            "required_approvals": req.required_approvals,
            "link": _link(req, caller),
            "next": (f"Nothing has changed. A human decides in Interlock; call {STATUS_TOOL} "
                     f"with approval_id {req.approval_id} (wait_seconds up to {MAX_WAIT_S}) to "
                     "follow it."),
        }

    # -- interlock_approval_status -----------------------------------------------------------

    async def status(self, ctx: Any, caller: Caller, args: dict[str, Any]
                     ) -> types.CallToolResult:
        approval_id, wait = args.get("approval_id"), args.get("wait_seconds", 0)
        if not isinstance(approval_id, str) or not isinstance(wait, int) or \
                isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT_S:
            return _error(f"approval_id is an id, wait_seconds an integer 0..{MAX_WAIT_S}")
        try:
            ids.check_token(approval_id, "approval id")
        except ids.InvalidId as exc:
            return _error(str(exc))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        entry = await self.api.approval(approval_id)
        async with live.news(self.api.bus, entry.request.session_id) as news:
            return await self._follow(ctx, caller, approval_id, news, deadline, wait)

    async def _follow(self, ctx: Any, caller: Caller, approval_id: str, news: asyncio.Event,
                      deadline: float, wait: int) -> types.CallToolResult:
        loop = asyncio.get_running_loop()
        told = loop.time()
        while True:
            news.clear()
            entry = await self.api.approval(approval_id)
            doc = await self.outcome(entry, caller)
            # Executed but not verified yet (a rollout settling): worth the wait it was given.
            # A call that failed is never verified: nothing to wait for there.
            settled = doc["status"] not in ("pending", "approved_running") and \
                not _verifying(doc)
            if settled or loop.time() >= deadline:
                return _result(doc, error=doc["status"] in ("denied", "expired", "failed"))
            now = loop.time()
            if now - told >= PROGRESS_EVERY_S:
                told = now
                await _progress(ctx, wait - (deadline - now), wait,
                                f"{approval_id}: {doc['status']}")
            # An expiry is no event: it is read again at least every POLL_S.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), min(deadline - now, POLL_S))

    async def outcome(self, entry: ApprovalEntry, caller: Caller) -> dict[str, Any]:
        req = entry.request
        now = datetime.now(UTC)
        state = entry.effective_state(now)
        base: dict[str, Any] = {"approval_id": req.approval_id, "session_id": req.session_id,
                                "summary": req.title, "link": _link(req, caller)}
        who, reason = entry.decided()
        outcome = entry.state.outcome
        if isinstance(outcome, ApprovalDenied) and outcome.superseded_by:
            return {**base, "status": "pending", "note": (
                f"{who} changed the arguments; the change continues as call "
                f"{outcome.superseded_by}, waiting for its own approval (see the session)")}
        if state == "denied":
            return {**base, "status": "denied", "decided_by": who, "reason": reason,
                    "error": f"DENIED by {who}: {reason or 'no reason given'}. Nothing was "
                             "executed."}
        if state == "expired":
            return {**base, "status": "expired", "error": (
                f"EXPIRED at {req.expires_at.isoformat()}: nobody decided in time. Nothing "
                "was executed.")}
        if state in ("pending", "decided"):
            return {**base, "status": "pending", "expires_at": req.expires_at.isoformat(),
                    "approvals": list(entry.state.decision().approved_by),
                    "required_approvals": req.required_approvals}
        results = await self._results(req, entry.seq)
        if len(results) < len(req.calls):
            return {**base, "status": "approved_running", "approved_by": who}
        failed = any(r["status"] != "ok" or (r["verification"] or {}).get("outcome") not in (
            None, "verified", "skipped") for r in results)
        problem = ("it ran, but a call failed or its verification did not confirm the "
                   "expected state: read the results")
        return {**base, "status": "failed" if failed else "executed", "approved_by": who,
                "results": results, **({"error": problem} if failed else {})}

    async def _results(self, req: ApprovalRequested, since: int) -> list[dict[str, Any]]:
        """The results (and verifications) of the request's calls: none comes before the
        request (at `since`), so the session is read from there, not whole at every wake."""
        wanted = set(req.call_ids)
        out: dict[str, dict[str, Any]] = {}
        for s in await self.api.bus.session(req.session_id, start_seq=since):
            ev = s.event
            if isinstance(ev, ToolResult) and ev.call_id in wanted:
                out[ev.call_id] = {"call_id": ev.call_id, "tool": ev.tool, "status": ev.status,
                                   "output": ev.output, "verification": None}
            elif isinstance(ev, ToolVerified) and ev.call_id in out:
                out[ev.call_id]["verification"] = {"outcome": ev.outcome, "detail": ev.detail}
        return list(out.values())

    # -- serving -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # MCP clients are operators (they may propose), never approvers (no tool decides).
        who = self.api.principal(request, "operator")
        raw = request.headers.get(SESSION_HEADER, "")
        try:
            session = ids.check_token(raw, "session id") if raw else ""
        except ids.InvalidId as exc:
            raise HttpError(400, "invalid_id", f"{SESSION_HEADER}: {exc}") from exc
        origin = f"{request.scheme}://{request.host}"
        # The transport's rule against DNS rebinding: a browser's request from another origin is
        # refused (MCP clients that are not browsers send no Origin).
        sent = request.headers.get("Origin")
        if sent is not None and sent != origin:
            raise HttpError(403, "forbidden_origin", f"requests from {sent[:100]!r} are not "
                            f"accepted; MCP clients send none, or {origin}")
        caller = Caller(who, session, origin)
        return await asgi.serve(request, self.manager.handle_request, {_STATE: caller})

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """The SDK's session manager, for as long as the gateway serves (in one task)."""
        async with self.manager.run():
            ready.set()
            await stop.wait()


def _verifying(doc: dict[str, Any]) -> bool:
    """A call that ran has no verification yet (the executor checks each write that
    succeeded, after its result; never one that failed): worth waiting for."""
    return any(r["status"] == "ok" and r["verification"] is None
               for r in doc.get("results", ()))


def _link(req: ApprovalRequested, caller: Caller) -> str:
    """The approval's card in the Command Center, at the address the client used."""
    return f"{caller.origin}/#session={req.session_id}&approval={req.approval_id}"


def _about(ev: Event, call_id: str, trigger_id: str) -> bool:
    match ev:
        case ToolResult() | ToolRefused() | CommandRefused():
            return ev.call_id == call_id
        case ApprovalRequested():
            return call_id in ev.call_ids
        case CommandRejected():
            return ev.causation_id == trigger_id
    return False


async def _progress(ctx: Any, done: float, total: float, message: str) -> None:
    """A progress notification on the open call, when the client asked for them."""
    try:
        await ctx.session.report_progress(done, total, message)
    except Exception as exc:  # noqa: BLE001 - progress is a courtesy; the answer still comes
        log.debug("no progress sent: %s", exc)


__all__ = ["SPEC_REVISION", "STATUS_TOOL", "McpServer"]
