"""The gateway's Slack settings (issue 20): where ephemeral replies may go is a prefix that
names a host, never the signing secret."""

from __future__ import annotations

import dataclasses

import pytest

from services.gateway.slack import Reply, SlackSettings
from services.runtime.errors import ConfigError


def test_defaults_are_slacks_own() -> None:
    s = SlackSettings.from_env({})
    assert (s.api_url, s.response_url_prefix, s.bot_token) == (
        "https://slack.com/api/", "https://hooks.slack.com/", "")
    assert SlackSettings.from_env({"INTERLOCK_SLACK_API_URL": "http://127.0.0.1:9/api"}
                                  ).api_url == "http://127.0.0.1:9/api/"


@pytest.mark.parametrize("prefix", ["https://hooks.slack.com", "hooks.slack.com/",
                                    "ftp://hooks.slack.com/", "https:///x/"])
def test_a_prefix_must_name_a_host_and_end_with_a_slash(prefix: str) -> None:
    with pytest.raises(ConfigError):
        SlackSettings.from_env({"INTERLOCK_SLACK_RESPONSE_URL_PREFIX": prefix})


def test_replies_go_only_under_the_prefix() -> None:
    s = SlackSettings.from_env({})
    assert Reply(s, "https://hooks.slack.com/actions/T/1/x").allowed
    for url in ("https://hooks.slack.com.evil.example/actions", "http://hooks.slack.com/a",
                "https://evil.example/https://hooks.slack.com/", "", "file:///etc/passwd"):
        assert not Reply(s, url).allowed, url


def test_the_signing_secret_is_no_gateway_setting() -> None:
    s = SlackSettings.from_env({"INTERLOCK_SLACK_SIGNING_SECRET": "shh",
                                "INTERLOCK_SLACK_BOT_TOKEN": "xoxb-1"})
    assert "shh" not in repr(s)
    assert "xoxb-1" not in repr(s)
    assert "signing" not in {f.name for f in dataclasses.fields(s)}
