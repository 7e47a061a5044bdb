from __future__ import annotations

import pytest

from sandbox.state.errors import ApiError
from sandbox.state.selectors import (
    labels_match,
    parse_fields,
    parse_labels,
    selector_from_spec,
    selector_string,
)

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=api", True),
        ("missing!=x", True),
        ("app in (web,api)", True),
        ("app notin (web)", False),
        ("missing notin (web)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=web,tier in (front, back),!missing", True),
        ("app=web,env=dev", False),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert labels_match(parse_labels(selector), LABELS) is expected


def test_label_selector_syntax_error_is_400() -> None:
    with pytest.raises(ApiError) as exc:
        parse_labels("app in web")
    assert exc.value.code == 400


def test_structured_selectors() -> None:
    spec = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    }
    assert labels_match(selector_from_spec(spec), LABELS)
    assert selector_string(spec) == "app=web,tier in (front),!gone"


def test_field_selectors() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    assert parse_fields("spec.nodeName=n1,status.phase!=Succeeded")(pod)
    assert not parse_fields("metadata.name=q")(pod)
    assert parse_fields("metadata.namespace==shop")(pod)
    with pytest.raises(ApiError):
        parse_fields("nonsense")
