"""The Slack approval message (services/notifier/slack.py): the card's essentials, the buttons
the gate and the gateway agree on, Slack's limits for any card, the outcome in place of the
buttons, and nothing a reader of the channel must not see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from schemas.approval import ApprovalCall, ApprovalRequested, BlastRadius, FieldChange
from schemas.base import Target
from services.notifier import slack

URL = "https://interlock.example.com"
EXPIRES = datetime(2026, 12, 7, 21, 15, 30, 123456, tzinfo=UTC)


def call(i: int = 0, *, ns: str = "shop", diff: tuple[FieldChange, ...] | None = None,
         **kw: Any) -> ApprovalCall:
    return ApprovalCall(
        call_id=f"c_{i}", tool="scale", args={"name": f"web-{i}", "replicas": 5},
        call_hash=f"{i:064x}",
        target=Target(namespace=ns, kind="deployment", name=f"web-{i}"),
        diff=(FieldChange(path="spec.replicas", before=3, after=5),) if diff is None else diff,
        context="prod-eu", **kw)


def request(*calls: ApprovalCall, **kw: Any) -> ApprovalRequested:
    base: dict[str, Any] = {
        "session_id": "s_abc", "approval_id": "a_123", "expires_at": EXPIRES,
        "requested_by": "oidc:bob", "requested_via": "claude-code 2.1.0 (MCP)",
        "risk_flags": ("production-like", "scale-down"), "required_approvals": 2,
        "rationale": "p99 latency is over budget since 20:10",
    }
    return ApprovalRequested(calls=calls or (call(),), **{**base, **kw})


def blocks_of(msg: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in msg["blocks"] if b["type"] == kind]


def buttons(msg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in blocks_of(msg, "actions") for e in b["elements"]}


def within_limits(msg: dict[str, Any]) -> None:
    """Slack's documented limits, checked on the JSON we send (the models check them too)."""
    assert len(msg["blocks"]) <= 50
    assert len(msg["text"]) <= 3000
    for b in msg["blocks"]:
        if b["type"] == "section":
            assert len(b.get("text", {}).get("text", "")) <= 3000
            assert len(b.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in b.get("fields", []))
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= 150
    for e in buttons(msg).values():
        assert len(e.get("value", "")) <= 2000
        assert len(e["text"]["text"]) <= 75
    # Nothing breaks JSON on the way (Slack receives exactly this).
    assert json.loads(json.dumps(msg)) == msg


def test_the_message_carries_the_cards_essentials_and_the_agreed_buttons() -> None:
    req = request(call(1), call(2, ns="checkout"))
    msg = slack.message(req, URL)
    within_limits(msg)
    seen = slack.texts(msg["blocks"])
    for part in ("*1. scale* `deployment/web-1` in `shop` on cluster `prod-eu`",
                 "*2. scale* `deployment/web-2` in `checkout` on cluster `prod-eu`",
                 "`spec.replicas`: 3 → 5", "production-like, scale-down",
                 "oidc:bob via claude-code 2.1.0 (MCP)", "*Approvals needed*\n2",
                 "p99 latency is over budget", "`shop` on cluster `prod-eu`, `checkout` on cluster `prod-eu`",
                 f"<!date^{int(EXPIRES.timestamp())}^"):
        assert part in seen, part
    assert msg["text"] == "Approval needed: scale deployment/web-1 in shop and 1 more " \
                          "(asked by oidc:bob)"
    b = buttons(msg)
    assert list(b) == ["interlock.approve", "interlock.deny", "interlock.open"]
    assert b["interlock.approve"]["style"] == "primary"
    assert b["interlock.deny"]["style"] == "danger"
    assert "confirm" in b["interlock.approve"]
    assert b["interlock.open"]["url"] == f"{URL}/#session=s_abc&approval=a_123"
    # The value the gate checks a click against: this approval, its calls, its expiry exactly
    # as the event serialises it.
    expected = {"approval_id": "a_123", "call_hashes": [f"{1:064x}", f"{2:064x}"],
                "expires_at": json.loads(msgspec.json.encode(req))["expires_at"]}
    assert expected["expires_at"] == "2026-12-07T21:15:30.123456Z"
    assert json.loads(b["interlock.approve"]["value"]) == expected
    assert json.loads(b["interlock.deny"]["value"]) == expected


def test_a_card_signed_by_keys_only_gets_open_alone_and_says_why() -> None:
    req = request(call(ns="production"), key_signed_only=True)
    msg = slack.message(req, URL)
    within_limits(msg)
    assert list(buttons(msg)) == ["interlock.open"]
    seen = slack.texts(msg["blocks"])
    assert "passkey" in seen
    assert "`interlock approve a_123`" in seen
    # Without the flag, the same card can be decided in Slack.
    assert "interlock.approve" in buttons(slack.message(request(call(ns="production")), URL))


def test_a_30_call_card_with_long_diffs_fits_slacks_limits() -> None:
    long = "x" * 900
    diff = tuple(FieldChange(path=f"data.key{j}", before=long, after=long + "y")
                 for j in range(40))
    big = [call(i, diff=diff, blast_radius=BlastRadius(summary="s" * 2000),
                preview_error="e" * 2000) for i in range(30)]
    req = request(*big, rationale="r" * 60_000, risk_flags=tuple(f"flag-{i}" for i in range(40)),
                  title="t" * 2000)
    msg = slack.message(req, URL)
    within_limits(msg)
    seen = slack.texts(msg["blocks"])
    assert "*1. scale*" in seen
    assert "more changes (open the card)" in seen  # of 40, as many as fit
    # Every call is shown, or counted as not shown.
    shown = sum(f"*{i}. scale*" in seen for i in range(1, 31))
    assert shown == 30 or f"and {30 - shown} more calls" in seen
    # 30 call hashes do not fit a button's 2000 characters: the gate must see them all, so the
    # message offers the card instead of a button that would carry part of them.
    assert list(buttons(msg)) == ["interlock.open"]
    assert "30 calls" in seen
    # 25 do fit, with every hash.
    req25 = request(*big[:25])
    b = buttons(slack.message(req25, URL))
    assert len(json.loads(b["interlock.approve"]["value"])["call_hashes"]) == 25
    within_limits(slack.message(req25, URL))
    # Any outcome of the big card fits too.
    for outcome in outcomes():
        within_limits(slack.message(req, URL, outcome))


def outcomes() -> list[slack.Outcome]:
    at = datetime(2026, 12, 7, 21, 3, tzinfo=UTC)
    return [slack.Outcome("granted", at, approver="oidc:alice"),
            slack.Outcome("denied", at, approver="oidc:carol", reason="not during the sale " * 200),
            slack.Outcome("amended", at, approver="oidc:dave"),
            slack.Outcome("expired", at)]


@pytest.mark.parametrize("outcome", outcomes(), ids=lambda o: o.kind)
def test_the_outcome_replaces_the_buttons_and_keeps_the_essentials(
        outcome: slack.Outcome) -> None:
    req = request(call(1))
    before = slack.message(req, URL)
    after = slack.message(req, URL, outcome)
    within_limits(after)
    assert buttons(after) == {}
    seen = slack.texts(after["blocks"])
    heading = {"granted": "Approved by oidc:alice", "denied": "Denied by oidc:carol",
               "amended": "Changed by oidc:dave", "expired": "Expired"}[outcome.kind]
    assert after["blocks"][0]["text"]["text"].startswith(heading + ": scale deployment/web-1")
    assert after["text"].startswith(heading)
    if outcome.kind == "denied":
        assert "*Denied by oidc:carol*: not during the sale" in seen
    if outcome.kind == "amended":
        assert "other arguments, which wait for their own approval" in seen
    # The essentials stay: the same blocks as before, but the header, the buttons and the
    # outcome.
    kept = [b for b in before["blocks"][1:] if b["type"] != "actions"]
    assert kept == [b for b in after["blocks"][1:] if b.get("block_id") != "interlock.outcome"]
    assert "`spec.replicas`: 3 → 5" in seen
    assert "oidc:bob" in seen


def test_no_secret_value_and_nothing_that_mentions_or_links() -> None:
    fp = "9f" * 32
    ref = f"sealed:gateway:{'ab' * 16}:{fp}"
    shown = f"<sealed value, fingerprint {fp[:12]}…>"
    # The card as the gate records it: the args hold a reference, the diff says that a value
    # changes (by its fingerprint) — the message shows what the card shows, and only that.
    secret_call = ApprovalCall(
        call_id="c_s", tool="create_secret", args={"name": "db", "data": {"password": ref}},
        call_hash="f" * 64, target=Target(namespace="staging", kind="secret", name="db"),
        diff=(FieldChange(path="data.password", before=None, after=shown),
              FieldChange(path="data.token", before=None, after=ref)))
    hostile = call(2, diff=(FieldChange(path="metadata.labels.team",
                                        before="<!channel>",
                                        after="<https://evil.example|click> ```&"),))
    msg = slack.message(request(secret_call, hostile, requested_by="<@U999>"), URL)
    raw = json.dumps(msg, ensure_ascii=False)
    assert f"fingerprint {fp[:12]}…" in raw
    assert ref not in raw
    assert "ab" * 16 not in raw
    for bad in ("<!channel>", "<https://evil.example", "<@U999>"):
        assert bad not in raw, bad
    assert "&lt;!channel&gt;" in raw
    assert "&lt;@U999&gt;" in raw
    assert "&amp;" in raw


def test_untitled_cards_and_odd_targets() -> None:
    cluster_wide = ApprovalCall(call_id="c", tool="cordon", args={}, call_hash="0" * 64,
                                target=Target(kind="node", name="n1"))
    msg = slack.message(request(cluster_wide, title=""), URL)
    seen = slack.texts(msg["blocks"])
    assert "*1. cordon* `node/n1`" in seen
    assert "cluster-wide" in seen
    assert msg["blocks"][0]["text"]["text"] == "Approval needed: cordon node/n1"


def test_a_granted_message_says_what_ran() -> None:
    at = datetime(2026, 12, 7, 21, 3, tzinfo=UTC)
    req = request(call(1), call(2), call(3))
    ran = slack.Outcome("granted", at, approver="alice", ran=("ok", "error"))
    seen = slack.texts(slack.message(req, URL, ran)["blocks"])
    assert ":gear: *Ran:* 1 ok, 1 failed; 1 still to run" in seen
    assert slack.ran_text(("ok", "ok"), 2) == ":white_check_mark: *Ran:* 2 ok"
    assert slack.ran_text(("ok", "unknown"), 2) == ":x: *Ran:* 1 ok, 1 with an unknown outcome"
    assert slack.ran_text(("refused: <!here> moved",), 1) == \
        ":x: *Ran:* 1 not run (&lt;!here&gt; moved)"
    # What the notifier keeps of an outcome gives it back.
    assert slack.Outcome.from_dict(ran.to_dict(), ran.ran) == ran
    with pytest.raises(ValueError, match="not an outcome"):
        slack.Outcome.from_dict({"kind": "maybe", "at": at.isoformat()})
