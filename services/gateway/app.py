"""The HTTP API (DESIGN.md §5)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web

from schemas import catalogue
from schemas import subjects as S
from schemas.approval import ApprovalDecided, decision_state
from schemas.ids import InvalidId, check_token, new_session_id
from schemas.session import SessionCancelled, SessionStarted, UserMessage
from services.gateway import sse, views
from services.gateway.auth import Principal, Role, TokenStore
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NewSession(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=200)] = ""


class NewMessage(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=32_000)]


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["approve", "deny"]
    reason: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    args: dict[str, Any] | None = None  # approve these modified args instead (a new proposal)


class Cancel(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=2_000)] = ""


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def body_of(request: web.Request, kind: type[T]) -> T:
    if request.content_length and request.content_length > MAX_BODY:
        raise HttpError(413, "too_large", f"body over {MAX_BODY} bytes")
    raw = await request.read()
    if not raw:
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(400, "invalid_body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise HttpError(400, "malformed_json", f"malformed JSON: {exc}") from exc


class Api:
    def __init__(self, bus: Bus, tokens: TokenStore, heartbeat_s: float = 15.0) -> None:
        self.bus = bus
        self.tokens = tokens
        self.heartbeat_s = heartbeat_s
        self._approvals: dict[str, views.ApprovalEntry] = {}
        self._approvals_cursor = 1

    # -- plumbing ----------------------------------------------------------------------------

    def principal(self, request: web.Request, role: Role) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query.get("access_token", "")  # EventSource cannot set headers
        if not token:
            raise HttpError(401, "unauthenticated", "missing bearer token")
        who = self.tokens.lookup(token.strip())
        if who is None:
            raise HttpError(401, "unauthenticated", "unknown token")
        if not who.has(role):
            raise HttpError(403, "forbidden", f"{who.name} lacks the {role} role")
        return who

    @staticmethod
    def session_id(request: web.Request) -> str:
        try:
            return check_token(request.match_info["session_id"], "session id")
        except InvalidId as exc:
            raise HttpError(400, "invalid_id", str(exc)) from exc

    async def session_events(self, session_id: str) -> list[Any]:
        stored = await self.bus.session(session_id)
        if not stored:
            raise HttpError(404, "not_found", f"no session {session_id}")
        return stored

    async def refresh_approvals(self) -> dict[str, views.ApprovalEntry]:
        async for s in self.bus.read(f"{S.EVENTS_PREFIX}.*.*.approval.*.*",
                                     self._approvals_cursor):
            self._approvals_cursor = s.seq + 1
            views.apply_approval(self._approvals, s.seq, s.event)
        return self._approvals

    # -- routes ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.bus.nc.is_connected:
            return error(503, "not_ready", "not connected to NATS")
        return web.json_response({"ok": True})

    async def create_session(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        body = await body_of(request, NewSession)
        sid = new_session_id()
        await self.bus.append(SessionStarted(session_id=sid, title=body.title, actor=who.name),
                              once_per_key=True)
        return web.json_response({"session_id": sid}, status=201)

    async def post_message(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        sid = self.session_id(request)
        body = await body_of(request, NewMessage)
        await self.session_events(sid)
        ev = UserMessage(session_id=sid, text=body.text, actor=who.name)
        seq = await self.bus.append(ev)
        return web.json_response({"event_id": ev.event_id, "seq": seq}, status=202)

    async def cancel(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        sid = self.session_id(request)
        body = await body_of(request, Cancel)
        await self.session_events(sid)
        ev = SessionCancelled(session_id=sid, reason=body.reason, actor=who.name)
        seq = await self.bus.append(ev)
        return web.json_response({"event_id": ev.event_id, "seq": seq}, status=202)

    async def get_session(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        sid = self.session_id(request)
        stored = await self.session_events(sid)
        view = views.fold_session(sid, [(s.seq, s.event) for s in stored])
        return web.json_response(view.to_json(datetime.now(UTC)))

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.principal(request, "viewer")
        sid = self.session_id(request)
        raw = (request.headers.get("Last-Event-ID") or request.query.get("after")
               or request.query.get("last_event_id") or "0")
        if not raw.isdigit() or len(raw) > 19:
            raise HttpError(400, "invalid_event_id", "Last-Event-ID/after must be a sequence")
        await self.session_events(sid)
        return await sse.stream_session(request, self.bus, sid, int(raw), self.heartbeat_s)

    async def approvals(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        state = request.query.get("state", "pending")
        if state not in ("pending", "granted", "denied", "expired", "decided", "all"):
            raise HttpError(400, "invalid_state", f"unknown state {state!r}")
        now = datetime.now(UTC)
        entries = (await self.refresh_approvals()).values()
        out = [e.to_json(now) for e in entries if state == "all" or e.effective_state(now) == state]
        return web.json_response({"approvals": out})

    async def decide(self, request: web.Request) -> web.Response:
        who = self.principal(request, "approver")
        try:
            approval_id = check_token(request.match_info["approval_id"], "approval id")
        except InvalidId as exc:
            raise HttpError(400, "invalid_id", str(exc)) from exc
        body = await body_of(request, Decision)
        if body.decision == "deny" and not body.reason.strip():
            raise HttpError(400, "reason_required", "a denial needs a reason")
        if body.args is not None and body.decision != "approve":
            raise HttpError(400, "invalid_body", "modified args go with decision=approve")
        entry = (await self.refresh_approvals()).get(approval_id)
        if entry is None:
            raise HttpError(404, "not_found", f"no approval {approval_id}")
        req = entry.request
        args = None
        if body.args is not None:
            if len(req.calls) != 1:
                raise HttpError(400, "invalid_body", "modify the calls of a batch one by one")
            # The recorded args are complete: what the approver saw, with their edits applied.
            args = {**req.calls[0].args, **body.args}
        now = datetime.now(UTC)
        state = entry.effective_state(now)
        if state == "expired":
            raise HttpError(410, "expired", f"approval {approval_id} expired")
        if state not in ("pending", "decided"):
            raise HttpError(409, "already_decided", f"approval {approval_id} is {state}")
        subject = S.tag_filter("gateway", "approval.decided", req.session_id, approval_id)
        prior = [s async for s in self.bus.read(subject)]
        folded = decision_state(req, [p.event for p in prior if isinstance(p.event, ApprovalDecided)])
        why = folded.check(req, who.name)
        if why is not None:
            status = 403 if why.startswith("separation of duties") else 409
            raise HttpError(status, "forbidden" if status == 403 else "already_decided", why)
        ev = ApprovalDecided(session_id=req.session_id, approval_id=approval_id,
                             decision=body.decision, reason=body.reason, approver=who.name,
                             args=args, actor=who.name)
        try:
            seq = await self.bus.append(ev, expect_subject_seq=prior[-1].seq if prior else 0)
        except ConcurrencyConflict as exc:
            raise HttpError(409, "already_decided",
                            f"approval {approval_id} was decided concurrently") from exc
        approvals = len(folded.approved_by) + (1 if body.decision == "approve" else 0)
        return web.json_response({"approval_id": approval_id, "decision": body.decision,
                                  "approvals": approvals,
                                  "required_approvals": req.required_approvals,
                                  "event_id": ev.event_id, "seq": seq}, status=202)

    async def tools(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        return web.json_response({"tools": [
            {"name": t.name, "access": t.access, "summary": t.summary,
             "args_schema": t.args_schema()} for t in catalogue.TOOLS.values()
        ]})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        return error(exc.status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", f"body over {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except Exception:
        log.exception("unhandled error", extra={"subject": request.path})
        return error(503, "unavailable", "the request could not be completed; retry")


def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BODY)
    app["sse_clients"] = 0
    r = app.router
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_post("/v1/sessions", api.create_session)
    r.add_get("/v1/sessions/{session_id}", api.get_session)
    r.add_post("/v1/sessions/{session_id}/messages", api.post_message)
    r.add_post("/v1/sessions/{session_id}/cancel", api.cancel)
    r.add_get("/v1/sessions/{session_id}/events", api.events)
    r.add_get("/v1/approvals", api.approvals)
    r.add_post("/v1/approvals/{approval_id}/decision", api.decide)
    r.add_get("/v1/tools", api.tools)
    return app
