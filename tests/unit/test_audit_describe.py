"""The audit timeline says in words what each event means, verification included."""

from __future__ import annotations

from schemas.execution import ToolVerified
from services.runtime.audit import describe


def test_a_verification_is_described_not_just_named() -> None:
    ok = ToolVerified(session_id="s_1", call_id="c_1", tool="scale", outcome="verified",
                      check="rollout status of deployment/web", detail="5/5 ready")
    assert describe(ok) == ("executor checked c_1 (rollout status of deployment/web): "
                            "verified — 5/5 ready")
    bad = ToolVerified(session_id="s_1", call_id="c_2", tool="set_image", outcome="failed",
                       check="rollout status of deployment/api", detail="CrashLoopBackOff")
    assert describe(bad) == ("executor checked c_2 (rollout status of deployment/api): "
                             "failing — CrashLoopBackOff")
    assert describe(ToolVerified(session_id="s_1", call_id="c_3", tool="label",
                                 outcome="skipped")) == "executor checked c_3: nothing to wait for"
