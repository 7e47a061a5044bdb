"""The budget of a gated read on this machine: what each call costs in CPU per process and in
durable writes (fsyncs) per file, and the ceilings that follow for calls per second.

1. The server's capacity for durable writes: 64 concurrent publishers to a scratch stream on the
   stack's own nats-server (`sync_interval: always`, as in production), messages per second.
2. Under the closed-loop throughput load (64 sessions, no-op cluster): CPU milliseconds per
   completed call of every process, this load generator included; and, when strace is present,
   the fsync/fdatasync calls nats-server makes per completed call, by file.
3. Ceilings: 2 cores / (CPU ms per call) and write capacity / (fsyncs per call).

Usage: python -m bench.budget [SECONDS]
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from bench.common import Observer, admin_url, start_stack
from bench.throughput import throughput, with_cpu

SCRATCH = "BUDGET"


async def write_capacity(url: str, seconds: float = 3.0, publishers: int = 64) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=SCRATCH, subjects=["budget.>"])
    count = 0
    end = time.perf_counter() + seconds

    async def publisher(i: int) -> None:
        nonlocal count
        while time.perf_counter() < end:
            await js.publish(f"budget.{i}", b"x" * 400)
            count += 1

    t = time.perf_counter()
    try:
        await asyncio.gather(*(publisher(i) for i in range(publishers)))
        return count / (time.perf_counter() - t)
    finally:
        await js.delete_stream(SCRATCH)
        await nc.close()


def fsyncs(trace: Path) -> dict[str, int]:
    """fsync-family calls by file (stream/consumer name), from `strace -f -y` output."""
    out: collections.Counter[str] = collections.Counter()
    for line in trace.read_text(errors="replace").splitlines():
        m = re.search(r"(?:fsync|fdatasync)\(\d+<([^>]*)>", line)
        if m:
            path = m.group(1)
            key = re.sub(r"^.*/jetstream/[^/]+/", "", path)
            key = re.sub(r"/msgs/\d+\.blk$", "/msgs", key)
            out[key] += 1
    return dict(out)


async def main(seconds: float) -> dict[str, Any]:
    stack = await start_stack(noop_cluster=True)
    obs = await Observer().start(stack)
    res: dict[str, Any] = {}
    try:
        await asyncio.sleep(1)
        res["durable_writes_per_s"] = round(await write_capacity(admin_url(stack)))
        pids = stack.pids()
        # CPU first, untraced (strace would inflate the server's share).
        load, cpu, wall = await with_cpu(stack, obs, seconds)
        calls = load["calls_per_s"] * seconds
        res["calls_per_s"] = load["calls_per_s"]
        res["cpu_ms_per_call"] = {k: round(1000 * v / calls, 3) for k, v in cpu.items()
                                  if v > 0.001 * wall}
        total = sum(res["cpu_ms_per_call"].values())
        res["cpu_ms_per_call_total"] = round(total, 3)
        res["ceiling_by_cpu_calls_per_s"] = round((os.cpu_count() or 1) * 1000 / total)
        # Then the durable writes per call, traced (counts do not depend on the speed).
        if shutil.which("strace") and os.geteuid() == 0:
            trace = Path(tempfile.mkdtemp(prefix="interlock-budget-")) / "strace.txt"
            tracer = await asyncio.create_subprocess_exec(
                "strace", "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace),
                "-p", str(pids["nats-server"]),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.sleep(1)
            traced = await throughput(stack, obs, 64, seconds, warmup=0.0)
            await asyncio.sleep(0.5)
            tracer.terminate()
            await tracer.wait()
            calls = traced["calls_per_s"] * seconds
            by_file = fsyncs(trace)
            res["fsyncs_per_call"] = {k: round(v / calls, 2) for k, v in by_file.items()
                                      if v / calls >= 0.05}
            per_call = sum(v / calls for v in by_file.values())
            res["fsyncs_per_call_total"] = round(per_call, 2)
            res["ceiling_by_durable_writes_calls_per_s"] = round(
                res["durable_writes_per_s"] / per_call)
            shutil.rmtree(trace.parent, ignore_errors=True)
    finally:
        await obs.close()
        await stack.stop()
    return res


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0)),
                     indent=1))
