"""What routing a call through a spoke (issue 21) costs, end to end: the same read on two
clusters of one hub, alternated call by call — cluster a's executor behind its own leaf
nats-server (a spoke, as in production), cluster b's executor connected directly to the hub with
the same hub identity (`spoke-b`) and no leaf hop.

- One hub stack (log, planner, gate, gateway) with INTERLOCK_CLUSTERS=a,b and a leaf port; two
  sandboxes as processes, their kubeconfig contexts named a and b, each with deployment `web`
  in namespace `bench`.
- a: `launcher.spoke.Spoke` — a leaf nats-server joined to the hub as `spoke-a`, its executor a
  local user of that server.
- b: the same executor process, settings and cluster identity (INTERLOCK_CLUSTER=b), but its
  INTERLOCK_NATS_URL is the hub's client port and its user `spoke-b` itself (a direct client of
  the hub, bound by the same account and permissions the leaf connection would be).
- A read: `POST /v1/sessions/{id}/messages {"text": "kubectl get deploy web -n bench --context
  a"}` (direct mode) → its `tool.result` on the session's SSE stream, one stream open per
  session, as in bench/mcp_read.py; a new session every 20 reads of each. A bus observer also
  stamps `tool.classified` and `tool.result` as they are stored, so the executor's part
  (classified → result stored: the pull of the command through the spoke, its reads of the log,
  the kubectl read, the result's append through the spoke) is shown apart.
- The gate's presence check: the gate reads the presence bucket (one batched Direct Get) at most
  once per second and checks every call against it; that read is timed alone, as the gate's
  identity.

Usage: python -m bench.clusters [N]   (N reads of each cluster, after 10 of each to warm up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BenchStack, Observer, bus_as, pct, start_stack, token
from bench.mcp_read import HttpPath
from launcher.childenv import base_env
from launcher.spoke import Spoke
from services.runtime import identity, natsconf, presence
from tests.chaos.support import create_targets

CLUSTERS = ("a", "b")
NS = "bench"
PER_SESSION = 20


def figures(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "p99": pct(values, 99), "min": min(values) if values else float("nan")}


class DirectSpoke(Spoke):
    """A cluster's executor exactly as a spoke starts it, but connected to the hub's client port
    as the hub's user of that cluster (`spoke-<ctok>`): no leaf server, no second hop."""

    def __init__(self, *args: Any, hub_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hub_url = hub_url

    def env_for(self, role: str) -> dict[str, str]:
        self.credentials = {self.user_of(role): self.hub_password}
        env = super().env_for(role)
        env["INTERLOCK_NATS_URL"] = self.hub_url
        env["INTERLOCK_NATS_USER"] = natsconf.spoke_user(self.cluster)
        return env

    async def start(self, timeout: float = 20.0) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        self.start_executor()


class Sandbox:
    """`python -m sandbox --context NAME` as a process of its own (as `interlock sandbox` runs)."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.kubeconfig = name, root / f"{name}.kubeconfig"
        self.log = root / f"sandbox-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        with open(self.log, "ab") as log:  # noqa: ASYNC230
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                [sys.executable, "-m", "sandbox", "--port", "0", "--kubeconfig",
                 str(self.kubeconfig), "--context", self.name], stdout=subprocess.PIPE,
                stderr=log, start_new_session=True, env=base_env(os.environ))
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)).decode()
        self.proc.stdout.close()
        if "ready at" not in line:
            raise RuntimeError(f"sandbox {self.name} did not start: {self.log.read_text()[-500:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        await create_targets(self.url, ["web"], namespace=NS)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()


async def connected(stack: BenchStack, timeout: float = 60.0) -> None:
    """Until both clusters' executors have reported (what the gate checks before a call)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    bus = await bus_as(stack, "gate")
    try:
        while True:
            found = await presence.read_clusters(bus)
            now = datetime.now(UTC)
            if all(presence.connected(found.get(c, []), now, presence.DEFAULT_INTERVAL_S)
                   for c in CLUSTERS):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"clusters not connected after {timeout}s: {found}")
            await asyncio.sleep(0.2)
    finally:
        await bus.close()


async def presence_read(stack: BenchStack, n: int) -> dict[str, float]:
    """The gate's presence read alone (one batched Direct Get of the bucket), as the gate."""
    bus = await bus_as(stack, "gate")
    try:
        times = []
        for i in range(10 + n):
            t0 = time.perf_counter()
            found = await presence.read_clusters(bus)
            if i >= 10:
                times.append((time.perf_counter() - t0) * 1000)
        assert set(CLUSTERS) <= set(found), found
        return figures(times)
    finally:
        await bus.close()


async def measure(stack: BenchStack, obs: Observer, n: int, warmup: int = 10) -> dict[str, Any]:
    client_ms: dict[str, list[float]] = {c: [] for c in CLUSTERS}
    executor_ms: dict[str, list[float]] = {c: [] for c in CLUSTERS}
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token(stack, 'operator')}"}) as http:
        paths = {c: HttpPath(stack, http) for c in CLUSTERS}
        try:
            for i in range(warmup + n):
                if i % PER_SESSION == 0:
                    for p in paths.values():
                        await p.close()
                        await p.open(None)
                for c, p in paths.items():
                    p.command = f"kubectl get deploy web -n {NS} --context {c}"
                    sent, got, call_id = await p.read()
                    classified = await obs.wait("tool.classified", call_id)
                    result = await obs.wait("tool.result", call_id)
                    obs.forget(("tool.classified", call_id), ("tool.result", call_id))
                    if i >= warmup:
                        client_ms[c].append((got - sent) * 1000)
                        executor_ms[c].append((result - classified) * 1000)
                    if p.last.get("cluster") != c:  # it ran where it was sent, nowhere else
                        raise RuntimeError(f"a read for {c} ran on {p.last.get('cluster')!r}")
        finally:
            for p in paths.values():
                await p.close()
    out: dict[str, Any] = {"reads": n, "per_session": PER_SESSION}
    for c in CLUSTERS:
        out[c] = {"client": figures(client_ms[c]), "executor": figures(executor_ms[c])}
    out["via"] = {"a": "spoke (leaf nats-server)", "b": "direct to the hub as spoke-b"}
    out["diff_p50_ms"] = out["a"]["client"]["p50"] - out["b"]["client"]["p50"]
    out["diff_executor_p50_ms"] = out["a"]["executor"]["p50"] - out["b"]["executor"]["p50"]
    return out


def report(r: dict[str, Any]) -> str:
    rows = [f"a read (kubectl get deploy), {r['reads']} of each cluster, alternated — "
            "p50 / p95 / p99 ms:",
            f"{'cluster':<40} {'POST → tool.result on SSE':>26}   classified → result stored"]
    for c in CLUSTERS:
        cl, ex = r[c]["client"], r[c]["executor"]
        rows.append(f"{c + ', ' + r['via'][c]:<40} {cl['p50']:>8.2f} / {cl['p95']:.2f} / "
                    f"{cl['p99']:.2f}   {ex['p50']:.2f} / {ex['p95']:.2f} / {ex['p99']:.2f}")
    rows.append(f"through the spoke: {r['diff_p50_ms']:+.2f} ms at the median end to end, "
                f"{r['diff_executor_p50_ms']:+.2f} ms in the executor's part")
    pr = r.get("presence_read")
    if pr:
        rows.append(f"the gate's presence read (Direct Get batch, at most once a second): "
                    f"p50 {pr['p50']:.2f} / p95 {pr['p95']:.2f} ms")
    return "\n".join(rows)


async def main(n: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="interlock-bench-clusters-"))
    sandboxes = {c: Sandbox(c, root) for c in CLUSTERS}
    spokes: list[Spoke] = []
    stack: BenchStack | None = None
    try:
        await asyncio.gather(*(s.start() for s in sandboxes.values()))
        stack = await start_stack(clusters=CLUSTERS, kubeconfig=sandboxes["a"].kubeconfig)
        keys = (stack.data / "gate.pub", stack.keys / identity.KEYRING_FILE,
                stack.keys / "executor.key")
        spokes.append(Spoke("a", stack.leaf_url, stack.credentials[natsconf.spoke_user("a")],
                            sandboxes["a"].kubeconfig, root / "spoke-a", *keys,
                            extra_env=stack.spoke_env()))
        spokes.append(DirectSpoke("b", stack.leaf_url,
                                  stack.credentials[natsconf.spoke_user("b")],
                                  sandboxes["b"].kubeconfig, root / "direct-b", *keys,
                                  extra_env=stack.spoke_env(),
                                  hub_url=stack.nats_url))
        for s in spokes:
            await s.start()
        await connected(stack)
        obs = await Observer().start(stack)
        try:
            res = await measure(stack, obs, n)
        finally:
            await obs.close()
        res["presence_read"] = await presence_read(stack, min(n, 200))
        return res
    except Exception:
        for s in spokes:
            print(s.log_tail(), file=sys.stderr)
        raise
    finally:
        for s in spokes:
            await s.stop()
        if stack is not None:
            await stack.stop()
        for sb in sandboxes.values():
            await sb.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=300)
    res = asyncio.run(main(ap.parse_args().n))
    print(json.dumps(res))
    print(report(res))
