"""Issue 21, the gate's side: where a call runs (the cluster it names, else its session's
default, else the deployment's), bound into its args, target and hash; a call for a cluster
that is not allowed or not connected is refused before any card or read, in words a person
acts on; one approval holds one cluster; and an executor's word about a call the gate
classified for another cluster is not believed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import catalogue, lifecycle
from schemas.approval import ToolClassified
from schemas.base import Event
from schemas.execution import PreviewRecorded, ToolResult
from schemas.planning import ToolProposed
from schemas.session import SessionStarted, UserMessage
from services.gate import domain
from services.gate.policy import Policy

SID = "s_clusters"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
POLICY = Policy()


def _scale(call_id: str, cluster: str = "", batch: str = "", size: int = 0) -> ToolProposed:
    args: dict[str, object] = {"name": "web", "namespace": "shop", "replicas": 3}
    if cluster:
        args["cluster"] = cluster
    return ToolProposed(session_id=SID, call_id=call_id, tool="scale", source="llm", args=args,
                        batch_id=batch, batch_size=size)


def _start(default: str = "") -> list[Event]:
    return [SessionStarted(session_id=SID, actor="ops", cluster_name=default),
            UserMessage(session_id=SID, actor="alice", text="scale web")]


def _preview(call_id: str, cluster: str) -> PreviewRecorded:
    return PreviewRecorded(session_id=SID, call_id=call_id, ok=True, cluster_name=cluster)


def _classified(p: ToolProposed, cluster: str) -> ToolClassified:
    c = domain.classify(POLICY, p, cluster)
    assert c.target is not None
    return ToolClassified(session_id=SID, call_id=p.call_id, access=c.access, rule=c.rule,
                          tool=p.tool, args=c.args, target=c.target)


def test_the_cluster_a_call_names_else_the_sessions_else_the_deployments() -> None:
    clusters = ("a", "b")
    assert domain.resolve_cluster(_scale("c1", "b"), "a", clusters) == "b"
    assert domain.resolve_cluster(_scale("c1"), "b", clusters) == "b"
    assert domain.resolve_cluster(_scale("c1"), "", clusters) == "a"
    assert domain.resolve_cluster(_scale("c1"), "", ()) == ""  # legacy: unchanged
    assert domain.session_cluster(_start("b")) == "b"


def test_the_resolved_cluster_is_bound_into_args_target_and_hash() -> None:
    on_b = domain.classify(POLICY, _scale("c1"), "b")
    assert on_b.args is not None and on_b.target is not None
    assert on_b.args["cluster"] == "b"
    assert on_b.target.cluster == "b"
    on_a = domain.classify(POLICY, _scale("c1"), "a")
    assert on_a.args is not None
    assert catalogue.call_hash("scale", on_a.args) != catalogue.call_hash("scale", on_b.args)
    # The cluster a call names wins over the default; legacy mode leaves the call as it is.
    named = domain.classify(POLICY, _scale("c1", "a"), "b")
    assert named.target is not None and named.target.cluster == "a"
    legacy = domain.classify(POLICY, _scale("c1"), "")
    assert legacy.args is not None and legacy.args.get("cluster", "") == ""


def test_a_cluster_not_allowed_or_not_connected_is_refused_with_clear_words() -> None:
    clusters = ("a", "b")
    fresh = NOW - timedelta(seconds=2)
    assert domain.cluster_refusal("a", clusters, fresh, NOW, 5.0) is None
    assert domain.cluster_refusal("x", clusters, fresh, NOW, 5.0) == \
        "cluster 'x' is not allowed here (allowed: a, b)"
    assert domain.cluster_refusal("b", clusters, NOW - timedelta(seconds=40), NOW, 5.0) == \
        "cluster 'b' is not connected: no executor has reported for 40 s (interlock clusters)"
    never = domain.cluster_refusal("b", clusters, None, NOW, 5.0)
    assert never is not None and never.startswith("cluster 'b' is not connected")
    # Legacy mode: the contexts the one executor reports allowing.
    assert domain.cluster_refusal("prod", (), None, NOW, 5.0, ("dev",)) == \
        "cluster 'prod' is not allowed here (allowed: dev)"
    assert domain.cluster_refusal("dev", (), None, NOW, 5.0, ("dev",)) is None
    assert domain.cluster_refusal("", (), None, NOW, 5.0, ("dev",)) is None
    assert domain.cluster_refusal("prod", (), None, NOW, 5.0, None) is None  # no report: as before


def test_one_approval_holds_one_cluster() -> None:
    a1, b1 = _scale("c_a", "a", "bt", 2), _scale("c_b", "b", "bt", 2)
    events = [*_start(), a1, b1, _classified(a1, "a"), _classified(b1, "b"),
              _preview("c_a", "a"), _preview("c_b", "b")]
    batches = domain.batches_of(events, "c_a", POLICY, ("a", "b"))
    assert batches is not None and len(batches) == 2
    assert [[m.call_id for m, _ in b.writes] for b in batches] == [["c_a"], ["c_b"]]
    assert len({b.approval_id for b in batches}) == 2
    for b in batches:
        req = domain.approval_request(events, b, POLICY, [], NOW, 900, 3600, "e")
        assert len({c.target.cluster for c in req.calls}) == 1
    # A batch on one cluster keeps its one approval (and its id).
    a2 = _scale("c_a2", "a", "bt", 2)
    one = [*_start(), a1, a2, _preview("c_a", "a"), _preview("c_a2", "a")]
    found = domain.batches_of(one, "c_a", POLICY, ("a", "b"))
    assert found is not None and len(found) == 1
    assert found[0].approval_id == domain.approval_id_for("batch-bt")


def test_a_member_refused_for_its_cluster_is_not_waited_for() -> None:
    a1, b1 = _scale("c_a", "a", "bt", 2), _scale("c_b", "b", "bt", 2)
    gone = ToolClassified(session_id=SID, call_id="c_b", access="refused",
                          rule="cluster 'b' is not connected")
    batches = domain.batches_of([*_start(), a1, b1, gone, _preview("c_a", "a")], "c_b",
                                POLICY, ("a", "b"))
    assert batches is not None and len(batches) == 1
    assert [m.call_id for m, _ in batches[0].writes] == ["c_a"]
    assert [m.call_id for m, _ in batches[0].refused] == ["c_b"]


def test_a_preview_from_another_clusters_executor_is_not_believed() -> None:
    a1 = _scale("c_a", "a")
    forged = _preview("c_a", "b")  # spoke b, on its own subject, about cluster a's call
    events = [*_start(), a1, _classified(a1, "a"), forged]
    assert domain.batches_of(events, "c_a", POLICY, ("a", "b")) is None  # still waits
    assert domain.batches_of([*events, _preview("c_a", "a")], "c_a", POLICY,
                             ("a", "b")) is not None
    result = ToolResult(session_id=SID, call_id="c_a", tool="scale", status="ok",
                        cluster_name="b")
    where = lifecycle.classified_clusters(events)
    assert lifecycle.misrouted(result, where)
    assert not lifecycle.misrouted(
        ToolResult(session_id=SID, call_id="c_a", tool="scale", status="ok",
                   cluster_name="a"), where)
    # Legacy (classified for no cluster): the executor's stamped context is believed.
    legacy = {"c_a": ""}
    assert not lifecycle.misrouted(result, legacy)


async def test_only_the_executors_that_would_run_a_call_count_as_connected() -> None:
    """Split layout: b's read executor reports, its write executor does not — a read on b
    goes, a write on b is refused before any card (nobody would run its dry run)."""
    import asyncio
    from dataclasses import replace as dc_replace

    from services.gate.handlers import Gate
    from services.gate.settings import GateSettings
    from services.runtime.presence import ClusterStatus
    from services.runtime.settings import NatsSettings

    gate = Gate.__new__(Gate)
    gate.settings = dc_replace(GateSettings(nats=NatsSettings("nats://x", "gate", "p"),
                                            key_file=None, admin_keys_file=None),  # type: ignore[arg-type]
                               clusters=("a", "b"), presence_interval_s=5.0)
    now = datetime.now(UTC)
    seen = {"b": [ClusterStatus(cluster="b", role="read", seen_at=now)],
            "a": [ClusterStatus(cluster="a", role="all", seen_at=now)]}
    gate._presence = (asyncio.get_running_loop().time(), seen)
    assert await gate.cluster_refusal("b", "read") is None
    assert await gate.cluster_refusal("a", "write") is None
    why = await gate.cluster_refusal("b", "write")
    assert why is not None and why.startswith("cluster 'b' is not connected")
