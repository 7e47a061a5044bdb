"""The gate service: consume proposals, previews and decisions; expire what nobody decided."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.gate import crashpoint
from services.gate.handlers import Gate
from services.gate.settings import GateSettings
from services.runtime.bus import SESSION_CACHE_BYTES, SESSIONS_AT_ONCE, Bus

log = logging.getLogger(__name__)
EXPIRY_SWEEP_S = 1.0


async def run(settings: GateSettings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats, "gate")
    bus.cache_sessions(SESSION_CACHE_BYTES)
    crashpoint.install(bus)  # tests only: inert unless INTERLOCK_GATE_EXIT_AFTER is set
    gate = Gate(bus, settings)
    sweeper = asyncio.create_task(_sweep(gate, stop))
    try:
        await bus.consume("gate", gate.handle, stop, on_poison=gate.on_poison,
                           sessions_at_once=SESSIONS_AT_ONCE)
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await bus.close()


async def _sweep(gate: Gate, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await gate.expire_due()
        except Exception:  # the sweep retries on the next tick
            log.exception("expiry sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EXPIRY_SWEEP_S)


def main() -> None:
    from services.runtime.lifecycle import run_service

    run_service("gate", lambda stop: run(GateSettings.from_env(), stop))
