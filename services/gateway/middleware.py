"""What every request to the gateway passes before and after its handler: per-route metrics, one
JSON error body for every failure (a 4xx that says what is wrong, a 503 when the log is away;
never a stack trace), and rate limits by who the request proves to be."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from services.gateway.auth import Principal
from services.gateway.errors import HttpError
from services.gateway.metrics import Metrics
from services.gateway.ratelimit import Limits, RateLimiter, client_address
from services.runtime.bus import TRANSIENT
from services.runtime.errors import EventTooLarge, LogFull, RetryableError

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Authenticates(Protocol):
    """Who a request's token proves (the routes' Api): the rate limit buckets by it."""

    async def resolve(self, request: web.Request) -> None: ...

    def authenticate(self, request: web.Request) -> Principal | None: ...


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)
LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)
API: web.AppKey[Authenticates] = web.AppKey("api")


def error(status: int, code: str, message: str,
          headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query.get("access_token", "").strip()  # EventSource cannot set headers


def _route_name(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource
    if info.http_exception is not None or resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        request.app[METRICS].request(_route_name(request), request.method, status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        return error(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", f"body over {MAX_BODY} bytes")
    except web.HTTPNotFound:
        return error(404, "no_route", f"no such resource: {request.method} {request.path[:200]}")
    except web.HTTPMethodNotAllowed as exc:
        return error(405, "method_not_allowed", f"{request.method} is not allowed here",
                     {"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except LogFull as exc:
        # Not "retry in a second": no write succeeds until an operator raises the limit.
        log.error("write refused: %s", exc, extra={"subject": request.path})
        return error(507, "log_full", "the event log is full: it accepts no new writes until "
                     "an operator raises its size limit; everything recorded is kept")
    except EventTooLarge as exc:
        return error(413, "too_large", str(exc))
    except (RetryableError, *TRANSIENT) as exc:
        # The bus is away for a moment (reconnecting, a stream electing a leader): say so.
        log.warning("bus unavailable: %s", exc, extra={"subject": request.path})
        return error(503, "unavailable", "the event log is unavailable for a moment; retry",
                     {"Retry-After": "1"})
    except Exception:
        log.exception("unhandled error", extra={"subject": request.path})
        return error(503, "unavailable", "the request could not be completed; retry")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Finds who the bearer credential proves once, before the rate limit and the handler
    (an ID token may need the provider's keys fetched: async)."""
    if request.path not in UNLIMITED:
        await request.app[API].resolve(request)
    return await handler(request)


UNLIMITED = frozenset({"/healthz", "/readyz"})
# Served without a token (the page loads these before it has one).
PUBLIC = frozenset({"/", "/openapi.json", "/v1/auth/config", "/v1/auth/login",
                    "/v1/auth/callback", "/v1/auth/refresh", "/v1/auth/logout"})


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith("/static/")


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Limits by who the request proves to be, authenticated first: a principal's bucket
    whichever of its tokens it uses; a request that fails authentication (no token where one
    is needed, an unknown one) takes from its address's failure bucket, so a junk-token flood
    is throttled from its address and never reaches a principal's bucket."""
    if request.path in UNLIMITED:
        return await handler(request)
    limits = request.app[LIMITS]
    who = request.app[API].authenticate(request)
    if who is not None:
        wait = limits.principals.take(f"principal:{who.name}")
        what = f"too many requests for {who.name}; slow down"
    else:
        address = client_address(request.remote, request.headers, limits.trusted_proxies)
        if _public(request.path) and not bearer_token(request):
            wait = limits.anonymous.take(address)
            what = "too many requests from this address; slow down"
        else:
            wait = limits.failures.take(address)
            what = ("too many requests that failed authentication from this address; check "
                    "the token and retry later")
    if wait > 0:
        request.app[METRICS].rate_limited += 1
        raise HttpError(429, "rate_limited", what,
                        {"Retry-After": str(max(1, math.ceil(wait)))})
    return await handler(request)
