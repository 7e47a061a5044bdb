"""A write that ran but did not settle as approved ("not as approved": e.g. an autoscaler set
the replicas back) reaches every reader: the audit line, the CLI, the direct-mode reply and the
model's context — while a verified write adds nothing to the model's conversation."""

from __future__ import annotations

import json

from clients import render
from schemas.execution import ToolResult, ToolVerified
from schemas.planning import ToolProposed
from schemas.session import AssistantMessage, UserMessage
from services.planner import agent, domain
from services.runtime import audit

SID = "s_verdict"
DETAIL = ("not as approved: spec.replicas is 6, approved 12 — changed back by "
          "HorizontalPodAutoscaler/order-service (min 3, max 6, cpu 70%)")


def _verdict(call_id: str, outcome: str = "not_as_approved") -> ToolVerified:
    return ToolVerified(session_id=SID, call_id=call_id, tool="scale", outcome=outcome,  # type: ignore[arg-type]
                        check="the approved changes of deployment/order-service hold",
                        detail=DETAIL if outcome == "not_as_approved" else "")


def test_audit_and_cli_name_the_verdict() -> None:
    line = audit.describe(_verdict("c_1"))
    assert "NOT AS APPROVED" in line
    assert "spec.replicas is 6, approved 12" in line
    cli = render.event(7, "tool.verified", json.loads(json.dumps(
        {"outcome": "not_as_approved", "detail": DETAIL})))
    assert cli == f"[7] ✗ verification: not as approved — {DETAIL}"


def test_direct_mode_says_the_verdict_after_done() -> None:
    user = UserMessage(session_id=SID, text="kubectl scale deploy/order-service --replicas=12 "
                                            "-n production", actor="alice")
    events = domain.decide(user, [user])
    proposal = next(e for e in events if isinstance(e, ToolProposed))
    log = [user, *events]
    said = domain.decide(_verdict(proposal.call_id), log)
    assert [type(e) for e in said] == [AssistantMessage]
    assert said[0].text == f"Verification of scale: NOT AS APPROVED — {DETAIL}"
    assert domain.decide(_verdict(proposal.call_id, "verified"), log) == []
    # Not a direct call: the model loop's business.
    assert domain.decide(_verdict("c_other"), log) == []


def test_the_model_hears_a_write_that_did_not_settle_as_approved() -> None:
    user = UserMessage(session_id=SID, text="order-service is slow; scale it to 12", actor="alice")
    args = {"name": "order-service", "namespace": "production", "replicas": 12,
            "rationale": "load", "evidence": ["order-service is slow; scale it to 12"],
            "expected_outcome": "12 pods"}
    step = agent.plan_step(agent.ModelAnswer(text="", calls=(
        agent.ModelCall("scale", json.dumps(args)),)), agent.fold([user]), user, "m")
    cid = step.calls[0].call_id
    result = ToolResult(session_id=SID, call_id=cid, tool="scale", status="ok",
                        output="deployment.apps/order-service scaled from 6 to 12")
    answered = agent.plan_step(agent.ModelAnswer(text="Scaled to 12."),
                               agent.fold([user, step, result]), result, "m")
    base = [user, step, result, answered]
    assert agent.fold(base).need is None
    assert agent.fold([*base, _verdict(cid, "verified")]).need is None  # nothing new to say
    f = agent.fold([*base, _verdict(cid)])
    assert isinstance(f.need, ToolVerified)
    note = f.messages[-1]
    assert note["role"] == "user"
    assert "NOT AS APPROVED" in note["content"]
    assert "spec.replicas is 6" in note["content"]
