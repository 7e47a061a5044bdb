from __future__ import annotations

import pytest

from schemas.planning import ToolProposed
from services.gate import domain


def _p(tool: str, args: dict[str, object]) -> ToolProposed:
    return ToolProposed(session_id="s_1", call_id="c_1", tool=tool, args=args)


def test_known_read_with_valid_args_is_a_read() -> None:
    c = domain.classify(_p("list", {"kind": "pod", "namespace": "shop"}))
    assert c.access == "read"
    assert c.args == {"all_namespaces": False, "cluster": "", "kind": "pod",
                      "label_selector": "", "namespace": "shop"}


def test_write_is_a_write() -> None:
    c = domain.classify(_p("scale", {"name": "web", "namespace": "shop", "replicas": 2}))
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
    assert domain.classify(_p(tool, args)).access == "refused"


def test_approval_id_is_deterministic_per_call() -> None:
    assert domain.approval_id_for("c_1") == domain.approval_id_for("c_1")
    assert domain.approval_id_for("c_1") != domain.approval_id_for("c_2")
