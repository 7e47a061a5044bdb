"""Issue 20: approve from Slack with one click — and nobody else can.

One stack, its Slack settings pointing at a fake Slack on loopback (tests/slack_fake.py): the
gate alone has the signing secret, the gateway the bot token. The admin links a Slack user to
the `approver` principal with `interlock keys enroll approver --slack T/U`. Interaction requests
are built and signed exactly as Slack documents, and POSTed to the gateway's request URL over
real HTTP. The attacks come first: a forged signature, a stale timestamp and a replayed request
are answered 401 with nothing posted anywhere; an unlinked Slack user, a click after another
client decided and a click on a card in production (passkey or CLI only) are refused with an
ephemeral message; each with zero executions (the deployment's replicas, read with the
kubernetes client, and the log's tool.started). A valid click executes the write once; Deny
opens the reason dialog, and its submission denies with the reason. The signing secret is in
the gate's process environment only; and a gate that lies on a production card (it holds the
secret, so it can make a click up) still cannot get the write run: the executor refuses."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from launcher.stack import Stack
from schemas.approval import ApprovalCall, ApprovalRequested
from services.runtime import approvers, audit, identity, signing
from tests.e2e.conftest import record_as, replicas, run_cli, start_stack, token
from tests.e2e.test_gate_bypass import _pending_scale, _types
from tests.slack_fake import (
    FakeSlack,
    action_value,
    block_actions,
    form_body,
    signed_headers,
    view_submission,
)
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SECRET = "e2e-slack-signing-secret-never-logged-7d1f"
BOT_TOKEN = "xoxb-e2e-bot-token-never-logged-93ac"
TEAM, USER, STRANGER = "T0INTERLOCK", "U0APPROVER", "U0STRANGER"
ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=BOT_TOKEN) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, slack: FakeSlack
                ) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory, extra_env={
        "INTERLOCK_SLACK_SIGNING_SECRET": SECRET,
        "INTERLOCK_SLACK_BOT_TOKEN": BOT_TOKEN,
        "INTERLOCK_SLACK_API_URL": slack.api_url,
        "INTERLOCK_SLACK_RESPONSE_URL_PREFIX": slack.response_prefix,
    })
    try:
        # The admin links the Slack user to the approver, with the CLI (from this checkout).
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(s.data),
               "PYTHONPATH": str(ROOT), "INTERLOCK_URL": s.url,
               "INTERLOCK_TOKEN": token(s, "admin"),
               "INTERLOCK_ADMIN_KEY": str(s.person_key("admin")),
               "XDG_CONFIG_HOME": str(s.data / "admin-home")}
        code, out, err = await run_cli(env, "keys", "enroll", "approver", "--slack",
                                    f"{TEAM}/{USER}")
        assert code == 0, (out, err)
        assert f"enrolled slack:{TEAM}/{USER} (slack) for approver" in out
        code, out, err = await run_cli(env, "keys", "list")
        assert code == 0, err
        assert any("approver" in ln and "slack" in ln and f"slack:{TEAM}/{USER}" in ln
                   for ln in out.splitlines()), out
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


@pytest.fixture
def people(stack: Stack, http: aiohttp.ClientSession) -> tuple[Client, Client]:
    return (Client(http, stack.url, token(stack, "operator")),
            Client(http, stack.url, token(stack, "approver")))


async def _slack_post(http: aiohttp.ClientSession, stack: Stack, body: bytes,
                      headers: dict[str, str]) -> tuple[int, str]:
    async with http.post(f"{stack.url}/v1/slack/interactions", data=body,
                         headers=headers) as r:
        return r.status, await r.text()


async def _click(http: aiohttp.ClientSession, stack: Stack, payload: dict[str, Any], *,
                 secret: str = SECRET, ts: int | None = None) -> tuple[int, str, bytes,
                                                                       dict[str, str]]:
    """Slack's request for `payload`, signed with `secret` at `ts` (now): status, answer, and
    the body and headers sent (to replay them)."""
    body = form_body(payload)
    headers = signed_headers(secret, body, ts)
    status, text = await _slack_post(http, stack, body, headers)
    return status, text, body, headers


def _approve(slack: FakeSlack, req: dict[str, Any], rid: str, user: str = USER,
             response_url: str | None = None) -> dict[str, Any]:
    return block_actions(action_id=approvers.APPROVE_ACTION, value=action_value(req),
                         team=TEAM, user=user,
                         response_url=slack.response_url(rid) if response_url is None
                         else response_url)


def _started(evs: list[Any], req: dict[str, Any]) -> int:
    ids = {c["call_id"] for c in req["calls"]}
    return sum(1 for e in evs if e.type == "tool.started" and e.call_id in ids)


async def _reply(slack: FakeSlack, rid: str) -> dict[str, Any]:
    [posted] = await slack.wait_for(lambda: slack.responses_to(rid))
    assert posted.body["response_type"] == "ephemeral"
    assert posted.body["replace_original"] is False
    return posted.body


# -- the attacks first ---------------------------------------------------------------------------

async def test_forged_stale_and_replayed_clicks_are_refused_and_a_real_one_runs_once(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession,
        people: tuple[Client, Client]) -> None:
    operator, _ = people
    sid = await operator.new_session()
    before = replicas(stack)
    req = await _pending_scale(operator, sid, "web", "shop", before + 1)
    assert req["key_signed_only"] is False  # shop: a Slack click may count

    # A request not signed with Slack's secret (the gateway, or anyone, making a click up).
    status, text, _, _ = await _click(http, stack, _approve(slack, req, "forged"),
                                      secret="guessed-secret")
    assert status == 401, text
    assert approvers.SLACK_FORGED in json.loads(text)["error"]["message"]
    # Slack's real signature, but from more than 5 minutes ago.
    status, text, _, _ = await _click(http, stack, _approve(slack, req, "stale"),
                                      ts=int(time.time()) - 400)
    assert status == 401, text
    assert approvers.SLACK_STALE in json.loads(text)["error"]["message"]

    # The linked approver's click: executed, and they are told so.
    status, text, body, headers = await _click(http, stack, _approve(slack, req, "ok"))
    assert status == 200, text
    reply = await _reply(slack, "ok")
    assert reply["text"].startswith("Approved — executing"), reply
    await operator.wait_for(sid, lambda e: e.event == "tool.result", after=int(req["seq"]))
    assert replicas(stack) == before + 1

    # The same signed request again, as captured: a replay.
    status, text = await _slack_post(http, stack, body, headers)
    assert status == 401, text
    assert approvers.SLACK_REPLAYED in json.loads(text)["error"]["message"]

    evs = await _types(stack, sid)
    reasons = [e.reason for e in evs if e.type == "decision.rejected"]
    expected = (approvers.SLACK_FORGED, approvers.SLACK_STALE, approvers.SLACK_REPLAYED)
    assert len(reasons) == len(expected), reasons
    assert all(r.startswith(x) for r, x in zip(reasons, expected, strict=True)), reasons
    assert _started(evs, req) == 1
    assert [e.type for e in evs].count("approval.granted") == 1
    # The decision that counted is the Slack click, kept verbatim, by the linked principal.
    granted = next(e for e in evs if e.type == "approval.granted")
    decided = next(e for e in evs if e.event_id == granted.causation_id)
    assert decided.approver == "approver"
    assert decided.signed.key_id == f"slack:{TEAM}/{USER}"
    assert decided.signed.statement == body.decode()
    assert replicas(stack) == before + 1
    # Nothing was ever posted for the refused requests.
    assert not slack.responses_to("forged")
    assert not slack.responses_to("stale")
    assert len(slack.responses_to("ok")) == 1

    # The audit: the gateway's (which never has the secret) says the gate checked Slack's
    # signature; an auditor with the secret re-checks it, offline, from the export.
    admin = {"Authorization": f"Bearer {token(stack, 'admin')}"}
    async with http.get(f"{stack.url}/v1/sessions/{sid}/audit?format=text",
                        headers=admin) as r:
        text = await r.text()
    assert "Integrity: intact" in text, text
    assert (f"approved in Slack by approver (slack:{TEAM}/{USER}), Slack signature checked by "
            "the gate") in text
    async with http.get(f"{stack.url}/v1/sessions/{sid}/audit?format=jsonl",
                        headers=admin) as r:
        export = await r.text()
    [report] = [x for x in audit.audit_file(
        export, signing.load_public(stack.data / "gate.pub"),
        identity.load_keyring(stack.keys / identity.KEYRING_FILE),
        approvers.load_admin_keys(stack.admin_keys), SECRET) if x.session_id == sid]
    assert report.ok, report.problems
    [counted] = [d for d in report.decisions if d.counted]
    assert counted.text().endswith("Slack signature re-checked")


async def test_an_unlinked_user_and_a_late_click_are_refused_in_slack(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession,
        people: tuple[Client, Client]) -> None:
    operator, approver = people
    sid = await operator.new_session()
    before = replicas(stack)
    req = await _pending_scale(operator, sid, "web", "shop", before + 1)

    # A Slack user nobody linked to an approver: recorded, refused by the gate, told how.
    status, text, _, _ = await _click(http, stack, _approve(slack, req, "stranger",
                                                            user=STRANGER))
    assert status == 200, text
    reply = await _reply(slack, "stranger")
    assert reply["text"] == (
        "Your Slack account is not linked to an Interlock approver: ask an admin to run "
        f"`interlock keys enroll <principal> --slack {TEAM}/{STRANGER}`")
    evs = await _types(stack, sid)
    assert next(e.reason for e in evs if e.type == "decision.rejected").startswith(
        f"key slack:{TEAM}/{STRANGER} is not enrolled")
    assert _started(evs, req) == 0

    # The approver decides in another client (HTTP, signed with their key) first.
    status, answer = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                         {"decision": "approve"})
    assert status == 202, answer
    await operator.wait_for(sid, lambda e: e.event == "tool.result", after=int(req["seq"]))
    # Then clicks in Slack: too late, and told so; and a reply is never sent outside the
    # allowed prefix (a payload is anyone's to write).
    status, text, _, _ = await _click(http, stack, _approve(
        slack, req, "", response_url=slack.outside_url("ssrf")))
    assert status == 200, text
    status, text, _, _ = await _click(http, stack, _approve(slack, req, "late"))
    assert status == 200, text
    reply = await _reply(slack, "late")
    assert reply["text"].startswith(f"Refused: approval {req['approval_id']} is already "
                                    "granted (by approver)"), reply
    # (the reply the earlier request would have had was due before this one)
    assert not slack.stray, slack.stray
    evs = await _types(stack, sid)
    assert _started(evs, req) == 1
    assert replicas(stack) == before + 1


async def test_production_needs_a_passkey_or_the_cli(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession,
        people: tuple[Client, Client]) -> None:
    operator, _ = people
    sid = await operator.new_session()
    before = replicas(stack, "auth-service", "production")
    req = await _pending_scale(operator, sid, "auth-service", "production", before + 1)
    assert req["key_signed_only"] is True
    status, text, _, _ = await _click(http, stack, _approve(slack, req, "prod"))
    assert status == 200, text
    reply = await _reply(slack, "prod")
    assert reply["text"].startswith("Refused: this approval requires a passkey or "
                                    "`interlock approve`"), reply
    evs = await _types(stack, sid)
    assert _started(evs, req) == 0
    assert not [e for e in evs if e.type == "approval.granted"]
    assert replicas(stack, "auth-service", "production") == before


async def test_deny_opens_the_reason_dialog_and_its_submission_denies(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession,
        people: tuple[Client, Client]) -> None:
    operator, _ = people
    sid = await operator.new_session()
    before = replicas(stack)
    req = await _pending_scale(operator, sid, "web", "shop", before + 2)
    click = block_actions(action_id=approvers.DENY_ACTION, value=action_value(req), team=TEAM,
                          user=USER, response_url=slack.response_url("deny"))
    status, text, _, _ = await _click(http, stack, click)
    assert status == 200, text
    [opened] = await slack.wait_for(lambda: slack.calls_to("views.open"))
    assert opened.token == BOT_TOKEN
    assert opened.body["trigger_id"] == click["trigger_id"]
    view = opened.body["view"]
    assert view["callback_id"] == approvers.DENY_CALLBACK
    assert [b.get("block_id") for b in view["blocks"]][-1] == "reason"
    metadata = view["private_metadata"]
    assert json.loads(metadata)["approval_id"] == req["approval_id"]
    evs = await _types(stack, sid)
    assert not [e for e in evs if e.type == "approval.decided"]  # a click on Deny decides nothing

    # Submitted without a reason: Slack shows the error in the dialog.
    status, text, _, _ = await _click(http, stack, view_submission(
        private_metadata=metadata, reason="  ", team=TEAM, user=USER))
    assert status == 200, text
    assert json.loads(text) == {"response_action": "errors",
                                "errors": {"reason": "A denial needs a reason."}}
    # With one: the denial.
    status, text, _, _ = await _click(http, stack, view_submission(
        private_metadata=metadata, reason="not during the freeze", team=TEAM, user=USER))
    assert status == 200, text
    reply = await _reply(slack, "deny")
    assert reply["text"].startswith("Denied — ")
    assert "not during the freeze" in reply["text"]
    evs = await _types(stack, sid)
    [denied] = [e for e in evs if e.type == "approval.denied"]
    assert (denied.approver, denied.reason) == ("approver", "not during the freeze")
    assert _started(evs, req) == 0
    assert replicas(stack) == before


async def test_the_gateway_never_holds_the_signing_secret(stack: Stack) -> None:
    """The running processes' environments (what a compromised service could read): the
    signing secret is the gate's alone; and no secret is in a log or the event stream."""
    def environ(name: str) -> str:
        pid = stack.procs[name].pid
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    assert f"INTERLOCK_SLACK_SIGNING_SECRET={SECRET}" in environ("gate")
    for name in ("gateway", "executor", "planner", "notifier"):
        assert SECRET not in environ(name), name
    assert BOT_TOKEN in environ("gateway")
    # Every file of the stack: its logs, and the event log itself (NATS's store).
    for path in stack.data.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert BOT_TOKEN.encode() not in data, path


async def test_a_lying_gate_cannot_run_a_production_write_on_a_slack_click(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession,
        people: tuple[Client, Client]) -> None:
    """The gate holds Slack's signing secret, so a compromised gate can make a valid click up,
    and it authors the cards: one for a production write that says `key_signed_only: false`.
    The executor judges where the write lands from its own dry run and refuses to run it on a
    Slack decision there."""
    operator, _ = people
    sid = await operator.new_session()
    before = replicas(stack, "auth-service", "production")
    real = await _pending_scale(operator, sid, "auth-service", "production", before + 1)
    call = msgspec.convert(real["calls"][0], ApprovalCall)
    lie = ApprovalRequested(
        session_id=sid, approval_id=real["approval_id"] + "-lie", calls=(call,),
        requested_by="operator", expires_at=datetime.now(UTC) + timedelta(minutes=10),
        key_signed_only=False, actor="gate")
    await record_as(stack, "gate", lie)
    card = msgspec.to_builtins(lie)
    status, text, _, _ = await _click(http, stack, _approve(slack, card, "lie"))
    assert status == 200, text
    evs = await operator.wait_for(sid, lambda e: e.event in ("command.refused", "tool.result"),
                                  after=int(real["seq"]))
    assert evs[-1].event == "command.refused", evs[-1].data
    assert "Slack" in evs[-1].data["reason"]
    assert "production" in evs[-1].data["reason"]
    assert _started(await _types(stack, sid), real) == 0
    assert replicas(stack, "auth-service", "production") == before
