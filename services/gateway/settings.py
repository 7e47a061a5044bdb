"""The gateway's settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.gateway.oidc import OidcSettings
from services.gateway.ratelimit import Network, parse_proxies
from services.gateway.slack import SlackSettings
from services.runtime import cluster_names
from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings


@dataclass(frozen=True)
class GatewaySettings:
    nats: NatsSettings
    host: str
    port: int
    tokens_file: Path | None
    admin_token: str
    heartbeat_s: float = 15.0
    rate_per_s: float = 20.0
    rate_burst: int = 200
    # Requests that fail authentication, per client address.
    auth_failure_rate_per_s: float = 1.0
    auth_failure_burst: int = 20
    sse_streams_per_principal: int = 32
    # Peers whose X-Forwarded-For is believed (reverse proxies); none: the peer address.
    trusted_proxies: tuple[Network, ...] = ()
    # The admin public keys (issue 18): to check enrolments and decisions' signatures early.
    # The gate checks them regardless; without them the gateway only carries.
    admin_keys_file: Path | None = None
    # Sign-in with the company's OpenID Provider (INTERLOCK_OIDC_*; None: static tokens only).
    oidc: OidcSettings | None = None
    # Slack's request URL (issue 20): the bot token, the Web API, where replies may go.
    slack: SlackSettings = field(default_factory=SlackSettings)
    # INTERLOCK_CLUSTERS (issue 21): the clusters a session may name; () = legacy mode.
    clusters: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        tokens = env.get("INTERLOCK_TOKENS_FILE")
        admin = env.get("INTERLOCK_ADMIN_TOKEN", "")
        oidc = OidcSettings.from_env(env)
        if not tokens and not admin and oidc is None:
            raise ConfigError("gateway: set INTERLOCK_TOKENS_FILE or INTERLOCK_ADMIN_TOKEN "
                              "(or INTERLOCK_OIDC_ISSUER)")
        try:
            port = int(env.get("INTERLOCK_HTTP_PORT", "8080"))
            heartbeat = float(env.get("INTERLOCK_SSE_HEARTBEAT", "15"))
            rate = float(env.get("INTERLOCK_RATE_LIMIT", "20"))
            burst = int(env.get("INTERLOCK_RATE_BURST", "200"))
            fail_rate = float(env.get("INTERLOCK_AUTH_FAILURE_RATE", "1"))
            fail_burst = int(env.get("INTERLOCK_AUTH_FAILURE_BURST", "20"))
            streams = int(env.get("INTERLOCK_SSE_STREAMS_PER_PRINCIPAL", "32"))
        except ValueError as exc:
            raise ConfigError(f"gateway: {exc}") from exc
        try:
            proxies = parse_proxies(env.get("INTERLOCK_TRUSTED_PROXIES", ""))
        except ValueError as exc:
            raise ConfigError(f"gateway: INTERLOCK_TRUSTED_PROXIES: {exc}") from exc
        if rate <= 0 or burst < 1:
            raise ConfigError(
                "gateway: INTERLOCK_RATE_LIMIT must be > 0 and INTERLOCK_RATE_BURST >= 1")
        if fail_rate <= 0 or fail_burst < 1:
            raise ConfigError("gateway: INTERLOCK_AUTH_FAILURE_RATE must be > 0 and "
                              "INTERLOCK_AUTH_FAILURE_BURST >= 1")
        if streams < 1:
            raise ConfigError("gateway: INTERLOCK_SSE_STREAMS_PER_PRINCIPAL must be >= 1")
        return cls(
            nats=NatsSettings.from_env("gateway", env),
            host=env.get("INTERLOCK_HTTP_HOST", "127.0.0.1"),
            port=port,
            tokens_file=Path(tokens) if tokens else None,
            admin_token=admin,
            heartbeat_s=min(max(heartbeat, 0.05), 15.0),
            rate_per_s=rate,
            rate_burst=burst,
            auth_failure_rate_per_s=fail_rate,
            auth_failure_burst=fail_burst,
            sse_streams_per_principal=streams,
            trusted_proxies=proxies,
            admin_keys_file=Path(env["INTERLOCK_ADMIN_KEYS_FILE"])
            if env.get("INTERLOCK_ADMIN_KEYS_FILE") else None,
            oidc=oidc,
            slack=SlackSettings.from_env(env),
            clusters=cluster_names.allowed(env),
        )
