"""A read through Interlock's MCP server (issue 19) against the same read through the HTTP API, in
one run on one stack, alternated call by call.

- MCP: the official Python SDK's client over Streamable HTTP at the gateway's /mcp, protocol
  revision 2026-07-28 pinned (stateless: no handshake), one client for the whole run;
  `call_tool("get", deployment web in shop)` → its result. Server side that is `tool.requested`
  → the planner's `tool.proposed` → the gate → the executor → `tool.result`, which the gateway
  finds by reading the session and returns as the tool result.
- HTTP: `POST /v1/sessions/{id}/messages {"text": "kubectl get deployment web -n shop"}` (direct
  mode: the planner parses the command) → the `tool.result` event on the session's SSE stream,
  one stream open for the whole run, as the Command Center and `interlock chat` hold it.

Both are what a client sees: from sending the request to holding the result. A bus observer also
stamps, as they are stored, the request (`tool.requested` or `user.message`), `tool.proposed` and
`tool.result` (its clock is this process's), so each read splits into four stages: way in (the
request to its event stored: HTTP, the token, the append), the planner (event → proposal), the
gate and the executor (proposal → result; the part both paths share) and way out (result stored
→ the client holds it: the MCP server finds it by reading the session, SSE pushes it).

Each path starts a new Interlock session every 20 reads (`--per-session`), as the other cycle
benches do: a session's length is a cost of its own (below). With `--per-session 0` each path
keeps one session for the whole run (MCP: the gateway's session of the day), and the first and
last fifth of the run show what a long session costs.

Usage: python -m bench.mcp_read [N] [--legacy] [--per-session K]   (N reads of each, after 10
of each to warm up; --legacy adds the 2025-11-25 handshake client as a third path)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import Implementation

from bench.common import BenchStack, Observer, pct, start_stack, token

REVISION = "2026-07-28"
READ = {"kind": "deployment", "name": "web", "namespace": "shop"}
COMMAND = "kubectl get deployment web -n shop"
STAGES = ("way in", "planner", "gate+executor", "way out")


def figures(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "p99": pct(values, 99), "min": min(values) if values else float("nan")}


async def new_session(http: aiohttp.ClientSession, url: str, title: str) -> str:
    async with http.post(f"{url}/v1/sessions", json={"title": title}) as r:
        return str((await r.json())["session_id"])


def stamp_of(obs: Observer, tag: str, after: float) -> float:
    """When the one event of `tag` stored since `after` was stored (reads run one at a time);
    forgotten once taken."""
    found = [(k, t) for k, t in obs.times.items() if k[0] == tag and t >= after]
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} {tag} events during one read")
    obs.forget(found[0][0])
    return found[0][1]


class McpPath:
    """One SDK client; with `http`, in a new Interlock session (named by `Interlock-Session`),
    else in the gateway's session of the day. The SDK's clients nest (anyio cancel scopes):
    they are closed in the reverse order of their opening."""

    def __init__(self, stack: BenchStack, mode: str) -> None:
        self.url, self.mode = stack.url, mode
        self.token = token(stack, "operator")
        self.client: Client | None = None
        self.stack = AsyncExitStack()

    async def open(self, http: aiohttp.ClientSession | None) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if http is not None:
            headers["Interlock-Session"] = await new_session(http, self.url, "bench MCP")
        self.client = await self.stack.enter_async_context(Client(
            streamable_http_client(f"{self.url}/mcp",
                                   http_client=create_mcp_http_client(headers=headers)),
            mode=self.mode, client_info=Implementation(name="interlock-bench", version="1")))

    async def read(self) -> tuple[float, float, str]:
        assert self.client is not None
        t0 = time.perf_counter()
        r = await self.client.call_tool("get", READ)
        t1 = time.perf_counter()
        doc = r.structured_content or {}
        if r.is_error or doc.get("status") != "ok":
            raise RuntimeError(f"MCP read failed: {json.dumps(doc)[:400]}")
        return t0, t1, str(doc["call_id"])

    async def close(self) -> None:
        await self.stack.aclose()


class HttpPath:
    """A new session with its SSE stream open, and a POST per read."""

    def __init__(self, stack: BenchStack, http: aiohttp.ClientSession) -> None:
        self.url, self.http = stack.url, http
        self.results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sid = ""
        self.task: asyncio.Task[None] | None = None
        self.command = COMMAND  # what the next read says (bench/clusters.py names a context)
        self.last: dict[str, Any] = {}  # the last read's tool.result

    async def open(self, _: aiohttp.ClientSession | None) -> None:
        self.sid = await new_session(self.http, self.url, "bench HTTP")
        self.results = asyncio.Queue()
        connected = asyncio.Event()
        self.task = asyncio.create_task(self._follow(connected))
        await asyncio.wait_for(connected.wait(), 30)

    async def _follow(self, connected: asyncio.Event) -> None:
        async with self.http.get(f"{self.url}/v1/sessions/{self.sid}/events",
                                 timeout=aiohttp.ClientTimeout(total=None)) as r:
            connected.set()
            kind = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "tool.result":
                    self.results.put_nowait(json.loads(line[6:]))

    async def read(self) -> tuple[float, float, str]:
        t0 = time.perf_counter()
        async with self.http.post(f"{self.url}/v1/sessions/{self.sid}/messages",
                                  json={"text": self.command}) as r:
            if r.status != 202:
                raise RuntimeError(f"POST answered {r.status}: {await r.text()}")
        d = await asyncio.wait_for(self.results.get(), 60)
        t1 = time.perf_counter()
        if d.get("status") != "ok":
            raise RuntimeError(f"HTTP read failed: {json.dumps(d)[:400]}")
        self.last = d
        return t0, t1, str(d["call_id"])

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def measure(stack: BenchStack, obs: Observer, n: int, warmup: int = 10,
                  legacy: bool = False, per_session: int = 20) -> dict[str, Any]:
    """`n` reads of each path after `warmup` of each, alternated call by call; each path starts
    a new session every `per_session` reads (0: one session for the whole run — for MCP over
    HTTP without the header, the gateway's session of the day)."""
    names = ["mcp", "http"] + (["mcp_legacy"] if legacy else [])
    client_ms: dict[str, list[float]] = {p: [] for p in names}
    stage_ms: dict[str, dict[str, list[float]]] = {p: {s: [] for s in STAGES} for p in names}
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token(stack, 'operator')}"}) as http:
        paths: dict[str, McpPath | HttpPath] = {
            "mcp": McpPath(stack, REVISION), "http": HttpPath(stack, http),
            "mcp_legacy": McpPath(stack, "legacy")}
        try:
            for i in range(warmup + n):
                if i == 0 or (per_session and i % per_session == 0):
                    for p in reversed(names):
                        await paths[p].close()
                    for p in names:
                        await paths[p].open(http if per_session else None)
                for p in names:
                    sent, got, call_id = await paths[p].read()
                    proposed = await obs.wait("tool.proposed", call_id)
                    result = await obs.wait("tool.result", call_id)
                    obs.forget(("tool.proposed", call_id), ("tool.result", call_id))
                    asked = stamp_of(obs, "user.message" if p == "http" else "tool.requested",
                                     sent)
                    if i >= warmup:
                        client_ms[p].append((got - sent) * 1000)
                        for stage, (a, b) in zip(STAGES, ((sent, asked), (asked, proposed),
                                                          (proposed, result), (result, got)),
                                                 strict=True):
                            stage_ms[p][stage].append((b - a) * 1000)
        finally:
            for p in reversed(names):
                await paths[p].close()
    out: dict[str, Any] = {"revision": REVISION, "reads": n, "per_session": per_session}
    for p in names:
        fifth = max(1, n // 5)
        out[p] = {"client": figures(client_ms[p]),
                  "stages": {s: figures(v) for s, v in stage_ms[p].items()},
                  # How a long session ages: the client's p50 over the first and the last fifth.
                  "client_p50_first_last_fifth": (pct(client_ms[p][:fifth], 50),
                                                  pct(client_ms[p][-fifth:], 50))}
    out["ratio_p50_mcp_to_http"] = out["mcp"]["client"]["p50"] / out["http"]["client"]["p50"]
    return out


def report(r: dict[str, Any]) -> str:
    rows = [f"{'path':<34} {'client p50 / p95':>20}   p50 per stage: " + " | ".join(STAGES)
            + " | client p50, first / last fifth"]
    names = {"mcp": f"MCP, Streamable HTTP ({r['revision']})", "http":
             "HTTP API: POST message + SSE", "mcp_legacy": "MCP, 2025-11-25 (handshake)"}
    for key, label in names.items():
        if key not in r:
            continue
        c, st = r[key]["client"], r[key]["stages"]
        per = " | ".join(f"{st[s]['p50']:.2f}" for s in STAGES)
        first, last = r[key]["client_p50_first_last_fifth"]
        rows.append(f"{label:<34} {c['p50']:>8.2f} / {c['p95']:>7.2f} ms   {per} ms | "
                    f"{first:.1f} / {last:.1f} ms")
    every = (f"a new session every {r['per_session']} reads" if r["per_session"]
             else "one session per path for the whole run")
    rows.append(f"MCP / HTTP, client p50: {r['ratio_p50_mcp_to_http']:.2f}x  "
                f"({r['reads']} reads of each, alternated; {every})")
    return "\n".join(rows)


async def main(n: int, legacy: bool, per_session: int) -> dict[str, Any]:
    stack = await start_stack()
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(2)
        return await measure(stack, obs, n, legacy=legacy, per_session=per_session)
    finally:
        await obs.close()
        await stack.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=200)
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--per-session", type=int, default=20,
                    help="reads per session (0: one session per path for the whole run)")
    a = ap.parse_args()
    res = asyncio.run(main(a.n, a.legacy, a.per_session))
    print(json.dumps(res))
    print(report(res))
