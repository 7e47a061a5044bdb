"""`interlock login`, `logout` and `whoami`: signing the CLI in with the company's OpenID Provider.

`login` asks the gateway how one signs in (`GET /v1/auth/config`: the provider's issuer and the
CLI's public client id), then runs the OAuth 2.0 device authorization grant (RFC 8628) with that
client: it prints a URL and a code, the person signs in in any browser, and the CLI receives an
ID token and a refresh token. `--browser` runs the authorization code flow with PKCE (S256) and a
redirect to a loopback port of this machine instead (RFC 8252). The tokens are stored per gateway
URL (clients/credentials.py); every other command then sends the ID token as its bearer
credential and refreshes it when due. The gateway verifies the token; the CLI never does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import secrets
import socket
import sys
import time
import webbrowser
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from clients import safe_text
from clients.credentials import (
    Credentials,
    LoginError,
    Store,
    TokenError,
    discover,
    from_token_response,
    gateway_key,
    token_request,
)
from clients.http import ApiError, Gateway, default_url
from clients.output import Out, UsageError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL_S = 5.0  # RFC 8628 §3.2: when the provider names none
SLOW_DOWN_S = 5.0  # RFC 8628 §3.5: added to the interval at each slow_down
DEFAULT_DEVICE_TTL_S = 600.0
BROWSER_WAIT_S = 300.0
CALLBACK_PATH = "/callback"

SETUP = """\
Setting it up (once, by whoever runs the gateway):
  1. At your identity provider (Okta, Entra ID, Keycloak, Dex, Google, ...), register a PUBLIC
     client for the CLI (no client secret; token endpoint auth method "none"), and allow it:
       - the device authorization grant (urn:ietf:params:oauth:grant-type:device_code),
       - refresh tokens (grant refresh_token; scope offline_access where the IdP needs it),
       - for --browser: the authorization code grant with PKCE and the redirect URI
         http://127.0.0.1/callback (a loopback redirect: any port, RFC 8252),
       - the scopes openid profile email groups (groups, or whatever claim your roles map reads).
  2. Give the gateway its id: INTERLOCK_OIDC_CLI_CLIENT_ID=<that client id> beside
     INTERLOCK_OIDC_ISSUER and the Command Center's client (INTERLOCK_OIDC_CLIENT_ID/_SECRET).
     The gateway accepts ID tokens whose audience is either client, and maps their claims to
     roles with INTERLOCK_OIDC_ROLES (e.g. groups:sre-approvers=approver).
  3. Each person: `interlock login --url https://interlock.example.com`, then for approving,
     `interlock keys init` and ask an admin to enrol the key for `oidc:<your subject>`
     (`interlock whoami` shows it).
The sign-in is kept in $INTERLOCK_CONFIG_DIR/credentials.json (default
~/.config/interlock/credentials.json), mode 0600, one per gateway URL; INTERLOCK_TOKEN or --token,
when given, is used instead. `interlock logout` forgets it (and revokes the refresh token).
"""


# -- the gateway's sign-in options --------------------------------------------------------------

async def auth_config(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The gateway's `GET /v1/auth/config`: {oidc: {issuer, client_id, cli_client_id, scopes} |
    null, static_tokens}."""
    try:
        async with http.get(f"{url}/v1/auth/config",
                            timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status == 404:
                raise LoginError(f"{url} offers no sign-in (no /v1/auth/config: an older "
                                 "gateway); use a token (INTERLOCK_TOKEN)")
            if r.status != 200:
                raise LoginError(f"{url} answered {r.status} to /v1/auth/config")
            doc = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise LoginError(f"cannot reach {url}: {type(exc).__name__} {exc}") from None
    if not isinstance(doc, dict):
        raise LoginError(f"{url}/v1/auth/config is not a JSON object")
    return doc


def _oidc(doc: Mapping[str, Any], url: str) -> tuple[str, str, str]:
    """(issuer, the CLI's client id, scopes) of the gateway's provider."""
    oidc = doc.get("oidc")
    if not isinstance(oidc, dict) or not oidc.get("issuer"):
        tokens = " (it takes static tokens: set INTERLOCK_TOKEN)" if doc.get(
            "static_tokens") else ""
        raise LoginError(f"{url} has no identity provider configured{tokens}; its admin sets "
                         "INTERLOCK_OIDC_ISSUER and the clients (see `interlock login --help`)")
    client_id = str(oidc.get("cli_client_id") or oidc.get("client_id") or "")
    if not client_id:
        raise LoginError(f"{url} names no client id for the CLI (INTERLOCK_OIDC_CLI_CLIENT_ID)")
    scopes = str(oidc.get("scopes") or "openid profile email groups offline_access")
    return str(oidc["issuer"]), client_id, scopes


# -- the device authorization grant (RFC 8628) --------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]
Say = Callable[[str], None]


async def device_authorize(http: aiohttp.ClientSession, meta: Mapping[str, Any],
                           client_id: str, scopes: str) -> dict[str, Any]:
    endpoint = meta.get("device_authorization_endpoint")
    if not isinstance(endpoint, str):
        raise LoginError(f"the identity provider {meta.get('issuer')} does not offer the device "
                         "authorization grant; try `interlock login --browser`")
    try:
        async with http.post(endpoint, data={"client_id": client_id, "scope": scopes},
                             headers={"Accept": "application/json"},
                             timeout=aiohttp.ClientTimeout(total=30)) as r:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoginError(f"cannot reach {endpoint}: {type(exc).__name__} {exc}") from None
    if r.status >= 400 or not isinstance(body, dict) or "error" in body:
        err = body if isinstance(body, dict) else {}
        what = str(err.get("error") or f"http_{r.status}")
        hint = (" — is the CLI's client registered as a public client allowed the device "
                "grant? (see `interlock login --help`)"
                if what in ("invalid_client", "unauthorized_client") else "")
        said = f": {err['error_description']}" if err.get("error_description") else ""
        raise LoginError(f"the identity provider refused to start a device sign-in: {what}"
                         f"{said}{hint}")
    for name in ("device_code", "user_code", "verification_uri"):
        if not isinstance(body.get(name), str):
            raise LoginError(f"the identity provider's device answer has no {name}")
    return body


async def poll_device(http: aiohttp.ClientSession, meta: Mapping[str, Any], client_id: str,
                      device: Mapping[str, Any], *, sleep: Sleep = asyncio.sleep,
                      clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Polls the token endpoint at the provider's interval until the person has signed in:
    authorization_pending waits, slow_down adds 5 s to the interval, expired_token,
    access_denied and any other error end it, as does the code's own expiry."""
    interval = float(device.get("interval") or DEFAULT_INTERVAL_S)
    deadline = clock() + float(device.get("expires_in") or DEFAULT_DEVICE_TTL_S)
    form = {"grant_type": DEVICE_GRANT, "device_code": str(device["device_code"]),
            "client_id": client_id}
    while True:
        if clock() + interval > deadline:
            raise LoginError("the sign-in code expired before it was used: run `interlock "
                             "login` again")
        await sleep(interval)
        try:
            return await token_request(http, meta, form)
        except TokenError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += SLOW_DOWN_S
                continue
            if exc.error == "expired_token":
                raise LoginError("the sign-in code expired before it was used: run "
                                 "`interlock login` again") from None
            if exc.error == "access_denied":
                raise LoginError("the sign-in was refused at the identity provider "
                                 "(access_denied)") from None
            raise LoginError(f"the identity provider ended the sign-in: {exc}") from None


async def device_login(http: aiohttp.ClientSession, issuer: str, client_id: str, scopes: str,
                       say: Say, sleep: Sleep = asyncio.sleep) -> Credentials:
    meta = await discover(http, issuer)
    device = await device_authorize(http, meta, client_id, scopes)
    minutes = max(1, round(float(device.get("expires_in") or DEFAULT_DEVICE_TTL_S) / 60))
    say(f"To sign in, open {device['verification_uri']}")
    say(f"and enter the code: {device['user_code']}")
    if isinstance(device.get("verification_uri_complete"), str):
        say(f"(or open {device['verification_uri_complete']})")
    say(f"Waiting for you to sign in at {issuer} (the code is valid for {minutes} min)...")
    tokens = await poll_device(http, meta, client_id, device, sleep=sleep)
    return from_token_response(issuer, client_id, tokens)


# -- authorization code + PKCE with a loopback redirect (RFC 8252, RFC 7636) -------------------

def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_PAGE = ("<!doctype html><meta charset=utf-8><title>Interlock</title>"
         "<p style='font-family:sans-serif'>{}</p>")


async def browser_login(http: aiohttp.ClientSession, issuer: str, client_id: str, scopes: str,
                        say: Say, *, open_browser: bool = True, port: int = 0,
                        wait_s: float = BROWSER_WAIT_S) -> Credentials:
    meta = await discover(http, issuer)
    endpoint = meta.get("authorization_endpoint")
    if not isinstance(endpoint, str):
        raise LoginError(f"the identity provider {issuer} has no authorization_endpoint")
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    got: asyncio.Future[Mapping[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        q = request.query
        if q.get("state") != state:
            return web.Response(status=400, content_type="text/html",
                                text=_PAGE.format("This is not the sign-in Interlock started."))
        if not got.done():
            got.set_result(dict(q))
        ok = "code" in q and "error" not in q
        return web.Response(content_type="text/html", text=_PAGE.format(
            "Signed in: you may close this tab and return to the terminal." if ok
            else "The sign-in did not complete; see the terminal."))

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        await runner.cleanup()
        raise LoginError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    try:
        await web.SockSite(runner, sock).start()
        bound = int(sock.getsockname()[1])
        redirect_uri = f"http://127.0.0.1:{bound}{CALLBACK_PATH}"
        url = endpoint + ("&" if "?" in endpoint else "?") + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": scopes, "state": state, "code_challenge": challenge,
            "code_challenge_method": "S256"})
        say("Sign in in your browser; if it does not open, open this URL:")
        say(url)
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        try:
            answer = await asyncio.wait_for(got, wait_s)
        except TimeoutError:
            raise LoginError(f"no sign-in came back within {wait_s:.0f} s: run `interlock "
                             "login` again") from None
    finally:
        await runner.cleanup()
        sock.close()
    if answer.get("iss") and answer["iss"] != issuer:  # RFC 9207: not another provider's answer
        raise LoginError(f"the sign-in came back from another issuer ({answer['iss']})")
    if "error" in answer:
        raise LoginError(f"the identity provider ended the sign-in: {answer['error']}"
                         + (f": {answer['error_description']}"
                            if answer.get("error_description") else ""))
    if not answer.get("code"):
        raise LoginError("the sign-in came back without a code")
    tokens = await token_request(http, meta, {
        "grant_type": "authorization_code", "code": answer["code"],
        "redirect_uri": redirect_uri, "client_id": client_id, "code_verifier": verifier})
    return from_token_response(issuer, client_id, tokens)


# -- the commands ------------------------------------------------------------------------------

def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _who_line(me: Mapping[str, Any]) -> str:
    principal = str(me.get("principal") or me.get("name") or "?")
    display = str(me.get("name") or "") if "principal" in me else ""
    roles = ", ".join(me.get("roles") or []) or "none"
    return (f"{principal}{f' ({display})' if display and display != principal else ''}; "
            f"roles: {roles}")


async def whoami(gw: Gateway) -> dict[str, Any]:
    """GET /v1/whoami; a gateway without it: /v1/me."""
    try:
        data: dict[str, Any] = await gw.call("GET", "/v1/whoami")
    except ApiError as exc:
        if exc.code not in ("no_route", "not_found") and exc.status != 404:
            raise
        me = await gw.call("GET", "/v1/me")
        data = {"principal": me.get("name"), "name": "", "roles": me.get("roles", []),
                "via": "token" if gw.source is None else "oidc"}
    return data


def check_issuer(issuer: str, expected: str | None, previous: Credentials | None,
                 url: str) -> None:
    """The gateway names the provider a person signs in at: one that changes its mind (or was
    compromised) must not send them to another without their say. `--issuer` pins it; without
    it, a provider other than the last sign-in's is refused."""
    if expected and expected != issuer:
        raise LoginError(f"{url} names the identity provider {issuer}, not {expected} "
                         "(--issuer): not signing in")
    if not expected and previous is not None and previous.issuer != issuer:
        raise LoginError(f"{url} now names the identity provider {issuer}; your last sign-in "
                         f"there was with {previous.issuer}. If that change is expected: "
                         f"`interlock login --issuer {issuer}`")


async def cmd_login(http: aiohttp.ClientSession, args: argparse.Namespace, out: Out) -> int:
    def say(text: str) -> None:  # with --json, stdout carries the result alone
        if out.as_json:
            sys.stderr.write(safe_text.block(text) + "\n")
            sys.stderr.flush()
        else:
            out.line(text)

    url = default_url(args.url)
    issuer, client_id, scopes = _oidc(await auth_config(http, url), url)
    store = Store()
    check_issuer(issuer, args.issuer, store.get(url), url)
    say(f"Signing in to {url} at the identity provider {issuer} (client {client_id})")

    if args.browser:
        creds = await browser_login(http, issuer, client_id, scopes, say,
                                    open_browser=not args.no_open, port=args.port)
    else:
        creds = await device_login(http, issuer, client_id, scopes, say)
    with store.locked():
        store.put(url, creds)
    gw = Gateway(http, url, creds.id_token)
    try:
        me = await whoami(gw)
    except ApiError as exc:
        if exc.status == 401:
            with store.locked():
                store.remove(url)
            raise LoginError(f"signed in at {issuer}, but {url} does not accept the ID token: "
                             f"{exc.message}") from None
        raise
    result = {"gateway": url, "issuer": issuer, "client_id": client_id,
              "principal": me.get("principal"), "name": me.get("name"),
              "roles": me.get("roles", []), "expires_at": _when(creds.expires_at),
              "refreshable": bool(creds.refresh_token), "stored_in": str(store.path)}
    if out.as_json:
        out.data(result)
        return 0
    out.line(safe_text.line(f"Signed in to {url} as {_who_line(me)}"))
    if not me.get("roles"):
        out.line("  You have no role here: the gateway's INTERLOCK_OIDC_ROLES maps none of your "
                 "claims to one; ask its admin.")
    out.line(safe_text.line(f"  ID token valid until {_when(creds.expires_at)}"
                            + ("; renewed with the refresh token when due" if
                               creds.refresh_token else "; no refresh token: log in again then")))
    out.line(safe_text.line(f"  stored in {store.path} (mode 0600)"))
    return 0


async def cmd_logout(http: aiohttp.ClientSession, args: argparse.Namespace, out: Out) -> int:
    url = default_url(args.url)
    store = Store()
    with store.locked():
        creds = store.remove(url)
    if creds is None:
        out.line(safe_text.line(f"not signed in to {url}"))
        return 0
    note = await _revoke(http, creds)
    out.line(safe_text.line(f"signed out of {url}{note}"))
    return 0


async def _revoke(http: aiohttp.ClientSession, creds: Credentials) -> str:
    """Revokes the refresh token at the provider (RFC 7009) when it offers that; best effort."""
    if not creds.refresh_token:
        return ""
    try:
        meta = await discover(http, creds.issuer)
        endpoint = meta.get("revocation_endpoint")
        if not isinstance(endpoint, str):
            return " (the provider offers no revocation: the refresh token lives until it expires)"
        async with http.post(endpoint, data={
                "token": creds.refresh_token, "token_type_hint": "refresh_token",
                "client_id": creds.client_id}, timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status >= 400:
                return f" (the provider answered {r.status} to revoking the refresh token)"
    except (LoginError, aiohttp.ClientError, TimeoutError) as exc:
        return f" (the refresh token could not be revoked: {type(exc).__name__})"
    return "; the refresh token is revoked"


async def cmd_whoami(http: aiohttp.ClientSession, args: argparse.Namespace, out: Out) -> int:
    gw = Gateway.from_env(http, args.url, args.token)
    me = await whoami(gw)
    if out.as_json:
        out.data(me)
        return 0
    out.line(safe_text.line(_who_line(me)))
    if gw.source is not None:
        creds = gw.source.store.get(gw.url)
        if creds is not None:
            out.line(safe_text.line(f"  signed in with {creds.issuer} ({creds.client_id}); ID "
                                    f"token valid until {_when(creds.expires_at)}"))
    else:
        out.line(f"  via {safe_text.line(me.get('via') or 'token')}")
    return 0


COMMANDS: dict[str, Callable[[aiohttp.ClientSession, argparse.Namespace, Out],
                             Awaitable[int]]] = {
    "login": cmd_login, "logout": cmd_logout, "whoami": cmd_whoami}


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (default: $INTERLOCK_URL or "
                                      "http://127.0.0.1:8080)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser(
        "login", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="sign in with your identity provider (OpenID Connect)",
        description="Sign in to a gateway with the identity provider it names (GET "
                    "/v1/auth/config): by default with a code you enter in any browser (OAuth "
                    "2.0 device authorization grant), or with --browser on this machine.\n\n"
                    + SETUP)
    p.add_argument("--issuer", help="the identity provider you expect (its issuer URL): "
                                    "refuse to sign in if the gateway names another; needed "
                                    "when it differs from your last sign-in's")
    p.add_argument("--browser", action="store_true",
                   help="sign in with a browser on this machine (authorization code + PKCE, "
                        "redirect to http://127.0.0.1:<port>/callback)")
    p.add_argument("--no-open", action="store_true",
                   help="with --browser: print the URL instead of opening a browser")
    p.add_argument("--port", type=int, default=0,
                   help="with --browser: the loopback port to receive the redirect on "
                        "(default: any free one)")
    sub.add_parser("logout", parents=[common],
                   help="forget the sign-in for a gateway (and revoke its refresh token)")
    p = sub.add_parser("whoami", parents=[common],
                       help="who the gateway takes you for: principal, name and roles")
    p.add_argument("--token", help="bearer token (default: $INTERLOCK_TOKEN, else the sign-in "
                                   "`interlock login` stored)")


def run(args: argparse.Namespace) -> int:
    out = Out(as_json=args.json)

    async def main() -> int:
        async with aiohttp.ClientSession() as http:
            return await COMMANDS[args.command](http, args, out)

    try:
        return asyncio.run(main())
    except (ApiError, LoginError) as exc:
        sys.stderr.write(f"interlock {args.command}: {safe_text.line(exc)}\n")
        return 1
    except UsageError as exc:
        sys.stderr.write(f"interlock {args.command}: {safe_text.line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["COMMANDS", "add_parsers", "gateway_key", "run"]
