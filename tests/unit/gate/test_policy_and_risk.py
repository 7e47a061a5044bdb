from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.approval import ApprovalCall, BlastRadius
from schemas.base import Target
from services.gate import policy, risk
from services.runtime.errors import ConfigError


def test_policy_defaults_protect_production() -> None:
    p = policy.Policy()
    assert p.protected("production") and not p.protected("staging")
    assert p.required_approvals("scale", "production") == 1


def test_policy_cannot_auto_approve(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("auto_approve: true\n")
    with pytest.raises(ConfigError, match="auto_approve"):
        policy.load(f)
    f.write_text("forbid_tools: [delete]\ntwo_approvers: {namespaces: [production]}\n")
    p = policy.load(f)
    assert p.forbids("delete") and p.required_approvals("scale", "production") == 2


def _call(kind: str, name: str, ns: str, **radius: object) -> ApprovalCall:
    return ApprovalCall(call_id="c_1", tool="x", args={}, call_hash="h",
                        target=Target(namespace=ns, kind=kind, name=name),
                        blast_radius=BlastRadius(**radius))  # type: ignore[arg-type]


def test_flags_for_the_essays_failures() -> None:
    f = risk.flags_for(_call("deployment", "auth-service", "production",
                             same_name_namespaces=("staging",)), "rollout_restart")
    assert any("production-like" in x for x in f)
    assert any("also exists in staging" in x for x in f)
    f = risk.flags_for(_call("persistentvolumeclaim", "data-postgres-0", "staging",
                             mounted_by=("statefulset/postgres (replicas 0)",)), "delete")
    assert any("still referenced by statefulset/postgres" in x for x in f)
    f = risk.flags_for(_call("service", "postgres-headless", "staging", headless=True), "delete")
    assert any("headless" in x for x in f)
    f = risk.flags_for(_call("job", "reconcile-1", "staging",
                             owners=("CronJob/nightly-reconcile",)), "delete")
    assert any("CronJob/nightly-reconcile" in x for x in f)
    f = risk.flags_for(_call("deployment", "web", "shop", replicas_before=1, replicas_after=0),
                       "scale")
    assert any("to zero" in x for x in f) and any("last replica" in x for x in f)


def test_third_consecutive_scale_up_is_flagged() -> None:
    now = datetime.now(UTC)
    t = Target(namespace="production", kind="deployment", name="order-service")
    changes = [
        risk.Change(now - timedelta(minutes=8), "scale", t, 3, 6, "bob", "s_1"),
        risk.Change(now - timedelta(minutes=4), "scale", t, 6, 12, "bob", "s_1"),
    ]
    call = _call("deployment", "order-service", "production", replicas_before=12,
                 replicas_after=24)
    lines, flags = risk.history(changes, call, "scale", now, 3600)
    assert len(lines) == 2
    assert flags == ["third consecutive scale-up of deployment/order-service in 8 minutes: "
                     "3→6, 6→12, now 12→24 — is this a feedback loop?"]
    other = _call("deployment", "order-service", "staging", replicas_before=1, replicas_after=2)
    assert risk.history(changes, other, "scale", now, 3600) == ([], [])
