"""Slack's interaction requests (issue 20): `POST /v1/slack/interactions`, Slack's request URL.

A click on Approve, or the Deny dialog submitted, IS a decision: the gateway records it as
`approval.decided` with the raw request body Slack signed, verbatim, and Slack's signature and
timestamp (`signed`), for the approver the registry links to that Slack user (an admin enrolled
a key of kind `slack` for them), or `slack:<team>/<user>` when nobody is linked — the gate
refuses that, on the record. The gateway never holds Slack's signing secret: it cannot check a
click, and so it cannot make one. The gate checks it (services/runtime/approvers.py), and the
gateway waits a moment for the gate's verdict on that decision to answer the person:

- a request that is not Slack's (forged or changed signature, stale timestamp, replay): 401,
  and nothing is posted anywhere;
- otherwise 200, and an ephemeral message to the payload's `response_url` — only one under
  INTERLOCK_SLACK_RESPONSE_URL_PREFIX (Slack's own host by default; never anywhere a payload
  says: the gateway would be anyone's HTTP client) — "Approved — executing …", "Denied …",
  or "Refused: <the gate's reason>".

A click on Deny opens the reason dialog (`views.open` with the bot token, INTERLOCK_SLACK_BOT_TOKEN,
through INTERLOCK_SLACK_API_URL); a click on Open is a link and needs nothing; anything else is
answered 200 and recorded nowhere. No bearer token: Slack calls this, so the route is limited
per address like requests that fail authentication (the rate-limit middleware does that for any
request without a token).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import msgspec
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import InputBlock, PlainTextInputElement, SectionBlock
from slack_sdk.models.blocks.basic_components import PlainTextObject
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from schemas import events
from schemas.approval import (
    ApprovalDecided,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    DecisionRejected,
)
from schemas.approvers import Signature
from schemas.base import Event
from schemas.ids import InvalidId, check_token
from services.gateway import decisions, live, views
from services.gateway.errors import HttpError
from services.gateway.middleware import error
from services.runtime import approvers
from services.runtime.errors import ConfigError

if TYPE_CHECKING:
    from services.gateway.routes import Api

log = logging.getLogger(__name__)

PATH = "/v1/slack/interactions"
# A Slack interaction body is a few kilobytes; it is kept verbatim in the decision (LongText).
MAX_BODY = 60_000
# How long the gateway waits for the gate's verdict before answering Slack (which wants an
# answer within 3 s).
VERDICT_WAIT_S = 2.5
EPHEMERAL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SlackSettings:
    """The gateway's Slack settings. Never the signing secret: that is the gate's alone."""

    bot_token: str = field(default="", repr=False)  # INTERLOCK_SLACK_BOT_TOKEN: the Deny dialog
    api_url: str = "https://slack.com/api/"  # INTERLOCK_SLACK_API_URL
    # INTERLOCK_SLACK_RESPONSE_URL_PREFIX: the only place ephemeral replies are posted to.
    response_url_prefix: str = "https://hooks.slack.com/"
    verdict_wait_s: float = VERDICT_WAIT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if env is None else env
        if env.get("INTERLOCK_SLACK_SIGNING_SECRET"):
            log.warning("INTERLOCK_SLACK_SIGNING_SECRET is set for the gateway, which never "
                        "uses it: give it to the gate only (whoever holds it can forge a "
                        "Slack click)")
        api_url = env.get("INTERLOCK_SLACK_API_URL", "").strip() or cls.api_url
        prefix = (env.get("INTERLOCK_SLACK_RESPONSE_URL_PREFIX", "").strip()
                  or cls.response_url_prefix)
        scheme, _, rest = prefix.partition("://")
        if scheme not in ("https", "http") or "/" not in rest or not rest.split("/")[0]:
            raise ConfigError("gateway: INTERLOCK_SLACK_RESPONSE_URL_PREFIX must be a URL "
                              "with a host and a path ending in /, e.g. https://hooks.slack.com/")
        if not prefix.endswith("/"):
            raise ConfigError("gateway: INTERLOCK_SLACK_RESPONSE_URL_PREFIX must end with /")
        return cls(bot_token=env.get("INTERLOCK_SLACK_BOT_TOKEN", "").strip(),
                   api_url=api_url if api_url.endswith("/") else api_url + "/",
                   response_url_prefix=prefix)


SLACK: web.AppKey[SlackSettings] = web.AppKey("slack", SlackSettings)

Verdict = Literal["granted", "denied", "expired", "refused", "counted", "unknown"]


@dataclass(frozen=True)
class Outcome:
    """What the gate made of a decision: `counted` (a valid approval that waits for another
    approver), `unknown` (no verdict within the wait)."""

    verdict: Verdict
    reason: str = ""


def install(app: web.Application, api: Api) -> None:
    app[SLACK] = api.slack
    app.router.add_post(PATH, functools.partial(interactions, api))


# -- the route ---------------------------------------------------------------------------------

async def interactions(api: Api, request: web.Request) -> web.StreamResponse:
    settings = request.app[SLACK]
    if request.content_length and request.content_length > MAX_BODY:
        raise HttpError(413, "too_large", f"body over {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise HttpError(413, "too_large", f"body over {MAX_BODY} bytes")
    stamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not stamp or not signature:
        raise HttpError(401, "unsigned", "not a request signed by Slack (X-Slack-Signature and "
                        "X-Slack-Request-Timestamp)")
    try:
        body = raw.decode("utf-8")
        payload = approvers.slack_payload(body)
    except (UnicodeDecodeError, approvers.Rejected) as exc:
        raise HttpError(400, "invalid_body", f"not a Slack interaction: {exc}") from exc
    try:
        click = approvers.slack_click(payload)
    except approvers.Rejected:
        return web.Response(status=200)  # a Slack interaction that is no decision of ours
    if click.kind == "block_actions" and click.action == approvers.DENY_ACTION:
        return await _open_dialog(api, settings, click)
    decision: Literal["approve", "deny"]
    if click.kind == "block_actions" and click.action == approvers.APPROVE_ACTION:
        decision, reason, reply_to = "approve", "", click.response_url
    elif click.kind == "view_submission" and click.action == approvers.DENY_CALLBACK:
        if not click.reason.strip():
            return web.json_response({"response_action": "errors", "errors": {
                approvers.REASON_BLOCK: "A denial needs a reason."}})
        decision, reason, reply_to = "deny", click.reason, _metadata(click.value).get(
            "response_url", "")
    else:
        return web.Response(status=200)  # Open (a link), or an action of another app
    reply = Reply(settings, str(reply_to) if isinstance(reply_to, str) else "")
    entry = await _approval(api, click.value)
    if entry is None:
        reply.send("No such approval: it may belong to another Interlock, or be gone.")
        return web.Response(status=200)
    reg = await api.registry.refresh()
    if reg is None:
        # Without the admin keys the gateway cannot read the registry, so it cannot tell whose
        # click this is: say so rather than call a linked person unlinked.
        log.error("a Slack decision, but the gateway has no INTERLOCK_ADMIN_KEYS_FILE to map "
                  "Slack users to approvers with")
        reply.send("Interlock cannot take decisions from Slack yet (its gateway has no admin "
                   "keys to look approvers up with): decide in the Command Center or the CLI.")
        return web.Response(status=200)
    principal = reg.slack_keys().get(click.key_id)
    ev = ApprovalDecided(
        session_id=entry.request.session_id, approval_id=entry.request.approval_id,
        decision=decision, reason=reason, approver=principal or click.key_id,
        actor=principal or click.key_id,
        signed=Signature(statement=body, key_id=click.key_id, signature=signature,
                         timestamp=stamp))
    try:
        # Every field within its bounds (a header or a Slack id of any length is anyone's to
        # send): an event its readers could not decode would jam the approval's decisions.
        events.decode(events.encode(ev))
    except msgspec.ValidationError as exc:
        raise HttpError(400, "invalid_body", f"not a Slack interaction: {exc}") from exc
    seq = await _record(api, entry, ev)
    outcome = await verdict(api, ev, seq, settings.verdict_wait_s)
    if outcome.verdict == "refused" and approvers.slack_unauthentic(outcome.reason):
        log.warning("a Slack request the gate found not Slack's own", extra={
            "approval_id": ev.approval_id, "event_id": ev.event_id})
        return error(401, "bad_signature", outcome.reason)
    reply.send(_words(outcome, ev, entry.request, principal))
    return web.Response(status=200)


async def _record(api: Api, entry: views.ApprovalEntry, ev: ApprovalDecided) -> int:
    """Appended with the same optimistic concurrency as every decision (decisions.record)."""
    for attempt in range(3):
        _, expect = await decisions.stored_decisions(api, entry)
        try:
            return await decisions.record(api, ev, expect)
        except HttpError as exc:
            if exc.status != 409 or exc.code != "already_decided" or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def verdict(api: Api, ev: ApprovalDecided, seq: int, wait_s: float) -> Outcome:
    """The gate's verdict on decision `ev` (stored at `seq`): the outcome it caused, or its
    rejection; `counted` when the approval still waits for another approver. Woken by the
    session's live feed, not polled."""
    def settles(out: Event) -> bool:
        return out.causation_id == ev.event_id and isinstance(
            out, DecisionRejected | ApprovalGranted | ApprovalDenied | ApprovalExpired)

    out = await live.first(api.bus, ev.session_id, seq + 1, wait_s, settles)
    if isinstance(out, DecisionRejected):
        return Outcome("refused", out.reason)
    if isinstance(out, ApprovalGranted):
        return Outcome("granted")
    if isinstance(out, ApprovalDenied):
        return Outcome("denied", out.reason)
    if isinstance(out, ApprovalExpired):
        return Outcome("expired")
    entry = (await api.refresh_approvals()).get(ev.approval_id)
    counted = entry is not None and ev.approver in entry.state.decision().approved_by
    return Outcome("counted" if counted else "unknown")


def _words(outcome: Outcome, ev: ApprovalDecided, req: ApprovalRequested,
           principal: str | None) -> str:
    what = req.title or ", ".join(f"{c.tool} {c.target.describe()}" for c in req.calls)
    if outcome.verdict == "granted":
        return f"Approved — executing {what}."
    if outcome.verdict == "denied":
        return f"Denied — {what}: {ev.reason}"
    if outcome.verdict == "expired":
        return f"Refused: approval {req.approval_id} expired before your decision."
    if outcome.verdict == "counted":
        return (f"Approved — your approval of {what} is recorded; it waits for another "
                "approver.")
    if outcome.verdict == "unknown":
        return ("Your decision is recorded; the gate has not ruled on it yet. The approval "
                "message is updated once it is decided.")
    if principal is None:
        assert ev.signed is not None
        ids = ev.signed.key_id.removeprefix("slack:")
        return ("Your Slack account is not linked to an Interlock approver: ask an admin to "
                f"run `interlock keys enroll <principal> --slack {ids}`")
    return f"Refused: {outcome.reason}"


def _metadata(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _approval(api: Api, value: str) -> views.ApprovalEntry | None:
    """The approval a button (or the dialog) names, if this Interlock has it."""
    try:
        approval_id = check_token(str(_metadata(value).get("approval_id", "")), "approval id")
        return await api.approval(approval_id)
    except (InvalidId, HttpError):
        return None


# -- the Deny dialog ---------------------------------------------------------------------------

async def _open_dialog(api: Api, settings: SlackSettings,
                       click: approvers.SlackClick) -> web.Response:
    """A click on Deny: the reason dialog, opened with the click's trigger id. Its submission
    (`view_submission` of `interlock.deny`) is the denial; its private_metadata names the
    approval as the buttons do, and where to reply."""
    reply = Reply(settings, click.response_url)
    entry = await _approval(api, click.value)
    if entry is None:
        reply.send("No such approval: it may belong to another Interlock, or be gone.")
        return web.Response(status=200)
    if not settings.bot_token:
        reply.send("The Deny dialog needs the Slack app's bot token (INTERLOCK_SLACK_BOT_TOKEN)"
                   " at the gateway: deny in the Command Center, or with `interlock deny`.")
        return web.Response(status=200)
    req = entry.request
    metadata = json.dumps({"approval_id": req.approval_id,
                           "call_hashes": [c.call_hash for c in req.calls],
                           "expires_at": req.expires_at.isoformat(),
                           "response_url": click.response_url})
    what = req.title or req.approval_id
    view = View(
        type="modal", callback_id=approvers.DENY_CALLBACK, private_metadata=metadata,
        title=PlainTextObject(text="Deny"), submit=PlainTextObject(text="Deny"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=PlainTextObject(text=f"Deny: {what}"[:3000])),
            InputBlock(block_id=approvers.REASON_BLOCK, label=PlainTextObject(text="Reason"),
                       element=PlainTextInputElement(action_id=approvers.REASON_ACTION,
                                                     multiline=True, max_length=2000)),
        ])
    client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url)
    try:
        await client.views_open(trigger_id=click.trigger_id, view=view)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not open the Deny dialog: %s", type(exc).__name__,
                    extra={"approval_id": req.approval_id})
        reply.send("Could not open the Deny dialog: deny in the Command Center, or with "
                   "`interlock deny`.")
    return web.Response(status=200)


# -- ephemeral replies -------------------------------------------------------------------------

_pending: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class Reply:
    """Where a person's answer goes: the payload's response_url, only if it is under the
    configured prefix (else nowhere: a payload is anyone's to write)."""

    settings: SlackSettings
    url: str

    @property
    def allowed(self) -> bool:
        return bool(self.url) and self.url.startswith(self.settings.response_url_prefix)

    def send(self, text: str) -> None:
        """Posted in the background, so that Slack gets its answer at once."""
        if not self.allowed:
            if self.url:
                log.warning("not replying to a response_url outside "
                            "INTERLOCK_SLACK_RESPONSE_URL_PREFIX")
            return
        task = asyncio.create_task(_post(self.url, text))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


async def _post(url: str, text: str) -> None:
    body = {"response_type": "ephemeral", "replace_original": False, "text": text[:3000]}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=EPHEMERAL_TIMEOUT_S)) as http, \
                http.post(url, json=body, allow_redirects=False) as resp:
            if resp.status >= 300:
                log.warning("Slack's response_url answered %d", resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("could not post to Slack's response_url: %s", type(exc).__name__)
