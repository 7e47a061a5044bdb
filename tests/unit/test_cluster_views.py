"""Issue 21: every place a person reads a write names its cluster plainly — "on cluster b" —
the card's title and Where (gateway, CLI, Slack, webhooks) and the audit's text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from clients import render
from schemas.approval import ApprovalCall, ApprovalRequested, BlastRadius, FieldChange
from schemas.base import Target
from services.gate import card
from services.notifier import slack, webhooks
from services.runtime import audit, cluster_names


def _call(cluster: str, context: str = "") -> ApprovalCall:
    return ApprovalCall(call_id="c_1", tool="scale", args={"replicas": 4}, call_hash="h",
                        target=Target(cluster=cluster, namespace="shop", kind="deployment",
                                      name="web"),
                        diff=(FieldChange(path="spec.replicas", before=3, after=4),),
                        blast_radius=BlastRadius(replicas_before=3, replicas_after=4),
                        context=context)


def _request(*calls: ApprovalCall) -> ApprovalRequested:
    return ApprovalRequested(session_id="s_1", approval_id="a_1", calls=calls,
                             expires_at=datetime.now(UTC) + timedelta(minutes=5),
                             title=card.title_of(calls))


def test_the_where_of_a_call_names_its_cluster() -> None:
    assert _call("b").where() == "deployment/web in shop on cluster b"
    # The gate's routing first; a call that named none: the context its dry run resolved.
    assert _call("b", context="b-context").runs_on() == "b"
    assert _call("", context="sandbox").where() == "deployment/web in shop on cluster sandbox"
    assert _call("").where() == "deployment/web in shop"
    assert Target(cluster="b", namespace="shop", kind="pod", name="x").describe() == \
        "pod/x in shop on cluster b"


def test_the_cards_title_names_the_routed_cluster() -> None:
    assert card.title_of([_call("b")]) == "Scale deployment web in shop on cluster b"
    # The legacy card (no cluster named) reads as before.
    assert card.title_of([_call("", context="sandbox")]) == "Scale deployment web in shop"


def test_the_cli_card_names_the_cluster() -> None:
    body: dict[str, Any] = msgspec.to_builtins(_request(_call("b")))
    text = render.approval(body)
    assert "Scale deployment web in shop on cluster b" in text
    assert "  what:    scale deployment/web in shop on cluster b" in text
    assert "  where:   namespace shop on cluster b" in text
    legacy = render.approval(msgspec.to_builtins(_request(_call("", context="sandbox"))))
    assert "  where:   namespace shop on cluster sandbox" in legacy


def test_slack_and_webhooks_name_the_cluster() -> None:
    req = _request(_call("b"))
    seen = slack.texts(slack.message(req, "https://interlock.example")["blocks"])
    assert "*1. scale* `deployment/web` in `shop` on cluster `b`" in seen
    assert "*Where*\n`shop` on cluster `b`" in seen
    assert "Approval needed: Scale deployment web in shop on cluster b" in seen
    data = msgspec.to_builtins(req)
    assert webhooks.summary("approval.requested", data, data) == (
        "Approval needed: scale deployment/web in shop on cluster b, spec.replicas: 3 → 4")
    legacy = msgspec.to_builtins(_request(_call("", context="sandbox")))
    assert "on cluster sandbox" in webhooks.summary("approval.requested", legacy, legacy)
    hook = webhooks.slack_message(webhooks.payload("approval.requested", data, data,
                                                   "https://interlock.example"))
    fields = [f["text"] for b in hook["blocks"] for f in b.get("fields", ())]
    assert "*Where:* deployment/web in shop on cluster b" in fields


def test_the_audit_text_names_the_cluster() -> None:
    text = audit.describe(_request(_call("b")))
    assert "scale deployment/web in shop on cluster b: spec.replicas: 3 → 4" in text
    assert audit.on_cluster(_request(_call("b")), "b")
    assert not audit.on_cluster(_request(_call("b")), "a")
    assert audit.on_cluster(_request(_call("", context="sandbox")), "sandbox")


def test_cluster_names() -> None:
    for good in ("a", "prod-eu", "kind-kind", "gke_p_europe-west1_x", "minikube",
                 "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "alice@prod",
                 "x" * 253):
        assert cluster_names.valid(good), good
    for bad in ("", "a b", "a\nb", "a\u200bb", "x" * 254, "a,b"):
        assert not cluster_names.valid(bad), bad
    assert cluster_names.allowed({"INTERLOCK_CLUSTERS": " a, b,,a "}) == ("a", "b")
    assert cluster_names.allowed({}) == ()
    assert cluster_names.not_allowed("c", ("a", "b")) == \
        "cluster 'c' is not allowed here (allowed: a, b)"
    assert cluster_names.not_allowed("", ("a",)) is None
    assert cluster_names.not_allowed("anything", ()) is None


def test_the_audit_timeline_names_the_cluster_of_bound_events() -> None:
    from schemas.approval import ToolClassified
    from schemas.execution import ToolResult, ToolStarted

    classified = ToolClassified(session_id="s_1", call_id="c_1", access="write", rule="scale",
                                target=Target(cluster="b", namespace="shop"))
    assert audit.describe(classified) == "gate classified c_1 as write on cluster b (scale)"
    started = ToolStarted(session_id="s_1", call_id="c_1", approval_id="a_1", cluster_name="b")
    assert audit.describe(started) == "executor on cluster b claimed c_1 and called the cluster"
    result = ToolResult(session_id="s_1", call_id="c_1", tool="scale", status="ok",
                        output="scaled", cluster_name="b")
    assert audit.describe(result).startswith("executor on cluster b result of c_1 (scale): ok")
    legacy = ToolResult(session_id="s_1", call_id="c_1", tool="scale", status="ok")
    assert audit.describe(legacy).startswith("executor result of c_1")
