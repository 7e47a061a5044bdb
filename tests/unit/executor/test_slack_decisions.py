"""Issue 20: the gate checks Slack clicks with a secret it holds, so it could make one up. Where
a write lands in a `key_signed_namespaces` namespace — as the executor's own dry run found,
whatever the gate's card says — the executor does not run it on a Slack decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    BlastRadius,
    Grant,
)
from schemas.approvers import Signature
from schemas.base import Event, Target
from schemas.execution import PreviewRecorded
from services.executor import domain

SLACK = Signature(statement="payload=...", key_id="slack:T0/U0", signature="v0=00",
                  timestamp="1")
KEY = Signature(statement="{}", key_id="SHA256:abc", signature="c2ln")


def _log(target: Target, signed: Signature, *, affected: tuple[str, ...] = (),
         key_signed_only: bool = False) -> tuple[list[Event], Grant]:
    grant = Grant(call_id="c_1", call_hash="h", approval_id="a_1", approver="alice",
                  not_after=datetime.now(UTC) + timedelta(minutes=5), session_id="s_1",
                  target=target, version=GRANT_VERSION, signature="sig")
    events: list[Event] = [
        PreviewRecorded(session_id="s_1", call_id="c_1", ok=True,
                        blast_radius=BlastRadius(affected_namespaces=affected)),
        ApprovalRequested(session_id="s_1", approval_id="a_1", calls=(ApprovalCall(
            call_id="c_1", tool="scale", args={}, call_hash="h", target=target),),
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
            key_signed_only=key_signed_only),
        ApprovalDecided(session_id="s_1", approval_id="a_1", decision="approve",
                        approver="alice", signed=signed),
        ApprovalGranted(session_id="s_1", approval_id="a_1", approver="alice",
                        grants=(grant,)),
    ]
    return events, grant


SHOP = Target(namespace="shop", kind="deployment", name="web")
PROD = Target(namespace="production", kind="deployment", name="auth-service")
NODE = Target(kind="node", name="n1")


def test_a_slack_click_runs_a_write_outside_key_signed_namespaces() -> None:
    events, grant = _log(SHOP, SLACK)
    assert domain.approval_problem(events, "s_1", grant) is None
    # Nowhere at all (a node uncordoned): no namespace of the policy.
    events, grant = _log(NODE, SLACK)
    assert domain.approval_problem(events, "s_1", grant) is None


def test_a_card_that_lies_about_production_does_not_run_on_a_slack_click() -> None:
    # The gate's card says a Slack click may count (key_signed_only false): the target says no.
    events, grant = _log(PROD, SLACK)
    why = domain.approval_problem(events, "s_1", grant)
    assert why is not None
    assert "approved in Slack by alice" in why
    assert "production" in why
    # A drain whose own dry run evicts production pods.
    events, grant = _log(NODE, SLACK, affected=("shop", "production"))
    assert "production" in (domain.approval_problem(events, "s_1", grant) or "")
    # The card itself says so.
    events, grant = _log(SHOP, SLACK, key_signed_only=True)
    assert domain.approval_problem(events, "s_1", grant) is not None
    # The executor's own policy (INTERLOCK_POLICY_FILE's key_signed_namespaces).
    events, grant = _log(SHOP, SLACK)
    assert domain.approval_problem(events, "s_1", grant, ("shop",)) is not None
    events, grant = _log(PROD, SLACK)
    assert domain.approval_problem(events, "s_1", grant, ()) is None


def test_a_key_signed_decision_runs_in_production() -> None:
    events, grant = _log(PROD, KEY)
    assert domain.approval_problem(events, "s_1", grant) is None


def test_the_executor_reads_key_signed_namespaces_from_the_gates_policy(tmp_path: Any) -> None:
    from services.executor.settings import key_signed_namespaces
    from services.runtime.errors import ConfigError

    assert key_signed_namespaces({}) == ("production",)
    policy = tmp_path / "policy.yaml"
    policy.write_text("protected_namespaces: [production]\nkey_signed_namespaces: [prod, pay]\n")
    assert key_signed_namespaces({"INTERLOCK_POLICY_FILE": str(policy)}) == (
        "prod", "pay", "production")
    policy.write_text("forbid_tools: [delete]\n")
    assert key_signed_namespaces({"INTERLOCK_POLICY_FILE": str(policy)}) == ("production",)
    # An empty list takes no protected namespace out (policy only tightens), as in the gate.
    policy.write_text("key_signed_namespaces: []\nprotected_namespaces: [production, pay]\n")
    assert key_signed_namespaces({"INTERLOCK_POLICY_FILE": str(policy)}) == ("production", "pay")
    policy.write_text("key_signed_namespaces: production\n")
    with pytest.raises(ConfigError):
        key_signed_namespaces({"INTERLOCK_POLICY_FILE": str(policy)})


def test_a_slack_click_does_not_run_a_write_on_a_protected_cluster() -> None:
    """Issue 21: the policy's protected_clusters are key-signed only at the executor too, by
    the grant's signed target, whatever the gate's card says (key_signed_only false here)."""
    on_prod = Target(cluster="prod", namespace="shop", kind="deployment", name="web")
    events, grant = _log(on_prod, SLACK)
    why = domain.approval_problem(events, "s_1", grant, ("production",), ("prod",))
    assert why is not None and "lands in cluster prod" in why
    events, grant = _log(on_prod, KEY)
    assert domain.approval_problem(events, "s_1", grant, ("production",), ("prod",)) is None
    on_dev = Target(cluster="dev", namespace="shop", kind="deployment", name="web")
    events, grant = _log(on_dev, SLACK)
    assert domain.approval_problem(events, "s_1", grant, ("production",), ("prod",)) is None
    # No cluster named (the legacy current context): fail closed once any is protected.
    events, grant = _log(SHOP, SLACK)
    assert "an unnamed cluster" in (
        domain.approval_problem(events, "s_1", grant, ("production",), ("prod",)) or "")
    assert domain.approval_problem(events, "s_1", grant) is None
