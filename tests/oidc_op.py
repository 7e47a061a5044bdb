"""A real OpenID Provider for the OIDC tests: panva's certified `oidc-provider` (npm, pinned in
tests/e2e/oidc_node/package-lock.json, installed there with `npm ci` when missing), run by Node on
loopback. `start_op(tmp_path, gateway_url)` starts it and returns an `Op`.

What the OP knows:
- clients: `interlock-web` (confidential, `client_secret_basic`, redirect
  `<gateway_url>/v1/auth/callback`, post-logout redirect `<gateway_url>/`, authorization_code +
  refresh_token, PKCE S256 required) and `interlock-cli` (public, `none` auth, native: device_code,
  refresh_token and authorization_code with the loopback redirect `http://127.0.0.1:<any
  port>/callback`, PKCE required);
  and `other-app` (public, device_code only: another application's ID tokens);
- accounts: alice (groups [sre-approvers]), bob (groups [sre]), carol (no groups); the ID token
  carries sub (= the login), name, preferred_username, email, email_verified and groups for the
  scopes `openid profile email groups` (offline_access is accepted; a refresh token is issued to
  both clients whatever the scope, and rotated on every use by the public CLI client);
- login: the OP's devInteractions form (`login`, any `password`); consent is granted without a
  page, so a browser or a plain HTTP client gets from the login form straight back to the client.

`Op.rotate()` restarts the OP on the same port with a NEW signing key listed first in its JWKS;
by default the old key stays published (tokens signed before still verify; what a real IdP does
during a rotation), `rotate(keep_old=False)` drops it (tokens signed before no longer verify).
Sessions, grants and refresh tokens survive the restart (kept in a file in the OP's directory).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from launcher.nats import free_port
from tests.node_packages import node_with

NODE_DIR = Path(__file__).parent / "e2e" / "oidc_node"
WEB_CLIENT_ID = "interlock-web"
CLI_CLIENT_ID = "interlock-cli"
ACCOUNTS = {"alice": ["sre-approvers"], "bob": ["sre"], "carol": []}
# The gateway's claim → role map that matches the accounts (INTERLOCK_OIDC_ROLES).
ROLES = "groups:sre-approvers=approver,groups:sre=operator"
START_WAIT_S = 30.0   # bounds, not expectations
STOP_WAIT_S = 10.0
HTTP_WAIT_S = 30.0


def node() -> str:
    """Node on PATH, with the pinned oidc-provider installed (once; kept in node_modules)."""
    return node_with(NODE_DIR, "the OIDC tests run a real OpenID Provider (oidc-provider from "
                     "npm) with it")


@dataclass
class Op:
    """A running OpenID Provider (one Node process); `issuer` is http://127.0.0.1:<port>."""

    dir: Path
    port: int
    gateway_url: str
    id_token_ttl: int
    device_interval: int = 1
    web_client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cookie_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    web_client_id = WEB_CLIENT_ID
    cli_client_id = CLI_CLIENT_ID

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "op.log"

    def gateway_env(self, roles: str = ROLES) -> dict[str, str]:
        """The INTERLOCK_OIDC_* env that points a stack's gateway at this OP."""
        return {"INTERLOCK_OIDC_ISSUER": self.issuer,
                "INTERLOCK_OIDC_CLIENT_ID": WEB_CLIENT_ID,
                "INTERLOCK_OIDC_CLIENT_SECRET": self.web_client_secret,
                "INTERLOCK_OIDC_CLI_CLIENT_ID": CLI_CLIENT_ID,
                "INTERLOCK_OIDC_ROLES": roles}

    def signing_kids(self) -> list[str]:
        """The key ids in the OP's key file, the signing one first."""
        keys = json.loads((self.dir / "keys.json").read_text())["keys"]
        return [str(k["kid"]) for k in keys]

    def _start(self, rotate: str | None = None) -> None:
        env = {**os.environ,
               "OP_PORT": str(self.port), "OP_GATEWAY_URL": self.gateway_url,
               "OP_WEB_SECRET": self.web_client_secret, "OP_COOKIE_KEY": self.cookie_key,
               "OP_ID_TOKEN_TTL": str(self.id_token_ttl),
               "OP_DEVICE_INTERVAL": str(self.device_interval),
               "OP_KEYS_FILE": str(self.dir / "keys.json"),
               "OP_STATE_FILE": str(self.dir / "state.json")}
        env.pop("OP_ROTATE", None)
        if rotate:
            env["OP_ROTATE"] = rotate
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts} (rotate={rotate})\n".encode())
            log.flush()
            self.proc = subprocess.Popen([node(), str(NODE_DIR / "op.mjs")], cwd=NODE_DIR,
                                         env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_WAIT_S
        url = f"{self.issuer}/.well-known/openid-configuration"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OP exited ({self.proc.returncode}):\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if json.load(r).get("issuer") == self.issuer:
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the OP did not answer within {START_WAIT_S}s:\n"
                                   f"{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_WAIT_S)

    def rotate(self, *, keep_old: bool = True) -> str:
        """Restart on the same port with a new signing key first in the JWKS; the old key stays
        published (keep_old) or is dropped. Returns the new key's kid."""
        self.stop()
        self._start("keep" if keep_old else "drop")
        return self.signing_kids()[0]


def start_op(tmp_path: Path, gateway_url: str, *, id_token_ttl: int = 300,
             device_interval: int = 1, port: int | None = None) -> Op:
    """Start the OP (in tmp_path/op) for a gateway at gateway_url; the caller stops it.
    device_interval: the polling interval the device flow names (1 s: tests wait less)."""
    d = Path(tmp_path) / "op"
    d.mkdir(parents=True, exist_ok=True)
    op = Op(dir=d, port=port or free_port(), gateway_url=gateway_url.rstrip("/"),
            id_token_ttl=id_token_ttl, device_interval=device_interval)
    op._start()
    return op


# ---- completing the OP's pages without a browser -------------------------------------------

class _Forms(HTMLParser):
    """The forms of a page: (id, action, {name: value}) of their hidden/text inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self._in: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._in = {}
            self.forms.append((a.get("id", ""), a.get("action", ""), self._in))
        elif tag == "input" and a.get("name"):
            target = self._in
            if target is None and a.get("form"):
                target = next((f[2] for f in self.forms if f[0] == a["form"]), None)
            if target is not None:
                target[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in = None


def forms(html: str) -> list[tuple[str, str, dict[str, str]]]:
    p = _Forms()
    p.feed(html)
    return p.forms


def http_session() -> aiohttp.ClientSession:
    """A client that keeps the OP's cookies (on 127.0.0.1: aiohttp needs `unsafe` for IPs)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=HTTP_WAIT_S))


class OpPageError(AssertionError):
    pass


async def _submit(http: aiohttp.ClientSession, page_url: str, html: str, form_id: str | None,
                  extra: dict[str, str]) -> tuple[str, str]:
    found = [f for f in forms(html) if form_id is None or f[0] == form_id]
    if not found:
        raise OpPageError(f"no form {form_id or ''} on {page_url}: {_text(html)[:400]}")
    _, action, fields = found[0]
    async with http.post(urljoin(page_url, action), data={**fields, **extra}) as r:
        return str(r.url), await r.text()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S))


async def sign_in(http: aiohttp.ClientSession, url: str, html: str, login: str,
                  password: str = "any") -> tuple[str, str]:
    """Fill the OP's dev login form on the page (url, html); returns where it ended."""
    if 'name="login"' not in html:
        raise OpPageError(f"no login form at {url}: {_text(html)[:400]}")
    login_form = next(f for f in forms(html) if f[2].get("prompt") == "login")
    async with http.post(urljoin(url, login_form[1]),
                         data={"prompt": "login", "login": login, "password": password}) as r:
        url, html = str(r.url), await r.text()
    # the fixture's OP grants consent without a page; an OP configured otherwise shows one
    consent = [f for f in forms(html) if f[2].get("prompt") == "consent"]
    if consent:
        async with http.post(urljoin(url, consent[0][1]), data={"prompt": "consent"}) as r:
            url, html = str(r.url), await r.text()
    return url, html


async def complete_device(op: Op | str, user_code: str, login: str, *,
                          deny: bool = False) -> str:
    """Do what a person does on the OP's device page with a user code: enter it, confirm, sign in
    as `login` (or abort when deny). Returns the text of the OP's last page."""
    issuer = op.issuer if isinstance(op, Op) else op
    async with http_session() as http:
        async with http.get(f"{issuer}/device") as r:
            url, html = str(r.url), await r.text()
        url, html = await _submit(http, url, html, "op.deviceInputForm", {"user_code": user_code})
        if deny:
            url, html = await _submit(http, url, html, "op.deviceConfirmForm", {"abort": "yes"})
            return _text(html)
        url, html = await _submit(http, url, html, "op.deviceConfirmForm", {})
        url, html = await sign_in(http, url, html, login)
        text = _text(html)
        if "Sign-in Success" not in text and "success" not in text.lower():
            raise OpPageError(f"the device sign-in did not succeed at {url}: {text[:400]}")
        return text


async def device_id_token(op: Op, client_id: str, login: str) -> str:
    """An ID token the OP issues to `client_id` for `login` through the device flow (RFC 8628),
    over plain HTTP: what any other application of the company could hold."""
    async with http_session() as http:
        async with http.get(f"{op.issuer}/.well-known/openid-configuration") as r:
            meta = await r.json()
        async with http.post(meta["device_authorization_endpoint"],
                             data={"client_id": client_id, "scope": "openid profile"}) as r:
            started = await r.json()
        await complete_device(op, started["user_code"], login)
        async with http.post(meta["token_endpoint"], data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": started["device_code"], "client_id": client_id}) as r:
            tokens = await r.json()
        if "id_token" not in tokens:
            raise OpPageError(f"no ID token for {client_id}: {tokens.get('error')}")
        return str(tokens["id_token"])


async def complete_authorization(http: aiohttp.ClientSession, start_url: str,
                                 login: str) -> tuple[str, str]:
    """Follow an authorization request (e.g. the gateway's /v1/auth/login, or an OP /auth URL)
    through the OP's login form as `login`, following redirects back to the client.
    Returns (final URL, body). Pass a session from http_session() (cookies on 127.0.0.1)."""
    async with http.get(start_url) as r:
        url, html = str(r.url), await r.text()
    if 'name="login"' in html:
        url, html = await sign_in(http, url, html, login)
    return url, html


async def browser_sign_in(page: Any, login: str, password: str = "any",
                          timeout_ms: int = 30_000) -> None:
    """On a playwright page showing the OP's login form: sign in as `login`."""
    await page.wait_for_selector('input[name="login"]', timeout=timeout_ms)
    await page.fill('input[name="login"]', login)
    await page.fill('input[name="password"]', password)
    await page.click('button[type="submit"]', timeout=timeout_ms)
