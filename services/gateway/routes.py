"""The HTTP API (DESIGN.md §5): its handlers (`Api`) and the route table (`make_app`), which puts
middleware.py's layers in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from schemas import catalogue
from schemas import subjects as S
from schemas.base import Event
from schemas.ids import new_session_id
from schemas.session import SessionCancelled, SessionStarted, UserMessage
from services.gateway import (
    approvers,
    audit,
    decisions,
    mcp_mount,
    oidc,
    openapi,
    passkeys,
    signin,
    slack,
    sse,
    views,
)
from services.gateway.approvers import Registry
from services.gateway.auth import Principal, Role, TokenStore
from services.gateway.bodies import (
    STATE_FILTERS,
    Cancel,
    Decision,
    NewMessage,
    NewSession,
)
from services.gateway.errors import HttpError
from services.gateway.metrics import Metrics
from services.gateway.middleware import (
    API,
    LIMITER,
    LIMITS,
    MAX_BODY,
    METRICS,
    auth_middleware,
    bearer_token,
    error,
    errors_middleware,
    metrics_middleware,
    ratelimit_middleware,
)
from services.gateway.ratelimit import Limits, RateLimiter
from services.gateway.requests import body_of, path_token
from services.runtime.bus import Bus
from services.runtime.log import Expect
from services.runtime.sealing.blobs import Unsealable
from services.runtime.sealing.sealer import sealer_for

# Re-exported for callers that imported the request types from here.
__all__ = ["Api", "Cancel", "Decision", "HttpError", "NewMessage", "NewSession", "make_app"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

T = TypeVar("T")
# The principal a request's token proves (None: no token, or an unknown one), looked up once.
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("principal")
# Why a bearer credential proved nobody (an ID token that expired, …), for the 401.
AUTH_ERROR: web.RequestKey[oidc.Rejected] = web.RequestKey("auth_error")
# Concurrent SSE streams one principal may hold open (INTERLOCK_SSE_STREAMS_PER_PRINCIPAL).
SSE_STREAMS_PER_PRINCIPAL = 32


class Api:
    def __init__(self, bus: Bus, tokens: TokenStore, heartbeat_s: float = 15.0,
                 metrics: Metrics | None = None,
                 sse_per_principal: int = SSE_STREAMS_PER_PRINCIPAL,
                 admin_keys_file: Path | None = None,
                 oidc: oidc.Verifier | None = None) -> None:
        self.bus = bus
        self.oidc = oidc  # ID tokens of the company's OpenID Provider (None: static tokens only)
        self.registry = Registry(bus, admin_keys_file)
        self.tokens = tokens
        self.sse_per_principal = sse_per_principal
        self._streams: dict[str, int] = {}  # principal name -> its open SSE streams
        self.heartbeat_s = heartbeat_s
        self.metrics = metrics or Metrics()
        self._approvals: dict[str, views.ApprovalEntry] = {}
        self._approvals_cursor = 1
        self._rejections_cursor = 1
        self._rejections: list[tuple[int, Event]] = []
        self._sessions: dict[str, views.SessionSummary] = {}
        self._sessions_cursor = 1
        self.connection = sse.Connection()
        self.slack = slack.SlackSettings()  # Slack's request URL (issue 20): its settings

    # -- plumbing ----------------------------------------------------------------------------

    async def resolve(self, request: web.Request) -> None:
        """Who the request's bearer credential proves, into request[PRINCIPAL] (the one place
        it is kept), before any handler: a static token, else an ID token of the OpenID
        Provider (whose keys may have to be fetched, hence async)."""
        if PRINCIPAL in request:
            return
        token = bearer_token(request)
        who = self.tokens.lookup(token) if token else None
        if who is None and token and self.oidc is not None and oidc.looks_like_jwt(token):
            try:
                who = (await self.oidc.verify(token)).principal
            except oidc.Rejected as exc:
                request[AUTH_ERROR] = exc
        request[PRINCIPAL] = who

    def authenticate(self, request: web.Request) -> Principal | None:
        """Who the request's token proves (None: none, or unknown), as `resolve` found; a
        request that did not pass it (none does in the app) is looked up in the static
        tokens alone."""
        if PRINCIPAL not in request:
            token = bearer_token(request)
            request[PRINCIPAL] = self.tokens.lookup(token) if token else None
        who: Principal | None = request[PRINCIPAL]
        return who

    def principal(self, request: web.Request, role: Role | None) -> Principal:
        """The request's principal, which must hold `role` (None: any signed-in person)."""
        who = self.authenticate(request)
        if who is None and not bearer_token(request):
            raise HttpError(401, "unauthenticated", "missing bearer token")
        if who is None:
            rejected = request.get(AUTH_ERROR)
            if rejected is not None:
                code = "unauthenticated" if rejected.status == 401 else "unavailable"
                raise HttpError(rejected.status, code, rejected.message)
            raise HttpError(401, "unauthenticated", "unknown token")
        if role is None:
            return who
        if not who.has(role):
            raise HttpError(403, "forbidden", f"{who.name} lacks the {role} role")
        return who

    async def require_session(self, session_id: str) -> None:
        # Direct Get may be answered by a stream replica that has not yet applied a write the
        # leader acknowledged (a session another gateway just created): look again briefly
        # before saying it does not exist.
        attempts = 3 if await self.bus.may_lag() else 1
        for attempt in range(attempts):
            if await self.bus.first(S.session_filter(session_id)) is not None:
                return
            if attempt < attempts - 1:
                await asyncio.sleep(0.1 * (attempt + 1))
        raise HttpError(404, "not_found", f"no session {session_id}")

    async def approval(self, approval_id: str) -> views.ApprovalEntry:
        """An approval by id. A client may have seen it (over SSE, from the stream leader)
        before the replica answering our reads applied it: look again briefly before a 404."""
        attempts = 4 if await self.bus.may_lag() else 1
        for attempt in range(attempts):
            entry = (await self.refresh_approvals()).get(approval_id)
            if entry is not None:
                return entry
            if attempt < attempts - 1:
                await asyncio.sleep(0.1 * (attempt + 1))
        raise HttpError(404, "not_found", f"no approval {approval_id}")

    async def refresh_approvals(self) -> dict[str, views.ApprovalEntry]:
        async for s in self.bus.read(f"{S.EVENTS_PREFIX}.*.*.approval.*.>",
                                     self._approvals_cursor):
            self._approvals_cursor = s.seq + 1
            views.apply_approval(self._approvals, s.seq, s.event)
        # The decisions the gate rejected count for nobody (an unsigned one, say). One whose
        # approval this index has not read yet waits for it.
        async for s in self.bus.read(S.tag_filter("gate", "decision.rejected"),
                                     self._rejections_cursor):
            self._rejections_cursor = s.seq + 1
            self._rejections.append((s.seq, s.event))
        waiting = [(seq, ev) for seq, ev in self._rejections
                   if getattr(ev, "approval_id", "") not in self._approvals]
        for seq, ev in self._rejections:
            views.apply_approval(self._approvals, seq, ev)
        # (bounded: a rejection of a decision for no approval at all never finds one)
        self._rejections = waiting[-1000:]
        return self._approvals

    async def refresh_sessions(self) -> dict[str, views.SessionSummary]:
        async for s in self.bus.read(S.tag_filter("gateway", "session.started"),
                                     self._sessions_cursor):
            self._sessions_cursor = s.seq + 1
            views.apply_session_started(self._sessions, s.seq, s.event)
        return self._sessions

    async def check_log_usage(self) -> None:
        """Reads how full the log is into the metrics, and logs once each time it crosses
        another alert level: long before writes stop, not when they do."""
        try:
            used, limit = await self.bus.log_usage()
        except Exception as exc:  # noqa: BLE001 - the figures keep their last values
            log.warning("log usage unavailable: %s", exc)
            return
        for level in self.metrics.log_usage(used, limit):
            if level >= 1.0:
                log.error("the event log is full (%d of %d bytes): every write is refused "
                          "until its limit is raised (INTERLOCK_EVENTS_MAX_BYTES)", used, limit)
            else:
                log.warning("the event log is %.0f%% full (%d of %d bytes); raise "
                            "INTERLOCK_EVENTS_MAX_BYTES before it is full", 100 * used / limit,
                            used, limit)

    async def watch_log_usage(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check_log_usage()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    # -- routes ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.bus.nc.is_connected:
            return error(503, "not_ready", "not connected to NATS")
        return web.json_response({"ok": True})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.json_response(request.app[SPEC])

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html",
                                headers={"Cache-Control": "no-cache",
                                         "Content-Security-Policy": CSP})

    async def metrics_text(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        await self.check_log_usage()
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def me(self, request: web.Request) -> web.Response:
        who = self.principal(request, "viewer")
        return web.json_response({"name": who.name, "roles": sorted(who.roles),
                                  "can_chat": who.has("operator"),
                                  "can_decide": who.has("approver")})

    async def list_sessions(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise HttpError(400, "invalid_limit", "limit must be an integer in 1..1000")
        sessions = sorted((await self.refresh_sessions()).values(), key=lambda s: -s.seq)
        return web.json_response({"sessions": [s.to_json() for s in sessions[:int(raw)]]})

    async def create_session(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        body = await body_of(request, NewSession)
        sid = new_session_id()
        await self.bus.append(SessionStarted(session_id=sid, title=body.title, actor=who.name,
                                             actor_name=who.display),
                              Expect.new_key())
        return web.json_response({"session_id": sid}, status=201)

    async def post_message(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        sid = path_token(request, "session_id", "session id")
        body = await body_of(request, NewMessage, required=True)
        await self.require_session(sid)
        # A secret typed into a kubectl command is sealed to the executor before anything is
        # recorded: the log holds a reference with a keyed fingerprint (services/runtime/sealing).
        try:
            text = await sealer_for(self.bus).text(sid, body.text)
        except Unsealable as exc:
            raise HttpError(400, "unreadable_secret", str(exc)) from exc
        ev = UserMessage(session_id=sid, text=text, actor=who.name, actor_name=who.display)
        seq = await self.bus.append(ev)
        return web.json_response({"event_id": ev.event_id, "seq": seq}, status=202)

    async def cancel(self, request: web.Request) -> web.Response:
        who = self.principal(request, "operator")
        sid = path_token(request, "session_id", "session id")
        body = await body_of(request, Cancel)
        await self.require_session(sid)
        ev = SessionCancelled(session_id=sid, reason=body.reason, actor=who.name,
                              actor_name=who.display)
        seq = await self.bus.append(ev)
        return web.json_response({"event_id": ev.event_id, "seq": seq}, status=202)

    async def get_session(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        sid = path_token(request, "session_id", "session id")
        stored = await self.bus.session(sid)
        if not stored:
            raise HttpError(404, "not_found", f"no session {sid}")
        view = views.fold_session(sid, [(s.seq, s.event) for s in stored])
        return web.json_response(view.to_json(datetime.now(UTC)))

    async def events(self, request: web.Request) -> web.StreamResponse:
        who = self.principal(request, "viewer")
        sid = path_token(request, "session_id", "session id")
        after = sse.parse_after(request)
        await self.require_session(sid)
        # A stream holds a subscription share, a task and a socket for as long as it is open:
        # one principal may not hold more than its cap (a viewer token opened 300).
        held = self._streams.get(who.name, 0)
        if held >= self.sse_per_principal:
            self.metrics.rate_limited += 1  # a 429 like the others
            raise HttpError(
                429, "too_many_streams",
                f"{who.name} already has {held} event streams open, the most allowed per "
                f"principal (INTERLOCK_SSE_STREAMS_PER_PRINCIPAL={self.sse_per_principal}); "
                "close one (another tab, an `interlock watch`) and retry",
                {"Retry-After": str(max(1, math.ceil(self.heartbeat_s)))})
        self._streams[who.name] = held + 1
        try:
            return await sse.stream_session(request, self.bus, sid, after, self.heartbeat_s,
                                            self.metrics, self.connection)
        finally:
            left = self._streams[who.name] - 1
            if left:
                self._streams[who.name] = left
            else:
                del self._streams[who.name]

    async def log_bounds(self, request: web.Request) -> web.Response:
        """The log's first and last sequence: the Command Center shows no event whose id is
        beyond the last sequence it was told (an id is a stream sequence, never bigger)."""
        self.principal(request, "viewer")
        first, last = await sse.hub_for(self.bus).bounds()
        return web.json_response({"first_seq": first, "last_seq": last})

    async def approvals(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        state = request.query.get("state", "pending")
        if state not in STATE_FILTERS:
            raise HttpError(400, "invalid_state",
                            f"unknown state {state[:40]!r}; one of {', '.join(STATE_FILTERS)}")
        now = datetime.now(UTC)
        entries = (await self.refresh_approvals()).values()
        out = [e.to_json(now) for e in entries if state == "all" or e.effective_state(now) == state]
        return web.json_response({"approvals": out})

    async def tools(self, request: web.Request) -> web.Response:
        self.principal(request, "viewer")
        return web.json_response({"tools": [
            {"name": t.name, "access": t.access, "summary": t.summary,
             "args_schema": t.args_schema()} for t in catalogue.TOOLS.values()
        ]})


CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
       "script-src 'self'; frame-ancestors 'none'; base-uri 'none'")
SPEC: web.AppKey[dict[str, Any]] = web.AppKey("spec", dict)


def make_app(api: Api, limiter: RateLimiter | None = None,
             limits: Limits | None = None) -> web.Application:
    """`limiter`: the per-principal one (the other limits at their defaults); `limits`: all."""
    app = web.Application(
        middlewares=[metrics_middleware, errors_middleware, auth_middleware,
                     ratelimit_middleware],
        client_max_size=MAX_BODY,
    )
    app[METRICS] = api.metrics
    app[LIMITS] = limits or Limits.default(limiter)
    app[LIMITER] = app[LIMITS].principals
    app[API] = api
    app[SPEC] = openapi.build()
    r = app.router
    r.add_get("/", api.index)
    r.add_static("/static", STATIC, append_version=False)
    r.add_get("/healthz", api.healthz)
    r.add_get("/readyz", api.readyz)
    r.add_get("/metrics", api.metrics_text)
    r.add_get("/openapi.json", api.openapi_json)
    r.add_get("/v1/me", api.me)
    r.add_get("/v1/sessions", api.list_sessions)
    r.add_post("/v1/sessions", api.create_session)
    r.add_get("/v1/sessions/{session_id}", api.get_session)
    r.add_post("/v1/sessions/{session_id}/messages", api.post_message)
    r.add_post("/v1/sessions/{session_id}/cancel", api.cancel)
    r.add_get("/v1/sessions/{session_id}/events", api.events, allow_head=False)
    r.add_get("/v1/log", api.log_bounds)
    r.add_get("/v1/approvals", api.approvals)
    r.add_post("/v1/approvals/{approval_id}/decision",
               functools.partial(decisions.decide, api))
    r.add_post("/v1/approvals/{approval_id}/edits",
               functools.partial(decisions.seal_edits, api))
    r.add_get("/v1/tools", api.tools)
    r.add_get("/v1/approvers", functools.partial(approvers.list_approvers, api))
    r.add_post("/v1/approvers", functools.partial(approvers.enrol, api))
    r.add_post("/v1/approvers/revocations", functools.partial(approvers.revoke, api))
    r.add_get("/v1/sessions/{session_id}/audit", functools.partial(audit.session_audit, api))
    r.add_get("/v1/audit", functools.partial(audit.search, api))
    passkeys.install(app, api, app[SPEC])
    signin.install(app, api, app[SPEC])
    mcp_mount.install(app, api)
    slack.install(app, api)
    return app
