"""CPU per event for event signatures (services/runtime/identity.py): signing by the writer,
verifying by a reader, on events of the sizes a gated read and a gated write produce.

Usage: python -m bench.signing [N]
Prints µs per event (process CPU time, one core) and, from them, what signatures add to a gated
read: 3 events are signed (tool.proposed by the planner, tool.classified, tool.result) and 3
verified (the gate the proposal, the executor the classification it runs — since commands are
events —, the planner the result it consumes); everything else a service
reads of a session is its own, already verified (Bus.verify), or of a type it never acts upon
(the planner and tool.classified: Bus.not_acted_upon).
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas import events as E
from schemas import subjects as S
from schemas.approval import ApprovalCall, ApprovalRequested, BlastRadius, FieldChange
from schemas.base import Event, Target
from schemas.catalogue import call_hash
from schemas.execution import ToolResult
from schemas.ids import new_call_id, new_session_id
from schemas.planning import ToolProposed
from schemas.session import UserMessage
from services.runtime import identity

# Per gated read (see the module docstring).
SIGNS_PER_READ = 3
VERIFIES_PER_READ = 3


def samples() -> dict[str, Event]:
    sid = new_session_id()
    args = {"kind": "deployment", "namespace": "shop", "name": "web"}
    scale = {"cluster": "", "kind": "deployment", "name": "web", "namespace": "shop",
             "replicas": 4}
    output = "\n".join(f"web-7d9c{i:04d}   1/1   Running   0   {i}m" for i in range(40))
    return {
        "user.message": UserMessage(session_id=sid, text="how is web doing in shop?",
                                    actor="otto"),
        "tool.proposed": ToolProposed(session_id=sid, call_id=new_call_id(), tool="get",
                                      args=args, source="llm",
                                      rationale="check the deployment's replicas first"),
        "tool.result (40 pods)": ToolResult(session_id=sid, call_id=new_call_id(), tool="get",
                                            status="ok", output=output),
        "approval.requested": ApprovalRequested(
            session_id=sid, approval_id="a_bench", actor="gate",
            calls=(ApprovalCall(call_id=new_call_id(), tool="scale", args=scale,
                                call_hash=call_hash("scale", scale),
                                target=Target(namespace="shop", kind="deployment", name="web"),
                                diff=(FieldChange(path="spec.replicas", before=3, after=4),),
                                blast_radius=BlastRadius(replicas_before=3, replicas_after=4,
                                                         summary="3 pods → 4")),),
            rationale="the shop is busy", expected_outcome="4 pods ready",
            expires_at=datetime.now(UTC) + timedelta(minutes=15)),
    }


def cpu_us(fn: Any, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6


def measure(n: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ring = identity.provision_keys(Path(tmp), S.SERVICES)
        signers = {s: identity.load_signer(Path(tmp) / f"{s}.key", s) for s in S.SERVICES}
    out: dict[str, Any] = {"events": {}}
    for name, ev in samples().items():
        subject, data = S.event_subject(ev), E.encode(ev)
        signer = signers[ev.emitter]
        sig = signer.sign(subject, data)
        ring.check(subject, data, sig)  # it verifies before it is timed
        out["events"][name] = {
            "bytes": len(data),
            "sign_us": cpu_us(lambda s=subject, d=data, g=signer: g.sign(s, d), n),
            "verify_us": cpu_us(lambda s=subject, d=data, g=sig: ring.check(s, d, g), n),
        }
    evs = out["events"].values()
    out["sign_us"] = sum(e["sign_us"] for e in evs) / len(evs)
    out["verify_us"] = sum(e["verify_us"] for e in evs) / len(evs)
    out["per_gated_read_us"] = SIGNS_PER_READ * out["sign_us"] + \
        VERIFIES_PER_READ * out["verify_us"]
    return out


def report(r: dict[str, Any]) -> str:
    lines = [f"{'event':<24} {'bytes':>6} {'sign µs':>8} {'verify µs':>9}"]
    for name, e in r["events"].items():
        lines.append(f"{name:<24} {e['bytes']:>6} {e['sign_us']:>8.1f} {e['verify_us']:>9.1f}")
    lines.append(f"per gated read: {SIGNS_PER_READ} signs + {VERIFIES_PER_READ} verifies = "
                 f"{r['per_gated_read_us']:.0f} µs CPU")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
