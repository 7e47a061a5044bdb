"""Several planner instances share the durable `planner` consumer; optimistic concurrency on the
session guarantees one next step per trigger, never two (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from schemas.execution import ToolResult
from schemas.planning import StepPlanned, ToolProposed
from schemas.session import AssistantMessage, TurnCompleted
from services.planner.handlers import Planner
from services.runtime.bus import Bus
from tests.integration.planner.conftest import Harness
from tests.support_llm import Reply, Request, call, say

N = 50


async def _run_direct_planners(h: Harness, n: int) -> None:
    for _ in range(n):
        bus = await Bus.connect(h.env.settings("planner"), "planner")
        h.owned.append(bus)
        h.tasks.append(asyncio.create_task(bus.consume("planner", Planner(bus).handle, h.stop)))


async def test_three_direct_planners_take_exactly_one_step_per_result(harness: Harness) -> None:
    await _run_direct_planners(harness, 3)
    sid, w = await harness.session()
    for i in range(N):
        await harness.say(sid, f"kubectl get deploy/web-{i} -n shop")
    proposals: list[ToolProposed] = []
    while len(proposals) < N:
        p = await w.tag("tool.proposed")
        assert isinstance(p, ToolProposed)
        proposals.append(p)
    # 50 results land at once; the three instances race to answer them.
    results = await asyncio.gather(*(
        harness.result(sid, p.call_id, "get", f"deployment web-{i} ok")
        for i, p in enumerate(proposals)))
    done = 0
    while done < N:
        await w.tag("turn.completed")
        done += 1
    events = await harness.events(sid)
    answers = [e for e in events if isinstance(e, AssistantMessage)]
    by_cause = collections.Counter(a.causation_id for a in answers)
    assert by_cause == collections.Counter({r.event_id: 1 for r in results})
    turns = collections.Counter(e.causation_id for e in events if isinstance(e, TurnCompleted))
    assert turns == by_cause
    assert len([e for e in events if isinstance(e, ToolProposed)]) == N
    assert len({e.event_id for e in events}) == len(events)


async def test_three_model_planners_take_exactly_one_step_per_result(
    harness: Harness, script_holder: dict[str, Any]
) -> None:
    """A chain of 50 reads: each result must lead to exactly one model call and one step,
    whichever of the three instances receives it; the test answers every proposal at once."""

    def script(req: Request) -> Reply:
        k = len(req.tool_results())
        return call("get", kind="pod", name=f"p-{k}", namespace="shop") if k < N \
            else say("checked all fifty pods")

    script_holder["script"] = script
    await harness.run_planners(3, max_iterations=N + 5)
    sid, w = await harness.session()
    await harness.say(sid, "check the fifty pods one by one")
    results: list[ToolResult] = []
    for _ in range(N):
        p = await w.tag("tool.proposed", timeout=30)
        assert isinstance(p, ToolProposed)
        results.append(await harness.result(sid, p.call_id, "get", f"{p.args['name']} Running"))
    await w.tag("turn.completed", timeout=30)
    events = await harness.events(sid)
    steps = [e for e in events if isinstance(e, StepPlanned)]
    anchors = collections.Counter(s.anchor_id for s in steps)
    assert len(steps) == N + 1
    assert max(anchors.values()) == 1
    assert set(anchors) == {r.event_id for r in results} | {events[0].event_id}
    assert len(harness.llm.requests) == N + 1  # never asked twice for one step
    proposed = [e for e in events if isinstance(e, ToolProposed)]
    assert [p.args["name"] for p in proposed] == [f"p-{k}" for k in range(N)]
    assert harness.llm.errors == []
    # Work was shared: more than one instance took steps.
    assert sum(1 for p in harness.planners if p.model_calls) >= 2
