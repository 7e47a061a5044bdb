"""Writes proposed together are one batch: a model step's writes, and a direct message's lines.
The pure parts — which proposals share a batch, with what size, and when a direct message's turn
ends — the card's title the gate computes, and the CLI's one item per batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec

from clients import render
from schemas.approval import (
    ApprovalCall,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequested,
    ToolRefused,
)
from schemas.base import Target
from schemas.execution import ToolResult
from schemas.planning import CommandRejected, StepPlanned, ToolProposed
from schemas.session import TurnCompleted, UserMessage
from services.gate import card as gate_domain
from services.planner import agent, direct, domain

SID = "s_batch"
QUOTE = "data-old-0 Bound 1Gi unused since 2024"


def _user(text: str) -> UserMessage:
    return UserMessage(session_id=SID, text=text, actor="alice")


def _delete(kind: str, name: str, evidence: str = QUOTE) -> tuple[str, str]:
    return ("delete", json.dumps({"kind": kind, "name": name, "namespace": "staging",
                                  "rationale": "unused", "evidence": [evidence],
                                  "expected_outcome": "gone"}))


def _plan(*calls: tuple[str, str]) -> StepPlanned:
    user = _user(f"clean up staging: {QUOTE}")
    answer = agent.ModelAnswer(text="", calls=tuple(agent.ModelCall(n, a) for n, a in calls))
    return agent.plan_step(answer, agent.fold([user]), user, "m")


def _project(*calls: tuple[str, str], step: StepPlanned | None = None) -> list[ToolProposed]:
    step = step or _plan(*calls)
    return [e for e in agent.project(step) if isinstance(e, ToolProposed)]


def test_a_steps_writes_share_one_batch_and_reads_stay_out() -> None:
    read = ("list", json.dumps({"kind": "pod", "namespace": "staging"}))
    step = _plan(read, *[_delete("pod", f"p{i}") for i in range(8)])
    proposals = _project(step=step)
    assert len(proposals) == 9
    reads = [p for p in proposals if p.tool == "list"]
    writes = [p for p in proposals if p.tool == "delete"]
    assert reads[0].batch_id == ""
    assert reads[0].batch_size == 1
    assert len({p.batch_id for p in writes}) == 1
    assert writes[0].batch_id
    assert {p.batch_size for p in writes} == {8}
    # Derived from the step: the projection recomputed after a crash names the same batch.
    assert _project(step=step) == proposals


def test_a_write_the_planner_declined_is_not_a_member() -> None:
    unquoted = _delete("service", "s1", evidence="this was never said")
    proposals = _project(_delete("pod", "a"), unquoted, _delete("pvc", "b"))
    assert [p.args["name"] for p in proposals] == ["a", "b"]
    assert {p.batch_size for p in proposals} == {2}
    assert proposals[0].batch_id == proposals[1].batch_id != ""


def test_a_lone_write_is_not_a_batch() -> None:
    read = ("get", json.dumps({"kind": "pod", "name": "x", "namespace": "staging"}))
    proposals = _project(read, _delete("pod", "a"))
    assert all(p.batch_id == "" and p.batch_size == 1 for p in proposals)


# -- direct mode: several lines, one batch -------------------------------------------------------


def test_a_message_splits_into_its_command_lines() -> None:
    text = "kubectl delete pod a -n staging\n\n  kubectl get pods -n staging\n/kubectl delete svc b"
    assert direct.split_commands(text) == [
        "kubectl delete pod a -n staging", "kubectl get pods -n staging", "/kubectl delete svc b"]
    assert direct.split_commands("kubectl get pods") == ["kubectl get pods"]
    manifest = "kubectl apply -f -\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}"
    assert direct.split_commands(manifest) == [manifest]
    # Not a command on every line: one text, which parse refuses as it always did.
    mixed = "kubectl delete pod a\nrm -rf /"
    assert direct.split_commands(mixed) == [mixed]
    assert isinstance(direct.parse(mixed), direct.Refusal)


def _message(text: str) -> tuple[UserMessage, list]:
    user = _user(text)
    return user, domain.decide(user, [user])


def test_several_writes_in_a_message_are_one_batch_and_reads_run_at_once() -> None:
    user, out = _message("kubectl delete pvc data-0 -n staging\nkubectl get pods -n staging\n"
                         "kubectl delete svc web -n staging\nkubectl delete pod web-1 -n staging")
    proposals = [e for e in out if isinstance(e, ToolProposed)]
    assert [p.tool for p in proposals] == ["delete", "list", "delete", "delete"]
    writes = [p for p in proposals if p.tool == "delete"]
    assert len({p.batch_id for p in writes}) == 1
    assert writes[0].batch_id
    assert {p.batch_size for p in writes} == {3}
    assert proposals[1].batch_id == ""
    assert len({p.call_id for p in proposals}) == 4
    assert len({p.event_id for p in proposals}) == 4
    # The first call keeps the ids a one-line message always had.
    _, single = _message("kubectl delete pvc data-0 -n staging")
    assert proposals[0].call_id != single[0].call_id  # another trigger, other ids...
    assert proposals[0].call_id == domain.derived_id("c", user, 0)  # ...derived the same way
    assert single[0].batch_id == ""
    # A redelivered message yields the same events (the handler appends only the missing).
    assert [e.event_id for e in domain.decide(user, [user, *out])] == [e.event_id for e in out]


def test_one_bad_line_refuses_the_whole_message() -> None:
    _, out = _message("kubectl delete pod a -n staging\nkubectl frobnicate everything")
    assert not [e for e in out if isinstance(e, ToolProposed)]
    rejected = next(e for e in out if isinstance(e, CommandRejected))
    assert rejected.reason.startswith("line 2 (kubectl frobnicate everything)")
    assert "nothing in this message was run" in rejected.reason
    assert any(isinstance(e, TurnCompleted) for e in out)


def _result(call_id: str) -> ToolResult:
    return ToolResult(session_id=SID, call_id=call_id, tool="delete", status="ok", output="gone")


def test_the_turn_ends_once_when_every_command_of_the_message_has_an_outcome() -> None:
    user, out = _message("kubectl get pods -n staging\nkubectl delete pod a -n staging\n"
                         "kubectl delete pod b -n staging")
    log = [user, *out]
    read, a, b = (p.call_id for p in out if isinstance(p, ToolProposed))
    r_read, r_a, r_b = _result(read), _result(a), _result(b)
    log.append(r_read)
    said = domain.decide(r_read, log)
    assert not [e for e in said if isinstance(e, TurnCompleted)]  # the writes are open
    log += [r_a, r_b]
    # Whichever handler runs first sees both results; only the last one's ends the turn.
    assert not [e for e in domain.decide(r_a, log) if isinstance(e, TurnCompleted)]
    assert [e for e in domain.decide(r_b, log) if isinstance(e, TurnCompleted)]


def test_a_denied_batch_ends_the_turn_and_says_none_ran() -> None:
    user, out = _message("kubectl delete pod a -n staging\nkubectl delete pod b -n staging")
    ids = tuple(p.call_id for p in out if isinstance(p, ToolProposed))
    denied = ApprovalDenied(session_id=SID, approval_id="a_1", call_ids=ids, approver="bob",
                            reason="not now")
    said = domain.decide(denied, [user, *out, denied])
    assert "denied the 2 changes of this batch" in said[0].text
    assert "Nothing was executed" in said[0].text
    assert [e for e in said if isinstance(e, TurnCompleted)]


def test_a_refused_member_does_not_end_the_turn_while_the_rest_waits() -> None:
    user, out = _message("kubectl delete pod a -n staging\nkubectl delete pod b -n staging")
    a, b = (p.call_id for p in out if isinstance(p, ToolProposed))
    refused = ToolRefused(session_id=SID, call_id=a, tool="delete", reason="policy")
    said = domain.decide(refused, [user, *out, refused])
    assert said
    assert not [e for e in said if isinstance(e, TurnCompleted)]
    log = [user, *out, refused, _result(b)]
    assert [e for e in domain.decide(log[-1], log) if isinstance(e, TurnCompleted)]


# -- the card's title --------------------------------------------------------------------------


def _call(tool: str, kind: str, name: str, ns: str = "staging") -> ApprovalCall:
    return ApprovalCall(call_id=name, tool=tool, args={}, call_hash="h",
                        target=Target(namespace=ns, kind=kind, name=name))


def test_the_title_counts_what_a_batch_does_where() -> None:
    calls = ([_call("delete", "persistentvolumeclaim", f"pvc{i}") for i in range(3)]
             + [_call("delete", "service", f"svc{i}") for i in range(5)]
             + [_call("delete", "pod", f"pod{i}") for i in range(12)])
    assert gate_domain.title_of(calls) == "Delete 3 PVCs, 5 services, 12 pods in staging"
    assert gate_domain.title_of([_call("scale", "deployment", "web", "shop")]) == \
        "Scale deployment web in shop"
    assert gate_domain.title_of([_call("delete", "pod", "a"), _call("delete", "pod", "b", "dev"),
                                 _call("rollout_restart", "deployment", "web")]) == \
        "Delete 2 pods; restart deployment web in staging and dev"
    assert gate_domain.title_of([_call("cordon", "node", "n1", "")]) == "Cordon node n1"


def test_the_cli_lists_a_batch_as_one_item_under_its_title() -> None:
    calls = tuple(_call("delete", "pod", f"pod{i}") for i in range(8))
    req = ApprovalRequested(session_id=SID, approval_id="a_1", calls=calls,
                            expires_at=datetime.now(UTC), title=gate_domain.title_of(calls))
    text = render.approval(msgspec.to_builtins(req))
    assert text.count("APPROVAL ") == 1
    assert "Delete 8 pods in staging  (8 calls, one decision)" in text
    assert text.count("what:    delete") == 8


def test_an_expired_batch_ends_the_turn_once_and_the_model_hears_each_call_expired() -> None:
    user, out = _message("kubectl delete pod a -n staging\nkubectl delete pod b -n staging")
    ids = tuple(p.call_id for p in out if isinstance(p, ToolProposed))
    expired = ApprovalExpired(session_id=SID, approval_id="a_1", call_ids=ids)
    said = domain.decide(expired, [user, *out, expired])
    assert "expired" in said[0].text
    assert len([e for e in said if isinstance(e, TurnCompleted)]) == 1
    # A model step's batch: every call of it resolves, so the model is asked again once.
    step = _plan(_delete("pod", "a"), _delete("pod", "b"))
    proposals = _project(step=step)
    gone = ApprovalExpired(session_id=SID, approval_id="a_2",
                           call_ids=tuple(p.call_id for p in proposals))
    f = agent.fold([_user(f"clean up staging: {QUOTE}"), step, *proposals, gone])
    assert f.need is gone
    assert sum("EXPIRED" in str(m.get("content")) for m in f.messages) == 2


def test_the_title_of_a_selector_write_names_its_exact_set() -> None:
    """`delete pods -l app=x -n staging`: the heading counts and names the matched objects (the
    effect the dry run enumerated), never "1 pod" for a call whose target has no name."""
    sel = ApprovalCall(call_id="c", tool="delete", args={"selector": "app=x"}, call_hash="h",
                       target=Target(namespace="staging", kind="pod"),
                       effect=("staging/pod/a", "staging/pod/b", "staging/pod/c"))
    assert gate_domain.title_of([sel]) == "Delete 3 pods matching app=x in staging: a, b, c"
    failed = msgspec.structs.replace(sel, effect=())  # the dry run failed: nothing enumerated
    assert gate_domain.title_of([failed]) == "Delete pods matching app=x in staging"
    assert gate_domain.title_of([sel, _call("delete", "service", "web")]) == \
        "Delete 3 pods, service web in staging"
