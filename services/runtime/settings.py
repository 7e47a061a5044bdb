"""Settings shared by every service, built from the environment once, failing fast."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.subjects import SERVICES as EMITTERS  # each writes events: each signs them
from services.runtime.errors import ConfigError


@dataclass(frozen=True)
class NatsSettings:
    url: str
    user: str
    password: str
    log_level: str = "INFO"
    # The service's own Ed25519 key for the events it writes, and every service's public keys
    # (services/runtime/identity.py). An observer (the notifier) has a keyring and no key.
    signing_key_file: str = ""
    keyring_file: str = ""

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> NatsSettings:
        env = os.environ if env is None else env
        needed = ["INTERLOCK_NATS_PASSWORD", "INTERLOCK_KEYRING_FILE"]
        if service in EMITTERS:
            needed.append("INTERLOCK_SIGNING_KEY_FILE")
        missing = [k for k in needed if not env.get(k)]
        if missing:
            raise ConfigError(f"{service}: missing settings: {', '.join(missing)}")
        return cls(
            url=env.get("INTERLOCK_NATS_URL", "nats://127.0.0.1:4222"),
            user=env.get("INTERLOCK_NATS_USER", service),
            password=env["INTERLOCK_NATS_PASSWORD"],
            log_level=env.get("INTERLOCK_LOG_LEVEL", "INFO"),
            signing_key_file=env.get("INTERLOCK_SIGNING_KEY_FILE", "") if service in EMITTERS
            else "",
            keyring_file=env["INTERLOCK_KEYRING_FILE"],
        )


def require(env: Mapping[str, str], *names: str, service: str) -> None:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise ConfigError(f"{service}: missing settings: {', '.join(missing)}")
