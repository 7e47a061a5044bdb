"""The Command Center's sign-in with the company's OpenID Provider (authorization code + PKCE),
and `GET /v1/whoami`.

- `GET /v1/auth/config` (public): whether sign-in with a provider is offered, and whether static
  tokens are.
- `GET /v1/auth/login`: 302 to the provider with a fresh `state`, `nonce` and PKCE (S256)
  verifier, which travel in a short-lived HttpOnly SameSite=Lax cookie — no server memory, so
  any gateway replica can take the callback.
- `GET /v1/auth/callback`: the state must be the cookie's; the code is exchanged (with the
  client secret and the verifier), the ID token verified (signature, issuer, audience = the
  Command Center's client, expiry, nonce). The refresh token stays in an HttpOnly cookie scoped
  to /v1/auth/ (the page's script never sees it); the page gets the ID token, keeps it in
  sessionStorage and uses it as its bearer credential.
- `POST /v1/auth/refresh`: a new ID token for the refresh cookie; `POST /v1/auth/logout` drops
  it (and revokes it at the provider when it offers revocation).

No token, code or secret is logged; errors name the provider's error code only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from services.gateway.errors import HttpError
from services.gateway.oidc import Rejected, Unavailable, Verifier

if TYPE_CHECKING:
    from services.gateway.routes import Api

log = logging.getLogger(__name__)

AUTH_PATH = "/v1/auth/"
CALLBACK = "/v1/auth/callback"
LOGIN_COOKIE = "interlock_signin"
REFRESH_COOKIE = "interlock_refresh"
LOGIN_TTL_S = 600  # the time a person has to sign in at the provider
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'none'")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verifier(api: Api) -> Verifier:
    if api.oidc is None:
        raise HttpError(404, "oidc_not_configured",
                        "sign-in with an identity provider is not configured on this gateway "
                        "(INTERLOCK_OIDC_ISSUER); use an access token")
    return api.oidc


def redirect_uri(api: Api, request: web.Request) -> str:
    configured = _verifier(api).settings.redirect_uri
    if configured:
        return configured
    return f"{request.scheme}://{request.host}{CALLBACK}"


def _secure(request: web.Request, api: Api) -> bool:
    return request.scheme == "https" or redirect_uri(api, request).startswith("https://")


# -- routes ------------------------------------------------------------------------------------


async def config(api: Api, request: web.Request) -> web.Response:
    oidc = None
    if api.oidc is not None:
        s = api.oidc.settings
        oidc = {"issuer": s.issuer, "client_id": s.client_id, "cli_client_id": s.cli_client_id,
                "scopes": s.scopes}
    return web.json_response({"oidc": oidc, "static_tokens": len(api.tokens) > 0},
                             headers={"Cache-Control": "no-store"})


async def login(api: Api, request: web.Request) -> web.Response:
    verifier = _verifier(api)
    s = verifier.settings
    if not s.client_id or not s.client_secret:
        raise HttpError(404, "oidc_not_configured",
                        "the Command Center's client is not configured "
                        "(INTERLOCK_OIDC_CLIENT_ID and INTERLOCK_OIDC_CLIENT_SECRET)")
    try:
        discovery = await verifier.discovery()
    except Unavailable as exc:
        raise HttpError(503, "unavailable", exc.message) from exc
    state, nonce, code_verifier = (secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                                   secrets.token_urlsafe(48))
    params = {
        "response_type": "code", "client_id": s.client_id,
        "redirect_uri": redirect_uri(api, request), "scope": s.scopes,
        "state": state, "nonce": nonce,
        "code_challenge": _b64(hashlib.sha256(code_verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    endpoint = discovery["authorization_endpoint"]
    sep = "&" if "?" in endpoint else "?"
    resp = web.Response(status=302, headers={"Location": f"{endpoint}{sep}{urlencode(params)}",
                                             "Cache-Control": "no-store"})
    cookie = _b64(json.dumps({"s": state, "n": nonce, "v": code_verifier}).encode())
    resp.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_TTL_S, path=AUTH_PATH, httponly=True,
                    samesite="Lax", secure=_secure(request, api))
    return resp


async def callback(api: Api, request: web.Request) -> web.Response:
    verifier = _verifier(api)
    try:
        return await _callback(api, verifier, request)
    except (HttpError, Rejected) as exc:
        status = exc.status
        message = exc.message
        page = _page("Sign-in failed", message, status)
        page.del_cookie(LOGIN_COOKIE, path=AUTH_PATH)
        return page


async def _callback(api: Api, verifier: Verifier, request: web.Request) -> web.Response:
    q = request.query
    if q.get("error"):
        # The provider's own words (access_denied, …): no token is involved.
        raise HttpError(400, "signin_refused", f"the identity provider said "
                        f"{q['error'][:100]}: {q.get('error_description', '')[:300]}")
    raw = request.cookies.get(LOGIN_COOKIE, "")
    try:
        saved = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        state, nonce, code_verifier = str(saved["s"]), str(saved["n"]), str(saved["v"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HttpError(400, "signin_expired", "this sign-in was not started here or took too "
                        "long (its cookie is gone): start again") from exc
    if not secrets.compare_digest(q.get("state", ""), state):
        raise HttpError(400, "bad_state", "the sign-in's state does not match: start again")
    code = q.get("code", "")
    if not code:
        raise HttpError(400, "no_code", "the identity provider sent no authorization code")
    tokens = await _token_request(verifier, {
        "grant_type": "authorization_code", "code": code,
        "redirect_uri": redirect_uri(api, request), "code_verifier": code_verifier})
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise HttpError(502, "no_id_token", "the identity provider returned no ID token "
                        "(is `openid` among INTERLOCK_OIDC_SCOPES?)")
    identity = await verifier.verify(id_token, audience=verifier.settings.client_id,
                                     nonce=nonce)
    who = identity.principal
    log.info("signed in", extra={"subject": who.name, "tag": "oidc"})
    data = {"id_token": id_token, "expires_at": identity.expires_at, "principal": who.name,
            "name": who.display}
    # A JSON script block is data, not code (the CSP runs /static/signin.js only); `<` is
    # escaped so that no value can close the element.
    blob = json.dumps(data).replace("<", "\\u003c")
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Signed in'
            f'</title><script id="signin" type="application/json">{blob}</script>'
            f'<script src="/static/signin.js"></script></head><body><p>Signed in as '
            f'{html.escape(who.display or who.name)}; opening the Command Center…</p>'
            f'<p><a href="/">Continue</a></p></body></html>')
    resp = web.Response(text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                                 "Referrer-Policy": "no-referrer"})
    resp.del_cookie(LOGIN_COOKIE, path=AUTH_PATH)
    _keep_refresh(resp, tokens, request, api)
    return resp


async def refresh(api: Api, request: web.Request) -> web.Response:
    verifier = _verifier(api)
    token = request.cookies.get(REFRESH_COOKIE, "")
    if not token:
        raise HttpError(401, "no_refresh_token", "no refresh token for this browser: sign in")
    try:
        tokens = await _token_request(verifier, {"grant_type": "refresh_token",
                                                 "refresh_token": token})
    except HttpError as exc:
        if exc.status == 401:  # expired or revoked at the provider: this cookie is done
            resp = web.json_response({"error": {"code": exc.code, "message": exc.message}},
                                     status=401)
            resp.del_cookie(REFRESH_COOKIE, path=AUTH_PATH)
            return resp
        raise
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise HttpError(502, "no_id_token", "the identity provider returned no ID token on "
                        "refresh: sign in again")
    try:
        identity = await verifier.verify(id_token, audience=verifier.settings.client_id)
    except Rejected as exc:
        raise HttpError(exc.status, "unauthenticated", exc.message) from exc
    who = identity.principal
    resp = web.json_response({"id_token": id_token, "expires_at": identity.expires_at,
                              "principal": who.name, "name": who.display},
                             headers={"Cache-Control": "no-store"})
    _keep_refresh(resp, tokens, request, api)
    return resp


async def logout(api: Api, request: web.Request) -> web.Response:
    token = request.cookies.get(REFRESH_COOKIE, "")
    revoked = False
    if token and api.oidc is not None:
        revoked = await _revoke(api.oidc, token)
    resp = web.json_response({"signed_out": True, "revoked": revoked},
                             headers={"Cache-Control": "no-store"})
    resp.del_cookie(REFRESH_COOKIE, path=AUTH_PATH)
    resp.del_cookie(LOGIN_COOKIE, path=AUTH_PATH)
    return resp


async def whoami(api: Api, request: web.Request) -> web.Response:
    """Any signed-in person, with or without a role (so the page can say which is missing)."""
    who = api.principal(request, None)
    return web.json_response({"principal": who.name, "name": who.display,
                              "roles": sorted(who.roles), "via": who.via})


# -- the provider's token endpoint ---------------------------------------------------------------


def _keep_refresh(resp: web.Response, tokens: dict[str, Any], request: web.Request,
                  api: Api) -> None:
    new = tokens.get("refresh_token")
    if isinstance(new, str) and new:
        # A browser-session cookie, sent only to /v1/auth/ and only from this site's pages.
        resp.set_cookie(REFRESH_COOKIE, new, path=AUTH_PATH, httponly=True, samesite="Strict",
                        secure=_secure(request, api))


def _client_auth(verifier: Verifier, discovery: dict[str, Any],
                 form: dict[str, str]) -> dict[str, str]:
    """The headers (and form fields) that authenticate the Command Center's client."""
    s = verifier.settings
    methods = discovery.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" not in methods and "client_secret_post" in methods:
        form["client_id"], form["client_secret"] = s.client_id, s.client_secret
        return {"Accept": "application/json"}
    # RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
    return {"Accept": "application/json", "Authorization": aiohttp.encode_basic_auth(
        quote(s.client_id, safe=""), quote(s.client_secret, safe=""))}


async def _token_request(verifier: Verifier, form: dict[str, str]) -> dict[str, Any]:
    try:
        discovery = await verifier.discovery()
    except Unavailable as exc:
        raise HttpError(503, "unavailable", exc.message) from exc
    headers = _client_auth(verifier, discovery, form)
    try:
        async with verifier.http().post(discovery["token_endpoint"], data=form,
                                        headers=headers) as resp:
            status = resp.status
            try:
                doc = await resp.json(content_type=None)
            except ValueError:
                doc = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HttpError(503, "unavailable", "the identity provider's token endpoint cannot be "
                        f"reached: {type(exc).__name__}") from exc
    if not isinstance(doc, dict):
        raise HttpError(502, "bad_token_response",
                        f"the identity provider's token endpoint answered {status} without JSON")
    if status != 200:
        code = str(doc.get("error", status))[:100]
        log.warning("token request refused", extra={"tag": code})
        if code in ("invalid_grant",):
            raise HttpError(401, "invalid_grant", "the identity provider refused the grant "
                            "(expired, used or revoked): sign in again")
        raise HttpError(502, "token_refused", f"the identity provider refused: {code}: "
                        f"{str(doc.get('error_description', ''))[:300]}")
    return doc


async def _revoke(verifier: Verifier, token: str) -> bool:
    try:
        discovery = await verifier.discovery()
        endpoint = discovery.get("revocation_endpoint")
        if not isinstance(endpoint, str):
            return False
        form = {"token": token, "token_type_hint": "refresh_token"}
        headers = _client_auth(verifier, discovery, form)
        async with verifier.http().post(endpoint, data=form, headers=headers) as resp:
            return resp.status == 200
    except (Unavailable, aiohttp.ClientError, TimeoutError):
        return False


def _page(title: str, message: str, status: int) -> web.Response:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
            f'{html.escape(title)}</title><link rel="stylesheet" href="/static/app.css">'
            f'</head><body><section id="signin-result"><h1>{html.escape(title)}</h1>'
            f'<p class="error" role="alert">{html.escape(message)}</p>'
            f'<p><a href="/">Back to the Command Center</a></p></section></body></html>')
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


# -- the OpenAPI paths ---------------------------------------------------------------------------


def _spec_paths() -> dict[str, Any]:
    def err(text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}

    def html_page(text: str) -> dict[str, Any]:
        return {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}

    def obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {"type": "object", "required": required, "properties": props}

    tags = ["auth"]
    nullable_str = {"type": "string"}
    signed_in = obj({"id_token": nullable_str, "expires_at": {"type": "integer"},
                     "principal": nullable_str, "name": nullable_str},
                    ["id_token", "expires_at", "principal"])
    not_configured = err("sign-in with an identity provider is not configured")
    unavailable = err("the identity provider cannot be reached")
    return {
        "/v1/auth/config": {"get": {
            "summary": "How one signs in here: an identity provider (OIDC) and/or access tokens",
            "tags": tags, "security": [],
            "responses": {"200": {"description": "the sign-in options", "content": {
                "application/json": {"schema": obj({
                    "oidc": {"oneOf": [{"type": "null"}, obj({
                        "issuer": nullable_str, "client_id": nullable_str,
                        "cli_client_id": nullable_str, "scopes": nullable_str},
                        ["issuer", "client_id", "cli_client_id", "scopes"])]},
                    "static_tokens": {"type": "boolean"}}, ["oidc", "static_tokens"])}}},
                "429": err("rate limited")},
        }},
        "/v1/auth/login": {"get": {
            "summary": "Start signing in: a redirect to the identity provider (code + PKCE)",
            "tags": tags, "security": [],
            "responses": {"302": {"description": "to the provider's authorization endpoint"},
                          "404": not_configured, "429": err("rate limited"),
                          "503": unavailable},
        }},
        "/v1/auth/callback": {"get": {
            "summary": "Where the identity provider returns: the code is exchanged and the ID "
                       "token verified; the page keeps it and opens the Command Center",
            "tags": tags, "security": [],
            "parameters": [{"name": n, "in": "query", "required": False,
                            "schema": {"type": "string"}}
                           for n in ("code", "state", "error", "error_description")],
            "responses": {"200": html_page("signed in"),
                          "400": html_page("no or a stale sign-in, a state that does not "
                                           "match, or the provider refused"),
                          "401": html_page("the ID token does not verify"),
                          "404": not_configured, "429": err("rate limited"),
                          "502": html_page("the provider's answer is unusable"),
                          "503": html_page("the provider cannot be reached")},
        }},
        "/v1/auth/refresh": {"post": {
            "summary": "A new ID token for this browser's refresh cookie",
            "tags": tags, "security": [],
            "responses": {"200": {"description": "a new ID token", "content": {
                "application/json": {"schema": signed_in}}},
                "401": err("no refresh cookie, or the provider refused it"),
                "404": not_configured, "429": err("rate limited"),
                "502": err("the provider's answer is unusable"), "503": unavailable},
        }},
        "/v1/auth/logout": {"post": {
            "summary": "Forget (and revoke) this browser's refresh token",
            "tags": tags, "security": [],
            "responses": {"200": {"description": "signed out", "content": {
                "application/json": {"schema": obj({"signed_out": {"type": "boolean"},
                                                    "revoked": {"type": "boolean"}},
                                                   ["signed_out"])}}},
                "429": err("rate limited")},
        }},
        "/v1/whoami": {"get": {
            "summary": "Who the bearer credential proves: principal (oidc:<sub> for an ID "
                       "token), readable name, roles, and how (token or oidc)",
            "description": "Any signed-in principal, with or without a role.",
            "tags": ["ops"],
            "responses": {"200": {"description": "the principal", "content": {
                "application/json": {"schema": obj({
                    "principal": nullable_str, "name": nullable_str,
                    "roles": {"type": "array", "items": {"type": "string"}},
                    "via": {"type": "string", "enum": ["token", "oidc"]}},
                    ["principal", "name", "roles", "via"])}}},
                "401": err("missing, unknown, expired or otherwise unverifiable credential"),
                "429": err("rate limited"), "503": unavailable},
        }},
    }


def install(app: web.Application, api: Api, spec: dict[str, Any] | None = None) -> None:
    """Adds the sign-in routes and /v1/whoami (and, given the OpenAPI document, their paths);
    the provider's HTTP session is closed with the app."""
    r = app.router
    r.add_get("/v1/auth/config", functools.partial(config, api))
    r.add_get("/v1/auth/login", functools.partial(login, api))
    r.add_get(CALLBACK, functools.partial(callback, api))
    r.add_post("/v1/auth/refresh", functools.partial(refresh, api))
    r.add_post("/v1/auth/logout", functools.partial(logout, api))
    r.add_get("/v1/whoami", functools.partial(whoami, api))
    if spec is not None:
        spec.setdefault("paths", {}).update(_spec_paths())

    async def close(app: web.Application) -> None:
        if api.oidc is not None:
            await api.oidc.close()

    app.on_cleanup.append(close)
