"""SSE load client, a variant of anchors/sse_clients.py that both servers can be measured with.

Usage: sse_client.py URL C N [--token T] [--fire URL]
C concurrent clients GET URL and read N data events each. The latency of an event is now minus
its stamp: the anchor floor server's `t` (time.time() just before its broadcast) or, for
Interlock's gateway whose data is the raw event JSON, the event's `occurred_at` (set when the
event is made, just before it is appended durably to the log). Everything else — aiohttp, one
process, line parsing, JSON decoding — is the same for both.

Prints `READY <c>` once every client is connected; then either POSTs --fire (the floor) or waits
for a line on stdin (the caller appends the events), and finally prints a JSON result line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

import aiohttp


def stamp(d: dict) -> float:  # type: ignore[type-arg]
    if "t" in d:
        return float(d["t"])
    return datetime.fromisoformat(d["occurred_at"].replace("Z", "+00:00")).timestamp()


async def client(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 lat: list[float], n: int, ready: list[int], stamps: set[float]) -> None:
    async with session.get(url, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=None)) as r:
        assert r.status == 200, r.status
        ready.append(1)
        got = 0
        async for line in r.content:
            if line.startswith(b"data: "):
                d = json.loads(line[6:])
                if "t" not in d and "occurred_at" not in d:
                    continue
                t = stamp(d)
                lat.append((time.time() - t) * 1000)
                stamps.add(t)
                got += 1
                if got == n:
                    return


async def main(url: str, c: int, n: int, token: str, fire: str) -> None:
    lat: list[float] = []
    ready: list[int] = []
    stamps: set[float] = set()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        tasks = [asyncio.create_task(client(s, url, headers, lat, n, ready, stamps))
                 for _ in range(c)]
        t0 = time.perf_counter()
        while len(ready) < c:
            await asyncio.sleep(0.1)
            bad = [t for t in tasks if t.done() and t.exception()]
            if bad:
                raise bad[0].exception()  # type: ignore[misc]
        connect_s = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        print(f"READY {c}", flush=True)
        if fire:
            async with s.post(fire) as r:
                await r.read()
        else:
            await asyncio.to_thread(sys.stdin.readline)
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
    lat.sort()
    print(json.dumps({
        "clients": c, "events": n, "connect_s": round(connect_s, 2),
        "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1], "max": lat[-1],
        "delivered": len(lat),
        # first stamp → last stamp: how long the server took to emit the N events (nominally
        # (N-1) * 50 ms; a server busy writing to its clients emits later, so it loads the
        # client less)
        "span_ms": round((max(stamps) - min(stamps)) * 1000, 1),
    }), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = {"--token": "", "--fire": ""}
    pos: list[str] = []
    while args:
        a = args.pop(0)
        if a in opts:
            opts[a] = args.pop(0)
        else:
            pos.append(a)
    asyncio.run(main(pos[0], int(pos[1]), int(pos[2]), opts["--token"], opts["--fire"]))
