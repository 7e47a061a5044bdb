"""The executor runs a write only for the objects the human's card listed (issue 16): the
pure checks — the grant binds the card's effect, and a plan acts on exactly that set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
    effect_digest,
)
from schemas.base import Event, Target
from services.executor import domain
from services.executor import kube_write as W

EFFECT = ("/node/n1", "shop/pod/web-1", "shop/pod/web-2")
TARGET = Target(kind="node", name="n1")


def _log(card_effect: tuple[str, ...], grant_digest: str) -> tuple[list[Event], Grant]:
    grant = Grant(call_id="c_1", call_hash="h", approval_id="a_1", approver="alice",
                  not_after=datetime.now(UTC) + timedelta(minutes=5), session_id="s_1",
                  target=TARGET, version=GRANT_VERSION, effect_digest=grant_digest,
                  signature="sig")
    events: list[Event] = [
        ApprovalRequested(session_id="s_1", approval_id="a_1", calls=(ApprovalCall(
            call_id="c_1", tool="drain", args={"name": "n1"}, call_hash="h", target=TARGET,
            effect=card_effect),), expires_at=datetime.now(UTC) + timedelta(minutes=15)),
        ApprovalDecided(session_id="s_1", approval_id="a_1", decision="approve",
                        approver="alice"),
        ApprovalGranted(session_id="s_1", approval_id="a_1", approver="alice",
                        grants=(grant,)),
    ]
    return events, grant


def test_a_grant_binding_the_cards_effect_runs_on_that_effect() -> None:
    events, grant = _log(EFFECT, effect_digest(EFFECT))
    assert domain.approval_problem(events, "s_1", grant) is None
    assert domain.approved_effect(events, grant) == EFFECT


@pytest.mark.parametrize("digest", ["", effect_digest(EFFECT[:2]),
                                    effect_digest((*EFFECT, "shop/pod/web-3"))])
def test_a_grant_for_another_set_than_the_card_is_refused(digest: str) -> None:
    """A gate (compromised, or buggy) that signs a grant for a set the human did not see."""
    events, grant = _log(EFFECT, digest)
    why = domain.approval_problem(events, "s_1", grant)
    assert why == ("the grant does not bind the objects that approval a_1 listed for call c_1; "
                   "the write was not run")


def test_a_card_without_an_effect_needs_a_grant_without_one() -> None:
    events, grant = _log((), "")
    assert domain.approval_problem(events, "s_1", grant) is None
    assert domain.approved_effect(events, grant) == ()
    events, grant = _log((), effect_digest(EFFECT))
    assert domain.approval_problem(events, "s_1", grant) is not None


def _plan(effect: tuple[str, ...]) -> W.Plan:
    def send(dry_run: bool, rv: str) -> None:
        raise AssertionError("check_effect must refuse before anything is sent")

    return W.Plan("node", "", "n1", {"metadata": {"resourceVersion": "1"}}, send,
                  verb="drained", effect=effect)


def test_check_effect_names_what_was_added_and_removed() -> None:
    W.check_effect(_plan(EFFECT), EFFECT)
    W.check_effect(_plan(()), ())
    with pytest.raises(W.EffectChanged) as err:
        W.check_effect(_plan(("/node/n1", "shop/pod/web-2", "shop/pod/web-9")), EFFECT)
    assert (err.value.added, err.value.removed) == (("shop/pod/web-9",), ("shop/pod/web-1",))
    assert (err.value.reason, err.value.status) == ("Conflict", 409)
    assert err.value.message == (
        "the write to node/n1 was not run: the objects it acts on changed since it was "
        "previewed and approved (now also shop/pod/web-9; no longer shop/pod/web-1); nothing "
        "was changed — review the new state and propose the call again")
    # A plan that enumerates objects where the approval listed none is refused too.
    with pytest.raises(W.EffectChanged) as err:
        W.check_effect(_plan(EFFECT), ())
    assert err.value.added == EFFECT
