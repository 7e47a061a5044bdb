from __future__ import annotations

import pytest

from schemas.approval import ToolAmended
from schemas.planning import ToolProposed, ToolRequested
from schemas.session import SessionStarted, UserMessage
from services.gate import domain
from services.gate.policy import Policy


def _p(tool: str, args: dict[str, object]) -> ToolProposed:
    return ToolProposed(session_id="s_1", call_id="c_1", tool=tool, args=args)


def test_known_read_with_valid_args_is_a_read() -> None:
    c = domain.classify(Policy(), _p("list", {"kind": "pod", "namespace": "shop"}))
    assert c.access == "read"
    assert c.args == {"all_namespaces": False, "cluster": "", "kind": "pod",
                      "label_selector": "", "namespace": "shop", "output": "",
                      "more_kinds": ()}


def test_write_is_a_write() -> None:
    c = domain.classify(Policy(), _p("scale", {"name": "web", "namespace": "shop", "replicas": 2}))
    assert c.access == "write"


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("delete_namespace", {"name": "production"}),  # unknown tool
        ("exec", {"pod": "web", "command": "sh"}),
        ("list", {"kind": "secret-values"}),  # unknown kind
        ("list", {"kind": "pod", "extra": 1}),  # unknown field
        ("get", {"kind": "pod"}),  # missing name
        ("scale", {"name": "web", "replicas": "lots"}),
    ],
)
def test_fails_closed(tool: str, args: dict[str, object]) -> None:
    assert domain.classify(Policy(), _p(tool, args)).access == "refused"


def test_approval_id_is_deterministic_per_call() -> None:
    assert domain.approval_id_for("c_1") == domain.approval_id_for("c_1")
    assert domain.approval_id_for("c_1") != domain.approval_id_for("c_2")


# -- who asked (issue 14: never the planner's say-so) --------------------------------------------


def _asked(sid: str = "s_1") -> tuple[SessionStarted, UserMessage, UserMessage]:
    return (SessionStarted(session_id=sid, actor="alice"),
            UserMessage(session_id=sid, text="scale web", actor="bob"),
            UserMessage(session_id=sid, text="and the db", actor="carol"))


def _proposal(requested_by: str, **kw: str) -> ToolProposed:
    return ToolProposed(session_id="s_1", call_id="c_1", tool="scale",
                        args={"name": "web", "namespace": "production", "replicas": 5},
                        source="llm", requested_by=requested_by, **kw)


@pytest.mark.parametrize("claimed", ["", "mallory", "carol"])
def test_the_requester_is_the_author_of_the_message_answered(claimed: str) -> None:
    started, bob, carol = _asked()
    p = _proposal(claimed, correlation_id=bob.event_id)
    asker = domain.asker_of([started, bob, carol, p], p)
    assert asker.requested_by == "bob"
    # The last speaker before it is barred too: which message it answers is the planner's word.
    assert asker.barred == frozenset({"bob", "carol"})


def test_without_a_match_the_latest_message_before_the_proposal_counts() -> None:
    started, bob, carol = _asked()
    p = _proposal("", correlation_id="e_made_up", causation_id="e_other")
    after = UserMessage(session_id="s_1", text="later", actor="dave")
    asker = domain.asker_of([started, bob, carol, p, after], p)
    assert asker.requested_by == "carol"
    assert asker.barred == frozenset({"carol"})
    # A message recorded after the proposal is never what it answers.
    p2 = _proposal("", correlation_id=after.event_id)
    assert domain.asker_of([started, bob, p2, after], p2).requested_by == "bob"


def test_with_no_message_the_session_starter_asked() -> None:
    started, _, _ = _asked()
    p = _proposal("mallory")
    assert domain.asker_of([started, p], p) == domain.Asker("alice", frozenset({"alice"}))


def test_an_mcp_call_was_asked_by_the_token_principal_not_the_last_to_speak() -> None:
    """issue 19: in a session where others spoke (one named by Interlock-Session, or a person
    typing into the MCP conversation), the MCP client's principal asked for its write, and is
    the one barred from approving it in a protected namespace."""
    started, bob, carol = _asked()
    asked = ToolRequested(session_id="s_1", actor="dave", tool="scale", client="Claude Code",
                          args={"name": "web", "namespace": "production", "replicas": 5})
    p = _proposal("dave", causation_id=asked.event_id, correlation_id=asked.event_id)
    asker = domain.asker_of([started, bob, carol, asked, p], p)
    assert asker.requested_by == "dave"
    assert "dave" in asker.barred
    # The card says an agent asked for dave, and which (as it named itself).
    assert asker.via == "Claude Code (MCP)"
    assert domain.asker_of([started, bob, p], p).via == ""


def test_an_amendment_keeps_the_original_asker_and_bars_the_amender() -> None:
    started, bob, _ = _asked()
    p = _proposal("", causation_id=bob.event_id)
    amended = ToolAmended(session_id="s_1", call_id="c_2", replaces="c_1", tool="scale",
                          args={"name": "web", "namespace": "production", "replicas": 4},
                          amended_by="erin", requested_by="")
    asker = domain.asker_of([started, bob, p, amended], amended)
    assert asker.requested_by == "bob"
    assert asker.barred == frozenset({"bob", "erin"})
