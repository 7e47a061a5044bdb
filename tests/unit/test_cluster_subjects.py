"""Cluster tokens on event subjects (issue 21): which events carry one, what it is, and that a
subject naming another cluster than its event is rejected like any misrouted event."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec
import pytest

from schemas import events as E
from schemas import subjects as S
from schemas.approval import ApprovalGranted, ApprovalRequested, Grant, ToolClassified
from schemas.base import Event, Target
from schemas.execution import (
    CommandRefused,
    PreviewRecorded,
    ToolResult,
    ToolStarted,
    ToolVerified,
)
from schemas.ids import check_token
from schemas.session import UserMessage

ARN = "arn:aws:eks:eu-west-1:123456789012:cluster/prod.main"


def _all_event_types() -> list[type[Event]]:
    return list(E.EVENT_TYPES)


def test_cluster_token_is_the_name_when_safe_else_a_hash() -> None:
    assert S.cluster_token("") == S.NO_CLUSTER == "_"
    assert S.cluster_token("prod-eu_1") == "prod-eu_1"
    hashed = "x-" + hashlib.sha256(ARN.encode()).hexdigest()[:20]
    assert S.cluster_token(ARN) == hashed
    # No name takes another's token: "_" is the token of "", x-<20 hex> of a hashed name.
    assert S.cluster_token("_") not in ("_", "")
    assert S.cluster_token(hashed) != hashed
    assert S.cluster_token("a" * 65).startswith("x-")
    for name in ("", "a", ARN, "_", hashed, "with space", "a.b", "*", ">"):
        check_token(S.cluster_token(name))


def test_the_cluster_bound_events_are_the_commands_and_every_executor_event() -> None:
    bound = {t.__struct_config__.tag for t in _all_event_types()
             if t.emitter == "executor" or S.cluster_bound(t.emitter, str(t.__struct_config__.tag))}
    assert {"tool.classified", "approval.granted", "preview.recorded", "tool.started",
            "tool.result", "command.refused", "tool.verified"} == bound
    # Event.cluster() agrees with cluster_bound for every event type.
    for t in _all_event_types():
        tag = str(t.__struct_config__.tag)
        has_own = t.cluster is not Event.cluster
        assert has_own == S.cluster_bound(t.emitter, tag), tag


def _grant(cluster: str) -> Grant:
    return Grant(call_id="c_1", call_hash="h", approval_id="a_1", approver="alice",
                 not_after=datetime(2030, 1, 1, tzinfo=UTC), target=Target(cluster=cluster),
                 version=2)


@pytest.mark.parametrize(("event", "subject"), [
    (ToolClassified(session_id="s_1", call_id="c_1", access="read", rule="r",
                    target=Target(cluster="b")), "evt.s_1.gate.tool.classified.c_1.b"),
    (ToolClassified(session_id="s_1", call_id="c_1", access="read", rule="r"),
     "evt.s_1.gate.tool.classified.c_1._"),
    (ApprovalGranted(session_id="s_1", approval_id="a_1", approver="alice",
                     grants=(_grant(ARN),)),
     f"evt.s_1.gate.approval.granted.a_1.{S.cluster_token(ARN)}"),
    (ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok", cluster_name="a"),
     "evt.s_1.executor.tool.result.c_1.a"),
    (ToolStarted(session_id="s_1", call_id="c_1"), "evt.s_1.executor.tool.started.c_1._"),
    (ApprovalRequested(session_id="s_1", approval_id="a_1", calls=(),
                       expires_at=datetime(2030, 1, 1, tzinfo=UTC)),
     "evt.s_1.gate.approval.requested.a_1"),
])
def test_event_subject_appends_the_cluster_token(event: Event, subject: str) -> None:
    assert S.event_subject(event) == subject
    S.check_subject(subject, event)
    assert S.parse_event_subject(subject)[:3] == ("s_1", event.emitter, event.type)
    token = subject.split(".")[6] if subject.count(".") == 6 else None
    assert S.subject_cluster(subject) == token


def test_executor_events_carry_cluster_on_the_wire_and_old_ones_still_decode() -> None:
    ev = PreviewRecorded(session_id="s_1", call_id="c_1", ok=True, cluster_name="b")
    raw = E.encode(ev)
    assert b'"cluster":"b"' in raw
    assert E.decode(raw).cluster() == "b"
    old = E.decode(E.encode(ToolVerified(session_id="s_1", call_id="c_1", tool="t",
                                         outcome="verified")).replace(b',"cluster":""', b""))
    assert old.cluster() == ""
    refused = CommandRefused(session_id="s_1", call_id="c_1", reason="r", cluster_name="a")
    assert S.event_subject(refused).endswith(f".{refused.event_id}.a")


def test_a_subject_naming_another_cluster_is_rejected() -> None:
    result = ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok",
                        cluster_name="a")
    # Spoke b's subject, cluster a's result (or the reverse): misrouted, never believed.
    with pytest.raises(S.SubjectMismatch, match="cluster"):
        S.check_subject("evt.s_1.executor.tool.result.c_1.b", result)
    with pytest.raises(S.SubjectMismatch, match="cluster"):
        S.check_subject("evt.s_1.executor.tool.result.c_1._", result)
    # An event that is not cluster-bound never has a 7th token.
    msg = UserMessage(session_id="s_1", text="hi")
    with pytest.raises(S.SubjectMismatch, match="not bound"):
        S.check_subject(f"evt.s_1.gateway.user.message.{msg.event_id}._", msg)
    # 6 tokens: stored before issue 21, still believed.
    S.check_subject("evt.s_1.executor.tool.result.c_1", result)
    for bad in ("evt.s_1.executor.tool.result", "evt.s_1.executor.tool.result.c_1.a.b"):
        with pytest.raises(S.SubjectMismatch):
            S.parse_event_subject(bad)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def test_filters_on_cluster_bound_tags_match_old_and_new_subjects() -> None:
    old, new = "evt.s_1.gate.tool.classified.c_1", "evt.s_1.gate.tool.classified.c_1.b"
    any_key = S.tag_filter("gate", "tool.classified")
    assert any_key == "evt.*.gate.tool.classified.>"
    assert _matches(any_key, old)
    assert _matches(any_key, new)
    one_key = S.tag_filter("executor", "tool.started", "*", "c_1")
    assert one_key == "evt.*.executor.tool.started.c_1.*"
    assert _matches(one_key, "evt.s_9.executor.tool.started.c_1.a")
    assert S.tag_filter("gate", "tool.classified", cluster="b") == \
        "evt.*.gate.tool.classified.*.b"
    assert S.tag_filter("gateway", "user.message") == "evt.*.gateway.user.message.*"
    with pytest.raises(ValueError, match="not bound"):
        S.tag_filter("gateway", "user.message", cluster="b")
    assert S.once_filter(new) == "evt.s_1.gate.tool.classified.c_1.*"
    assert S.once_filter(old) == old
    # An executor's event is once on its own cluster's subject: another cluster's "result" for
    # the call (a compromised spoke) cannot keep the real one out.
    result = "evt.s_1.executor.tool.result.c_1.a"
    assert S.once_filter(result) == result
    # Every legacy consumer filter on a cluster-bound tag sees old and new subjects.
    for _, filters in S.CONSUMER_FILTERS.values():
        for f in filters:
            emitter, tag = f.split(".")[2], ".".join(f.split(".")[3:5])
            if S.cluster_bound(emitter, tag):
                assert f.endswith(".>"), f


def test_per_cluster_executor_durables_take_only_their_cluster() -> None:
    assert S.executor_durable("all", "a") == "executor_a"
    assert S.executor_durable("read", ARN) == f"executor-read_{S.cluster_token(ARN)}"
    assert S.executor_durable("write", None) == "executor-write"
    assert S.executor_filters("read", "a") == ("evt.*.gate.tool.classified.*.a",)
    assert S.executor_filters("all", "b") == ("evt.*.gate.tool.classified.*.b",
                                              "evt.*.gate.approval.granted.*.b")
    assert S.executor_filters("all", None) == S.CONSUMER_FILTERS["executor"][1]
    split = S.executor_consumers(("a", "b"), "split")
    assert sorted(split) == ["executor-read_a", "executor-read_b", "executor-write_a",
                             "executor-write_b"]
    assert split["executor-write_b"][1] == S.executor_filters("write", "b")
    assert S.durable_cluster("executor-read_b") == ("executor-read", "b")
    assert S.durable_cluster("executor") is None
    assert S.durable_cluster("planner") is None
    # A filter of cluster a never matches a command of cluster b.
    cmd_b = S.event_subject(ToolClassified(session_id="s_1", call_id="c_1", access="write",
                                           rule="r", target=Target(cluster="b")))
    assert not any(_matches(f, cmd_b) for f in S.executor_filters("all", "a"))
    assert all(_matches(f, cmd_b) or "granted" in f for f in S.executor_filters("all", "b"))


def test_decoding_keeps_the_cluster_field_bounded() -> None:
    raw = E.encode(ToolStarted(session_id="s_1", call_id="c_1", cluster_name="a"))
    with pytest.raises(msgspec.ValidationError):
        E.decode(raw.replace(b'"cluster":"a"', b'"cluster":"' + b"a" * 2001 + b'"'))
