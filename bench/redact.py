"""CPU per read result for value-based redaction (issue 16): what `redact` (objects) and the
executor's `clean` (every string of the event it appends) add to a read, on results of the
shapes reads produce — objects from the sandbox's scenarios, the leak corpus, logs.

Usage: python -m bench.redact [N]
Prints µs per result (process CPU, one core) that masking adds to producing it (the reader's
`redact` and the executor's `result_of`), cold and warm, next to producing the same result
unmasked (JSON text, bounding, the ToolResult) for scale.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas.base import Target
from schemas.execution import ToolResult
from services.executor.domain import Work
from services.executor.kube import Outcome
from services.executor.redact import redact
from services.executor.results import bounded_data, bounded_text, result_of
from services.runtime import credentials

PODS = by_plural("", "pods")
DEPLOYMENTS = by_plural("apps", "deployments")
CONFIGMAPS = by_plural("", "configmaps")


def cpu_us(fn: Any, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6


CMD = Work(session_id="s-bench", call_id="c-bench", kind="read", tool="get", args={},
           target=Target(), causation_id="")


def _plain(text: str, data: Any) -> ToolResult:
    """The same result without redaction, for scale."""
    out, _ = bounded_text(text)
    return ToolResult(session_id="s-bench", call_id="c-bench", tool="get", status="ok",
                      output=out, data=bounded_data(data)[0], actor="executor")


def cases() -> dict[str, tuple[str, Any]]:
    """name -> (kind, raw object or text) as the cluster returns it."""
    sb = Sandbox(["baseline", "payment-oom", "scaling-loop"], time_scale=0.02)
    pods = [p for ns in ("shop", "production") for p in sb.store.list(PODS, ns)]
    deploy = sb.store.list(DEPLOYMENTS, "production")[0]
    from tests import leaks  # the corpus ConfigMap: a read that does find credentials

    corpus_cm = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "billing-config", "namespace": "billing"},
                 "data": leaks.configmap_data()}
    clean_log = "\n".join(f"2026-12-07T09:{i % 60:02d}:00Z INFO request_id=8d0f5a8e-3c1b-4c7e-"
                          f"9a65-0b2f6e4d1c{i % 100:02d} GET /api/orders/{i} 200 12ms"
                          for i in range(200))
    leaky_log = "\n".join(line.replace("{ts}", "2026-12-07T09:00:00Z")
                          for line in leaks.LOG_LINES * 17)
    return {
        "get deployment -o json": ("Deployment", deploy),
        f"list pods -o json ({len(pods)} pods)": ("Pod", {"kind": "List", "items": pods}),
        "get configmap (leak corpus)": ("ConfigMap", corpus_cm),
        "logs, 200 clean lines": ("", clean_log),
        "logs, 204 lines with credentials": ("", leaky_log),
    }


def measure(n: int = 300) -> dict[str, dict[str, float]]:
    """Per case: the executor's own path (the reader's `redact`, then `result_of`) against the
    same result unmasked. Cold: the cache of short strings emptied before every result (the
    first read of an object); warm: kept (the same objects read again)."""
    out: dict[str, dict[str, float]] = {}
    for name, (kind, raw) in cases().items():
        if isinstance(raw, str):
            def redacted(raw: str = raw) -> ToolResult:
                return result_of(CMD, Outcome(text=raw, data={"lines": raw.count("\n")}))

            def plain(raw: str = raw) -> ToolResult:
                return _plain(raw, {"lines": raw.count("\n")})
        else:
            def redacted(raw: Any = raw, kind: str = kind) -> ToolResult:
                obj = redact(raw, kind)
                return result_of(CMD, Outcome(text=json.dumps(obj, indent=2), data=obj))

            def plain(raw: Any = raw) -> ToolResult:
                return _plain(json.dumps(raw, indent=2), raw)

        def cold(fn: Any = redacted) -> None:
            credentials._short.cache_clear()
            fn()

        base = cpu_us(plain, n)
        out[name] = {"bytes": len(json.dumps(raw)), "result_us": base,
                     "cold_us": max(cpu_us(cold, n) - base, 0.0),
                     "warm_us": max(cpu_us(redacted, n) - base, 0.0)}
    return out


def report(r: dict[str, dict[str, float]]) -> str:
    lines = ["redaction per read result (process CPU, one core; µs):",
             f"  {'result':36s} {'bytes':>7s} {'cold':>6s} {'warm':>6s} {'unmasked':>9s}"]
    for name, f in r.items():
        lines.append(f"  {name:36s} {int(f['bytes']):7d} {f['cold_us']:6.0f} "
                     f"{f['warm_us']:6.0f} {f['result_us']:9.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 300)))
