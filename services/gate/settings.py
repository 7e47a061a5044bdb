"""The gate's settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.gate.policy import Policy, load
from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings, require


@dataclass(frozen=True)
class GateSettings:
    nats: NatsSettings
    key_file: Path
    # The admin public keys whose enrolments the gate believes (issue 18): required, since no
    # decision counts without an enrolled approver's signature.
    admin_keys_file: Path
    approval_ttl_s: float = 900.0
    policy: Policy = field(default_factory=Policy)
    history_window_s: float = 3600.0
    # Slack's signing secret (issue 20): the gate alone checks Slack clicks with it (the gateway
    # never holds it, so it cannot forge one). Without it every Slack decision is rejected.
    slack_signing_secret: str | None = field(default=None, repr=False)
    # The clusters this deployment serves (issue 21, INTERLOCK_CLUSTERS; the first is the
    # default). () = legacy mode: one executor for the contexts it allows.
    clusters: tuple[str, ...] = ()
    # How often executors report their presence: a cluster none reported for within three
    # intervals is not connected, and its calls are refused before any card.
    presence_interval_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GateSettings:
        env = os.environ if env is None else env
        require(env, "INTERLOCK_NATS_PASSWORD", "INTERLOCK_GATE_KEY_FILE",
                "INTERLOCK_ADMIN_KEYS_FILE", service="gate")
        try:
            ttl = float(env.get("INTERLOCK_APPROVAL_TTL", "900"))
        except ValueError as exc:
            raise ConfigError("INTERLOCK_APPROVAL_TTL must be a number of seconds") from exc
        if ttl <= 0:
            raise ConfigError("INTERLOCK_APPROVAL_TTL must be positive")
        return cls(
            nats=NatsSettings.from_env("gate", env),
            key_file=Path(env["INTERLOCK_GATE_KEY_FILE"]),
            admin_keys_file=Path(env["INTERLOCK_ADMIN_KEYS_FILE"]),
            approval_ttl_s=ttl,
            policy=load(Path(env["INTERLOCK_POLICY_FILE"]) if env.get("INTERLOCK_POLICY_FILE")
                        else None),
            slack_signing_secret=env.get("INTERLOCK_SLACK_SIGNING_SECRET", "").strip() or None,
            clusters=clusters_of(env),
            presence_interval_s=float(env.get("INTERLOCK_PRESENCE_INTERVAL", "5")),
        )


def clusters_of(env: Mapping[str, str]) -> tuple[str, ...]:
    """INTERLOCK_CLUSTERS: a comma list, each name once, in order (the first is the default)."""
    names = [c.strip() for c in env.get("INTERLOCK_CLUSTERS", "").split(",") if c.strip()]
    return tuple(dict.fromkeys(names))
