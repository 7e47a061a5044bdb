"""The Slack approval message, end to end: the whole stack as processes, the notifier's Slack
Web API a fake on loopback (tests/slack_fake.py) that records every call as Slack would get it.

A held write is posted once to the channel with the card's essentials and the buttons the gate
checks; deciding it anywhere else (here over HTTP, as the Command Center and the CLI do)
rewrites that same message (chat.update of its ts) with the outcome, and again once the write
ran; a denial says why; an
unanswered card says it expired; a card in a namespace where only a person's own key counts
offers Open alone; a secret value never reaches Slack; the bot token never reaches a log. A
click in Slack itself (signed as Slack signs it, checked by the gate) updates the message the
same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from launcher.stack import Stack
from services.notifier.slack import texts
from tests.e2e.conftest import people, replicas, rolled_out, start_stack
from tests.slack_fake import (
    Call,
    FakeSlack,
    action_value,
    block_actions,
    form_body,
    signed_headers,
)
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

BOT_TOKEN = "xoxb-e2e-" + secrets.token_hex(12)
SIGNING_SECRET = secrets.token_hex(16)
TEAM, USER = "T0INTERLOCK", "U0APPROVER"
CHANNEL = "C0APPROVALS"
TTL_S = 8.0  # long enough to decide over HTTP, short enough to watch one card expire
# Cards of this module that a later test looks at again.
CARDS: dict[str, dict[str, Any]] = {}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=BOT_TOKEN) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory,
                slack: FakeSlack) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory, approval_ttl_s=TTL_S, extra_env={
        "INTERLOCK_SLACK_BOT_TOKEN": BOT_TOKEN, "INTERLOCK_SLACK_CHANNEL": CHANNEL,
        "INTERLOCK_SLACK_API_URL": slack.api_url,
        "INTERLOCK_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "INTERLOCK_SLACK_RESPONSE_URL_PREFIX": slack.response_prefix,
        "INTERLOCK_PUBLIC_URL": "https://interlock.example.com",
    })
    try:
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


def about(call: Call, approval_id: str) -> bool:
    return f"approval `{approval_id}`" in texts(call.body.get("blocks", []))


async def posted(slack: FakeSlack, approval_id: str) -> Call:
    got = await slack.wait_for(lambda: [c for c in slack.calls_to("chat.postMessage")
                                        if about(c, approval_id)], timeout=30)
    (call,) = got  # once
    return call


def updates(slack: FakeSlack, approval_id: str) -> list[Call]:
    return [c for c in slack.calls_to("chat.update") if about(c, approval_id)]


async def updated(slack: FakeSlack, approval_id: str, n: int = 1,
                  timeout: float = 30) -> list[Call]:
    """The approval's message updates, once there are `n` of them."""
    return await slack.wait_for(lambda: len(updates(slack, approval_id)) >= n and
                                updates(slack, approval_id), timeout=timeout)


def outcome_of(call: Call) -> str:
    (text,) = [b["text"]["text"] for b in call.body["blocks"]
               if b.get("block_id") == "interlock.outcome"]
    return str(text)


def buttons(call: Call) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in call.body["blocks"] if b["type"] == "actions"
            for e in b["elements"]}


async def held(operator: Client, text: str) -> tuple[str, dict[str, Any], int]:
    sid = await operator.new_session()
    await operator.say(sid, text)
    got = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    return sid, dict(got[-1].data), got[-1].id


async def test_a_production_card_offers_only_open(stack: Stack, slack: FakeSlack,
                                                  http: aiohttp.ClientSession) -> None:
    operator, _ = people(stack, http)
    sid, req, _ = await held(operator,
                             "kubectl scale deploy/auth-service --replicas=3 -n production")
    assert req["key_signed_only"] is True
    call = await posted(slack, req["approval_id"])
    assert list(buttons(call)) == ["interlock.open"]
    assert buttons(call)["interlock.open"]["url"] == (
        f"https://interlock.example.com/#session={sid}&approval={req['approval_id']}")
    seen = texts(call.body["blocks"])
    assert "passkey" in seen
    assert f"interlock approve {req['approval_id']}" in seen
    CARDS["production"] = req  # nobody decides it: see the last test


async def test_a_held_write_is_posted_and_updated_when_approved_elsewhere(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    operator, approver = people(stack, http)
    sid, req, last = await held(operator, "kubectl scale deploy/web --replicas=4 -n shop")
    aid = req["approval_id"]
    call = await posted(slack, aid)
    assert call.token == BOT_TOKEN
    assert call.body["channel"] == CHANNEL
    assert "Approval needed: " in call.body["text"]
    seen = texts(call.body["blocks"])
    for part in ("*1. scale* `deployment/web` in `shop`", "`spec.replicas`: 3 → 4",
                 "*Asked by*\noperator", "*Approvals needed*\n1", "*Expires*"):
        assert part in seen, (part, seen)
    b = buttons(call)
    assert list(b) == ["interlock.approve", "interlock.deny", "interlock.open"]
    # The buttons carry what the gate checks a click against, as the API serves the card.
    assert json.loads(b["interlock.approve"]["value"]) == json.loads(action_value(req))
    assert b["interlock.deny"]["value"] == b["interlock.approve"]["value"]

    status, body = await approver.call("POST", f"/v1/approvals/{aid}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    await operator.wait_for(sid, lambda e: e.event == "tool.result", after=last)
    assert replicas(stack) == 4
    # Granted, then ran: the same message twice, the buttons gone, the essentials kept.
    granted, ran = await updated(slack, aid, n=2)
    ts = await ts_of(stack, aid)
    for update in (granted, ran):
        assert update.token == BOT_TOKEN
        assert update.body["channel"] == CHANNEL
        assert update.body["ts"] == ts
        assert update.body["blocks"][0]["text"]["text"].startswith("Approved by approver: ")
        assert buttons(update) == {}
        assert "`spec.replicas`: 3 → 4" in texts(update.body["blocks"])
    assert "*Approved by approver*" in outcome_of(granted)
    assert "Ran" not in outcome_of(granted)
    assert "*Ran:* 1 ok" in outcome_of(ran)


async def ts_of(stack: Stack, approval_id: str, timeout: float = 10) -> str:
    """The ts Slack answered the approval's chat.postMessage with, as the notifier kept it (it
    keeps it once the answer is in: a moment after the fake recorded the call)."""
    path = stack.data / "notifier" / "slack-messages.json"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        kept = json.loads(path.read_text()) if path.exists() else {}
        if approval_id in kept:
            break
        assert loop.time() < deadline, f"the notifier kept no message for {approval_id}"
        await asyncio.sleep(0.05)
    stamps = [v["ts"] for v in kept.values()]
    assert stamps.count(kept[approval_id]["ts"]) == 1  # one message per approval
    return str(kept[approval_id]["ts"])


async def test_a_denied_card_says_why_and_no_secret_reaches_slack(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    operator, approver = people(stack, http)
    password = f"pw-{secrets.token_hex(8)}-Slack!"
    _, req, _ = await held(operator, "kubectl create secret generic db-slack -n staging "
                                     f"--from-literal=password={password}")
    call = await posted(slack, req["approval_id"])
    raw = json.dumps(call.body, ensure_ascii=False)
    for form in (password, base64.b64encode(password.encode()).decode()):
        assert form not in raw
    assert "`data.password`" in raw
    assert "sealed value, fingerprint" in raw

    status, body = await approver.call(
        "POST", f"/v1/approvals/{req['approval_id']}/decision",
        {"decision": "deny", "reason": "use the vault, not a literal"})
    assert status == 202, body
    (update,) = await updated(slack, req["approval_id"])
    assert update.body["blocks"][0]["text"]["text"].startswith("Denied by approver: ")
    assert "*Denied by approver*: use the vault, not a literal" in texts(update.body["blocks"])
    assert "use the vault, not a literal" in update.body["text"]
    assert buttons(update) == {}
    assert password not in json.dumps(update.body, ensure_ascii=False)


async def test_a_slack_click_updates_the_message_too(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    # An admin links the approver's Slack user to them, with the real CLI.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher.cli", "keys", "enroll", "approver", "--slack",
        f"{TEAM}/{USER}", "--url", stack.url, "--token", stack.cfg.admin_token,
        "--admin-key", str(stack.person_key("admin")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    operator, _ = people(stack, http)
    # The scale to 4 above may still be rolling out: held now, this write would be refused at
    # run time because web changed since its dry run (seen once in CI).
    await rolled_out(stack)
    sid, req, last = await held(operator, "kubectl scale deploy/web --replicas=5 -n shop")
    call = await posted(slack, req["approval_id"])
    ts = await ts_of(stack, req["approval_id"])
    # The click Slack sends for the message's Approve button, signed as Slack signs it.
    payload = block_actions(action_id="interlock.approve",
                            value=buttons(call)["interlock.approve"]["value"], team=TEAM,
                            user=USER, channel=CHANNEL, message_ts=ts,
                            response_url=slack.response_url("click"))
    body = form_body(payload)
    async with http.post(f"{stack.url}/v1/slack/interactions", data=body,
                         headers=signed_headers(SIGNING_SECRET, body)) as r:
        assert r.status == 200, await r.text()
    await operator.wait_for(sid, lambda e: e.event == "tool.result", after=last)
    assert replicas(stack) == 5
    granted, ran = await updated(slack, req["approval_id"], n=2)
    for update in (granted, ran):
        assert update.body["ts"] == ts
        assert update.body["blocks"][0]["text"]["text"].startswith("Approved by approver: ")
        assert buttons(update) == {}
    assert "*Ran:* 1 ok" in outcome_of(ran)


async def test_an_unanswered_card_says_expired_and_the_token_is_in_no_log(
        stack: Stack, slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    req = CARDS["production"]
    (update,) = await updated(slack, req["approval_id"], timeout=TTL_S + 30)
    assert update.body["blocks"][0]["text"]["text"].startswith("Expired: ")
    assert buttons(update) == {}
    # Each approval: one message, one update — nothing posted twice, nothing else called.
    assert {c.method for c in slack.calls} == {"chat.postMessage", "chat.update"}
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 4
    # Two updates for each approved card (granted, ran), one for the denied and the expired.
    assert len(slack.calls_to("chat.update")) == 6
    logs = {p.name: p.read_text(errors="replace") for p in (stack.data / "logs").iterdir()}
    assert "posted the approval to Slack" in logs["notifier.log"]
    assert "updated the Slack message" in logs["notifier.log"]
    for name, text in logs.items():
        assert BOT_TOKEN not in text, name
