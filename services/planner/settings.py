"""The planner's settings, from the environment, built once and failing fast."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings

DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class ModelSettings:
    """An OpenAI-compatible chat model. No model configured means direct mode."""

    model: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)  # never logged, never in an event
    temperature: float | None = None
    max_iterations: int = 12  # model steps per turn
    retries: int = 4  # of one model call, on rate limits and transient errors
    retry_base_s: float = 1.0
    retry_max_s: float = 30.0
    timeout_s: float = 120.0
    context_tokens: int = 32_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ModelSettings | None:
        model = env.get("INTERLOCK_MODEL", "").strip()
        key = env.get("OPENAI_API_KEY", "").strip()
        if not model and not key:
            return None
        errors: list[str] = []

        def number(name: str, default: float, lo: float, hi: float, integer: bool) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                errors.append(f"{name} must be a {'whole ' if integer else ''}number")
                return default
            if not lo <= value <= hi:
                errors.append(f"{name} must be between {lo:g} and {hi:g}")
            return value

        temperature = (number("INTERLOCK_TEMPERATURE", 0, 0, 2, False)
                       if env.get("INTERLOCK_TEMPERATURE", "").strip() else None)
        out = cls(
            model=model or DEFAULT_MODEL,
            base_url=env.get("OPENAI_BASE_URL", "").strip(),
            api_key=key,
            temperature=temperature,
            max_iterations=int(number("INTERLOCK_MAX_ITERATIONS", 12, 1, 100, True)),
            retries=int(number("INTERLOCK_MODEL_RETRIES", 4, 0, 20, True)),
            retry_base_s=number("INTERLOCK_MODEL_RETRY_BASE", 1.0, 0, 60, False),
            timeout_s=number("INTERLOCK_MODEL_TIMEOUT", 120.0, 1, 3600, False),
            context_tokens=int(number("INTERLOCK_CONTEXT_TOKENS", 32_000, 2_000, 2_000_000,
                                      True)),
        )
        if errors:
            raise ConfigError(f"planner: invalid settings: {'; '.join(errors)}")
        return out


@dataclass(frozen=True)
class PlannerSettings:
    nats: NatsSettings
    model: ModelSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannerSettings:
        env = os.environ if env is None else env
        return cls(nats=NatsSettings.from_env("planner", env), model=ModelSettings.from_env(env))
