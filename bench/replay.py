"""Replay: one session's audit timeline of N stored events read back in order and decoded with
the bus's batched Direct Get reader (`Bus.read`, what the services and the gateway use), against
the ordered-consumer floor (anchors/replay_floor.py) on the same nats-server.

The events are `assistant.message`s of 200 characters (the floor stores 200-character events),
appended by the planner's identity, pipelined 2,000 at a time like the floor.
If the gateway serves GET /v1/sessions/{id}/audit, that endpoint is timed too.

Alongside the rate, the CPU seconds of the reader and of nats-server during the read: Direct
Get of events stored with headers (Nats-Msg-Id) costs the server ~10 us each, so past a point
the server, not the reader, sets the pace.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.common import (
    ANCHOR_PY,
    ANCHORS,
    BenchStack,
    admin_url,
    bus_as,
    cpu_seconds,
    pct,
    start_stack,
    token,
)
from schemas import events as E
from schemas import subjects as S
from schemas.ids import new_session_id
from schemas.session import AssistantMessage
from services.runtime.bus import READ_BATCH, Bus
from services.runtime.identity import SIGNATURE_HEADER


async def publish(bus: Bus, e: AssistantMessage) -> None:
    """One event as the planner stores it (signed by its key), without the chain's read."""
    assert bus.signer is not None
    subject, data = S.event_subject(e), E.encode(e)
    await bus.js.publish(subject, data, headers={"Nats-Msg-Id": e.event_id,
                                                 SIGNATURE_HEADER: bus.signer.sign(subject, data)})


async def store(stack: BenchStack, n: int) -> tuple[str, float]:
    sid = new_session_id()
    bus = await bus_as(stack, "planner")
    t = time.perf_counter()
    try:
        for i in range(0, n, 2000):
            evs = [AssistantMessage(session_id=sid, text="x" * 200)
                   for _ in range(min(2000, n - i))]
            await asyncio.gather(*[publish(bus, e) for e in evs])
    finally:
        await bus.close()
    return sid, time.perf_counter() - t


async def ours(stack: BenchStack, sid: str, n: int, user: str = "gateway") -> dict[str, Any]:
    bus = await bus_as(stack, user)
    try:
        server = stack.pids()["nats-server"]
        server0, client0 = cpu_seconds(server), time.process_time()
        t = time.perf_counter()
        count = 0
        async for _ in bus.read(S.session_filter(sid)):
            count += 1
        dt = time.perf_counter() - t
        cpu = {"reader": round(time.process_time() - client0, 2),
               "nats_server": round(cpu_seconds(server) - server0, 2)}
    finally:
        await bus.close()
    assert count == n, (count, n)
    out: dict[str, Any] = {"events": count, "seconds": dt, "events_per_s": count / dt,
                           "batch": READ_BATCH, "cpu_s": cpu}
    async with aiohttp.ClientSession() as http:
        t = time.perf_counter()
        async with http.get(f"{stack.url}/v1/sessions/{sid}/audit",
                            headers={"Authorization": f"Bearer {token(stack, 'admin')}"},
                            timeout=aiohttp.ClientTimeout(total=600)) as r:
            body = await r.read()
            if r.status == 200:
                dt = time.perf_counter() - t
                out["http_audit"] = {"seconds": dt, "events_per_s": n / dt, "bytes": len(body)}
            else:
                out["http_audit"] = {"status": r.status}
    return out


async def small_session_read(stack: BenchStack, sid: str, n: int = 30) -> float:
    """p50 ms of Bus.session() for a 3-event session (what every handler does per message)."""
    bus = await bus_as(stack, "gateway")
    lat: list[float] = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            await bus.session(sid)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        await bus.close()
    return pct(lat, 50)


async def batch_size_effect(stack: BenchStack, sid: str, batch: int) -> float:
    """Events/s of Bus.read with another Direct Get batch size (diagnostic)."""
    bus = await bus_as(stack, "gateway")
    try:
        t = time.perf_counter()
        count = 0
        async for _ in bus.read(S.session_filter(sid), batch=batch):
            count += 1
        return count / (time.perf_counter() - t)
    finally:
        await bus.close()


def floor(stack: BenchStack, n: int) -> dict[str, Any]:
    p = subprocess.run([str(ANCHOR_PY), str(ANCHORS / "replay_floor.py"), admin_url(stack), str(n)],
                       capture_output=True, text=True, timeout=900)
    m = re.search(r"replay\+decode: (\d+) events/s \(([\d.]+)s\)", p.stdout)
    if not m:
        return {"error": (p.stdout + p.stderr)[-1000:]}
    return {"events_per_s": float(m.group(1)), "seconds": float(m.group(2))}


async def main(n: int) -> None:
    stack = await start_stack()
    try:
        sid, stored_s = await store(stack, n)
        print("stored", n, f"in {stored_s:.1f}s")
        print("ours ", json.dumps(await ours(stack, sid, n)))
        print("floor", json.dumps(await asyncio.to_thread(floor, stack, n)))
    finally:
        await stack.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
