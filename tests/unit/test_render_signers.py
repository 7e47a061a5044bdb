"""The terminal's lines for signed decisions (clients/render.py): who decided, with which key's
fingerprint and kind; a decision the gate rejected, and why; the card's signatures so far."""

from __future__ import annotations

from clients import render

FP = "SHA256:ab12cd34ef56gh78ij90kl12mn34op56qr78st90uv1"


def test_a_decision_line_names_the_key_and_its_kind() -> None:
    passkey = {"key_id": FP, "statement": "{}", "signature": "x", "authenticator_data": "AA",
               "client_data_json": "e30"}
    assert render.event(7, "approval.decided", {
        "approver": "alice", "decision": "approve", "signed": passkey}) == \
        "[7]   approved by alice · signed with passkey SHA256:ab12cd34ef56…"
    assert render.event(8, "approval.decided", {
        "approver": "bob", "decision": "deny", "reason": "not now",
        "signed": {"key_id": FP, "statement": "{}", "signature": "x"}}) == \
        "[8]   denied by bob: not now · signed with key SHA256:ab12cd34ef56…"
    assert render.event(9, "approval.decided", {"approver": "bob", "decision": "approve"}) == \
        "[9]   approved by bob · not signed"


def test_a_rejected_decision_says_whose_and_why() -> None:
    assert render.event(10, "decision.rejected", {
        "approver": "bob", "reason": "not signed by bob: a decision counts only with the "
                                     "approver's own signature"}) == \
        "[10] ✗ decision by bob rejected: not signed by bob: a decision counts only with the " \
        "approver's own signature"


def test_the_card_lists_the_signatures_so_far_and_escapes_them() -> None:
    card = render.approval({
        "approval_id": "a_1", "session_id": "s_1", "required_approvals": 2,
        "approvals": ["alice"], "expires_at": "2030-01-01T00:00:00+00:00", "calls": [],
        "signatures": [{"approver": "alice\x1b[31m", "decision": "approve", "key_id": FP,
                        "kind": "passkey"}]})
    assert "  needs:   2 approvers (1 so far)" in card
    assert "  signed:  approved by alice\\x1b[31m · signed with passkey SHA256:ab12cd34ef56…" \
        in card
    assert "\x1b" not in card


def test_a_short_or_odd_fingerprint_is_shown_as_it_is() -> None:
    assert render.fingerprint("SHA256:abc") == "SHA256:abc"
    assert render.fingerprint("\x07") == "\\x07"


def test_the_card_says_who_asked_and_through_which_agent() -> None:
    card = render.approval({
        "approval_id": "a_1", "session_id": "s_1", "expires_at": "2030-01-01T00:00:00+00:00",
        "calls": [], "requested_by": "otto", "requested_via": "claude-code 2.1\x1b[2J (MCP)"})
    assert "  asked:   by otto via claude-code 2.1\\x1b[2J (MCP)" in card
    plain = render.approval({"approval_id": "a_1", "session_id": "s_1", "calls": [],
                             "expires_at": "2030-01-01T00:00:00+00:00", "requested_by": "otto"})
    assert "  asked:   by otto\n" in plain + "\n"
