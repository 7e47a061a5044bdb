"""The approval lifecycle, one for every reader: the rules that fold people's decisions of an
approval (separation of duties, distinct approvers, the first deny or modify settles it)."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.approval import ApprovalDecided, ApprovalRequested

Verdict = Literal["pending", "approved", "denied", "modified"]


class DecisionState(msgspec.Struct, kw_only=True):
    """The decisions of one approval, folded by the rules every reader applies."""

    verdict: Verdict = "pending"
    approved_by: tuple[str, ...] = ()
    deciding: ApprovalDecided | None = None  # the decision that settled the verdict
    rejected: tuple[tuple[ApprovalDecided, str], ...] = ()

    def check(self, request: ApprovalRequested, approver: str) -> str | None:
        """Why a new decision by `approver` would not count, or None if it would."""
        if self.verdict != "pending":
            return f"already {self.verdict}"
        if approver in request.forbidden_approvers:
            return (f"separation of duties: {approver} requested or changed this call and may "
                    "not approve it")
        if approver in self.approved_by:
            return f"{approver} has already approved; another approver is required"
        return None


def decision_state(request: ApprovalRequested, decisions: list[ApprovalDecided]) -> DecisionState:
    """Folds decisions in log order: the first valid deny or modify settles it; approvals from
    distinct permitted approvers count until `required_approvals` is reached."""
    state = DecisionState()
    approved: list[str] = []
    rejected: list[tuple[ApprovalDecided, str]] = []
    for d in decisions:
        if d.approval_id != request.approval_id:
            continue
        state.approved_by = tuple(approved)
        why = state.check(request, d.approver)
        if why is not None:
            rejected.append((d, why))
            continue
        if d.decision == "deny":
            state.verdict, state.deciding = "denied", d
        elif d.args is not None and len(request.calls) != 1:
            rejected.append((d, "modified args are accepted only for a single-call approval"))
        elif d.args is not None and d.args != request.calls[0].args:
            state.verdict, state.deciding = "modified", d
        else:
            approved.append(d.approver)
            if len(approved) >= request.required_approvals:
                state.verdict, state.deciding = "approved", d
    state.approved_by = tuple(approved)
    state.rejected = tuple(rejected)
    return state
