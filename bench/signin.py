"""What signing in with the company's identity provider (issue 20) costs each request: the same
authenticated request with a static token and with an ID token, alternated request by request,
on one stack whose gateway is pointed at a real OpenID Provider (tests/oidc_op.py: panva's
`oidc-provider` on Node, on loopback).

- static: `GET /v1/whoami` with the operator's static bearer token (a SHA-256 and a dict lookup).
- ID token: `GET /v1/whoami` with alice's ID token (RS256, issued to the CLI client through the
  device flow): the gateway verifies its signature against the provider's cached JWKS with
  joserfc and checks iss, aud, azp, exp, nbf and iat on every request; nothing is cached per
  token.
- first request after a key rotation: the provider rotated its signing key; the first request
  with a token signed by the new key makes the gateway fetch the JWKS again (once; at most once
  per INTERLOCK_OIDC_JWKS_REFRESH_MIN, set to 1 s here).

`GET /v1/whoami` does nothing else (no log read), so the difference is the authentication's.

Usage: python -m bench.signin [N]   (N requests of each, after 20 of each to warm up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BenchStack, pct, start_stack, token
from tests.oidc_op import CLI_CLIENT_ID, Op, device_id_token, start_op


def figures(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "p99": pct(values, 99), "min": min(values) if values else float("nan")}


async def _once(http: aiohttp.ClientSession, url: str, bearer: str) -> float:
    t0 = time.perf_counter()
    async with http.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {bearer}"}) as r:
        await r.read()
        assert r.status == 200, r.status
    return (time.perf_counter() - t0) * 1000


async def measure(stack: BenchStack, op: Op, n: int) -> dict[str, Any]:
    static = token(stack, "operator")
    id_token = await device_id_token(op, CLI_CLIENT_ID, "alice")
    times: dict[str, list[float]] = {"static": [], "id_token": []}
    async with aiohttp.ClientSession() as http:
        for i in range(20 + n):
            for path, bearer in (("static", static), ("id_token", id_token)):
                ms = await _once(http, stack.url, bearer)
                if i >= 20:
                    times[path].append(ms)
        op.rotate()
        rotated = await device_id_token(op, CLI_CLIENT_ID, "alice")
        await asyncio.sleep(1.1)  # past INTERLOCK_OIDC_JWKS_REFRESH_MIN since the last fetch
        first = await _once(http, stack.url, rotated)
        after = [await _once(http, stack.url, rotated) for _ in range(20)]
    return {"requests": n, "static": figures(times["static"]),
            "id_token": figures(times["id_token"]),
            "after_rotation": {"first_ms": first, "then": figures(after)}}


def report(r: dict[str, Any]) -> str:
    s, o = r["static"], r["id_token"]
    rot = r["after_rotation"]
    return "\n".join([
        f"GET /v1/whoami, {r['requests']} of each, alternated — p50 / p95 / p99 ms:",
        f"  static token  {s['p50']:.2f} / {s['p95']:.2f} / {s['p99']:.2f}",
        f"  ID token      {o['p50']:.2f} / {o['p95']:.2f} / {o['p99']:.2f}"
        f"   (+{o['p50'] - s['p50']:.2f} ms at the median)",
        f"  after a key rotation: first request {rot['first_ms']:.2f} ms (fetches the JWKS), "
        f"then p50 {rot['then']['p50']:.2f} ms",
    ])


async def main(n: int) -> dict[str, Any]:
    # The provider's redirect URI is not used by the device flow: any gateway URL will do.
    op = start_op(Path(tempfile.mkdtemp(prefix="interlock-bench-op-")), "http://127.0.0.1:9")
    try:
        # Key sets fetched at most once a second (default 10 s), so the rotation below is seen
        # without the bench waiting out the default.
        stack = await start_stack(extra_env={**op.gateway_env(),
                                             "INTERLOCK_OIDC_JWKS_REFRESH_MIN": "1"})
        try:
            return await measure(stack, op, n)
        finally:
            await stack.stop()
    finally:
        op.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=500)
    res = asyncio.run(main(ap.parse_args().n))
    print(report(res))
    print(json.dumps(res))
