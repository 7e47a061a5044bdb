"""SSE fan-out: C concurrent clients on one gateway following one session, delivery latency
p50/p99, and the same client against the anchor floor (a bare aiohttp broadcast) in the same run.

Ours: the clients follow GET /v1/sessions/{id}/events from the session's current end; the bench
then appends N `assistant.message` events (300 characters, 50 ms apart, as the planner's NATS
identity — what the planner does when it speaks). Each event travels: durable append (fsync) →
the stream's republish → the gateway's per-client subscription → SSE frame → client.
Floor: anchors/sse_floor_server.py, fired with its own POST /fire (N events 50 ms apart).
Both are read by bench/sse_client.py, one process, same code (see its docstring for stamps).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.common import (
    ANCHOR_PY,
    ANCHORS,
    ROOT,
    BenchStack,
    bus_as,
    cpu_seconds,
    pct,
    start_stack,
    token,
)
from launcher.nats import free_port
from schemas.session import AssistantMessage

CLIENT = [sys.executable, "-m", "bench.sse_client"]


async def _client(args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLIENT, *args, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _ready(proc: asyncio.subprocess.Process, timeout: float) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line.startswith(b"READY"):
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"sse client failed: {line!r} {err[-2000:]!r}")


async def _result(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    await proc.wait()
    if not line:
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"sse client failed: {err[-2000:]!r}")
    out: dict[str, Any] = json.loads(line)
    return out


async def ours(stack: BenchStack, clients: int, n: int = 20) -> dict[str, Any]:
    tok = token(stack, "admin")
    headers = {"Authorization": f"Bearer {tok}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{stack.url}/v1/sessions", json={}) as r:
            sid = (await r.json())["session_id"]
        async with http.get(f"{stack.url}/v1/sessions/{sid}") as r:
            last = int((await r.json())["last_seq"])
    proc = await _client([f"{stack.url}/v1/sessions/{sid}/events?after={last}", str(clients),
                          str(n), "--token", tok])
    await _ready(proc, 300)
    # Every client has its 200 (headers are sent first), but the gateway may still be catching
    # each one up from the log (stream info + a Direct Get per client). The floor has no such
    # step; so fire only once the gateway is quiet, and report how long that took.
    t0 = time.perf_counter()
    settle = await _quiet(stack.procs["gateway"].pid)
    settle_s = round(time.perf_counter() - t0, 2) if settle else None
    bus = await bus_as(stack, "planner")
    appends: list[float] = []
    try:
        for _ in range(n):
            ev = AssistantMessage(session_id=sid, text="x" * 300)
            t = time.perf_counter()
            await bus.append(ev)
            appends.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.05)
    finally:
        await bus.close()
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    res = await _result(proc)
    res["append_p50_ms"] = pct(appends, 50)
    res["settle_s"] = settle_s
    return res


async def _quiet(pid: int, limit: float = 0.1, timeout: float = 60.0) -> bool:
    """Waits until the process uses under `limit` of a core over half a second."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        c0 = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if (cpu_seconds(pid) - c0) / 0.5 < limit:
            return True
    return False


async def floor(clients: int, n: int = 20) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([str(ANCHOR_PY), str(ANCHORS / "sse_floor_server.py"), str(port)],  # noqa: ASYNC220 - starting it does not block
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.post(f"http://127.0.0.1:{port}/fire?n=0"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        proc = await _client([f"http://127.0.0.1:{port}/events", str(clients), str(n),
                              "--fire", f"http://127.0.0.1:{port}/fire?n={n}"])
        await _ready(proc, 300)
        return await _result(proc)
    finally:
        server.terminate()
        server.wait()


async def main(counts: list[int]) -> None:
    stack = await start_stack()
    try:
        for c in counts:
            print(c, "ours ", json.dumps(await ours(stack, c)), flush=True)
            print(c, "floor", json.dumps(await floor(c)), flush=True)
    finally:
        await stack.stop()


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [100]))
