"""Issue 21: the policy and the risk flags know clusters. The same namespace/kind/name on two
clusters is two targets; `protected_clusters` makes every write there protected (separation of
duties, key-signed only), and policy only tightens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from schemas.approval import ApprovalCall, BlastRadius
from schemas.base import Target
from services.executor import settings as executor_settings
from services.gate import policy, risk
from services.runtime.errors import ConfigError


def _web(cluster: str, ns: str = "shop") -> Target:
    return Target(cluster=cluster, namespace=ns, kind="deployment", name="web")


def _effect(cluster: str, ns: str = "shop") -> policy.Effect:
    return risk.effect_of("scale", _web(cluster, ns), BlastRadius())


def test_a_protected_cluster_protects_every_write_on_it(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("protected_clusters: [prod]\nprotected_namespaces: []\n"
                 "key_signed_namespaces: []\n")
    p = policy.load(f)
    on_prod, on_dev = _effect("prod"), _effect("dev")
    assert on_prod.cluster == "prod"
    # Separation of duties and key-signed only, in a namespace no rule names.
    assert p.protects(on_prod) and p.key_signed_only(on_prod)
    assert not p.protects(on_dev) and not p.key_signed_only(on_dev)
    assert p.describe_effect(on_prod) == (
        "cluster prod is protected: the requester may not approve alone, and only a decision "
        "signed with the approver's own key counts",)
    assert p.describe_effect(on_dev) == ()
    # A write that names no cluster (legacy: the executor's current context) is not known to
    # be elsewhere: fail closed.
    assert p.protects(_effect("")) and p.key_signed_only(_effect(""))
    assert "treated as protected (prod)" in p.describe_effect(_effect(""))[0]
    # Without the list nothing changes (the defaults of issue 20 stand).
    plain = policy.Policy()
    assert not plain.protects(_effect("")) and not plain.protects(_effect("prod"))
    assert plain.protects(_effect("dev", "production"))


def test_two_approvers_can_name_clusters() -> None:
    p = policy.Policy(two_approvers=policy.TwoApprovers(clusters=("prod",)))
    assert p.approvals_for(_effect("prod")) == 2 and p.approvals_for(_effect("dev")) == 1
    assert p.approvals_for(_effect("")) == 2  # unnamed: fail closed
    assert "two approvers required" in p.describe_effect(_effect("prod"))
    assert "two approvers required" not in p.describe_effect(_effect("dev"))


def test_a_protected_cluster_is_flagged_like_a_production_namespace() -> None:
    p = policy.Policy(protected_clusters=("eu-1",))
    call = ApprovalCall(call_id="c_1", tool="scale", args={}, call_hash="h",
                        target=_web("eu-1"), blast_radius=BlastRadius())
    assert "production-like cluster 'eu-1': protected by policy" in risk.flags_for(
        call, "scale", p)
    # By its name alone, like a namespace.
    named = ApprovalCall(call_id="c_1", tool="scale", args={}, call_hash="h",
                         target=_web("prod-eu"), blast_radius=BlastRadius())
    assert "production-like cluster 'prod-eu'" in risk.flags_for(named, "scale")
    dev = ApprovalCall(call_id="c_1", tool="scale", args={}, call_hash="h",
                       target=_web("dev"), blast_radius=BlastRadius())
    assert not any("cluster" in f for f in risk.flags_for(dev, "scale", p))
    assert risk.production_cluster("eu-1", p) and not risk.production_cluster("dev", p)


def test_history_is_per_cluster() -> None:
    """deployment/web in shop on a and on b are two objects: scaling one up twice does not
    make the other's scale-up a feedback loop."""
    now = datetime.now(UTC)
    changes = [risk.Change(now - timedelta(minutes=m), "scale", _web("a"), b, a, "bob", "s_1")
               for m, b, a in ((8, 3, 6), (4, 6, 12))]
    on_b = ApprovalCall(call_id="c_1", tool="scale", args={}, call_hash="h", target=_web("b"),
                        blast_radius=BlastRadius(replicas_before=12, replicas_after=24))
    assert risk.history(changes, on_b, "scale", now, 3600) == ([], [])
    on_a = msgspec.structs.replace(on_b, target=_web("a"))
    lines, flags = risk.history(changes, on_a, "scale", now, 3600)
    assert len(lines) == 2
    assert flags and "third consecutive scale-up of deployment/web on cluster a" in flags[0]




def test_the_executor_reads_protected_clusters_from_the_same_file(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("protected_clusters: [prod, 'arn:aws:eks:eu-west-1:1:cluster/x']\n")
    env = {"INTERLOCK_POLICY_FILE": str(f)}
    assert executor_settings.key_signed_clusters(env) == (
        "prod", "arn:aws:eks:eu-west-1:1:cluster/x")
    assert executor_settings.key_signed_clusters({}) == ()
    f.write_text("protected_clusters: prod\n")
    with pytest.raises(ConfigError, match="protected_clusters must be a list"):
        executor_settings.key_signed_clusters(env)


def test_the_gates_card_for_a_write_on_a_protected_cluster() -> None:
    """The request the gate builds (services.gate.domain, pure): a write in an unprotected
    namespace on a protected cluster bars its asker, counts only key-signed decisions, is
    flagged production-like and its title names the cluster; the same write on another
    cluster is none of that."""
    from schemas.approval import ApprovalRequested, FieldChange
    from schemas.execution import PreviewRecorded
    from schemas.planning import ToolProposed
    from schemas.session import SessionStarted, UserMessage
    from services.gate import domain

    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    p = policy.Policy(protected_clusters=("prod",))

    def card(cluster: str) -> ApprovalRequested:
        events = [SessionStarted(session_id="s_1", actor="ops"),
                  UserMessage(session_id="s_1", actor="alice", text="scale web"),
                  ToolProposed(session_id="s_1", call_id="c_1", tool="scale", source="llm",
                               args={"name": "web", "namespace": "shop", "replicas": 5,
                                     "cluster": cluster}),
                  PreviewRecorded(session_id="s_1", call_id="c_1", ok=True,
                                  diff=(FieldChange(path="spec.replicas", before=3, after=5),),
                                  blast_radius=BlastRadius(replicas_before=3, replicas_after=5))]
        batch = domain.batch_of(events, "c_1", p)
        assert batch is not None
        return domain.approval_request(events, batch, p, [], now, 900, 3600, cause="e")

    on_prod = card("prod")
    assert on_prod.title == "Scale deployment web in shop on cluster prod"
    assert on_prod.forbidden_approvers == ("alice",)
    assert on_prod.key_signed_only
    assert on_prod.calls[0].blast_radius.production_like
    assert "production-like cluster 'prod': protected by policy" in \
        on_prod.risk_flags
    assert on_prod.policy[0].startswith("cluster prod is protected")
    on_dev = card("dev")
    assert on_dev.forbidden_approvers == ()
    assert not on_dev.key_signed_only
    assert not on_dev.calls[0].blast_radius.production_like
    assert on_dev.policy == ()
