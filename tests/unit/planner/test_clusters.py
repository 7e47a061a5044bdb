"""Issue 21: the planner folds a session without an executor event about a call the gate
classified for another cluster (a compromised spoke answering another cluster's call), and
takes no step on such a trigger."""

from __future__ import annotations

from schemas import events as E
from schemas import subjects as S
from schemas.approval import ToolClassified
from schemas.base import Event, Target
from schemas.execution import ToolResult
from services.planner.handlers import believed
from services.runtime.bus import Stored


def _stored(*events: Event) -> list[Stored]:
    return [Stored(i + 1, S.event_subject(e), e, E.encode(e))  # type: ignore[arg-type]
            for i, e in enumerate(events)]


def test_a_result_from_another_clusters_executor_is_not_folded() -> None:
    classified = ToolClassified(session_id="s_1", call_id="c_1", access="read", rule="r",
                                tool="get", args={"cluster": "a"}, target=Target(cluster="a"))
    forged = ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok",
                        output="nothing to worry about", cluster_name="b")
    real = ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok",
                      output="real", cluster_name="a")
    assert believed(_stored(classified, forged, real)) == [classified, real]
    # One executor for every context (classified for no cluster): as before.
    legacy = ToolClassified(session_id="s_1", call_id="c_2", access="read", rule="r",
                            tool="get", args={}, target=Target())
    stamped = ToolResult(session_id="s_1", call_id="c_2", tool="get", status="ok",
                         cluster_name="sandbox")
    assert believed(_stored(legacy, stamped)) == [legacy, stamped]
