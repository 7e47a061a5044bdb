"""An MCP client's call (`tool.requested`, issue 19) as people see it: the terminal's line
(clients/render.py, `interlock watch` and `chat`) and the session view the gateway folds
(services/gateway/views.py, GET /v1/sessions/{id}) — who asked, through which client, the call
compact and kubectl-like, the requester's why and quotes; raw args whatever their types."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from clients import render
from schemas.planning import ToolProposed, ToolRequested
from schemas.session import SessionStarted
from services.gateway import bodies, views

SCALE = {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 5}


def _requested(**kw: object) -> ToolRequested:
    base: dict[str, object] = {"session_id": "s_1", "actor": "alice", "tool": "scale",
                               "args": SCALE, "client": "Claude Code 1.2"}
    return ToolRequested(**{**base, **kw})  # type: ignore[arg-type]


def _event(ev: ToolRequested) -> dict[str, object]:
    d: dict[str, object] = msgspec.to_builtins(ev)
    return d


def test_the_terminal_says_who_asked_through_which_client_and_what() -> None:
    line = render.event(12, "tool.requested", _event(_requested()))
    assert line == ("[12] alice via Claude Code 1.2 (MCP) asked: "
                    "scale deployment/web --replicas=5 -n shop")


def test_the_why_and_the_quotes_follow_on_lines_of_their_own_escaped() -> None:
    line = render.event(3, "tool.requested", _event(_requested(
        client="", rationale="checkout is slow\nscale it", evidence=("p99 2.1s\x1b[2J",),
        expected_outcome="p99 under 1s",
        args={"kind": "deployment", "name": "api", "resources": {"limits": {"memory": "512Mi"}},
              "cluster": "prod", "all_namespaces": False, "tail": None})))
    assert line is not None
    first, *rest = line.split("\n")
    assert first == ("[3] alice (MCP) asked: scale deployment/api "
                     "--resources.limits.memory=512Mi --context=prod")
    assert rest[0] == "      why:    checkout is slow"
    assert rest[1] == "              scale it"  # a later line never starts where labels do
    assert rest[2] == "              - p99 2.1s\\x1b[2J"
    assert rest[3] == "      expect: p99 under 1s"
    assert "\x1b" not in line


def test_odd_args_are_shown_not_trusted() -> None:
    line = render.event(4, "tool.requested", {"actor": "bob\x07", "client": "x\ny",
                                              "tool": "approve", "args": {
                                                  "approval_id": "a_1", "force": True,
                                                  "ids": [1, 2], "n": 0}})
    assert line == "[4] bob\\x07 via x\\ny (MCP) asked: approve --approval_id=a_1 --force " \
                   "--ids=[1,2] --n=0"
    assert render.event(5, "tool.requested", {"actor": "bob", "tool": "get",
                                              "args": "not a dict"}) == \
        "[5] bob (MCP) asked: get 'not a dict'"


def test_the_session_view_shows_the_request_as_a_user_message_via_the_client() -> None:
    now = datetime.now(UTC)
    req = _requested(rationale="traffic doubled")
    proposed = ToolProposed(session_id="s_1", actor="planner", call_id="c_1", tool="scale",
                            args=SCALE, source="mcp", requested_by="alice")
    view = views.fold_session("s_1", [
        (1, SessionStarted(session_id="s_1", actor="alice", title="MCP: Claude Code 1.2")),
        (2, req), (3, proposed)])
    out = view.to_json(now)
    assert out["messages"] == [{
        "role": "user", "who": "alice", "via": "Claude Code 1.2 (MCP)", "seq": 2,
        "text": "scale deployment/web --replicas=5 -n shop — traffic doubled"}]
    assert out["calls"][0]["call_id"] == "c_1"
    assert out["status"] == "idle"  # no turn follows an MCP call: it does not stay "running"
    # What the gateway serves is what its API type (and so the OpenAPI spec) says.
    msgspec.convert(out, bodies.SessionViewOut)
    anonymous = views.fold_session("s_1", [(1, _requested(client=""))]).to_json(now)
    assert anonymous["messages"][0]["via"] == "MCP"
