"""The notifier's settings, from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings

Format = Literal["json", "slack"]


@dataclass(frozen=True)
class Webhook:
    url: str
    format: Format = "json"

    @property
    def where(self) -> str:
        """Scheme and host only: webhook paths often carry secrets (Slack's do)."""
        m = re.match(r"^(https?://[^/?#]+)", self.url)
        return m.group(1) if m else "?"


@dataclass(frozen=True)
class SlackSettings:
    """The Slack app's bot: it posts each approval to one channel and updates it in place."""

    bot_token: str = ""
    channel: str = ""
    api_url: str = "https://slack.com/api/"
    # Where the notifier remembers each message (channel and ts) to update it later.
    state_dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token and self.channel and self.state_dir)

    def __repr__(self) -> str:  # never the token, wherever settings get printed
        return (f"SlackSettings(channel={self.channel!r}, api_url={self.api_url!r}, "
                f"state_dir={self.state_dir!r}, bot_token={'set' if self.bot_token else ''!r})")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlackSettings:
        token = env.get("INTERLOCK_SLACK_BOT_TOKEN", "").strip()
        channel = env.get("INTERLOCK_SLACK_CHANNEL", "").strip()
        api_url = env.get("INTERLOCK_SLACK_API_URL", "").strip() or "https://slack.com/api/"
        state = env.get("INTERLOCK_NOTIFIER_STATE_DIR", "").strip()
        if not token or not channel:
            # The bot token alone is the gateway's (it opens the Deny dialog): no messages
            # without a channel to post them to. `interlock up` refuses that before starting.
            return cls(bot_token=token, api_url=api_url)
        if not state:
            raise ConfigError("notifier: INTERLOCK_SLACK_BOT_TOKEN and INTERLOCK_SLACK_CHANNEL "
                              "are set; also set INTERLOCK_NOTIFIER_STATE_DIR (where it keeps "
                              "which message shows which approval)")
        if not re.match(r"^https?://[^/\s]+", api_url):
            raise ConfigError(f"notifier: INTERLOCK_SLACK_API_URL is not an http(s) URL: "
                              f"{api_url[:40]!r}")
        return cls(bot_token=token, channel=channel,
                   api_url=api_url if api_url.endswith("/") else api_url + "/",
                   state_dir=Path(state))


@dataclass(frozen=True)
class NotifierSettings:
    nats: NatsSettings
    webhooks: tuple[Webhook, ...]
    secret: str
    public_url: str
    attempts: int = 5
    timeout_s: float = 5.0
    backoff_s: float = 0.5
    max_age_s: float = 3600.0
    slack: SlackSettings = SlackSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierSettings:
        env = os.environ if env is None else env
        hooks = tuple(parse_webhook(u) for u in re.split(r"[,\s]+",
                                                         env.get("INTERLOCK_WEBHOOKS", "")) if u)
        secret = env.get("INTERLOCK_WEBHOOK_SECRET", "")
        if hooks and len(secret) < 16:
            raise ConfigError("notifier: INTERLOCK_WEBHOOK_SECRET (16+ characters) signs the "
                              "webhooks; set it")
        try:
            attempts = int(env.get("INTERLOCK_WEBHOOK_ATTEMPTS", "5"))
            timeout = float(env.get("INTERLOCK_WEBHOOK_TIMEOUT", "5"))
            backoff = float(env.get("INTERLOCK_WEBHOOK_BACKOFF", "0.5"))
            max_age = float(env.get("INTERLOCK_NOTIFY_MAX_AGE", "3600"))
        except ValueError as exc:
            raise ConfigError(f"notifier: {exc}") from exc
        return cls(
            nats=NatsSettings.from_env("notifier", env),
            webhooks=hooks,
            secret=secret,
            public_url=env.get("INTERLOCK_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/"),
            attempts=max(1, min(attempts, 20)),
            timeout_s=max(0.1, timeout),
            backoff_s=max(0.01, backoff),
            max_age_s=max_age,
            slack=SlackSettings.from_env(env),
        )


def parse_webhook(spec: str) -> Webhook:
    """`https://…` posts Interlock's JSON; `slack+https://…` posts a Slack-compatible message."""
    fmt: Format = "json"
    if spec.startswith("slack+"):
        fmt, spec = "slack", spec.removeprefix("slack+")
    if not re.match(r"^https?://[^/\s]+", spec):
        raise ConfigError(f"notifier: not an http(s) webhook URL: {spec[:40]!r}…")
    return Webhook(spec, fmt)
