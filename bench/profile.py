"""Profile the hot paths under the throughput load: py-spy records every service process while
gated reads run, and each process's CPU time is reported (who is the bottleneck).

Usage: python -m bench.profile [SECONDS] [--noop]   (py-spy from bench/.anchor-venv)
Writes speedscope/flamegraph files to bench/profiles/ and prints the top functions.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, Observer, start_stack
from bench.throughput import with_cpu

PYSPY = ROOT / "bench" / ".anchor-venv" / "bin" / "py-spy"


async def main(seconds: float, noop: bool) -> None:
    out = ROOT / "bench" / "profiles"
    out.mkdir(exist_ok=True)
    stack = await start_stack(noop_cluster=noop)
    obs = await Observer().start(stack)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.sleep(1)
        pids = stack.pids()
        for name in ("gate", "executor", "planner", "gateway"):
            spies.append(subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                [str(PYSPY), "record", "-p", str(pids[name]), "-d", str(int(seconds + 2)),
                 "-r", "200", "-f", "raw", "-o", str(out / f"{name}.txt"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        res, used, wall = await with_cpu(stack, obs, seconds, warmup=1.0)
        cpu = {k: round(v / wall, 2) for k, v in used.items()}
        per_call = {k: round(1000 * v / max(res["calls_per_s"], 1e-9), 3) for k, v in cpu.items()}
        for s in spies:
            await asyncio.to_thread(s.wait)
    finally:
        await obs.close()
        await stack.stop()
    print(json.dumps({"calls_per_s": res["calls_per_s"], "cpu_cores_used": cpu,
                      "cpu_ms_per_call": per_call}, indent=1))
    for name in ("gate", "executor", "planner"):
        print(f"\n== {name}: top self frames")
        print(top(out / f"{name}.txt"))


def top(path: Path, n: int = 25) -> str:
    """Aggregates a py-spy raw (collapsed stacks) file into the heaviest leaf and inclusive
    frames."""
    if not path.exists():
        return "(no profile)"
    incl: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        total += c
        frames = stack.split(";")
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + c
    rows = [f"{100 * c / total:5.1f}% incl  {f[:150]}" for f, c in
            sorted(incl.items(), key=lambda x: -x[1])[:n]]
    rows += [f"{100 * c / total:5.1f}% self  {f[:150]}" for f, c in
             sorted(leaf.items(), key=lambda x: -x[1])[:12]]
    return "\n".join(rows)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 8.0, "--noop" in sys.argv))
