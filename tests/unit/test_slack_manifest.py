"""`interlock slack manifest`: the Slack app as a manifest Slack takes, and the next steps; and
what `interlock up` says of Slack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.cli import describe_setup, main
from launcher.stack import Stack, StackConfig
from services.runtime.errors import ConfigError


def test_the_manifest_has_the_scopes_and_the_request_url(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slack", "manifest", "--url", "https://interlock.example.com/"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # stdout is the manifest alone: `… > manifest.json`
    assert doc["oauth_config"]["scopes"]["bot"] == ["chat:write", "chat:write.public"]
    assert doc["settings"]["interactivity"] == {
        "is_enabled": True,
        "request_url": "https://interlock.example.com/v1/slack/interactions"}
    assert doc["settings"]["socket_mode_enabled"] is False
    assert doc["features"]["bot_user"]["display_name"] == "Interlock"
    for step in ("INTERLOCK_SLACK_BOT_TOKEN", "INTERLOCK_SLACK_SIGNING_SECRET for the gate",
                 "INTERLOCK_SLACK_CHANNEL", "INTERLOCK_PUBLIC_URL=https://interlock.example.com",
                 "interlock keys enroll PRINCIPAL --slack TEAM_ID/USER_ID",
                 "key_signed_namespaces"):
        assert step in err, step


@pytest.mark.parametrize("url", ["http://interlock.example.com", "interlock.example.com",
                                 "https://interlock.example.com/#x"])
def test_a_url_slack_cannot_call_is_refused(url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slack", "manifest", "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--url" in err


def test_the_url_defaults_to_the_public_url(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INTERLOCK_PUBLIC_URL", "https://il.example.org")
    assert main(["slack", "manifest"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["interactivity"]["request_url"] == \
        "https://il.example.org/v1/slack/interactions"
    monkeypatch.delenv("INTERLOCK_PUBLIC_URL")
    assert main(["slack", "manifest"]) == 2


def test_up_says_whether_approvals_go_to_slack(tmp_path: Path) -> None:
    def setup(**env: str) -> str:
        base = {"INTERLOCK_MODEL": "", "OPENAI_API_KEY": "", "INTERLOCK_POLICY_FILE": "",
                "INTERLOCK_SLACK_BOT_TOKEN": "", "INTERLOCK_SLACK_CHANNEL": "",
                "INTERLOCK_SLACK_SIGNING_SECRET": "", "INTERLOCK_PUBLIC_URL": ""}
        stack = Stack(StackConfig(data_dir=tmp_path, extra_env={**base, **env}))
        return "\n".join(describe_setup(stack))

    assert "  Slack           off (to approve from Slack: interlock slack manifest" in setup()
    token, secret = "xoxb-never-printed-0123", "signing-never-printed"
    text = setup(INTERLOCK_SLACK_BOT_TOKEN=token, INTERLOCK_SLACK_CHANNEL="C0APPROVALS",
                 INTERLOCK_SLACK_SIGNING_SECRET=secret,
                 INTERLOCK_PUBLIC_URL="https://interlock.example.com")
    assert ("  Slack           approvals posted to C0APPROVALS; clicks at "
            "https://interlock.example.com/v1/slack/interactions") in text
    assert token not in text
    assert secret not in text
    assert "the gate refuses every click" in setup(INTERLOCK_SLACK_BOT_TOKEN=token,
                                                   INTERLOCK_SLACK_CHANNEL="C0APPROVALS")
    with pytest.raises(ConfigError, match="INTERLOCK_SLACK_CHANNEL"):
        setup(INTERLOCK_SLACK_BOT_TOKEN=token)
