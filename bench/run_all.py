"""Every benchmark of issue 10, ours and the anchors side by side, in one run on this machine.

Usage: python -m bench.run_all [--quick] [--skip-anchors] [--sse 1000,5000]
Needs bench/setup_anchors.sh once (the anchors' venv and PostgreSQL). Prints a table and
writes the raw figures to bench/results/<timestamp>.json.
"""
# The table writes the multiplication sign on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import (
    before_after,
    budget,
    clusters,
    cycles,
    decide_path,
    decisions,
    mcp_read,
    redact,
    replay,
    signin,
    signing,
    sse,
    startup,
    throughput,
)
from bench.common import ANCHOR_PY, ANCHORS, ROOT, Observer, admin_url, start_stack

PG_DSN = os.environ.get("INTERLOCK_BENCH_PG", "postgresql://postgres:pg@127.0.0.1:5432/lg")


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "kernel": platform.release(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def anchor(script: str, *args: str, timeout: float = 900) -> str:
    p = subprocess.run([str(ANCHOR_PY), str(ANCHORS / script), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=ANCHORS)
    if p.returncode != 0:
        return "ERROR " + (p.stdout + p.stderr)[-800:]
    return p.stdout


def parse_p(text: str, label: str) -> dict[str, float]:
    m = re.search(re.escape(label) + r".*?p50=([\d.]+)ms p99=([\d.]+)ms", text)
    return {"p50": float(m.group(1)), "p99": float(m.group(2))} if m else {}


def anchors_cycle(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lg = anchor("langgraph_hitl.py", str(n))
    for store in ("memory", "sqlite"):
        for verb in ("get", "scale"):
            out[f"langgraph_{store}_{'read' if verb == 'get' else 'write'}"] = parse_p(
                lg, f"langgraph {store:7s} {verb:5s}")
    pg = anchor("langgraph_hitl_postgres.py", PG_DSN, str(max(50, n * 3 // 5)))
    out["langgraph_postgres_read"] = parse_p(pg, "langgraph postgres get")
    out["langgraph_postgres_write"] = parse_p(pg, "langgraph postgres scale")
    hp = anchor("holdpoint_cycle.py", str(max(50, n * 3 // 5)))
    out["holdpoint_write"] = parse_p(hp, "holdpoint sqlite write")
    out["raw"] = {"langgraph": lg, "postgres": pg, "holdpoint": hp}
    return out


def hop(url: str, n: int) -> dict[str, Any]:
    text = anchor("jetstream_hop.py", url, str(n))
    res = parse_p(text, "one hop")
    m = re.search(r"pipelined acked publish: (\d+) msg/s", text)
    if m:
        res["pipelined_msg_s"] = float(m.group(1))
    res["raw"] = text
    return res


async def run(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    res: dict[str, Any] = {"machine": machine()}
    t0 = time.perf_counter()

    def note(what: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {what}", flush=True)

    note("event signatures: CPU per event (sign, verify)")
    res["signing"] = signing.measure(500 if q else 2000)
    print(signing.report(res["signing"]), flush=True)

    note("decision signatures: CPU per human decision to verify (issue 18)")
    res["decisions"] = decisions.measure(200 if q else 1000)
    print(decisions.report(res["decisions"]), flush=True)

    note("redaction of read results: CPU per result (issue 16)")
    res["redact"] = redact.measure(100 if q else 300)
    print(redact.report(res["redact"]), flush=True)

    note("gated reads/s before issue 14 (accounts, signatures) and now, alternated")
    res["before_after"] = await asyncio.to_thread(before_after.compare, 2 if q else 5,
                                                  5.0 if q else 10.0)
    note("gated reads/s before commands were events (issue 17) and now, no-op cluster")
    res["before_after_commands"] = await asyncio.to_thread(
        before_after.compare, 2 if q else 5, 5.0 if q else 10.0, before_after.BASE_COMMANDS,
        True)

    note("the decide path before decisions were signed (issue 18) and now, alternated")
    res["decide_path"] = await asyncio.to_thread(decide_path.compare, 2 if q else 3,
                                                 10 if q else 30)
    print(decide_path.report(res["decide_path"]), flush=True)

    note("startup of `interlock up`")
    res["startup"] = await startup.startup(1 if q else 3)

    note("stack up; idle RSS")
    stack = await start_stack()
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(3)
        res["rss_idle_mb"] = throughput.rss_now(stack)
        note("one-hop floor (anchors/jetstream_hop.py on the stack's nats-server)")
        res["hop"] = await asyncio.to_thread(hop, admin_url(stack), 200 if q else 1000)
        note("read cycle")
        res["read"] = await cycles.read_cycle(stack, obs, 50 if q else 500)
        note("write cycle")
        res["write"] = await cycles.write_cycle(stack, obs, 10 if q else 60)
        note("cluster cost (executor adapter → sandbox, no bus)")
        res["cluster"] = await asyncio.to_thread(cycles.cluster_cost, stack, 20 if q else 100)
        note("throughput, 1 instance per service")
        secs = 5.0 if q else 15.0
        res["tput1"] = await throughput.throughput(stack, obs, 64, secs)
        for svc in ("planner", "gate", "executor"):
            stack.start_extra(svc, 2)
        await asyncio.sleep(3)
        note("throughput, 2 instances per service")
        res["tput2"] = await throughput.throughput(stack, obs, 64, secs)
    finally:
        await obs.close()
        await stack.stop()

    note("throughput with a no-op cluster adapter (Interlock's own cost)")
    stack = await start_stack(noop_cluster=True)
    obs = await Observer().start(stack)
    try:
        res["read_noop"] = await cycles.read_cycle(stack, obs, 50 if q else 300)
        res["write_noop"] = await cycles.write_cycle(stack, obs, 10 if q else 50)
        res["tput1_noop"] = await throughput.throughput(stack, obs, 64, secs)
        for svc in ("planner", "gate", "executor"):
            stack.start_extra(svc, 2)
        await asyncio.sleep(3)
        res["tput2_noop"] = await throughput.throughput(stack, obs, 64, secs)
    finally:
        await obs.close()
        await stack.stop()

    note("budget of a gated read: CPU per process, fsyncs per call, the ceilings they set")
    res["budget"] = await budget.main(4.0 if q else 8.0)

    if not args.skip_anchors:
        note("anchors: LangGraph memory/SQLite/Postgres, holdpoint")
        res["anchors"] = await asyncio.to_thread(anchors_cycle, 100 if q else 500)

    res["sse"] = {}
    for c in args.sse:
        # A fresh gateway per size: aiohttp learns that an SSE client left only when the next
        # write (at the latest the 15 s heartbeat) fails, so a previous round's streams would
        # still be in the gateway.
        note(f"SSE {c} clients: ours, then the floor")
        stack = await start_stack()
        try:
            res["sse"][str(c)] = {"ours": await sse.ours(stack, c), "floor": await sse.floor(c)}
        finally:
            await stack.stop()

    n = 10_000 if q else 100_000
    note(f"replay of {n} events")
    stack = await start_stack()
    try:
        small, _ = await replay.store(stack, 3)
        small_empty = await replay.small_session_read(stack, small)
        sid, stored_s = await replay.store(stack, n)
        res["replay"] = {"stored_s": stored_s, "ours": await replay.ours(stack, sid, n),
                         "floor": await asyncio.to_thread(replay.floor, stack, n),
                         "batch_5000_ev_s": await replay.batch_size_effect(stack, sid, 5000),
                         "small_session_read_ms": {
                             "log_empty": small_empty,
                             "after_big_session": await replay.small_session_read(stack, small)}}
    finally:
        await stack.stop()
    note("a read through the MCP server vs the same read through the HTTP API (issue 19)")
    stack = await start_stack()
    obs = await Observer().start(stack)
    try:
        await asyncio.sleep(2)
        res["mcp_read"] = await mcp_read.measure(stack, obs, 50 if q else 300)
        print(mcp_read.report(res["mcp_read"]), flush=True)
    finally:
        await obs.close()
        await stack.stop()
    note("an ID token (OIDC, issue 20) vs a static token on each request")
    res["signin"] = await signin.main(100 if q else 500)
    print(signin.report(res["signin"]), flush=True)
    note("a read through a spoke (leaf node) vs directly on the hub (issue 21)")
    res["clusters"] = await clusters.main(100 if q else 500)
    print(clusters.report(res["clusters"]), flush=True)
    note("done")
    return res


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "—"


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    m = r["machine"]
    head = (f"{m['date']} · {m['nproc']} CPUs · {m['memory_gb']} GB · {m['cpu']} · "
            f"Python {m['python']}")
    rd, wr, an = r["read"], r["write"], r.get("anchors", {})
    rows.append(("read cycle (proposed→result)", f"{rd['total']['p50']:.2f} / "
                 f"{rd['total']['p99']:.2f} ms", f"hop {r['hop'].get('p50', 0):.2f} ms",
                 "ratio " + ratio(rd["total"]["p50"], r["hop"].get("p50", 0)) + " (≤4×)"))
    if "read_noop" in r:
        rn = r["read_noop"]["total"]
        rows.append(("read cycle, no-op cluster", f"{rn['p50']:.2f} / {rn['p99']:.2f} ms",
                     f"hop {r['hop'].get('p50', 0):.2f} ms",
                     "ratio " + ratio(rn["p50"], r["hop"].get("p50", 0)) + " (≤4×)"))
    rows.append(("  cluster read alone (sandbox)", f"{r['cluster']['read']['p50']:.2f} / "
                 f"{r['cluster']['read']['p99']:.2f} ms", "", ""))
    w1, w2, wb = wr["proposed_to_requested"], wr["decided_to_result"], wr["both"]
    rows.append(("write half 1 (proposed→approval.requested)",
                 f"{w1['p50']:.2f} / {w1['p99']:.2f} ms", "", ""))
    rows.append(("write half 2 (decision POST→result)",
                 f"{w2['p50']:.2f} / {w2['p99']:.2f} ms", "", ""))
    for name, key, want in (("LangGraph+SQLite", "langgraph_sqlite_write", "≤0.33×"),
                            ("LangGraph+Postgres", "langgraph_postgres_write", "≤0.2×"),
                            ("holdpoint", "holdpoint_write", "≤1.5×"),
                            ("LangGraph memory", "langgraph_memory_write", "")):
        a = an.get(key, {})
        if a:
            rows.append((f"write both halves vs {name}", f"{wb['p50']:.2f} / {wb['p99']:.2f} ms",
                         f"{a['p50']:.2f} / {a['p99']:.2f} ms",
                         f"ratio {ratio(wb['p50'], a['p50'])}" + (f" ({want})" if want else "")))
    if "write_noop" in r:
        wn = r["write_noop"]["both"]
        rows.append(("write both halves, no-op cluster", f"{wn['p50']:.2f} / {wn['p99']:.2f} ms",
                     "", ""))
    rows.append(("  dry-run preview in the cycle (classified→preview)",
                 f"{wr['classified_to_preview_recorded']['p50']:.2f} ms", "", ""))
    rows.append(("  cluster dry run alone / write alone (sandbox)",
                 f"{r['cluster']['preview']['p50']:.2f} / {r['cluster']['write']['p50']:.2f} ms",
                 "", ""))
    for key, label in (("tput1", "throughput 1×, sandbox"), ("tput2", "throughput 2×, sandbox"),
                       ("tput1_noop", "throughput 1×, no-op cluster"),
                       ("tput2_noop", "throughput 2×, no-op cluster")):
        t = r[key]
        rows.append((label + f" ({t['sessions']} sessions)", f"{t['calls_per_s']:.0f} calls/s",
                     "", "target ≥1000/s (1×)" if key.startswith("tput1") else ""))
    sg = r.get("signing")
    if sg:
        rows.append(("event signature: sign / verify, CPU per event",
                     f"{sg['sign_us']:.0f} / {sg['verify_us']:.0f} µs", "",
                     f"{sg['per_gated_read_us']:.0f} µs per gated read "
                     f"({signing.SIGNS_PER_READ} signs, {signing.VERIFIES_PER_READ} verifies)"))
    dc = r.get("decisions")
    if dc:
        ed, pk = dc["decisions"]["ed25519, 1 call(s)"], dc["decisions"]["passkey, 1 call(s)"]
        rows.append(("decision signature: verify ed25519 / passkey, CPU per decision",
                     f"{ed['verify_us']:.0f} / {pk['verify_us']:.0f} µs", "",
                     f"once per human decision (registry of {dc['registry_keys']} keys)"))
    dp = r.get("decide_path")
    if dp:
        b, a = dp["median_ms"]["before"], dp["median_ms"]["after"]
        rows.append((f"decision POST→granted, no-op cluster, now vs unsigned ({dp['base']})",
                     f"{a['POST→decided recorded'] + a['decided→granted']:.2f} ms",
                     f"{b['POST→decided recorded'] + b['decided→granted']:.2f} ms",
                     f"POST→result {b['POST→result']:.2f} → {a['POST→result']:.2f} ms "
                     f"({dp['rounds']} rounds each, alternated)"))
    rd = r.get("redact")
    if rd:
        get, logs = rd.get("get deployment -o json"), rd.get("logs, 200 clean lines")
        if get and logs:
            rows.append(("redaction: get deployment / 200 log lines, CPU per result",
                         f"{get['cold_us']:.0f} / {logs['cold_us']:.0f} µs", "",
                         f"producing them unmasked: {get['result_us']:.0f} / "
                         f"{logs['result_us']:.0f} µs"))
    ba = r.get("before_after")
    if ba:
        rows.append((f"gated reads/s now vs before issue 14 ({ba['base']})",
                     f"{ba['after_median']:.0f} calls/s", f"{ba['before_median']:.0f} calls/s",
                     f"{ba['change_pct']:+.1f}% (aim: loss < 15%; {ba['rounds']} rounds each, "
                     "alternated)"))
    bc = r.get("before_after_commands")
    if bc:
        rows.append((f"gated reads/s, no-op cluster, now vs EXEC commands ({bc['base']})",
                     f"{bc['after_median']:.0f} calls/s", f"{bc['before_median']:.0f} calls/s",
                     f"{bc['change_pct']:+.1f}% ({bc['rounds']} rounds each, alternated)"))
    b = r.get("budget", {})
    if b:
        per = ", ".join(f"{k} {v:.2f}" for k, v in b["cpu_ms_per_call"].items())
        rows.append(("  budget: CPU ms per call, no-op cluster",
                     f"{b['cpu_ms_per_call_total']:.2f} ms", "",
                     f"≤ {b['ceiling_by_cpu_calls_per_s']} calls/s on {m['nproc']} CPUs ({per})"))
        if "fsyncs_per_call_total" in b:
            rows.append(("  budget: fsyncs per call / server's durable writes",
                         f"{b['fsyncs_per_call_total']:.2f}", f"{b['durable_writes_per_s']}/s",
                         f"≤ {b['ceiling_by_durable_writes_calls_per_s']} calls/s"))
    for c, s in r["sse"].items():
        o, f = s["ours"], s["floor"]
        rows.append((f"SSE {c} clients p50 / p99", f"{o['p50']:.1f} / {o['p99']:.1f} ms",
                     f"{f['p50']:.1f} / {f['p99']:.1f} ms",
                     f"p99 ratio {ratio(o['p99'], f['p99'])} (≤1.5×)"))
    rp = r["replay"]
    share = 100 * rp["ours"]["events_per_s"] / max(1, rp["floor"].get("events_per_s", 0))
    rows.append((f"replay {rp['ours']['events']} events (Bus.read)",
                 f"{rp['ours']['events_per_s']:.0f} ev/s",
                 f"{rp['floor'].get('events_per_s', 0):.0f} ev/s", f"{share:.0f}% (≥50%)"))
    if "batch_5000_ev_s" in rp:
        rows.append(("  diagnostic: Bus.read with batch 5000", f"{rp['batch_5000_ev_s']:.0f} ev/s",
                     "", ""))
        sm = rp["small_session_read_ms"]
        rows.append(("  diagnostic: read a 3-event session, log empty / after",
                     f"{sm['log_empty']:.2f} / {sm['after_big_session']:.2f} ms", "", ""))
    if "seconds" in rp["ours"].get("http_audit", {}):
        rows.append(("  GET /audit over HTTP",
                     f"{rp['ours']['http_audit']['events_per_s']:.0f} ev/s", "", ""))
    mr = r.get("mcp_read")
    if mr:
        m_, h_ = mr["mcp"]["client"], mr["http"]["client"]
        rows.append((f"read via MCP (Streamable HTTP, {mr['revision']}) p50 / p95",
                     f"{m_['p50']:.2f} / {m_['p95']:.2f} ms",
                     f"{h_['p50']:.2f} / {h_['p95']:.2f} ms",
                     f"vs POST message + SSE: ratio {ratio(m_['p50'], h_['p50'])} "
                     f"({mr['reads']} reads each, alternated)"))
    si = r.get("signin")
    if si:
        rows.append(("GET /v1/whoami with an ID token (OIDC) p50 / p95",
                     f"{si['id_token']['p50']:.2f} / {si['id_token']['p95']:.2f} ms",
                     f"{si['static']['p50']:.2f} / {si['static']['p95']:.2f} ms",
                     f"vs a static token ({si['requests']} each, alternated); after a key "
                     f"rotation {si['after_rotation']['first_ms']:.1f} ms once"))
    cl = r.get("clusters")
    if cl:
        a_, b_ = cl["a"]["client"], cl["b"]["client"]
        rows.append(("read via a spoke (leaf node) p50 / p95",
                     f"{a_['p50']:.2f} / {a_['p95']:.2f} ms",
                     f"{b_['p50']:.2f} / {b_['p95']:.2f} ms",
                     f"vs the executor directly on the hub: {cl['diff_p50_ms']:+.2f} ms at p50 "
                     f"({cl['reads']} reads each, alternated)"))
    for svc in ("planner", "gate", "executor", "gateway"):
        rows.append((f"RSS {svc} idle / under load",
                     f"{r['rss_idle_mb'].get(svc, 0):.0f} / "
                     f"{r['tput1']['rss_under_load_mb'].get(svc, 0):.0f} MB", "", "idle <80 MB"))
    rows.append(("`interlock up` ready (cold / warm)",
                 f"{r['startup']['cold_s']:.2f} / {r['startup']['warm_s']:.2f} s", "", "<5 s"))
    w = [max(len(x[i]) for x in rows) for i in range(4)]
    lines = [head, "", f"{'what':{w[0]}}  {'Interlock':{w[1]}}  {'anchor/floor':{w[2]}}  verdict"]
    lines += [f"{a:{w[0]}}  {b:{w[1]}}  {c:{w[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip-anchors", action="store_true")
    p.add_argument("--sse", default="1000,5000")
    args = p.parse_args()
    args.sse = [int(x) for x in args.sse.split(",") if x]
    res = asyncio.run(run(args))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    text = table(res)
    path.with_suffix(".txt").write_text(text + "\n")
    print()
    print(text)
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
