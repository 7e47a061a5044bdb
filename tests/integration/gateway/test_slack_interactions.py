"""Slack's request URL at a real gateway (issue 20), the parts that need no gate: no bearer
token, so limited per address like failed authentication; unsigned, oversized or malformed
requests refused; clicks that are no decision (Open, an unknown approval) answered 200 with
nothing recorded."""

from __future__ import annotations

import json

from schemas import subjects as S
from services.runtime import approvers
from tests.integration.gateway.conftest import GatewayFactory
from tests.slack_fake import block_actions, form_body, signed_headers

URL = "/v1/slack/interactions"
SECRET = "integration-slack-secret"


async def _post(gw: object, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with gw.http.post(gw.url + URL, data=body, headers=headers) as r:  # type: ignore[attr-defined]
        return r.status, await r.text()


async def test_unsigned_requests_are_limited_per_address(
        gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(failure_rate=0.01, failure_burst=3)
    body = form_body(block_actions(action_id=approvers.APPROVE_ACTION, value="{}"))
    statuses = [(await _post(gw, body, {"Content-Type": "application/x-www-form-urlencoded"}))[0]
                for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_what_is_no_decision_records_nothing(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory()
    unknown = json.dumps({"approval_id": "a_nosuchapproval", "call_hashes": [],
                          "expires_at": "2030-01-01T00:00:00+00:00"})
    for payload in (block_actions(action_id=approvers.OPEN_ACTION, url="http://x/"),
                    block_actions(action_id="someone.elses", value="x"),
                    block_actions(action_id=approvers.APPROVE_ACTION, value=unknown),
                    block_actions(action_id=approvers.APPROVE_ACTION, value="not json"),
                    {"type": "view_closed", "team": {"id": "T0"}, "user": {"id": "U0"}}):
        body = form_body(payload)
        status, text = await _post(gw, body, signed_headers(SECRET, body))
        assert (status, text) == (200, ""), payload
    assert await gw.bus.first(S.tag_filter("gateway", "approval.decided")) is None
    # Not a Slack interaction at all; too large.
    status, _ = await _post(gw, b"x=1", signed_headers(SECRET, b"x=1"))
    assert status == 400
    big = form_body(block_actions(action_id=approvers.APPROVE_ACTION, value="x" * 70_000))
    status, _ = await _post(gw, big, signed_headers(SECRET, big))
    assert status == 413


async def test_an_oversized_field_is_refused_before_anything_is_recorded(
        gateway_factory: GatewayFactory) -> None:
    """A Slack id or header of any length is anyone's to send: recorded, an event its readers
    cannot decode would jam every later decision of the approval."""
    gw = await gateway_factory()
    sid = await gw.client("operator").new_session()
    req = await gw.request_approval(sid)
    value = json.dumps({"approval_id": req.approval_id, "call_hashes": [], "expires_at": ""})
    body = form_body(block_actions(action_id=approvers.APPROVE_ACTION, value=value,
                                   user="U" * 3000))
    status, text = await _post(gw, body, signed_headers(SECRET, body))
    assert status == 400, text
    headers = {**signed_headers(SECRET, body), "X-Slack-Signature": "v0=" + "0" * 3000}
    status, _ = await _post(gw, form_body(block_actions(
        action_id=approvers.APPROVE_ACTION, value=value)), headers)
    assert status == 400
    assert await gw.bus.first(S.tag_filter("gateway", "approval.decided")) is None
