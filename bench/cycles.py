"""Read and write cycles through the real stack, sequential, one call at a time.

read:  `tool.proposed` recorded → `tool.result` recorded (gate classifies, publishes the command,
       executor runs the read against the cluster and records the result).
write: half 1: `tool.proposed` recorded → `approval.requested` recorded (classification, the
       executor's server-side dry run, the gate's approval request);
       half 2: decision POSTed to the gateway → `tool.result` recorded (gateway checks and records
       the decision, the gate grants and signs, the executor verifies, claims, runs, records).
       No human time: the decision is posted as soon as the request is seen. Since issue 18 it
       carries the approver's signature, made (like the human's client makes it) before the
       POST's clock starts: its cost is bench/decisions.py's.
cluster: the same Kubernetes calls made directly with the executor's adapter (no bus), so the
       cluster's own share is reported on its own.

Usage: python -m bench.cycles [N_READ] [N_WRITE] [--noop]   (--noop: the no-op cluster executor)

"Recorded" times are when the server republished the stored event (see common.Observer).
Proposals are appended as the planner's NATS identity (what the planner does after a model step).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.common import BenchStack, Observer, bus_as, start_stack, summary, token
from schemas.approval import ApprovalRequested
from schemas.ids import new_call_id, new_session_id
from schemas.planning import ToolProposed
from services.gate.domain import approval_id_for
from services.runtime import approvers
from services.runtime.bus import Bus

READ = ("get", {"kind": "deployment", "namespace": "shop", "name": "web"})


def scale(n: int) -> tuple[str, dict[str, Any]]:
    return ("scale", {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": n})


async def read_cycle(stack: BenchStack, obs: Observer, n: int, warmup: int = 20,
                     per_session: int = 10) -> dict[str, Any]:
    bus = await bus_as(stack, "planner")
    total: list[float] = []
    classify: list[float] = []
    execute: list[float] = []
    sid = new_session_id()
    try:
        for i in range(warmup + n):
            if i % per_session == 0:
                sid = new_session_id()
            tool, args = READ
            p = ToolProposed(session_id=sid, call_id=new_call_id(), tool=tool, args=args,
                             source="llm")
            await bus.append(p)
            t0 = await obs.wait("tool.proposed", p.call_id)
            t1 = await obs.wait("tool.classified", p.call_id)
            t2 = await obs.wait("tool.result", p.call_id)
            if i >= warmup:
                total.append((t2 - t0) * 1000)
                classify.append((t1 - t0) * 1000)
                execute.append((t2 - t1) * 1000)
            obs.forget(("tool.proposed", p.call_id), ("tool.classified", p.call_id),
                       ("tool.result", p.call_id))
    finally:
        await bus.close()
    return {"total": summary(total), "proposed_to_classified": summary(classify),
            "classified_to_result": summary(execute)}


def approver_key(stack: BenchStack) -> Ed25519PrivateKey | None:
    """The key `interlock up` enrolled for the approver (issue 18), if the stack has one."""
    person_key = getattr(stack, "person_key", None)
    if person_key is None:
        return None
    path = person_key("approver")
    return approvers.load_private_key(path) if path.exists() else None


async def decision(bus: Bus, sid: str, key: Ed25519PrivateKey | None) -> dict[str, Any]:
    """The approver's decision body: signed over the approval as recorded, when a key is
    enrolled (what `interlock approve` and the Command Center send)."""
    body: dict[str, Any] = {"decision": "approve"}
    if key is not None:
        req = next(s.event for s in await bus.session(sid)
                   if isinstance(s.event, ApprovalRequested))
        statement = approvers.decision_statement(req, approver="approver", decision="approve")
        body["signature"] = msgspec.to_builtins(approvers.sign_statement(statement, key))
    return body


async def write_cycle(stack: BenchStack, obs: Observer, n: int, warmup: int = 5) -> dict[str, Any]:
    bus = await bus_as(stack, "planner")
    half1: list[float] = []
    half2: list[float] = []
    both: list[float] = []
    preview: list[float] = []
    post: list[float] = []
    stages: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {token(stack, 'approver')}"}
    key = approver_key(stack)
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(warmup + n):
                sid = new_session_id()
                tool, args = scale(3 + i % 2)  # alternate, so every call is a real change
                p = ToolProposed(session_id=sid, call_id=new_call_id(), tool=tool, args=args,
                                 source="llm", rationale="bench", evidence=("bench",))
                aid = approval_id_for(p.call_id)
                await bus.append(p)
                t0 = await obs.wait("tool.proposed", p.call_id)
                tc = await obs.wait("tool.classified", p.call_id)
                tp = await obs.wait("preview.recorded", p.call_id)
                t1 = await obs.wait("approval.requested", aid)
                # The human's time is excluded: decide as soon as the request is recorded.
                body = await decision(bus, sid, key)
                t2 = time.perf_counter()
                async with http.post(f"{stack.url}/v1/approvals/{aid}/decision",
                                     json=body, headers=headers) as r:
                    answer = await r.text()
                    assert r.status == 202, (r.status, answer)
                t_posted = time.perf_counter()
                t3 = await obs.wait("tool.result", p.call_id)
                td = await obs.wait("approval.decided", aid)
                tg = await obs.wait("approval.granted", aid)
                ts = await obs.wait("tool.started", p.call_id)
                # The executor verifies the write (e.g. rollout) after recording the result, on
                # the same consumer: wait for it so the next cycle does not queue behind it.
                await obs.wait("tool.verified", p.call_id, timeout=60)
                if i >= warmup:
                    half1.append((t1 - t0) * 1000)
                    half2.append((t3 - t2) * 1000)
                    both.append((t1 - t0 + t3 - t2) * 1000)
                    preview.append((tp - tc) * 1000)
                    post.append((t_posted - t2) * 1000)
                    for name, a, b in (("proposed→classified", t0, tc),
                                       ("classified→preview.recorded", tc, tp),
                                       ("preview.recorded→approval.requested", tp, t1),
                                       ("POST→decided recorded", t2, td),
                                       ("decided→granted", td, tg),
                                       ("granted→started (claim)", tg, ts),
                                       ("started→result", ts, t3)):
                        stages.setdefault(name, []).append((b - a) * 1000)
    finally:
        await bus.close()
    return {"proposed_to_requested": summary(half1), "decided_to_result": summary(half2),
            "both": summary(both), "classified_to_preview_recorded": summary(preview),
            "decision_http_post": summary(post),
            "stages_p50_ms": {k: summary(v)["p50"] for k, v in stages.items()}}


def cluster_cost(stack: BenchStack, n: int) -> dict[str, Any]:
    """The executor's own Kubernetes adapter against the same cluster, without the bus: the
    read, the dry-run preview and the write, each timed on its own."""
    from schemas import catalogue as C
    from services.executor import kube_write
    from services.executor.kube import Kube
    from services.executor.kube_read import READERS

    kube = Kube(stack.kubeconfig, (), 30.0)
    get = C.GetArgs(**READ[1])  # type: ignore[arg-type]
    out: dict[str, list[float]] = {"read": [], "preview": [], "write": []}
    for i in range(n + 5):
        t = time.perf_counter()
        READERS[type(get)](kube, get)
        t1 = time.perf_counter()
        a = C.ScaleArgs(**scale(3 + i % 2)[1])  # type: ignore[arg-type]
        pv = kube_write.preview(kube, a)
        t2 = time.perf_counter()
        kube_write.execute(kube, a, pv.resource_version)
        t3 = time.perf_counter()
        if i >= 5:
            out["read"].append((t1 - t) * 1000)
            out["preview"].append((t2 - t1) * 1000)
            out["write"].append((t3 - t2) * 1000)
    return {k: summary(v) for k, v in out.items()}


async def main(n_read: int, n_write: int, noop: bool = False) -> None:
    stack = await start_stack(noop_cluster=noop)
    obs = await Observer().start(stack)
    try:
        r = await read_cycle(stack, obs, n_read)
        w = await write_cycle(stack, obs, n_write)
        c = {} if noop else await asyncio.to_thread(cluster_cost, stack, min(n_write, 100))
    finally:
        await obs.close()
        await stack.stop()
    import json
    print(json.dumps({"read": r, "write": w, "cluster": c}, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(int(args[0]) if args else 100, int(args[1]) if len(args) > 1 else 30,
                     noop="--noop" in sys.argv))
