"""The planner service."""

from __future__ import annotations

import asyncio

from services.planner.handlers import Planner
from services.planner.settings import PlannerSettings
from services.runtime.bus import Bus


async def run(settings: PlannerSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "planner")
    try:
        await bus.consume("planner", Planner(bus).handle, stop)
    finally:
        await bus.close()


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("planner", lambda stop: run(PlannerSettings.from_env(), stop))
