from __future__ import annotations

import pytest

from sandbox.state.errors import ApiError
from sandbox.state.patch import json_patch, merge_patch, strategic_merge

DOC = {
    "metadata": {"labels": {"app": "web", "tier": "front"}},
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "nginx:1",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            },
            {"name": "sidecar", "image": "envoy:1"},
        ],
        "tolerations": [{"key": "a"}],
    },
}


def test_merge_patch_replaces_lists_and_deletes_with_null() -> None:
    out = merge_patch(
        DOC,
        {"metadata": {"labels": {"tier": None, "x": "y"}}, "spec": {"tolerations": [{"key": "b"}]}},
    )
    assert out["metadata"]["labels"] == {"app": "web", "x": "y"}
    assert out["spec"]["tolerations"] == [{"key": "b"}]
    assert DOC["metadata"]["labels"]["tier"] == "front"  # input untouched


def test_strategic_merge_merges_by_key() -> None:
    out = strategic_merge(
        DOC,
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:2",
                        "env": [{"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "name": "http"}],
                    }
                ],
            }
        },
    )
    web, sidecar = out["spec"]["containers"]
    assert web["image"] == "nginx:2"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert sidecar == {"name": "sidecar", "image": "envoy:1"}


def test_strategic_merge_directives() -> None:
    out = strategic_merge(DOC, {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["web"]
    out = strategic_merge(DOC, {"metadata": {"labels": {"$patch": "replace", "only": "me"}}})
    assert out["metadata"]["labels"] == {"only": "me"}
    out = strategic_merge(DOC, {"spec": {"tolerations": [{"key": "z"}]}})
    assert out["spec"]["tolerations"] == [{"key": "z"}]  # no merge key: replaced
    out = strategic_merge({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b"]}})
    assert out["metadata"]["finalizers"] == ["a", "b"]


def test_service_ports_merge_on_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = strategic_merge(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_json_patch_ops() -> None:
    out = json_patch(
        DOC,
        [
            {"op": "add", "path": "/metadata/labels/new", "value": "1"},
            {"op": "remove", "path": "/spec/containers/1"},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:3"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
            {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/moved"},
            {"op": "add", "path": "/spec/tolerations/-", "value": {"key": "c"}},
            {"op": "test", "path": "/spec/containers/0/image", "value": "nginx:3"},
        ],
    )
    assert out["metadata"]["labels"] == {"app": "web", "new": "1", "copy": "web", "moved": "front"}
    assert [c["name"] for c in out["spec"]["containers"]] == ["web"]
    assert out["spec"]["tolerations"] == [{"key": "a"}, {"key": "c"}]
    assert "/" not in json_patch({"a/b": 1}, [{"op": "remove", "path": "/a~1b"}])


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/labels/app", "value": "nope"}],
        [{"op": "replace", "path": "/missing/field", "value": 1}],
        [{"op": "remove", "path": "/spec/containers/9"}],
    ],
)
def test_json_patch_failures_are_422(ops: list[dict[str, object]]) -> None:
    with pytest.raises(ApiError) as exc:
        json_patch(DOC, ops)
    assert exc.value.code == 422


def test_json_patch_must_be_a_list() -> None:
    with pytest.raises(ApiError) as exc:
        json_patch(DOC, {"op": "add"})
    assert exc.value.code == 400
