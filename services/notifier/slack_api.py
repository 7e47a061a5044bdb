"""The Slack Web API, as the notifier uses it: chat.postMessage when an approval is requested,
chat.update of that message when it is decided (anywhere: web, CLI or Slack) or expires, and
again as the executor runs the granted calls.

slack_sdk's AsyncWebClient on the notifier's HTTP session, with its retry handlers: a 429 is
retried after Slack's Retry-After, a 500/503 or a dropped connection with backoff, as the
webhooks are. Like a webhook, Slack can block nothing: failures are logged (the API's error
code, the approval's ids — never the token or the message) and the approval goes on.
"""

from __future__ import annotations

import logging
import math

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from schemas.approval import ApprovalRequested
from services.notifier import slack
from services.notifier.messages import MessageStore, Posted
from services.notifier.settings import NotifierSettings

log = logging.getLogger(__name__)

# slack_sdk logs whole requests (the message, so the diff) at DEBUG: its own logger, kept at INFO.
_sdk_log = logging.getLogger("interlock.slack_sdk")
_sdk_log.setLevel(logging.INFO)


class SlackChannel:
    def __init__(self, http: aiohttp.ClientSession, settings: NotifierSettings) -> None:
        s = settings.slack
        if s.state_dir is None:
            raise ValueError("Slack needs a state dir")
        retries = settings.attempts - 1
        backoff = BackoffRetryIntervalCalculator(backoff_factor=settings.backoff_s)
        self.client = AsyncWebClient(
            token=s.bot_token, base_url=s.api_url, session=http,
            timeout=max(1, math.ceil(settings.timeout_s)), logger=_sdk_log,
            retry_handlers=[
                AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
                AsyncServerErrorRetryHandler(max_retry_count=retries,
                                             interval_calculator=backoff),
                AsyncConnectionErrorRetryHandler(max_retry_count=retries,
                                                 interval_calculator=backoff),
            ])
        self.channel = s.channel
        self.public_url = settings.public_url
        self.store = MessageStore(s.state_dir)

    async def requested(self, request: ApprovalRequested) -> bool:
        """Posts the approval's message, once: a redelivered request finds it posted."""
        extra = _extra(request, "approval.requested")
        if self.store.get(request.approval_id) is not None:
            return True
        msg = slack.message(request, self.public_url)
        try:
            resp = await self.client.chat_postMessage(
                channel=self.channel, text=msg["text"], blocks=msg["blocks"],
                unfurl_links=False, unfurl_media=False)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("Slack refused the approval message: %s", _why(exc), extra=extra)
            return False
        channel, ts = str(resp.get("channel") or self.channel), str(resp.get("ts") or "")
        if not ts:
            log.error("Slack answered without a message ts", extra=extra)
            return False
        self.store.put(request.approval_id, channel, ts, request.session_id, request.call_ids)
        log.info("posted the approval to Slack (channel %s, ts %s)", channel, ts, extra=extra)
        return True

    async def settled(self, request: ApprovalRequested, outcome: slack.Outcome,
                      tag: str) -> bool:
        """Rewrites the approval's message with its outcome in place of the buttons."""
        posted = self.store.note(request.approval_id, outcome=outcome.to_dict())
        if posted is None:
            log.info("no Slack message to update for this approval",
                     extra=_extra(request, tag))
            return False
        return await self.rewrite(request, posted, tag)

    def ran(self, call_id: str, status: str) -> tuple[str, Posted] | None:
        """Records what the executor did with a call of a posted approval; the approval and
        its message when that changes what a granted approval's message says."""
        found = self.store.by_call(call_id)
        if found is None:  # a read, or an approval never posted
            return None
        approval_id, posted = found
        if posted.ran.get(call_id) == status:  # redelivered
            return None
        posted = self.store.note(approval_id, ran={call_id: status}) or posted
        if posted.outcome.get("kind") != "granted":
            return None
        return approval_id, posted

    async def rewrite(self, request: ApprovalRequested, posted: Posted, tag: str) -> bool:
        extra = _extra(request, tag)
        ran = tuple(posted.ran[c] for c in request.call_ids if c in posted.ran)
        outcome = slack.Outcome.from_dict(posted.outcome, ran)
        msg = slack.message(request, self.public_url, outcome)
        try:
            await self.client.chat_update(channel=posted.channel, ts=posted.ts,
                                          text=msg["text"], blocks=msg["blocks"])
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("Slack refused the message update: %s", _why(exc), extra=extra)
            return False
        log.info("updated the Slack message (channel %s, ts %s): %s%s", posted.channel,
                 posted.ts, outcome.kind, f", {len(ran)} ran" if ran else "", extra=extra)
        return True


def _extra(request: ApprovalRequested, tag: str) -> dict[str, str]:
    return {"approval_id": request.approval_id, "session_id": request.session_id, "tag": tag}


def _why(exc: BaseException) -> str:
    """The API's error code, or the exception's type: never its text, which may quote the
    request."""
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if exc.response is not None else None
        status = getattr(exc.response, "status_code", "?")
        return f"{error or 'error'} (HTTP {status})"
    return type(exc).__name__
