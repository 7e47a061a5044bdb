"""OpenAPI v3 component schemas for `kubectl explain`, generated from the official client's
pydantic models (which carry the API's field docs), reshaped the way apiserver publishes them:
`allOf: [$ref]` instead of nullable unions, GVK extensions on the kinds, and the strategic
merge keys kubectl's apply reads (`x-kubernetes-patch-merge-key`)."""

from __future__ import annotations

import functools
import re
from typing import Any

from sandbox.state import schema
from sandbox.state.patch import MERGE_KEYS
from sandbox.state.resources import ResourceType

Obj = dict[str, Any]
PREFIX = "#/components/schemas/"


_VERSION_PREFIX = re.compile(
    r"^[A-Z][a-z]*V\d+(?:alpha\d+|beta\d+)?(?=[A-Z])|^V\d+(?:alpha\d+|beta\d+)?"
)


def _name(model_name: str) -> str:
    """`V1DeploymentStrategy` -> `io.k8s.api.DeploymentStrategy`: kubectl prints the last part."""
    return "io.k8s.api." + _VERSION_PREFIX.sub("", model_name)


def _unwrap(node: Any) -> Any:
    """`anyOf: [X, {type: null}]` -> X; a bare `$ref` next to other keys -> `allOf: [$ref]`."""
    if isinstance(node, list):
        return [_unwrap(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _unwrap(v) for k, v in node.items() if k not in ("default", "title")}
    if isinstance(node.get("description"), str):
        # The generated models' docstrings end in notes about the generator itself.
        node["description"] = (
            node["description"].split("\n\n    Attributes:")[0].split("\n\nAttributes:")[0].strip()
        )
    if isinstance(node.get("$ref"), str):
        node["$ref"] = PREFIX + _name(node["$ref"].removeprefix(PREFIX))
    options = node.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o != {"type": "null"}]
        if len(real) == 1:
            del node["anyOf"]
            node = {**real[0], **node}
    if "$ref" in node:
        ref = node.pop("$ref")
        node["allOf"] = [{"$ref": ref}]
    return node


def _merge_keys(schemas: dict[str, Obj]) -> None:
    for definition in schemas.values():
        for name, prop in (definition.get("properties") or {}).items():
            if prop.get("type") != "array":
                continue
            ref = ((prop.get("items") or {}).get("allOf") or [{}])[0].get("$ref", "")
            item = schemas.get(ref.removeprefix(PREFIX), {})
            key = MERGE_KEYS.get(name)
            if name == "ports":
                key = "containerPort" if "containerPort" in item.get("properties", {}) else "port"
            if key and key in item.get("properties", {}):
                prop["x-kubernetes-patch-merge-key"] = key
                prop["x-kubernetes-patch-strategy"] = "merge"


@functools.lru_cache(maxsize=64)
def components(types: tuple[ResourceType, ...]) -> dict[str, Obj]:
    """Schemas for the kinds in one group-version and everything they reference."""
    schemas: dict[str, Obj] = {}
    for rt in types:
        model = schema.model_for(rt)
        if model is None:
            continue
        doc = model.model_json_schema(by_alias=True, ref_template=PREFIX + "{model}")
        for name, definition in (doc.pop("$defs", None) or {}).items():
            schemas.setdefault(_name(name), _unwrap(definition))
        top = _unwrap(doc)
        top["x-kubernetes-group-version-kind"] = [
            {"group": rt.group, "version": rt.version, "kind": rt.kind}
        ]
        schemas[_name(model.__name__)] = top
    _merge_keys(schemas)
    return schemas
