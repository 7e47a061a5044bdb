"""What an MCP client is told (services/gateway/mcp.py): every catalogue tool with the schema a
model is sent (strict, the proposal's fields optional here), read/write hints from the
catalogue's classification, one read-only status tool, and nothing that decides. And who the
client says it is, for the record."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from schemas import catalogue
from schemas.tool_schema import META_FIELDS
from services.gateway import mcp


def by_name() -> dict[str, Any]:
    return {t.name: t for t in mcp.tools()}


def test_every_catalogue_tool_is_listed_with_hints_from_its_classification() -> None:
    tools = by_name()
    assert set(tools) == set(catalogue.TOOLS) | {mcp.STATUS_TOOL}
    for name, tool in catalogue.TOOLS.items():
        hints = tools[name].annotations
        write = tool.access == "write"
        assert (hints.read_only_hint, hints.destructive_hint) == (not write, write), name
        assert hints.open_world_hint is False
        assert tools[name].description.startswith(tool.summary)
        assert ("WRITE: held in Interlock" in tools[name].description) == write, name


def test_schemas_are_strict_and_the_proposal_fields_optional() -> None:
    tools = by_name()
    for name, tool in catalogue.TOOLS.items():
        schema = tools[name].input_schema
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False, name
        assert not set(META_FIELDS) & set(schema.get("required", [])), name
        props = set(schema["properties"])
        assert "rationale" in props
        if tool.access == "write":
            assert set(META_FIELDS) <= props, name
            assert schema["properties"]["evidence"]["type"] == "array"
        else:
            assert not {"evidence", "expected_outcome"} & props, name
        # The tool's own required args stay required.
        args_required = set(tool.args_schema().get("required", []))
        assert args_required <= set(schema.get("required", [])), name


def test_the_status_tool_reads_and_nothing_decides() -> None:
    tools = by_name()
    status = tools[mcp.STATUS_TOOL]
    assert status.annotations.read_only_hint is True
    assert status.annotations.destructive_hint is False
    assert status.input_schema == {
        "type": "object", "additionalProperties": False, "required": ["approval_id"],
        "properties": {"approval_id": {"type": "string", "maxLength": 64},
                       "wait_seconds": {"type": "integer", "minimum": 0,
                                        "maximum": mcp.MAX_WAIT_S}}}
    assert "cannot decide" in status.description
    assert not [n for n in tools if n != mcp.STATUS_TOOL
                and any(w in n for w in ("approv", "decid", "deny", "grant", "sign"))]
    assert not set(catalogue.ABSENT) & set(tools)


def ctx(initialize: dict[str, Any] | None = None, agent: str | None = None) -> Any:
    """A request's context as the SDK hands it over: the client's self-description is the
    connection's client_params (from its initialize, or a 2026-07-28 request's _meta; the e2e
    tests check the SDK does that), else only the HTTP request is there."""
    params = None if initialize is None else SimpleNamespace(
        client_info=SimpleNamespace(**initialize))
    headers = {} if agent is None else {"user-agent": agent}
    return SimpleNamespace(params={}, session=SimpleNamespace(client_params=params),
                           request=SimpleNamespace(headers=headers))


def test_the_client_is_named_by_what_it_said_or_its_user_agent() -> None:
    named = {"name": "claude-code", "version": "2.1"}
    assert mcp.client_name(ctx(named, agent="curl/8")) == "claude-code 2.1"
    assert mcp.client_name(ctx({"name": "cursor", "version": None})) == "cursor"
    # A 2025 client over stateless HTTP: its initialize is not linked to this request.
    assert mcp.client_name(ctx(agent="vscode-mcp/1.4\x1b[2J")) == "vscode-mcp/1.4[2J"
    assert mcp.client_name(ctx()) == "an MCP client"
    assert len(mcp.client_name(ctx(agent="x" * 500))) == 120
    assert len(mcp.client_name(ctx({"name": "y" * 500, "version": "1"}))) == 120


def test_an_executed_write_is_waited_on_until_its_verification_is_in() -> None:
    def doc(status: str, *results: tuple[str, Any]) -> dict[str, Any]:
        return {"status": status, "results": [{"status": s, "verification": v}
                                               for s, v in results]}

    assert mcp._verifying(doc("executed", ("ok", None)))
    assert not mcp._verifying(doc("executed", ("ok", {"outcome": "verified"})))
    assert not mcp._verifying(doc("failed", ("error", None)))  # never verified: no wait
    assert mcp._verifying(doc("failed", ("error", None), ("ok", None)))
    assert mcp._verifying(doc("executed", ("ok", {"outcome": "verified"}), ("ok", None)))
