"""The catalogue's contract: names, access, bounded and validated args, nothing dangerous."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from schemas import catalogue

READS = {"get", "list", "describe", "logs", "events", "rollout_status", "rollout_history",
         "top_pods", "top_nodes", "cluster_info", "can_i"}
WRITES = {"scale", "rollout_restart", "rollout_undo", "set_image", "set_resources", "set_env",
          "patch", "apply", "create", "delete", "cordon", "uncordon", "drain", "label",
          "annotate"}


def test_every_issue_tool_is_there_with_its_access() -> None:
    assert {n for n, t in catalogue.TOOLS.items() if t.access == "read"} == READS
    assert {n for n, t in catalogue.TOOLS.items() if t.access == "write"} == WRITES


def test_exec_port_forward_attach_are_absent() -> None:
    for name in ("exec", "port_forward", "attach"):
        assert catalogue.lookup(name) is None


@pytest.mark.parametrize("name", sorted(READS | WRITES))
def test_args_forbid_unknown_fields_and_have_a_schema(name: str) -> None:
    tool = catalogue.TOOLS[name]
    schema = tool.args_schema()
    body = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False
    assert tool.summary
    with pytest.raises(msgspec.ValidationError):
        tool.parse_args({"name": "web", "kind": "deployment", "sneaky": 1})


@pytest.mark.parametrize(
    ("tool", "raw"),
    [
        ("get", {"kind": "pod", "name": "a.b*"}),
        ("get", {"kind": "pod", "name": "web", "namespace": "shop.prod"}),
        ("logs", {"name": "web", "tail_lines": 0}),
        ("set_image", {"name": "web", "container": "app", "image": "nginx; rm -rf /"}),
        ("set_resources", {"name": "web"}),
        ("set_resources", {"name": "web", "limits": {"memory": "lots"}}),
        ("set_env", {"name": "web"}),
        ("set_env", {"name": "web", "env": {"A=B": "x"}}),
        ("label", {"kind": "pod", "name": "web", "labels": {}}),
        ("label", {"kind": "pod", "name": "web", "labels": {"a": "no spaces"}}),
        ("apply", {"manifest": {"kind": "ConfigMap", "metadata": {"name": "x"}}}),
        ("apply", {"manifest": {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "Bad_Name"}}}),
        ("patch", {"kind": "deployment", "name": "web", "body": {}}),
        ("patch", {"kind": "deployment", "name": "web", "body": {"x": "y" * 300_000}}),
        ("patch", {"kind": "deployment", "name": "web", "patch_type": "json", "body": {"a": 1}}),
        ("can_i", {"verb": "impersonate", "resource": "users"}),
        ("scale", {"name": "web", "replicas": -1}),
    ],
)
def test_invalid_args_are_rejected(tool: str, raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        catalogue.TOOLS[tool].parse_args(raw)


def test_manifest_target_comes_from_the_manifest() -> None:
    args = catalogue.TOOLS["apply"].parse_args({"manifest": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"}}})
    assert args.target() == catalogue.Target(namespace="shop", kind="configmap", name="cfg")


def test_cluster_scoped_targets_have_no_namespace() -> None:
    args = catalogue.TOOLS["cordon"].parse_args({"name": "node-1"})
    assert args.target() == catalogue.Target(kind="node", name="node-1")


def test_canonical_args_round_trip_to_the_same_hash() -> None:
    tool = catalogue.TOOLS["set_resources"]
    args = tool.parse_args({"name": "web", "namespace": "shop", "container": "app",
                            "limits": {"memory": "512Mi"}})
    canonical = catalogue.canonical_args(args)
    again = catalogue.canonical_args(tool.parse_args(canonical))
    assert catalogue.call_hash("set_resources", canonical) == catalogue.call_hash(
        "set_resources", again)
