"""An MCP client's call (`tool.requested`) is proposed like a model's: ids derived from the
request (a redelivery proposes the same call), source "mcp", the token's principal as requester;
evidence, when given, must be quoted verbatim from what this session read before the call, or
nothing is proposed and the rejection is recorded."""

from __future__ import annotations

import msgspec

from schemas import ids
from schemas.base import Event
from schemas.execution import ToolResult, ToolVerified
from schemas.planning import CommandRejected, ToolProposed, ToolRequested
from schemas.session import UserMessage
from services.planner.domain import decide

SID = "s_mcp"
ARGS = {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 5}
READ = ToolResult(session_id=SID, call_id="c_read", tool="list", status="ok",
                  output="NAME   READY   UP-TO-DATE   AVAILABLE\nweb    3/3     3            3")


def request(**fields: object) -> ToolRequested:
    return ToolRequested(**{"session_id": SID, "actor": "alice", "tool": "scale", "args": ARGS,
                            "client": "claude-code 2.1", **fields})  # type: ignore[arg-type]


def same(out: list[Event], proposed: ToolProposed) -> bool:
    """The same proposal but for when it was made."""
    return [msgspec.structs.replace(e, occurred_at=proposed.occurred_at) for e in out] == [
        proposed]


def test_a_call_is_proposed_with_ids_derived_from_the_request_as_mcp_for_its_principal() -> None:
    trigger = request(evidence=("web    3/3",), rationale="more traffic",
                      expected_outcome="5/5 ready")
    [proposed] = decide(trigger, [READ, trigger])
    assert isinstance(proposed, ToolProposed)
    assert proposed.call_id == ids.derived_id("c", trigger.event_id, "0")
    assert proposed.event_id == ids.derived_id("e", trigger.event_id, "2")
    assert (proposed.tool, proposed.args, proposed.source, proposed.requested_by) == (
        "scale", ARGS, "mcp", "alice")
    assert (proposed.rationale, proposed.evidence, proposed.expected_outcome) == (
        "more traffic", ("web    3/3",), "5/5 ready")
    assert (proposed.session_id, proposed.causation_id, proposed.actor) == (
        SID, trigger.event_id, "planner")
    # A redelivered request proposes the very same call (the log keeps one).
    assert same(decide(trigger, [READ, trigger]), proposed)
    # With a model configured, an MCP call is still proposed here (the model never sees it).
    assert same(decide(trigger, [READ, trigger], model=True), proposed)


def test_without_evidence_it_is_proposed_and_the_rationale_names_requester_and_client() -> None:
    trigger = request()
    [proposed] = decide(trigger, [trigger])
    assert isinstance(proposed, ToolProposed)
    assert proposed.evidence == ()
    assert proposed.rationale == "MCP call from alice via claude-code 2.1"


def test_evidence_not_read_before_the_call_is_rejected_and_nothing_proposed() -> None:
    made_up = request(evidence=("the on-call lead said scale to 5",))
    [rejected] = decide(made_up, [READ, made_up])
    assert isinstance(rejected, CommandRejected)
    assert rejected.event_id == ids.derived_id("e", made_up.event_id, "1")
    assert rejected.causation_id == made_up.event_id
    assert "verbatim" in rejected.reason
    assert "on-call lead" in rejected.reason
    # Read only after the call: not what the call stood on.
    later = request(evidence=("web    3/3",))
    assert [type(e) for e in decide(later, [later, READ])] == [CommandRejected]
    # What someone said in the session is not something the cluster answered.
    said = UserMessage(session_id=SID, actor="alice", text="web is at 3/3 and must be 5/5")
    claim = request(evidence=("must be 5/5",))
    assert [type(e) for e in decide(claim, [said, claim])] == [CommandRejected]
    # One quote that was not read rejects the call, even beside one that was.
    mixed = request(evidence=("web    3/3", "and 12 pods are crashing"))
    assert [type(e) for e in decide(mixed, [READ, mixed])] == [CommandRejected]


def test_evidence_may_quote_a_verification_and_is_compared_modulo_case_and_spacing() -> None:
    checked = ToolVerified(session_id=SID, call_id="c_w", tool="scale", outcome="failed",
                           detail="2/5 ready: ImagePullBackOff")
    trigger = request(evidence=("imagepullbackoff", "WEB 3/3"))
    events: list[Event] = [READ, checked, trigger]
    [proposed] = decide(trigger, events)
    assert isinstance(proposed, ToolProposed)
