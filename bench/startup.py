"""Startup time of `interlock up` (embedded nats-server, sandbox cluster, four services, gateway
ready): from spawning the command to GET /readyz answering 200, with a fresh data directory
(cold: keys, credentials and streams are created) and again on the same one (warm)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ADMIN_TOKEN, ROOT
from launcher.nats import free_port

INTERLOCK = Path(sys.executable).parent / "interlock"


async def once(data: Path) -> float:
    port = free_port()
    env = {**os.environ, "INTERLOCK_ADMIN_TOKEN": ADMIN_TOKEN}
    t = time.perf_counter()
    proc = subprocess.Popen([str(INTERLOCK), "up", "--port", str(port), "--data", str(data)],  # noqa: ASYNC220 - starting it does not block
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"interlock up exited with {proc.returncode}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            return time.perf_counter() - t
                except aiohttp.ClientError:
                    pass
                if time.perf_counter() - t > 60:
                    raise RuntimeError("interlock up not ready in 60 s")
                await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)


async def startup(runs: int = 3) -> dict[str, Any]:
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(runs):
        data = Path(tempfile.mkdtemp(prefix="interlock-up-"))
        cold.append(await once(data))
        warm.append(await once(data))
        shutil.rmtree(data, ignore_errors=True)
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
            "cold_all": cold, "warm_all": warm}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(startup(int(sys.argv[1]) if len(sys.argv) > 1 else 3))))
