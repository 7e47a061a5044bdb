"""Throughput: gated read calls per second, many sessions at once (closed loop).

Each of C concurrent sessions proposes a read, waits until its result is recorded, and proposes
the next. Calls completed in the measuring window (after a warm-up) per second is the figure.
The same function runs with 1 or 2 instances of planner, gate and executor (extra processes
bound to the same durable consumers). RSS of every process is sampled under load.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.common import BenchStack, Observer, bus_as, cpu_seconds, pct, rss_mb, start_stack
from schemas.ids import new_call_id, new_session_id
from schemas.planning import ToolProposed

READ = ("get", {"kind": "deployment", "namespace": "shop", "name": "web"})


async def throughput(stack: BenchStack, obs: Observer, sessions: int = 64,
                     seconds: float = 10.0, warmup: float = 2.0) -> dict[str, Any]:
    buses = [await bus_as(stack, "planner") for _ in range(2)]
    done: list[float] = []
    lat: list[float] = []
    stop = asyncio.Event()
    errors = 0

    async def worker(i: int) -> None:
        nonlocal errors
        bus = buses[i % len(buses)]
        sid = new_session_id()
        n = 0
        while not stop.is_set():
            if n % 20 == 0:
                sid = new_session_id()
            n += 1
            tool, args = READ
            p = ToolProposed(session_id=sid, call_id=new_call_id(), tool=tool, args=args,
                             source="llm")
            t = time.perf_counter()
            try:
                await bus.append(p)
                t2 = await obs.wait("tool.result", p.call_id, timeout=60)
            except TimeoutError:
                errors += 1
                continue
            done.append(t2)
            lat.append((t2 - t) * 1000)
            obs.forget(("tool.proposed", p.call_id), ("tool.classified", p.call_id),
                       ("tool.result", p.call_id))

    samples: dict[str, list[float]] = {}

    async def sampler() -> None:
        while not stop.is_set():
            for k, pid in stack.pids().items():
                samples.setdefault(k, []).append(rss_mb(pid))
            await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(worker(i)) for i in range(sessions)]
    samp = asyncio.create_task(sampler())
    t0 = time.perf_counter()
    await asyncio.sleep(warmup + seconds)
    stop.set()
    t_end = t0 + warmup + seconds
    await asyncio.gather(*tasks, samp, return_exceptions=True)
    for b in buses:
        await b.close()
    window = [t for t in done if t0 + warmup <= t <= t_end]
    return {
        "sessions": sessions,
        "calls_per_s": len(window) / seconds,
        "latency_p50_ms": pct(lat, 50),
        "latency_p99_ms": pct(lat, 99),
        "timeouts": errors,
        "rss_under_load_mb": {k: max(v) for k, v in samples.items()},
    }


async def with_cpu(stack: BenchStack, obs: Observer, seconds: float,
                   warmup: float = 0.0) -> tuple[dict[str, Any], dict[str, float], float]:
    """The throughput load (64 sessions), and the CPU seconds every process used meanwhile —
    this one too, the load generator competing for the same cores: (result, cpu, wall s)."""
    pids = stack.pids()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    own0 = time.process_time()
    t = time.perf_counter()
    res = await throughput(stack, obs, 64, seconds, warmup=warmup)
    wall = time.perf_counter() - t
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    cpu["bench (load)"] = time.process_time() - own0
    return res, cpu, wall


def rss_now(stack: BenchStack) -> dict[str, float]:
    return {k: rss_mb(pid) for k, pid in stack.pids().items()}


async def main(sessions: int, seconds: float, noop: bool) -> None:
    stack = await start_stack(noop_cluster=noop)
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(2)
        idle = rss_now(stack)
        one = await throughput(stack, obs, sessions, seconds)
        for svc in ("planner", "gate", "executor"):
            stack.start_extra(svc, 2)
        await asyncio.sleep(3)
        two = await throughput(stack, obs, sessions, seconds)
    finally:
        await obs.close()
        await stack.stop()
    print(json.dumps({"idle_rss_mb": idle, "one": one, "two": two}, indent=1))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 64,
                     float(sys.argv[2]) if len(sys.argv) > 2 else 10.0,
                     "--noop" in sys.argv))
