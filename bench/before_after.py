"""Gated reads per second, before and after a change, in the same run on the same machine.

A git worktree of BASE (default: the last commit before issue 14's signatures and accounts) is
made in a temporary folder; the throughput benchmark (bench/throughput.py, one instance per
service, 64 sessions in a closed loop) then runs alternately in that worktree and in this one,
so drift of a shared machine falls on both sides alike. Each side runs its own code — its own
services, its own bench — with this checkout's virtualenv.

Usage: python -m bench.before_after [ROUNDS] [SECONDS] [--base REV] [--noop]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The last commit before issue 14 (one account, unsigned events, grants not bound to a session).
BASE = "e357ff5"
# The last commit before commands became events (issue 17): the gate published a copy of each
# call on the EXEC work queue, which the executor consumed and whose ack deleted it.
BASE_COMMANDS = "0a9661d"

# One round of bench/throughput.py's measurement, printed as JSON; run inside each checkout.
ONE_ROUND = """
import asyncio, json, sys
from bench.common import Observer, start_stack
from bench.throughput import throughput

async def main(seconds, noop):
    stack = await start_stack(noop_cluster=noop)
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(2)
        res = await throughput(stack, obs, 64, seconds)
    finally:
        await obs.close()
        await stack.stop()
    print("RESULT " + json.dumps(res))

asyncio.run(main(float(sys.argv[1]), sys.argv[2:] == ["--noop"]))
"""


def _worktree(base: str, where: Path) -> Path:
    path = where / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), base],
                   check=True)
    return path


def _remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                   check=False)


def one_round(checkout: Path, seconds: float, noop: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    flags = ["--noop"] if noop else []
    p = subprocess.run([sys.executable, "-c", ONE_ROUND, str(seconds), *flags], cwd=checkout,
                       env=env,
                       capture_output=True, text=True, timeout=seconds * 6 + 120)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[len("RESULT "):])
            return res
    raise RuntimeError(f"no result from {checkout}: {(p.stdout + p.stderr)[-1500:]}")


def compare(rounds: int = 3, seconds: float = 10.0, base: str = BASE,
            noop: bool = False) -> dict[str, Any]:
    """`noop`: the no-op cluster executor on both sides (Interlock's own cost alone)."""
    before: list[float] = []
    after: list[float] = []
    with tempfile.TemporaryDirectory(prefix="interlock-base-") as tmp:
        old = _worktree(base, Path(tmp))
        try:
            for _ in range(rounds):
                before.append(one_round(old, seconds, noop)["calls_per_s"])
                after.append(one_round(ROOT, seconds, noop)["calls_per_s"])
        finally:
            _remove_worktree(old)
    b, a = statistics.median(before), statistics.median(after)
    return {"base": base, "noop": noop, "rounds": rounds, "seconds": seconds,
            "before_calls_per_s": before, "after_calls_per_s": after,
            "before_median": b, "after_median": a,
            "change_pct": 100 * (a - b) / b if b else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rounds", nargs="?", type=int, default=3)
    p.add_argument("seconds", nargs="?", type=float, default=10.0)
    p.add_argument("--base", default=BASE)
    p.add_argument("--noop", action="store_true", help="the no-op cluster on both sides")
    a = p.parse_args()
    res = compare(a.rounds, a.seconds, a.base, a.noop)
    print(json.dumps(res, indent=1))
    print(f"gated reads/s, 1 instance per service: before ({res['base']}) "
          f"{res['before_median']:.0f}, after {res['after_median']:.0f} "
          f"({res['change_pct']:+.1f}%)")


if __name__ == "__main__":
    main()
