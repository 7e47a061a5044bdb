"""Signing in with the company's OpenID Provider: the bearer credential is the provider's ID token
(a JWT, as kube-apiserver's OIDC authentication takes it), verified here with joserfc against
the issuer's published keys — never by hand.

- Settings (`OidcSettings.from_env`): INTERLOCK_OIDC_ISSUER turns it on; the Command Center's
  confidential client (INTERLOCK_OIDC_CLIENT_ID / _CLIENT_SECRET), the CLI's public client
  (INTERLOCK_OIDC_CLI_CLIENT_ID, default the same id), the claim → role map
  (INTERLOCK_OIDC_ROLES, `RoleMap`), the scopes the Command Center asks for.
- `Verifier`: discovery (`<issuer>/.well-known/openid-configuration`, its `issuer` must be the
  configured one), the JWKS from its `jwks_uri`, cached; a token signed with a key id the cache
  does not hold makes one refetch (at most one per INTERLOCK_OIDC_JWKS_REFRESH_MIN seconds, so
  a flood of made-up key ids cannot hammer the provider): a rotated key is picked up without a
  restart. The algorithm is the key's, never the token header's choice: no `none`, no HMAC.
- The principal is `oidc:<sub>`: the provider's subject, which no tokens.json name can be (a
  display name is shown beside it, never recorded as who acted).

Rejections say why (expired, wrong audience, unknown key, …) and never carry the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey

from services.gateway.auth import ROLES, Principal
from services.runtime.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SCOPES = "openid profile email groups offline_access"
PREFIX = "oidc:"
# Clock skew tolerated on exp / nbf / iat, in seconds.
LEEWAY_S = 30
# The most clock skew an operator may allow (INTERLOCK_OIDC_CLOCK_SKEW): an expired token stays
# expired.
MAX_LEEWAY_S = 300
# Asymmetric signature algorithms by key type (and curve): a key is only ever used with its own.
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGS = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512",),
            "secp256k1": ("ES256K",)}
_OKP_ALGS = {"Ed25519": ("EdDSA", "Ed25519"), "Ed448": ("EdDSA", "Ed448")}
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TOKEN = 16_384


def looks_like_jwt(token: str) -> bool:
    return len(token) <= MAX_TOKEN and _JWT_SHAPE.match(token) is not None


class Rejected(Exception):
    """A token that does not prove anyone: `message` says why, never quoting the token."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Unavailable(Rejected):
    """The provider cannot be reached (discovery or keys): nobody's fault but the network's."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


# -- the claim → role map ------------------------------------------------------------------------

_RULE = re.compile(r"^(?P<claim>[A-Za-z0-9_.-]+):(?P<value>[^=]+)=(?P<role>[a-z]+)$")


@dataclass(frozen=True)
class RoleRule:
    claim: str   # a claim name; dots walk into objects (`realm_access.roles`)
    value: str   # the value to match exactly, or `*`: the claim is there with any value
    role: str

    def matches(self, claims: Mapping[str, Any]) -> bool:
        found: Any = claims
        for part in self.claim.split("."):
            if not isinstance(found, Mapping) or part not in found:
                return False
            found = found[part]
        values = found if isinstance(found, list) else [found]
        values = [v for v in values if isinstance(v, str | int | bool) and str(v) != ""]
        if self.value == "*":
            return bool(values)
        return any(str(v) == self.value for v in values)


@dataclass(frozen=True)
class RoleMap:
    """INTERLOCK_OIDC_ROLES: comma-separated rules `claim:value=role`. A rule matches when the
    verified token's claim (a string, or a list of strings such as `groups`) holds `value`;
    `claim:*=role` matches any value. A person gets the role of every rule they match (roles
    add up); matching none, they get no role and every route answers 403. Roles: viewer,
    operator, approver, admin. Example:
    `groups:sre-approvers=approver,groups:sre=operator,groups:*=viewer`."""

    rules: tuple[RoleRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> RoleMap:
        rules = []
        for raw in re.split(r"[,\n]", text):
            item = raw.strip()
            if not item:
                continue
            m = _RULE.match(item)
            if m is None:
                raise ConfigError(f"INTERLOCK_OIDC_ROLES: {item[:100]!r} is not claim:value=role "
                                  "(e.g. groups:sre-approvers=approver)")
            if m["role"] not in ROLES:
                raise ConfigError(f"INTERLOCK_OIDC_ROLES: unknown role {m['role']!r} in "
                                  f"{item[:100]!r}; one of {', '.join(ROLES)}")
            rules.append(RoleRule(m["claim"], m["value"].strip(), m["role"]))
        return cls(tuple(rules))

    def roles(self, claims: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(r.role for r in self.rules if r.matches(claims))


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False, default="")
    cli_client_id: str = ""
    roles: RoleMap = RoleMap()
    scopes: str = DEFAULT_SCOPES
    # The Command Center's redirect URI as registered at the provider; "" → this gateway's
    # own address as the browser reached it, + /v1/auth/callback.
    redirect_uri: str = ""
    jwks_refresh_min_s: float = 10.0
    leeway_s: int = LEEWAY_S

    @property
    def audiences(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a for a in (self.client_id, self.cli_client_id) if a))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OidcSettings | None:
        env = os.environ if env is None else env
        issuer = env.get("INTERLOCK_OIDC_ISSUER", "").strip().rstrip("/")
        if not issuer:
            return None
        parts = urlsplit(issuer)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ConfigError("INTERLOCK_OIDC_ISSUER must be an https:// URL (http:// only on "
                              f"loopback): {issuer[:200]!r}")
        client_id = env.get("INTERLOCK_OIDC_CLIENT_ID", "").strip()
        cli_id = env.get("INTERLOCK_OIDC_CLI_CLIENT_ID", "").strip() or client_id
        if not client_id and not cli_id:
            raise ConfigError("INTERLOCK_OIDC_ISSUER is set: set INTERLOCK_OIDC_CLIENT_ID too "
                              "(and INTERLOCK_OIDC_CLIENT_SECRET for the Command Center)")
        try:
            refresh = float(env.get("INTERLOCK_OIDC_JWKS_REFRESH_MIN") or "10")
        except ValueError as exc:
            raise ConfigError(f"INTERLOCK_OIDC_JWKS_REFRESH_MIN: {exc}") from exc
        try:
            skew = int(env.get("INTERLOCK_OIDC_CLOCK_SKEW") or LEEWAY_S)
        except ValueError as exc:
            raise ConfigError(f"INTERLOCK_OIDC_CLOCK_SKEW: {exc}") from exc
        if not 0 <= skew <= MAX_LEEWAY_S:
            raise ConfigError(f"INTERLOCK_OIDC_CLOCK_SKEW must be 0..{MAX_LEEWAY_S} seconds")
        return cls(
            issuer=issuer, client_id=client_id,
            client_secret=env.get("INTERLOCK_OIDC_CLIENT_SECRET", ""),
            cli_client_id=cli_id,
            roles=RoleMap.parse(env.get("INTERLOCK_OIDC_ROLES", "")),
            scopes=" ".join(env.get("INTERLOCK_OIDC_SCOPES", DEFAULT_SCOPES).split())
            or DEFAULT_SCOPES,
            redirect_uri=env.get("INTERLOCK_OIDC_REDIRECT_URI", "").strip(),
            jwks_refresh_min_s=max(0.0, refresh),
            leeway_s=skew,
        )


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What a verified ID token proves."""

    principal: Principal
    claims: dict[str, Any]
    expires_at: int


def readable_name(claims: Mapping[str, Any]) -> str:
    for key in ("name", "preferred_username", "email"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    return ""


def algorithms_for(key: Key) -> tuple[str, ...]:
    """The algorithms a published key may verify: its own `alg` if it names one (an asymmetric
    one), else those of its type and curve. Never `none`, never HMAC (a public key is public:
    an HS256 "signature" with it proves nothing)."""
    if isinstance(key, RSAKey):
        allowed: tuple[str, ...] = _RSA_ALGS
    elif isinstance(key, ECKey):
        allowed = _EC_ALGS.get(str(key.curve_name), ())
    elif isinstance(key, OKPKey):
        allowed = _OKP_ALGS.get(str(key.curve_name), ())
    else:
        allowed = ()
    alg = key.get("alg")
    if isinstance(alg, str) and alg:
        return (alg,) if alg in allowed else ()
    return allowed


class Verifier:
    """The issuer's discovery document and keys, and ID-token verification against them."""

    def __init__(self, settings: OidcSettings, clock: Any = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._discovery: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.jwks_fetches = 0

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self.http().get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise Unavailable(f"the identity provider's {what} answered {resp.status}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"the identity provider's {what} cannot be read: "
                              f"{type(exc).__name__}") from exc
        if not isinstance(doc, dict):
            raise Unavailable(f"the identity provider's {what} is not a JSON object")
        return doc

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            issuer = self.settings.issuer
            doc = await self._get_json(f"{issuer}/.well-known/openid-configuration",
                                       "discovery document")
            if str(doc.get("issuer", "")).rstrip("/") != issuer:
                raise Unavailable(f"the discovery document names issuer "
                                  f"{str(doc.get('issuer'))[:200]!r}, not {issuer!r}")
            for name in ("jwks_uri", "authorization_endpoint", "token_endpoint"):
                if not isinstance(doc.get(name), str):
                    raise Unavailable(f"the discovery document has no {name}")
            self._discovery = doc
        return self._discovery

    async def _fetch_keys(self) -> KeySet:
        doc = await self._get_json((await self.discovery())["jwks_uri"], "key set (JWKS)")
        keys = []
        for entry in doc.get("keys", []) if isinstance(doc.get("keys"), list) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = KeySet.import_key_set({"keys": [entry]}).keys[0]
            except (JoseError, ValueError, TypeError):
                continue  # a key of a kind joserfc does not know: not one we can verify with
            if algorithms_for(key):
                keys.append(key)
        self.jwks_fetches += 1
        return KeySet(keys)

    async def key_for(self, kid: str | None) -> Key:
        """The published key with this id; an id the cache does not hold makes one refetch (a
        rotated key), at most once per jwks_refresh_min_s."""
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._lookup(kid)  # fetched while we waited
            if found is not None:
                return found
            now = time.monotonic()
            if self._keys is None or now - self._fetched_at >= self.settings.jwks_refresh_min_s:
                self._fetched_at = now
                self._keys = await self._fetch_keys()
                found = self._lookup(kid)
        if found is None:
            raise Rejected("the token is signed with a key the identity provider does not "
                           f"publish (unknown key id {str(kid)[:80]!r})")
        return found

    def _lookup(self, kid: str | None) -> Key | None:
        if self._keys is None:
            return None
        keys = list(self._keys)
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((k for k in keys if k.kid == kid), None)

    async def verify(self, token: str, *, audience: str | None = None,
                     nonce: str | None = None) -> Identity:
        """The identity an ID token proves, or Rejected saying why. `audience`: the one client
        it must be for (the Command Center's callback); by default either of ours."""
        if not looks_like_jwt(token):
            raise Rejected("not a JWT")
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, TypeError) as exc:
            raise Rejected("the token's header cannot be read") from exc
        kid = header.get("kid")
        key = await self.key_for(kid if isinstance(kid, str) else None)
        algs = algorithms_for(key)
        if header.get("alg") not in algs:
            raise Rejected(f"the token's algorithm {str(header.get('alg'))[:20]!r} is not its "
                           f"key's ({', '.join(algs)})")
        try:
            decoded = jwt.decode(token, key, algorithms=list(algs))
        except BadSignatureError as exc:
            raise Rejected("bad signature") from exc
        except JoseError as exc:
            raise Rejected(f"the token cannot be verified: {exc.error}") from exc
        claims = decoded.claims
        self._check_claims(claims, audience, nonce)
        sub = claims["sub"]
        roles = self.settings.roles.roles(claims)
        principal = Principal(PREFIX + sub, roles, display=readable_name(claims), via="oidc")
        return Identity(principal, claims, int(claims["exp"]))

    def _check_claims(self, claims: dict[str, Any], audience: str | None,
                      nonce: str | None) -> None:
        s = self.settings
        accepted = [audience] if audience else list(s.audiences)
        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock()), leeway=s.leeway_s,
            iss={"essential": True, "value": s.issuer},
            sub={"essential": True},
            aud={"essential": True, "values": accepted},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise Rejected("the token has expired; sign in again (or refresh)") from exc
        except MissingClaimError as exc:
            raise Rejected(f"the token has no {exc.claim} claim") from exc
        except InvalidClaimError as exc:
            raise Rejected(self._claim_problem(exc.claim, claims)) from exc
        except JoseError as exc:
            raise Rejected(f"the token's claims do not verify: {exc.error}") from exc
        sub = claims["sub"]
        if not isinstance(sub, str) or not 0 < len(sub) <= 255:
            raise Rejected("the token's sub claim is not a subject")
        azp = claims.get("azp")
        if azp is not None and azp not in accepted:
            raise Rejected(f"wrong audience: the token was issued to {str(azp)[:100]!r}")
        if nonce is not None and claims.get("nonce") != nonce:
            raise Rejected("the ID token's nonce is not this sign-in's")

    def _claim_problem(self, claim: str, claims: Mapping[str, Any]) -> str:
        if claim == "aud":
            return (f"wrong audience: the token is for {str(claims.get('aud'))[:100]!r}, not "
                    f"for {' or '.join(self.settings.audiences)}")
        if claim == "iss":
            return (f"wrong issuer: the token was issued by {str(claims.get('iss'))[:200]!r}, "
                    f"not {self.settings.issuer}")
        if claim == "nbf":
            return "the token is not valid yet (nbf)"
        if claim == "iat":
            return "the token was issued in the future (iat)"
        return f"the token's {claim} claim is invalid"
