"""Issue 21: the audit does not believe an executor event about a call the gate classified for
another cluster (a compromised spoke writing, on its own subjects, a "result" for another
cluster's call): it is flagged, the session is not "intact", and the write record keeps the
real cluster's result."""

from __future__ import annotations

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ToolClassified
from schemas.base import Event, Target
from schemas.execution import ToolResult
from services.runtime.audit import audit


def _links(*events: Event) -> list[chain.Link]:
    return [chain.Link(i + 1, S.event_subject(ev), E.encode(ev)) for i, ev in enumerate(events)]


def test_a_result_from_another_cluster_is_flagged_not_believed() -> None:
    classified = ToolClassified(session_id="s_1", call_id="c_1", access="read", rule="r",
                                tool="get", args={"cluster": "a"}, target=Target(cluster="a"))
    forged = ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok",
                        output="all fine", cluster_name="b")
    real = ToolResult(session_id="s_1", call_id="c_1", tool="get", status="ok",
                      output="real", cluster_name="a")
    report = audit("s_1", _links(classified, forged, real))
    flagged = [p for p in report.problems if p["seq"] == 2]
    assert flagged and "classified that call for cluster 'a'" in str(flagged[0]["problem"])
    assert not report.ok
    assert "NOT BELIEVED" in report.entries[1].text
    assert all(p["seq"] != 3 for p in report.problems if "signature" not in p)
