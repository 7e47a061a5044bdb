"""A catalogue tool as a JSON Schema for a tool-calling client: the planner's model (OpenAI
`tools`) and MCP clients (`tools/list`) are sent the same schema, generated from the tool's
msgspec args type, with the proposal's own fields (rationale, evidence, expected outcome)."""

from __future__ import annotations

from typing import Any

from schemas import catalogue

META_FIELDS = ("rationale", "evidence", "expected_outcome")

_META_SCHEMA: dict[str, Any] = {
    "rationale": {"type": "string", "maxLength": 4000,
                  "description": "Why this call, in one or two sentences."},
    "evidence": {"type": "array", "maxItems": 10,
                 "items": {"type": "string", "maxLength": 1000},
                 "description": "Short quotes copied verbatim from earlier tool results (or the "
                                "person's messages) that justify this call."},
    "expected_outcome": {"type": "string", "maxLength": 4000,
                         "description": "What should be true afterwards and how to verify it."},
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolves `$ref`s into `$defs`: some OpenAI-compatible servers do not follow references."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "title")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def parameters_schema(tool: catalogue.Tool, *, meta_required: bool = True) -> dict[str, Any]:
    """The tool's arguments plus the proposal's fields: a write takes rationale, evidence and
    expected outcome (required of the model: `meta_required`), a read a rationale."""
    raw = tool.args_schema()
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    schema = {"type": "object", **schema}
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", []))
    if tool.access == "write":
        props.update(_META_SCHEMA)
        if meta_required:
            required += list(META_FIELDS)
    else:
        props["rationale"] = _META_SCHEMA["rationale"]
    schema["properties"] = props
    schema["required"] = required
    schema["additionalProperties"] = False
    return schema
