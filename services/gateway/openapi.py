"""The OpenAPI 3.1 document of the gateway, generated from the msgspec types in `bodies.py` and the
event types in `schemas/`, so the spec describes exactly what the code decodes and encodes."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.approval import ApprovalRequested
from schemas.events import EVENT_TYPES
from services.gateway import bodies
from services.gateway.approvers import Enrolment, Revocation

REF = "#/components/schemas/{name}"
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
# Statuses any authenticated JSON operation may answer with.
COMMON_ERRORS = {
    "400": "bad input (malformed JSON, unknown fields, bad ids or parameters)",
    "401": "missing or unknown token",
    "403": "the principal lacks the role",
    "413": "body too large",
    "429": "rate limited (per principal; per address for failed authentication), or too many "
           "event streams open for the principal; see Retry-After",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*extra: tuple[str, str]) -> dict[str, Any]:
    out = {code: _json(_ref("ErrorBody"), text) for code, text in COMMON_ERRORS.items()}
    for code, text in extra:
        out[code] = _json(_ref("ErrorBody"), text)
    return out


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": what,
            "schema": {"type": "string", "pattern": ID_PATTERN}}


def _op(summary: str, role: str | None, ok: tuple[str, dict[str, Any]], *,
        body: str | None = None, params: list[dict[str, Any]] | None = None,
        errors: tuple[tuple[str, str], ...] = (), tag: str = "sessions") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {ok[0]: ok[1]},
    }
    if role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs the `{role}` role."
        op["responses"].update(_errors(*errors))
    if body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def build(version: str = "0.1.0") -> dict[str, Any]:
    types: list[Any] = [
        bodies.NewSession, bodies.NewMessage, bodies.Decision, bodies.Cancel, bodies.ErrorBody,
        bodies.Health, bodies.Me, bodies.SessionCreated, bodies.Accepted, bodies.DecisionAccepted,
        bodies.SessionList, bodies.ApprovalStatus, bodies.ApprovalList, bodies.SessionViewOut,
        bodies.ToolList, bodies.Edits, Enrolment, Revocation,
        ApprovalRequested, *EVENT_TYPES,
    ]
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    components["ApprovalOut"] = {
        "title": "ApprovalOut",
        "description": "An approval.requested event with its current state.",
        "allOf": [_ref("ApprovalRequested"), _ref("ApprovalStatus")],
    }
    # What the handler checks beyond the types: a denial needs a reason, args only approve.
    components["Decision"]["allOf"] = [
        {"if": {"properties": {"decision": {"const": "deny"}}},
         "then": {"required": ["reason"],
                  "properties": {"reason": {"pattern": "\\S"}, "args": {"type": "null"}}}},
    ]
    components["ApprovalList"]["properties"]["approvals"]["items"] = _ref("ApprovalOut")
    components["SessionViewOut"]["properties"]["pending_approvals"]["items"] = _ref("ApprovalOut")
    # NewMessage requires a body; the others may be empty (an empty body means `{}`).
    sid = _path_id("session_id", "a session id")
    aid = _path_id("approval_id", "an approval id")
    not_found = ("404", "no such session")
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("The process is alive", None, ("200", _json(_ref("Health"), "ok")),
                                tag="ops")},
        "/readyz": {"get": {**_op("Connected to NATS", None,
                                  ("200", _json(_ref("Health"), "ready")), tag="ops"),
                            "responses": {"200": _json(_ref("Health"), "ready"),
                                          "503": _json(_ref("ErrorBody"), "not ready")}}},
        "/metrics": {"get": _op("Prometheus metrics", "viewer",
                                ("200", {"description": "Prometheus text format",
                                         "content": {"text/plain": {"schema": {
                                             "type": "string"}}}}), tag="ops")},
        "/openapi.json": {"get": _op("This document", None,
                                     ("200", _json({"type": "object"}, "OpenAPI 3.1")),
                                     tag="ops")},
        "/": {"get": _op("The Command Center (a single HTML page)", None,
                         ("200", {"description": "HTML", "content": {"text/html": {"schema": {
                             "type": "string"}}}}), tag="ops")},
        "/v1/me": {"get": _op("Who the token belongs to", "viewer",
                              ("200", _json(_ref("Me"), "the principal")), tag="ops")},
        "/v1/sessions": {
            "get": _op("Sessions, newest first", "viewer",
                       ("200", _json(_ref("SessionList"), "sessions")),
                       params=[{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1,
                                           "maximum": 1000}}]),
            "post": _op("Start a session (optionally with its default cluster)", "operator",
                        ("201", _json(_ref("SessionCreated"), "created")), body="NewSession",
                        errors=(("400", "invalid body, or a cluster that is not allowed here "
                                        "(INTERLOCK_CLUSTERS)"),)),
        },
        "/v1/sessions/{session_id}": {
            "get": _op("The session's state, folded from its events", "viewer",
                       ("200", _json(_ref("SessionViewOut"), "the session")),
                       params=[sid], errors=(not_found,)),
        },
        "/v1/sessions/{session_id}/messages": {
            "post": {**_op("Send a message (a question or a direct command)", "operator",
                           ("202", _json(_ref("Accepted"), "stored")),
                           params=[sid], errors=(not_found,)),
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("NewMessage")}}}},
        },
        "/v1/sessions/{session_id}/cancel": {
            "post": _op("Stop the run", "operator", ("202", _json(_ref("Accepted"), "stored")),
                        body="Cancel", params=[sid], errors=(not_found,)),
        },
        "/v1/sessions/{session_id}/events": {
            "get": _op(
                "The session's events as Server-Sent Events, resumable",
                "viewer",
                ("200", {"description": (
                    "`text/event-stream`: `id:` is the log sequence, `event:` the event type, "
                    "`data:` the event as JSON (see the event schemas). `retry:` is sent once, "
                    "a `: ping` comment at least every 15 s, and `event: reset` when the "
                    "given id is not in this log (the stream then restarts from the beginning)."),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}),
                params=[
                    sid,
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}},
                    {"name": "after", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}},
                    {"name": "last_event_id", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}},
                ],
                errors=(not_found,),
            ),
        },
        "/v1/log": {
            "get": _op("The log's first and last stream sequence (an event id is never beyond "
                       "the last)", "viewer",
                       ("200", _json({"type": "object", "required": ["first_seq", "last_seq"],
                                      "properties": {
                                          "first_seq": {"type": "integer", "minimum": 0},
                                          "last_seq": {"type": "integer", "minimum": 0}}},
                                     "the bounds")), tag="ops"),
        },
        "/v1/approvals": {
            "get": _op("Approvals with their full context", "viewer",
                       ("200", _json(_ref("ApprovalList"), "approvals")), tag="approvals",
                       params=[{"name": "state", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": list(bodies.STATE_FILTERS),
                                           "default": "pending"}}]),
        },
        "/v1/approvals/{approval_id}/decision": {
            "post": {**_op("Approve or deny (the first decision wins)", "approver",
                           ("202", _json(_ref("DecisionAccepted"), "stored")), tag="approvals",
                           params=[aid],
                           errors=(("404", "no such approval"),
                                   ("409", "already decided, or the decision subject holds "
                                           "something that is not a decision"),
                                   ("410", "expired"),
                                   ("403", "not an approver, separation of duties, or the "
                                           "signature does not verify"))),
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("Decision")}}}},
        },
        "/v1/sessions/{session_id}/audit": {
            "get": _op("The session as an audit timeline with an integrity verdict", "viewer",
                       ("200", {"description": "json: timeline, writes and integrity; text: "
                                "a readable timeline; jsonl: the stored events, for export",
                                "content": {
                                    "application/json": {"schema": {"type": "object"}},
                                    "text/plain": {"schema": {"type": "string"}},
                                    "application/x-ndjson": {"schema": {"type": "string"}}}}),
                       tag="audit", params=[sid, {
                           "name": "format", "in": "query", "required": False,
                           "schema": {"type": "string", "enum": ["json", "text", "jsonl"]}}],
                       errors=(not_found,)),
        },
        "/v1/audit": {
            "get": _op("Writes across sessions: requester, approvers, diff, result", "viewer",
                       ("200", {"description": "json or JSON lines (format=jsonl)", "content": {
                           "application/json": {"schema": {"type": "object"}},
                           "application/x-ndjson": {"schema": {"type": "string"}}}}),
                       tag="audit", params=[
                           {"name": "since", "in": "query", "required": False,
                            "schema": {"type": "string", "format": "date-time"}},
                           {"name": "until", "in": "query", "required": False,
                            "schema": {"type": "string", "format": "date-time"}},
                           {"name": "namespace", "in": "query", "required": False,
                            "schema": {"type": "string", "maxLength": 63}},
                           {"name": "approver", "in": "query", "required": False,
                            "schema": {"type": "string", "maxLength": 200}},
                           {"name": "cluster", "in": "query", "required": False,
                            "description": "writes on this cluster only (an unknown one: "
                                           "none)",
                            "schema": {"type": "string", "maxLength": 253,
                                       "minLength": 1, "pattern": "^[^\\s,]+$"}},
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "jsonl"]}}]),
        },
        "/v1/approvals/{approval_id}/edits": {
            "post": {**_op("An approver's edits with secret values sealed: what to sign and "
                           "send as the decision's args", "approver",
                           ("200", _json({"type": "object"}, "the sealed edits")),
                           tag="approvals", params=[aid],
                           errors=(("404", "no such approval"),)),
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("Edits")}}}},
        },
        "/v1/approvers": {
            "get": _op("The approver registry: enrolled keys, passkeys waiting for an admin, "
                       "the admin keys' fingerprints", "viewer",
                       ("200", _json({"type": "object"}, "the registry")), tag="approvers"),
            "post": {**_op("Enrol a key for a principal (signed by an admin key)", "admin",
                           ("201", _json({"type": "object"}, "recorded")), tag="approvers",
                           errors=(("403", "not signed by an admin key"),)),
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("Enrolment")}}}},
        },
        "/v1/approvers/revocations": {
            "post": {**_op("Revoke a key (signed by an admin key)", "admin",
                           ("201", _json({"type": "object"}, "recorded")), tag="approvers",
                           errors=(("403", "not signed by an admin key"),)),
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("Revocation")}}}},
        },
        "/v1/tools": {
            "get": _op("The tool catalogue", "viewer",
                       ("200", _json(_ref("ToolList"), "tools")), tag="ops"),
        },
        "/mcp": {
            "post": {**_op(
                "The MCP server (Streamable HTTP, revision 2026-07-28; the 2025 revisions too): "
                "the tool catalogue as MCP tools and interlock_approval_status. A write answers "
                "held for approval; no tool decides one",
                "operator",
                ("200", {"description": (
                    "a JSON-RPC response, as JSON or as a text/event-stream of JSON-RPC messages "
                    "(progress notifications, then the response), as the MCP specification "
                    "says; a tool's outcome is in the result, never in the HTTP status"),
                    "content": {"application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}}}}),
                tag="mcp"),
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "description": "a JSON-RPC 2.0 request or notification (MCP)",
                    "type": "object", "required": ["jsonrpc", "method"],
                    "properties": {"jsonrpc": {"const": "2.0"},
                                   "method": {"type": "string"},
                                   "id": {"type": ["string", "integer"]},
                                   "params": {"type": "object"}}}}}}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Interlock gateway", "version": version,
                 "description": "No write reaches a cluster until a human approved it."},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "access_token": {"type": "apiKey", "in": "query", "name": "access_token",
                                 "description": "for EventSource, which cannot set headers"},
            },
        },
        "security": [{"bearer": []}, {"access_token": []}],
        "paths": paths,
    }
