"""Shared plumbing for the benchmarks: the real stack as processes (with optional extra
instances and an optional no-op cluster adapter), a bus observer that timestamps every stored
event as the server republishes it, percentiles and RSS.

Nothing here is a test: the scripts print figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from services.runtime.bus import Bus

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = Path(os.environ.get("INTERLOCK_ANCHORS", ROOT.parent.parent / "shared" / "anchors"))
if not ANCHORS.exists():
    ANCHORS = Path("/work/shared/anchors")
ANCHOR_PY = Path(os.environ.get("ANCHOR_PY", ROOT / "bench" / ".anchor-venv" / "bin" / "python"))
ADMIN_TOKEN = "bench-admin-" + "x" * 24


# -- numbers -----------------------------------------------------------------------------------

def pct(values: Iterable[float], p: float) -> float:
    """The p-th percentile, the anchors' way (sorted list, index int(n*p)-1)."""
    v = sorted(values)
    if not v:
        return float("nan")
    if p == 50:
        return statistics.median(v)
    return v[max(0, int(len(v) * p / 100) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "mean": statistics.fmean(values) if values else float("nan")}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


# -- the stack ---------------------------------------------------------------------------------

class BenchStack(Stack):
    """The real stack, plus: extra instances of a service (`start_extra`) and, optionally, an
    executor whose cluster adapter is a no-op (bench/noop_executor.py) so the cluster's own cost
    can be taken out of the throughput figures. Nothing in launcher/stack.py is changed."""

    def __init__(self, cfg: StackConfig, *, noop_cluster: bool = False) -> None:
        super().__init__(cfg)
        self.noop_cluster = noop_cluster
        self.extra: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, service: str, key: str) -> subprocess.Popen[bytes]:
        module = "bench.noop_executor" if (service == "executor" and self.noop_cluster) \
            else f"services.{service}"
        log = open(self.data / "logs" / f"{key}.log", "ab")  # noqa: SIM115
        env = self.env_for(service)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return proc

    def start_service(self, service: str) -> subprocess.Popen[bytes]:
        proc = self._spawn(service, service)
        self.procs[service] = proc
        return proc

    def start_extra(self, service: str, index: int) -> subprocess.Popen[bytes]:
        key = f"{service}-{index}"
        proc = self._spawn(service, key)
        self.extra[key] = proc
        return proc

    def pids(self) -> dict[str, int]:
        out = {k: p.pid for k, p in self.procs.items()}
        out.update({k: p.pid for k, p in self.extra.items()})
        if self.sandbox is not None:
            out["sandbox"] = self.sandbox.pid
        if self.nats is not None and self.nats.proc is not None:
            out["nats-server"] = self.nats.proc.pid
        return out

    async def stop(self) -> dict[str, int | None]:
        for proc in self.extra.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.extra.values():
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
            except TimeoutError:
                proc.kill()
        codes = await super().stop()
        if self.data.name.startswith("interlock-bench-"):
            shutil.rmtree(self.data, ignore_errors=True)
        return codes


async def start_stack(*, noop_cluster: bool = False, scenarios: tuple[str, ...] = (),
                      extra_env: dict[str, str] | None = None, **cfg: Any) -> BenchStack:
    """The stack on a fresh data dir; `cfg`: more StackConfig fields (clusters, kubeconfig…)."""
    data = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    env = {
        # The bench drives the gateway far harder than one person would: lift the per-token
        # rate limit (a configuration knob) so it measures the gateway, not the limiter.
        "INTERLOCK_RATE_LIMIT": "1000000",
        "INTERLOCK_RATE_BURST": "1000000",
        # Likewise the cap on one principal's open SSE streams: the fan-out bench opens
        # thousands with one token.
        "INTERLOCK_SSE_STREAMS_PER_PRINCIPAL": "1000000",
        # Quiet logs: an info line per event is itself a cost under load (reported separately).
        **(extra_env or {}),
    }
    s = BenchStack(StackConfig(data_dir=data, http_port=free_port(), admin_token=ADMIN_TOKEN,
                               scenarios=scenarios, extra_env=env, **cfg),
                   noop_cluster=noop_cluster)
    await s.start()
    return s


async def bus_as(stack: Stack, user: str, **kwargs: Any) -> Bus:
    return await Bus.connect(stack.nats_settings(user), user, **kwargs)


def admin_url(stack: Stack) -> str:
    return f"nats://admin:{stack.credentials['admin']}@127.0.0.1:{stack.cfg.nats_port}"


def token(stack: Stack, who: str) -> str:
    if who == "admin":
        return stack.cfg.admin_token
    return str(stack.tokens[who]["token"])


# -- watching the log --------------------------------------------------------------------------

class Observer:
    """Timestamps every stored event when the server republishes it on `sse.>` (core NATS, with
    its stream sequence). Times are time.perf_counter() in this process, so differences between
    two events are "recorded → recorded" with the republish delay cancelling out."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.times: dict[tuple[str, str], float] = {}
        self.waiters: dict[tuple[str, str], list[asyncio.Future[float]]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)

    async def start(self, stack: Stack, subject: str = "sse.>") -> Observer:
        self.nc = await nats.connect(admin_url(stack), name="bench-observer")
        await self.nc.subscribe(subject, cb=self._on, pending_msgs_limit=10_000_000,
                                pending_bytes_limit=2**31)
        await self.nc.flush()
        return self

    async def _on(self, msg: Any) -> None:
        t = time.perf_counter()
        parts = msg.subject.split(".")
        # `sse.<session>.<emitter>.<noun>.<verb>.<key>`, and a 7th token (the cluster) on the
        # gate's commands and every executor event (issue 21).
        if len(parts) not in (6, 7):
            return
        tag = f"{parts[3]}.{parts[4]}"
        k = (tag, parts[5])
        self.counts[tag] += 1
        self.times[k] = t
        for fut in self.waiters.pop(k, ()):
            if not fut.done():
                fut.set_result(t)

    async def wait(self, tag: str, key: str, timeout: float = 30.0) -> float:
        k = (tag, key)
        if k in self.times:
            return self.times[k]
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[k].append(fut)
        return await asyncio.wait_for(fut, timeout)

    def forget(self, *keys: tuple[str, str]) -> None:
        for k in keys:
            self.times.pop(k, None)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


def fmt_ms(x: float) -> str:
    return f"{x:.2f} ms" if x == x else "—"
