"""A person's decision over HTTP: checked early by the same rules the gate applies (the
lifecycle, the approver's signature), then recorded as `approval.decided` for the gate to
decide with; and an approver's edits sealed before they sign them."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from schemas import catalogue, lifecycle
from schemas import subjects as S
from schemas.approval import ApprovalDecided
from schemas.lifecycle import Refusal
from services.gateway import views
from services.gateway.bodies import Decision, Edits
from services.gateway.errors import HttpError
from services.gateway.requests import body_of, path_token
from services.runtime.bus import Stored, decode_stored
from services.runtime.errors import ConcurrencyConflict, PoisonMessage
from services.runtime.log import Expect
from services.runtime.sealing.sealer import sealer_for

if TYPE_CHECKING:
    from services.gateway.routes import Api

log = logging.getLogger(__name__)

SIGN_HOW = ("a decision counts only with the approver's own signature: approve in the Command "
            "Center with your passkey, or with `interlock approve` and your key (`interlock keys "
            "init`, enrolled by an admin with `interlock keys enroll`)")

async def decide(api: Api, request: web.Request) -> web.Response:
    who = api.principal(request, "approver")
    approval_id = path_token(request, "approval_id", "approval id")
    body = await body_of(request, Decision, required=True)
    if body.decision == "deny" and not body.reason.strip():
        raise HttpError(400, "reason_required", "a denial needs a reason")
    if body.args is not None and body.decision != "approve":
        raise HttpError(400, "invalid_body", "modified args go with decision=approve")
    entry = await api.approval(approval_id)
    req = entry.request
    args = modified_args(entry, body.args)
    if body.signature is None:
        raise HttpError(400, "signature_required", SIGN_HOW)
    if args is not None:
        # A secret value the approver types is sealed like any other — before they sign,
        # so that what they sign (and the log records) is its reference, never the value:
        # POST …/edits seals the edits and returns what to sign. Edits still holding a
        # value are refused rather than recorded.
        _, typed = await sealer_for(api.bus).args(req.session_id, req.calls[0].tool, args)
        if typed:
            raise HttpError(400, "unsealed_edits", "the edits hold a secret value: POST "
                            f"/v1/approvals/{approval_id}/edits with them first, and sign "
                            "and send the sealed edits it returns")
    now = datetime.now(UTC)
    # The gate decides; this is the same check (schemas.lifecycle) made early, so a decision
    # that cannot count is a clear 4xx now rather than a `decision.rejected` later.
    refuse(approval_id, entry.state.settled(now))
    # The decisions as stored now (the index may lag a decision made a moment ago).
    fresh, expect = await stored_decisions(api, entry)
    refuse(approval_id, fresh.check(who.name, now))
    folded = fresh.decision()
    ev = ApprovalDecided(session_id=req.session_id, approval_id=approval_id,
                         decision=body.decision, reason=body.reason, approver=who.name,
                         args=args, actor=who.name, actor_name=who.display, signed=body.signature,
                         edits=body.args)
    # The gate counts it only with a valid signature of its approver; checked early here.
    await api.registry.check_decision(req, ev)
    seq = await record(api, ev, expect)
    api.metrics.decided(body.decision, (now - req.occurred_at).total_seconds())
    log.info("decision recorded", extra={"approval_id": approval_id, "seq": seq,
                                         "tag": body.decision})
    approvals = len(folded.approved_by) + (1 if body.decision == "approve" else 0)
    return web.json_response({"approval_id": approval_id, "decision": body.decision,
                              "approvals": approvals,
                              "required_approvals": req.required_approvals,
                              "modified": args is not None,
                              "event_id": ev.event_id, "seq": seq}, status=202)

async def seal_edits(api: Api, request: web.Request) -> web.Response:
    """An approver's edits with every secret value sealed (references in their place): what
    the approver signs and sends as the decision's args."""
    api.principal(request, "approver")
    approval_id = path_token(request, "approval_id", "approval id")
    body = await body_of(request, Edits, required=True)
    entry = await api.approval(approval_id)
    merged = modified_args(entry, body.args)
    if merged is None:
        return web.json_response({"edits": body.args, "changed": False})
    req = entry.request
    sealed, _ = await sealer_for(api.bus).args(req.session_id, req.calls[0].tool, merged)
    return web.json_response({"edits": {k: sealed.get(k, v) for k, v in body.args.items()},
                              "changed": True})

async def stored_decisions(api: Api, entry: views.ApprovalEntry
                           ) -> tuple[lifecycle.ApprovalState, int]:
    """The approval with its decisions as stored now, and the sequence a new decision must
    follow (the optimistic concurrency every decision is appended with)."""
    req = entry.request
    subject = S.tag_filter("gateway", "approval.decided", req.session_id, req.approval_id)
    prior = [s async for s in api.bus.read(subject)]
    expect = await decisions_end(api, subject, prior)
    return dataclasses.replace(entry.state, decisions=tuple(
        p.event for p in prior if isinstance(p.event, ApprovalDecided))), expect


async def record(api: Api, ev: ApprovalDecided, expect: int) -> int:
    """Appends a decision right after the decision stored at `expect` on its approval's
    subject (one subject per approval: concurrent deciders are serialised), or 409."""
    try:
        return await api.bus.append(ev, Expect.subject_at(expect))
    except ConcurrencyConflict as exc:
        raise HttpError(409, "already_decided",
                        f"approval {ev.approval_id} was decided concurrently") from exc

def refuse(approval_id: str, refusal: Refusal | None) -> None:
    """A decision the lifecycle says would not count, as the answer a person reads."""
    if refusal is None:
        return
    if refusal.kind == "expired":
        raise HttpError(410, "expired", f"approval {approval_id} expired")
    if refusal.kind == "settled":
        raise HttpError(409, "already_decided", f"approval {approval_id} is "
                        f"{refusal.reason.removeprefix('already ')}")
    if refusal.kind == "separation":
        raise HttpError(403, "forbidden", refusal.reason)
    raise HttpError(409, "already_decided", refusal.reason)

async def decisions_end(api: Api, subject: str, prior: list[Stored]) -> int:
    """The sequence a new decision must follow: the last message STORED on the decision
    subject, which is what the server checks — not the last decision a decoding read
    returned. If something that is not a decision is stored there, every append would be
    refused as concurrent (a 409 loop until the approval expires): say what it is."""
    last = await api.bus.last_stored(subject)
    if last is None or (prior and prior[-1].seq == last[0]):
        return last[0] if last else 0
    seq, raw = last
    try:
        event = decode_stored(subject, raw)
    except PoisonMessage:
        event = None
    if isinstance(event, ApprovalDecided):
        # A decision stored after our read (or a replica behind the one that answered).
        raise HttpError(409, "already_decided",
                        f"a decision was recorded meanwhile (seq {seq}); look again")
    log.error("decision subject holds something that is not a decision",
              extra={"subject": subject, "seq": seq})
    raise HttpError(409, "decision_subject_taken",
                    f"the decision subject {subject} holds something that is not a decision "
                    f"(seq {seq}); no decision can be recorded for this approval — an "
                    "administrator must look at the log")

def modified_args(entry: views.ApprovalEntry,
                  edits: dict[str, Any] | None) -> dict[str, Any] | None:
    """The approver's edits applied to the recorded args (what they saw), validated against
    the call's tool so a typo is a 400 here rather than a refusal later; None when nothing
    changed."""
    if edits is None:
        return None
    calls = entry.request.calls
    if len(calls) != 1:
        raise HttpError(400, "invalid_body", "modify the calls of a batch one by one")
    merged = {**calls[0].args, **edits}
    tool = catalogue.lookup(calls[0].tool)
    if tool is None:
        raise HttpError(400, "invalid_args", f"unknown tool {calls[0].tool[:100]!r}")
    try:
        args = catalogue.canonical_args(tool.parse_args(merged))
    except msgspec.ValidationError as exc:
        raise HttpError(400, "invalid_args", f"invalid args for {tool.name}: {exc}") from exc
    return None if args == calls[0].args else args

