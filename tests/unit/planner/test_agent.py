"""The model loop's pure core: tools from the catalogue, the fold, evidence, trimming, the
derived events of a step, and the settings."""

from __future__ import annotations

import json

import pytest

from schemas import catalogue, tool_schema
from schemas.approval import ApprovalDenied, ApprovalExpired
from schemas.execution import ToolResult
from schemas.planning import StepPlanned, ToolProposed
from schemas.session import SessionCancelled, TurnCompleted, UserMessage
from services.planner import agent
from services.planner.settings import ModelSettings, PlannerSettings
from services.runtime.errors import ConfigError
from tests.support_llm import _pairing_error

SID = "s_unit"


def _user(text: str) -> UserMessage:
    return UserMessage(session_id=SID, text=text, actor="alice")


def _step(anchor: UserMessage | ToolResult | StepPlanned, events: list, *calls: tuple[str, str],
          text: str = "") -> StepPlanned:
    answer = agent.ModelAnswer(text=text, calls=tuple(agent.ModelCall(n, a) for n, a in calls))
    return agent.plan_step(answer, agent.fold(events), anchor, "m")


def _result(call_id: str, output: str = "ok") -> ToolResult:
    return ToolResult(session_id=SID, call_id=call_id, tool="get", status="ok", output=output)


def test_tools_are_generated_from_the_catalogue_without_references() -> None:
    specs = {s["function"]["name"]: s["function"] for s in agent.tool_specs()}
    assert set(specs) == set(catalogue.TOOLS)
    for name, fn in specs.items():
        params = fn["parameters"]
        assert "$ref" not in json.dumps(params), name
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        if catalogue.TOOLS[name].access == "write":
            assert set(tool_schema.META_FIELDS) <= set(params["required"]), name
            assert "WRITE" in fn["description"]
    limits = specs["set_resources"]["parameters"]["properties"]["limits"]
    assert "memory" in json.dumps(limits)  # nested msgspec structs are inlined


def test_meta_fields_are_stripped_and_the_args_convert() -> None:
    user = _user("payment-service is at container memory 250Mi of 256Mi limit")
    args = {"name": "payment-service", "namespace": "production", "limits": {"memory": "512Mi"},
            "rationale": "r", "evidence": ["container memory 250Mi of 256Mi limit"],
            "expected_outcome": "no OOM"}
    step = _step(user, [user], ("set_resources", json.dumps(args)))
    call = step.calls[0]
    assert call.rejected == ""
    assert call.args == {"name": "payment-service", "namespace": "production",
                         "limits": {"memory": "512Mi"}}
    catalogue.TOOLS["set_resources"].parse_args(call.args)


@pytest.mark.parametrize(
    ("evidence", "missing"),
    [
        (["Container   MEMORY 250mi of 256Mi limit"], []),  # whitespace and case
        (["\u201ccontainer memory 250Mi\u201d"], []),  # quoted with typographic quotes
        (["memory is almost full"], ["memory is almost full"]),  # a paraphrase
        (["ok"], ["ok"]),  # too short to mean anything
    ],
)
def test_evidence_must_be_verbatim(evidence: list[str], missing: list[str]) -> None:
    corpus = ["WARN container memory 250Mi of 256Mi limit"]
    assert agent.unquoted(tuple(evidence), corpus) == missing


def test_a_write_without_evidence_is_declined_and_the_model_is_told() -> None:
    user = _user("restart web")
    step = _step(user, [user], ("rollout_restart", '{"name": "web", "namespace": "shop"}'),
                 ("get", "not json"))
    assert step.calls[0].rejected.startswith("a write needs rationale, evidence")
    assert step.calls[1].rejected.startswith("the arguments were not a JSON object")
    f = agent.fold([user, step])
    assert f.need is step  # every call declined: the loop goes on at once
    tools = [m for m in f.messages if m["role"] == "tool"]
    assert [m["content"][:13] for m in tools] == ["Not proposed:", "Not proposed:"]
    assert agent.project(step) == []  # nothing reaches the gate


def test_the_fold_needs_a_step_only_when_every_call_is_resolved() -> None:
    user = _user("check web")
    assert agent.fold([user]).need is user
    step = _step(user, [user], ("get", '{"kind": "pod", "name": "a", "namespace": "shop"}'),
                 ("get", '{"kind": "pod", "name": "b", "namespace": "shop"}'))
    a, b = (c.call_id for c in step.calls)
    assert agent.fold([user, step]).need is None
    ra = _result(a)
    assert agent.fold([user, step, ra]).need is None  # b still running
    rb = _result(b, "pod b: OOMKilled")
    f = agent.fold([user, step, ra, rb])
    assert f.need is rb
    assert f.iteration == 1
    assert _pairing_error(f.messages) == ""
    assert "<tool-output>\npod b: OOMKilled\n</tool-output>" in f.messages[-1]["content"]
    assert "pod b: OOMKilled" in f.corpus


def test_denials_resolve_their_calls_and_cancel_stops_everything() -> None:
    user = _user("restart web")
    ev = ["restart web"]
    args = {"name": "web", "namespace": "shop", "rationale": "asked", "evidence": ev,
            "expected_outcome": "fresh pods"}
    step = _step(user, [user], ("rollout_restart", json.dumps(args)))
    denied = ApprovalDenied(session_id=SID, approval_id="a_1", call_ids=(step.calls[0].call_id,),
                            approver="bob", reason="freeze")
    f = agent.fold([user, step, denied])
    assert f.need is denied
    assert "DENIED by bob" in f.messages[-1]["content"]
    expired = ApprovalExpired(session_id=SID, approval_id="a_1",
                              call_ids=(step.calls[0].call_id,))
    f = agent.fold([user, step, expired])
    assert f.need is expired
    assert f.messages[-1]["content"].startswith("EXPIRED: nobody decided in time")
    cancel = SessionCancelled(session_id=SID)
    f = agent.fold([user, step, cancel, denied])
    assert f.need is None
    assert f.cancelled


def test_direct_commands_never_wake_the_model() -> None:
    cmd = _user("/kubectl get pods -n shop")
    proposal = ToolProposed(session_id=SID, call_id="c_direct", tool="list", source="direct")
    f = agent.fold([cmd, proposal, _result("c_direct", "web-1 Running")])
    assert f.need is None
    assert "web-1 Running" in f.messages[-1]["content"]


def test_a_steps_events_are_derived_with_stable_ids() -> None:
    user = _user("look")
    step = _step(user, [user], ("get", '{"kind": "pod", "name": "a", "namespace": "shop"}'),
                 text="Looking.")
    first, again = agent.project(step), agent.project(step)
    assert first == again
    assert [e.type for e in first] == ["assistant.message", "tool.proposed"]
    assert agent.missing_projections([user, step, *first]) == []
    assert agent.missing_projections([user, step, first[0]]) == [first[1]]
    answer = _step(user, [user], text="Done.")
    assert [e.type for e in agent.project(answer)] == ["assistant.message", "turn.completed"]
    assert isinstance(agent.project(answer)[-1], TurnCompleted)


def test_trimming_keeps_tool_calls_with_their_results() -> None:
    events: list = []
    for i in range(30):
        u = _user(f"question {i} " + "x" * 300)
        s = _step(u, [*events, u], ("get", json.dumps({"kind": "pod", "name": f"p{i}"})),
                  ("events", "{}"))
        events += [u, s, *(_result(c.call_id, "y" * 500) for c in s.calls)]
    msgs = agent.fold(events).messages
    assert _pairing_error(msgs) == ""
    for budget in (2_000, 5_000, 20_000):
        trimmed = agent.trim(msgs, budget)
        assert _pairing_error(trimmed) == ""
        assert trimmed[0]["content"].startswith("[note from Interlock:")
        assert trimmed[1]["role"] != "tool"
        assert trimmed[-1] == msgs[-1]
        assert len(json.dumps(trimmed)) < budget + 1_000
    assert agent.trim(msgs, 10**9) == msgs


def test_trimming_cuts_an_oversized_newest_part_rather_than_dropping_it() -> None:
    u = _user("why")
    s = _step(u, [u], ("logs", '{"name": "a"}'))
    big = agent.fold([u, s, _result(s.calls[0].call_id, "z" * 50_000)]).messages
    trimmed = agent.trim(big, 4_000)
    assert _pairing_error(trimmed) == ""
    assert "cut to fit the context window" in trimmed[-1]["content"]


def test_settings_without_a_model_mean_direct_mode() -> None:
    env = {"INTERLOCK_NATS_PASSWORD": "p", "INTERLOCK_SIGNING_KEY_FILE": "/keys/planner.key",
           "INTERLOCK_KEYRING_FILE": "/keys/keyring.json"}
    assert PlannerSettings.from_env(env).model is None
    m = ModelSettings.from_env({"INTERLOCK_MODEL": "llama3.1", "OPENAI_BASE_URL":
                                "http://127.0.0.1:11434/v1"})
    assert m is not None
    assert (m.model, m.api_key, m.temperature) == ("llama3.1", "", None)
    k = ModelSettings.from_env({"OPENAI_API_KEY": "sk-secret-value", "INTERLOCK_TEMPERATURE": "0.2",
                                "INTERLOCK_MAX_ITERATIONS": "5"})
    assert k is not None
    assert (k.temperature, k.max_iterations) == (0.2, 5)
    assert "sk-secret-value" not in repr(k)


def test_invalid_settings_fail_fast_with_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        ModelSettings.from_env({"INTERLOCK_MODEL": "m", "INTERLOCK_TEMPERATURE": "hot",
                                "INTERLOCK_MAX_ITERATIONS": "0"})
    assert "INTERLOCK_TEMPERATURE must be a number" in str(err.value)
    assert "INTERLOCK_MAX_ITERATIONS must be between 1 and 100" in str(err.value)


def test_an_amended_call_stays_outstanding_until_its_own_result() -> None:
    user = _user("web is slow: 3 of 3 pods at 100% cpu")
    args = {"name": "web", "namespace": "shop", "replicas": 9, "rationale": "r",
            "evidence": ["3 of 3 pods at 100% cpu"], "expected_outcome": "less cpu"}
    step = _step(user, [user], ("scale", json.dumps(args)))
    original = step.calls[0].call_id
    superseded = ApprovalDenied(session_id=SID, approval_id="a_1", call_ids=(original,),
                                approver="bob", reason="modified by bob: replaced by call c_new",
                                superseded_by="c_new")
    f = agent.fold([user, step, superseded])
    assert f.need is None  # nothing to answer yet: the work goes on as c_new
    assert "continues as c_new" in f.messages[-1]["content"]
    done = ToolResult(session_id=SID, call_id="c_new", tool="scale", status="ok",
                      output="scaled from 3 to 4")
    f = agent.fold([user, step, superseded, done])
    assert f.need is done
    assert "scaled from 3 to 4" in f.messages[-1]["content"]
