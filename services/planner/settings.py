"""The planner's settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.runtime.settings import NatsSettings


@dataclass(frozen=True)
class PlannerSettings:
    nats: NatsSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannerSettings:
        env = os.environ if env is None else env
        return cls(nats=NatsSettings.from_env("planner", env))
