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


# -- protection follows the effect (issue 15): the Namespace object, a node's pods ------------


def test_a_namespace_object_is_protected_by_its_name_even_without_a_dry_run() -> None:
    p = policy.Policy()
    t = Target(namespace="", kind="namespace", name="production")
    for tool in ("delete", "label", "annotate", "patch"):
        # No preview facts at all (the dry run failed): the gate's own knowledge suffices.
        e = risk.effect_of(tool, t, BlastRadius(), preview_error="Forbidden: nope")
        assert [ns for ns, _ in e.namespaces] == ["production"]
        assert not e.unknown
        assert p.protects(e)
        assert p.describe_effect(e) == (
            "production is protected: the requester may not approve alone",)
    f = risk.flags_for(ApprovalCall(call_id="c_1", tool="delete", args={}, call_hash="h",
                                    target=t, preview_error="Forbidden: nope"), "delete")
    assert "production-like namespace 'production'" in f
    assert any(x.startswith("deletes namespace production and everything in it: what it holds"
                            " is unknown") for x in f)
    staging = risk.effect_of("label", Target(kind="namespace", name="staging"), BlastRadius())
    assert not p.protects(staging)
    assert p.describe_effect(staging) == ()


def test_a_drain_lands_where_the_nodes_pods_are() -> None:
    p = policy.Policy()
    t = Target(namespace="", kind="node", name="sandbox-worker-1")
    r = BlastRadius(affected_namespaces=("kube-system", "production", "shop"),
                    pods_affected=("production/payment-service-x",),
                    summary="node sandbox-worker-1 will be cordoned and 10 pods evicted")
    e = risk.effect_of("drain", t, r)
    assert dict(e.namespaces)["production"] == "drain of node/sandbox-worker-1 evicts its pods"
    assert p.protects(e)
    assert p.describe_effect(e) == ("production is protected (drain of node/sandbox-worker-1 "
                                    "evicts its pods): the requester may not approve alone",)
    f = risk.flags_for(ApprovalCall(call_id="c_1", tool="drain", args={}, call_hash="h",
                                    target=t, blast_radius=r), "drain")
    assert ("production-like namespace 'production': drain of node/sandbox-worker-1 evicts its "
            "pods") in f
    cordon = risk.effect_of("cordon", t, r)
    assert p.protects(cordon)
    assert "strands" in dict(cordon.namespaces)["production"]
    # A node without production pods is not production.
    quiet = risk.effect_of("drain", t, BlastRadius(affected_namespaces=("shop",)))
    assert not p.protects(quiet)
    assert p.approvals_for(quiet) == 1


def test_a_node_whose_dry_run_failed_is_treated_as_protected() -> None:
    t = Target(namespace="", kind="node", name="sandbox-worker-1")
    e = risk.effect_of("drain", t, BlastRadius(), preview_error="Invalid: pod x has no controller")
    p = policy.Policy()
    assert e.unknown
    assert p.protects(e)
    assert "treated as protected (production)" in p.describe_effect(e)[0]
    two = policy.Policy(two_approvers=policy.TwoApprovers(namespaces=("shop",)))
    assert two.approvals_for(e) == 2
    assert not risk.effect_of("uncordon", t, BlastRadius(), preview_error="x").unknown
    assert not policy.Policy(protected_namespaces=()).protects(e)


def test_the_dry_run_only_adds_to_where_a_write_lands() -> None:
    # A preview that names nothing (or other namespaces) cannot take the target's own away.
    t = Target(namespace="production", kind="deployment", name="web")
    e = risk.effect_of("scale", t, BlastRadius(affected_namespaces=("staging",)))
    assert [ns for ns, _ in e.namespaces] == ["production", "staging"]
    assert dict(e.namespaces)["production"] == ""
    p = policy.Policy(two_approvers=policy.TwoApprovers(namespaces=("staging",)))
    assert p.protects(e)
    assert p.approvals_for(e) == 2
    # Unchanged for a namespaced write in production: the same flag and policy line as before.
    assert policy.Policy().describe_effect(risk.effect_of("scale", t, BlastRadius())) == (
        "production is protected: the requester may not approve alone",)
    assert "production-like namespace 'production'" in risk.flags_for(
        _call("deployment", "web", "production"), "scale")
    # A tool-wide rule still applies to a cluster-scoped target that lands nowhere.
    tools = policy.Policy(two_approvers=policy.TwoApprovers(tools=("cordon",)))
    bare = risk.effect_of("cordon", Target(kind="node", name="n"), BlastRadius())
    assert tools.approvals_for(bare) == 2
    assert tools.describe_effect(bare) == ("two approvers required",)


def test_node_writes_that_leave_its_pods_alone_are_not_in_doubt() -> None:
    t = Target(kind="node", name="sandbox-worker-1")
    for tool in ("uncordon", "label", "annotate"):
        assert not risk.effect_of(tool, t, BlastRadius(), preview_error="x").unknown
    for tool in ("drain", "cordon", "delete", "patch"):
        assert risk.effect_of(tool, t, BlastRadius(), preview_error="x").unknown
    r = BlastRadius(affected_namespaces=("production",))
    assert dict(risk.effect_of("delete", t, r).namespaces)["production"] == (
        "delete of node/sandbox-worker-1 removes the node its pods run on")
    assert dict(risk.effect_of("patch", t, r).namespaces)["production"] == (
        "patch of node/sandbox-worker-1 affects its pods")


def test_flags_of_a_write_by_selector_name_what_it_matched() -> None:
    """A selector write's target has no name: its flags say what the selector matched, and an
    autoscaler flag gives each object's count, not the set's sum."""
    t = Target(namespace="shop", kind="deployment")
    call = ApprovalCall(call_id="c", tool="scale", call_hash="h", target=t,
                        args={"selector": "app=web", "replicas": 0},
                        blast_radius=BlastRadius(replicas_before=5, replicas_after=0,
                                                 autoscaler="HorizontalPodAutoscaler/web"))
    assert "scales deployment objects matching app=web to zero: every pod is removed" in \
        risk.flags_for(call, "scale")
    assert risk.autoscaler_flags(call, "scale") == [
        "deployment objects matching app=web: the replica counts are owned by "
        "HorizontalPodAutoscaler/web: a manual scale to 0 will be reverted by the autoscaler"]


# -- Slack clicks do not count where a write lands in key_signed_namespaces (issue 20) --------


def test_key_signed_only_follows_the_effect_and_fails_closed() -> None:
    p = policy.Policy()
    assert p.key_signed_namespaces == ("production",)
    prod = risk.effect_of("scale", Target(namespace="production", kind="deployment",
                                          name="web"), BlastRadius())
    shop = risk.effect_of("scale", Target(namespace="shop", kind="deployment", name="web"),
                          BlastRadius())
    assert p.key_signed_only(prod) and not p.key_signed_only(shop)
    # A drain lands where its pods are: production among them.
    node = Target(namespace="", kind="node", name="sandbox-worker-1")
    drain = risk.effect_of("drain", node, BlastRadius(affected_namespaces=("shop", "production")))
    assert p.key_signed_only(drain)
    # Where it lands is unknown: fail closed, unless no namespace is listed at all.
    unknown = risk.effect_of("drain", node, BlastRadius(), preview_error="Invalid: x")
    assert unknown.unknown and p.key_signed_only(unknown)
    assert not policy.Policy(key_signed_namespaces=(),
                             protected_namespaces=()).key_signed_only(unknown)
    assert policy.Policy(key_signed_namespaces=("shop",)).key_signed_only(shop)


def test_a_policy_file_cannot_take_a_protected_namespace_out_of_key_signed(tmp_path: Path) -> None:
    """Policy only tightens: an empty (or shorter) key_signed_namespaces still leaves every
    protected namespace key-signed — a Slack click never counts in production."""
    f = tmp_path / "policy.yaml"
    f.write_text("key_signed_namespaces: []\nprotected_namespaces: [production, payments]\n")
    p = policy.load(f)
    assert p.key_signed_namespaces == ("production", "payments")
    pay = risk.effect_of("scale", Target(namespace="payments", kind="deployment", name="api"),
                         BlastRadius())
    assert p.key_signed_only(pay)
    f.write_text("key_signed_namespaces: [shop]\n")
    assert policy.load(f).key_signed_namespaces == ("shop", "production")
