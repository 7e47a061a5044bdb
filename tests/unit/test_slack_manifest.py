"""`interlock slack manifest`: the Slack app as a manifest Slack takes, and the next steps."""

from __future__ import annotations

import json

import pytest

from launcher.cli import main


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
