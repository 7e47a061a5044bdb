"""The decide path before and after decisions were signed (issue 18), in the same run: a human's
decision POSTed → `approval.decided` recorded → `approval.granted` recorded → the write's result,
on the no-op cluster, one write at a time (bench/cycles.py's write cycle).

A git worktree of BASE (the last commit before the gate enforced signatures: decisions were
unsigned) and this checkout run alternately, each round a fresh stack, each side its own code
with this checkout's virtualenv (as bench/before_after.py does for throughput). After: the
gateway's early check and the gate's check of the approver's signature are on the path; the
client's signing is not (it is made before the POST, like the human's time).

Usage: python -m bench.decide_path [ROUNDS] [WRITES] [--base REV]
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

from bench.before_after import ROOT, _remove_worktree, _worktree

# The last commit before decisions were signed (the next one, e57fc6d, requires admin keys
# of the gate that its stack does not give yet: it does not start).
BASE = "6338df7"

ONE_ROUND = """
import asyncio, json, sys
from bench.common import Observer, start_stack
from bench.cycles import write_cycle

async def main(n):
    stack = await start_stack(noop_cluster=True)
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(2)
        res = await write_cycle(stack, obs, n)
    finally:
        await obs.close()
        await stack.stop()
    print("RESULT " + json.dumps(res))

asyncio.run(main(int(sys.argv[1])))
"""

STAGES = ("POST→decided recorded", "decided→granted")


def one_round(checkout: Path, writes: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    p = subprocess.run([sys.executable, "-c", ONE_ROUND, str(writes)], cwd=checkout, env=env,
                       capture_output=True, text=True, timeout=writes * 10 + 180)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[len("RESULT "):])
            return res
    raise RuntimeError(f"no result from {checkout}: {(p.stdout + p.stderr)[-1500:]}")


def _figures(res: dict[str, Any]) -> dict[str, float]:
    out = {k: float(res["stages_p50_ms"][k]) for k in STAGES}
    out["POST→result"] = float(res["decided_to_result"]["p50"])
    out["POST answered"] = float(res["decision_http_post"]["p50"])
    return out


def compare(rounds: int = 3, writes: int = 30, base: str = BASE) -> dict[str, Any]:
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="interlock-base-") as tmp:
        old = _worktree(base, Path(tmp))
        try:
            for _ in range(rounds):
                before.append(_figures(one_round(old, writes)))
                after.append(_figures(one_round(ROOT, writes)))
        finally:
            _remove_worktree(old)
    names = list(before[0])
    median = {side: {k: statistics.median(r[k] for r in runs) for k in names}
              for side, runs in (("before", before), ("after", after))}
    return {"base": base, "rounds": rounds, "writes": writes, "before": before, "after": after,
            "median_ms": median,
            "change_ms": {k: median["after"][k] - median["before"][k] for k in names}}


def report(r: dict[str, Any]) -> str:
    lines = [f"decide path, p50 ms, median of {r['rounds']} rounds x {r['writes']} writes, "
             f"no-op cluster: before ({r['base']}) → after"]
    for k, b in r["median_ms"]["before"].items():
        a = r["median_ms"]["after"][k]
        lines.append(f"  {k:<24} {b:7.2f} → {a:7.2f}  ({a - b:+.2f})")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rounds", nargs="?", type=int, default=3)
    p.add_argument("writes", nargs="?", type=int, default=30)
    p.add_argument("--base", default=BASE)
    a = p.parse_args()
    res = compare(a.rounds, a.writes, a.base)
    print(json.dumps(res, indent=1))
    print(report(res))


if __name__ == "__main__":
    main()
