"""What `interlock login` leaves behind, and how the CLI uses it: the OpenID Provider's ID token
(the gateway's bearer credential) and refresh token, per gateway URL, in
`$INTERLOCK_CONFIG_DIR/credentials.json` (default `${XDG_CONFIG_HOME:-~/.config}/interlock/`),
readable by its owner alone (0600, refused when others may read it).

The CLI never verifies a token: the gateway does (signature, issuer, audience, expiry). The only
thing read from the ID token here is its `exp` claim, to know when to refresh it; nothing is
trusted because of it. A token is never printed, logged nor put in an error message.

A refresh (`TokenSource`) happens when the stored ID token expires within REFRESH_MARGIN_S (or a
fraction of its lifetime, for short-lived ones), and once more when the gateway answers 401; it
holds a lock on the store so that two commands do not spend the same (rotating) refresh token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if sys.platform != "win32":
    import fcntl

VERSION = 1
REFRESH_MARGIN_S = 60.0
HTTP_TIMEOUT_S = 30.0


class LoginError(Exception):
    """Signing in (or staying signed in) did not work; the message says what to do. Never holds
    a token."""


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$INTERLOCK_CONFIG_DIR`, else `${XDG_CONFIG_HOME:-~/.config}/interlock`."""
    env = os.environ if env is None else env
    if env.get("INTERLOCK_CONFIG_DIR"):
        return Path(env["INTERLOCK_CONFIG_DIR"]).expanduser()
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "interlock"


def gateway_key(url: str) -> str:
    """The store's key for a gateway: its URL without a trailing slash."""
    return url.strip().rstrip("/")


@dataclass
class Credentials:
    """One sign-in: which provider and client issued it, the tokens (never in repr), and when the
    ID token expires (its `exp`, seconds since the epoch)."""

    issuer: str
    client_id: str
    id_token: str = field(repr=False)
    refresh_token: str = field(repr=False, default="")
    expires_at: float = 0.0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Credentials:
        try:
            return cls(issuer=str(d["issuer"]), client_id=str(d["client_id"]),
                       id_token=str(d["id_token"]),
                       refresh_token=str(d.get("refresh_token") or ""),
                       expires_at=float(d.get("expires_at") or 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise LoginError(f"a stored sign-in is damaged ({type(exc).__name__}); run "
                             "`interlock login` again") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def id_token_times(id_token: str) -> tuple[float, float]:
    """(exp, iat) of an ID token, read — not verified — to schedule its refresh; (0, 0) when
    they cannot be read (then the token is refreshed before each use)."""
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims.get("exp", 0))
        iat = float(claims.get("iat", 0))
    except (IndexError, ValueError, TypeError, AttributeError):
        return 0.0, 0.0
    return exp, iat


def needs_refresh(creds: Credentials, id_token_iat: float = 0.0,
                  now: float | None = None) -> bool:
    """True when the ID token has expired or expires within REFRESH_MARGIN_S (within a fifth of
    its lifetime when that is shorter: a 5-minute token is not refreshed every time)."""
    now = time.time() if now is None else now
    margin = REFRESH_MARGIN_S
    if id_token_iat and creds.expires_at > id_token_iat:
        margin = min(margin, (creds.expires_at - id_token_iat) / 5)
    return creds.expires_at - now <= margin


class Store:
    """The credentials file: {"version": 1, "gateways": {url: Credentials}}, mode 0600, in a
    directory of mode 0700; written whole and atomically."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "credentials.json"

    def _read(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"version": VERSION, "gateways": {}}
        if sys.platform != "win32" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise LoginError(f"{self.path} may be read by others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); it holds your sign-in: "
                             f"`chmod 600 {self.path}` or remove it and `interlock login` again")
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise LoginError(f"cannot read {self.path} ({type(exc).__name__}); remove it and "
                             "`interlock login` again") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("gateways"), dict):
            raise LoginError(f"{self.path} is not an Interlock credentials file; remove it and "
                             "`interlock login` again")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
        self.path.chmod(0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while a sign-in is read, refreshed and written back (other processes wait; on
        Windows, which has no flock, nothing is locked)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if sys.platform == "win32":
            yield
            return
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def get(self, url: str) -> Credentials | None:
        found = self._read()["gateways"].get(gateway_key(url))
        return Credentials.from_json(found) if isinstance(found, dict) else None

    def put(self, url: str, creds: Credentials) -> None:
        doc = self._read()
        doc["gateways"][gateway_key(url)] = creds.to_json()
        doc["version"] = VERSION
        self._write(doc)

    def remove(self, url: str) -> Credentials | None:
        doc = self._read()
        found = doc["gateways"].pop(gateway_key(url), None)
        if found is None:
            return None
        self._write(doc)
        return Credentials.from_json(found)


# -- the provider's endpoints -------------------------------------------------------------------

def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)


async def discover(http: aiohttp.ClientSession, issuer: str) -> dict[str, Any]:
    """The provider's metadata (OpenID Connect Discovery); its `issuer` must be the one asked."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        async with http.get(url, timeout=_timeout()) as r:
            if r.status != 200:
                raise LoginError(f"the identity provider {issuer} answered {r.status} to "
                                 f"{url}: is INTERLOCK_OIDC_ISSUER right?")
            meta = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise LoginError(f"cannot reach the identity provider at {issuer}: "
                         f"{type(exc).__name__} {exc}") from None
    if not isinstance(meta, dict) or meta.get("issuer") != issuer:
        raise LoginError(f"{url} names another issuer ({(meta or {}).get('issuer')!r}): "
                         "not signing in there")
    return meta


class TokenError(LoginError):
    """The token endpoint's OAuth error (`error`, `error_description`)."""

    def __init__(self, error: str, description: str, status: int) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error, self.description, self.status = error, description, status


async def token_request(http: aiohttp.ClientSession, meta: Mapping[str, Any],
                        form: Mapping[str, str]) -> dict[str, Any]:
    """POST a form to the provider's token endpoint (a public client: client_id in the form);
    its JSON answer, or TokenError with the OAuth error."""
    endpoint = meta.get("token_endpoint")
    if not isinstance(endpoint, str):
        raise LoginError(f"the identity provider {meta.get('issuer')} has no token_endpoint")
    try:
        async with http.post(endpoint, data=dict(form), timeout=_timeout(),
                             headers={"Accept": "application/json"}) as r:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = None
            if r.status >= 400 or not isinstance(body, dict) or "error" in body:
                err = body if isinstance(body, dict) else {}
                raise TokenError(str(err.get("error") or f"http_{r.status}"),
                                 str(err.get("error_description") or ""), r.status)
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoginError(f"cannot reach the identity provider's token endpoint {endpoint}: "
                         f"{type(exc).__name__} {exc}") from None


def from_token_response(issuer: str, client_id: str, tokens: Mapping[str, Any],
                        previous: Credentials | None = None) -> Credentials:
    """Credentials from a token response; a refresh that returns no new refresh token keeps the
    old one (a provider that does not rotate them)."""
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise LoginError("the identity provider returned no ID token: the CLI's client must be "
                         "allowed the `openid` scope")
    refresh = tokens.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = previous.refresh_token if previous else ""
    exp, _ = id_token_times(id_token)
    return Credentials(issuer=issuer, client_id=client_id, id_token=id_token,
                       refresh_token=refresh, expires_at=exp)


async def refresh(http: aiohttp.ClientSession, creds: Credentials) -> Credentials:
    """A new ID token for the refresh token (which the provider may rotate)."""
    if not creds.refresh_token:
        raise LoginError("your sign-in has expired and the identity provider gave no refresh "
                         "token: run `interlock login` again")
    meta = await discover(http, creds.issuer)
    try:
        tokens = await token_request(http, meta, {
            "grant_type": "refresh_token", "refresh_token": creds.refresh_token,
            "client_id": creds.client_id})
    except TokenError as exc:
        if exc.error in ("invalid_grant", "unauthorized_client", "invalid_client"):
            raise LoginError(f"your sign-in could not be renewed ({exc.error}: the refresh "
                             "token expired or was revoked): run `interlock login` "
                             "again") from None
        raise
    return from_token_response(creds.issuer, creds.client_id, tokens, creds)


class TokenSource:
    """The bearer credential of a gateway from the store, refreshed when due (Gateway asks it
    before each request, and again with force=True after a 401)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, store: Store) -> None:
        self.http, self.url, self.store = http, gateway_key(url), store
        self.refreshed = 0  # refreshes done by this process (for tests and --verbose)

    @classmethod
    def stored(cls, http: aiohttp.ClientSession, url: str,
               store: Store | None = None) -> TokenSource | None:
        """A source when there is a sign-in stored for this gateway, else None."""
        store = store or Store()
        return cls(http, url, store) if store.get(url) is not None else None

    async def token(self, force: bool = False) -> str:
        creds = self.store.get(self.url)
        if creds is None:
            raise LoginError(f"not signed in to {self.url}: run `interlock login`")
        if not force and not needs_refresh(creds, id_token_times(creds.id_token)[1]):
            return creds.id_token
        async with _Lock(self.store):
            latest = self.store.get(self.url)  # another process may have refreshed meanwhile
            if latest is None:
                raise LoginError(f"not signed in to {self.url}: run `interlock login`")
            if latest.id_token != creds.id_token and not needs_refresh(latest):
                return latest.id_token
            fresh = await refresh(self.http, latest)
            self.store.put(self.url, fresh)
            self.refreshed += 1
            return fresh.id_token


class _Lock:
    """Store.locked() without blocking the event loop while another process holds it."""

    def __init__(self, store: Store) -> None:
        self.cm = store.locked()

    async def __aenter__(self) -> None:
        await asyncio.to_thread(self.cm.__enter__)

    async def __aexit__(self, *exc: object) -> None:
        self.cm.__exit__(None, None, None)
