"""The planner service: direct mode always; the model loop when a model is configured."""

from __future__ import annotations

import asyncio
import logging

from services.planner.domain import NOT_ACTED_UPON
from services.planner.handlers import Planner
from services.planner.llm import OpenAIChat
from services.planner.settings import PlannerSettings
from services.runtime.bus import SESSION_CACHE_BYTES, SESSIONS_AT_ONCE, Bus

log = logging.getLogger(__name__)


async def run(settings: PlannerSettings, stop: asyncio.Event) -> None:
    model = OpenAIChat(settings.model) if settings.model is not None else None
    if settings.model is None:
        log.info("no model configured: direct mode only")
    else:
        # The endpoint and model name only; never the key.
        log.info("model %s at %s", settings.model.model,
                 settings.model.base_url or "the OpenAI API")
    bus = await Bus.connect(settings.nats, "planner")
    bus.cache_sessions(SESSION_CACHE_BYTES)
    bus.not_acted_upon(NOT_ACTED_UPON)
    try:
        planner = Planner(bus, model, settings.model)
        await bus.consume("planner", planner.handle, stop, on_poison=planner.on_poison,
                          sessions_at_once=SESSIONS_AT_ONCE)
    finally:
        await bus.close()
        if model is not None:
            await model.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    logging.getLogger("httpx").setLevel(logging.WARNING)
    run_service("planner", lambda stop: run(PlannerSettings.from_env(), stop))
