"""The notifier's Slack adapter (services/notifier/slack_api.py) against Slack's Web API on
loopback: a 429 is retried after its Retry-After, a redelivered request is not posted twice, a
restarted notifier updates the message it posted before, and a refusal is logged by its error
code — never with the bot token."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from launcher.nats import free_port
from schemas.approval import ApprovalCall, ApprovalRequested, FieldChange
from schemas.base import Target
from services.notifier.settings import NotifierSettings
from services.notifier.slack import Outcome
from services.notifier.slack_api import SlackChannel
from services.runtime.errors import ConfigError
from tests.slack_fake import FakeSlack

TOKEN = "xoxb-integration-0123456789abcdef"


def settings(api_url: str, state: Path, **extra: str) -> NotifierSettings:
    return NotifierSettings.from_env({
        "INTERLOCK_NATS_PASSWORD": "x", "INTERLOCK_KEYRING_FILE": "/keys/keyring.json",
        "INTERLOCK_SLACK_BOT_TOKEN": TOKEN, "INTERLOCK_SLACK_CHANNEL": "C0APPROVALS",
        "INTERLOCK_SLACK_API_URL": api_url, "INTERLOCK_NOTIFIER_STATE_DIR": str(state),
        "INTERLOCK_PUBLIC_URL": "https://interlock.example.com",
        "INTERLOCK_WEBHOOK_BACKOFF": "0.05", "INTERLOCK_WEBHOOK_ATTEMPTS": "3", **extra,
    })


def request(aid: str = "a_1") -> ApprovalRequested:
    return ApprovalRequested(
        session_id="s_1", approval_id=aid, requested_by="operator",
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        calls=(ApprovalCall(call_id="c_1", tool="scale", args={}, call_hash="ab" * 32,
                            target=Target(namespace="shop", kind="deployment", name="web"),
                            diff=(FieldChange(path="spec.replicas", before=3, after=4),)),))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=TOKEN) as fake:
        yield fake


async def test_posted_once_and_updated_after_a_restart(slack: FakeSlack, tmp_path: Path) -> None:
    req = request()
    async with aiohttp.ClientSession() as http:
        first = SlackChannel(http, settings(slack.api_url, tmp_path))
        assert await first.requested(req)
        assert await first.requested(req)  # redelivered: already posted
        assert len(slack.calls_to("chat.postMessage")) == 1
        # Another process on the same state dir (a restart): it knows the message.
        again = SlackChannel(http, settings(slack.api_url, tmp_path))
        assert await again.settled(req, Outcome("granted", datetime.now(UTC),
                                                approver="alice"), "approval.granted")
        assert not await again.settled(request("a_other"), Outcome("expired", datetime.now(UTC)),
                                       "approval.expired")  # never posted: nothing to update
        # The executor ran the call: the message says so, once (a redelivery changes nothing).
        assert again.ran("c_read", "ok") is None  # no posted approval holds that call
        found = again.ran("c_1", "ok")
        assert found is not None
        assert found[0] == "a_1"
        assert again.ran("c_1", "ok") is None
        assert await again.rewrite(req, found[1], "tool.result")
    (post,), (update, ran) = slack.calls_to("chat.postMessage"), slack.calls_to("chat.update")
    assert ran.body["ts"] == update.body["ts"]
    assert "*Ran:* 1 ok" in json.dumps(ran.body["blocks"])
    kept = json.loads((tmp_path / "slack-messages.json").read_text())
    assert update.body["ts"] == kept["a_1"]["ts"]
    assert update.body["channel"] == post.body["channel"] == "C0APPROVALS"
    assert update.body["blocks"][0]["text"]["text"].startswith("Approved by alice")
    assert [p.name for p in tmp_path.iterdir()] == ["slack-messages.json"]  # noqa: ASYNC240 - no temp file left


async def test_a_429_is_retried_after_its_retry_after(tmp_path: Path) -> None:
    seen: list[float] = []

    async def api(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": "1"})
        return web.json_response({"ok": True, "channel": "C0APPROVALS", "ts": "1.000001"})

    app = web.Application()
    app.router.add_post("/api/{method}", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            ch = SlackChannel(http, settings(f"http://127.0.0.1:{port}/api/", tmp_path))
            assert await ch.requested(request())
    finally:
        await runner.cleanup()
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.0  # Slack's Retry-After, honoured


async def test_a_refusal_is_logged_by_its_code_never_with_the_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSlack(token="xoxb-another-app") as fake, aiohttp.ClientSession() as http:
        ch = SlackChannel(http, settings(fake.api_url, tmp_path))
        assert not await ch.requested(request())
        assert fake.calls_to("chat.postMessage")[0].token == TOKEN  # it was sent, to Slack only
    assert "invalid_auth" in caplog.text
    assert TOKEN not in caplog.text
    assert not (tmp_path / "slack-messages.json").exists()


def test_settings_need_a_channel_and_a_state_dir_and_never_show_the_token(
        tmp_path: Path) -> None:
    base: dict[str, Any] = {"INTERLOCK_NATS_PASSWORD": "x",
                            "INTERLOCK_KEYRING_FILE": "/keys/keyring.json"}
    assert not NotifierSettings.from_env(base).slack.enabled
    # The token alone is the gateway's (the Deny dialog): the notifier posts nothing.
    assert not NotifierSettings.from_env({**base, "INTERLOCK_SLACK_BOT_TOKEN": TOKEN}).slack.enabled
    with pytest.raises(ConfigError, match="INTERLOCK_NOTIFIER_STATE_DIR"):
        NotifierSettings.from_env({**base, "INTERLOCK_SLACK_BOT_TOKEN": TOKEN,
                                   "INTERLOCK_SLACK_CHANNEL": "C0APPROVALS"})
    s = settings("https://slack.example/api", tmp_path)
    assert s.slack.api_url == "https://slack.example/api/"
    assert TOKEN not in repr(s)
    with pytest.raises(ConfigError, match="INTERLOCK_SLACK_API_URL"):
        settings("ftp://slack.example/api/", tmp_path)
