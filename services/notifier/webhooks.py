"""Webhook payloads (pure) and their delivery: HMAC-SHA256 signed, retried with backoff."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp

from services.notifier.settings import Webhook

log = logging.getLogger(__name__)

SIGNATURE = "X-Interlock-Signature"
TIMESTAMP = "X-Interlock-Timestamp"
EVENT = "X-Interlock-Event"
DELIVERY = "X-Interlock-Delivery"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`; receivers recompute it and
    reject old timestamps, so a captured notification cannot be replayed later."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _target(t: dict[str, Any], context: str = "") -> str:
    obj = f"{t.get('kind') or 'object'}/{t['name']}" if t.get("name") else (t.get("kind") or "")
    cluster = t.get("cluster") or context  # a call naming none: the context its dry run found
    return obj + (f" in {t['namespace']}" if t.get("namespace") else "") + (
        f" on cluster {cluster}" if cluster else "")


def summary(kind: str, data: dict[str, Any], request: dict[str, Any] | None) -> str:
    req = request or {}
    calls = req.get("calls", [])
    what = "; ".join(
        f"{c['tool']} {_target(c.get('target') or {}, c.get('context') or '')}"
        + "".join(f", {f['path']}: {f.get('before')} → {f.get('after')}"
                  for f in c.get("diff", [])[:5])
        for c in calls) or data.get("approval_id", "")
    match kind:
        case "approval.requested":
            flags = data.get("risk_flags") or []
            return f"Approval needed: {what}" + (f" [{', '.join(flags)}]" if flags else "")
        case "approval.granted":
            return f"Approved by {data.get('approver')}: {what}"
        case "approval.denied":
            return f"Denied by {data.get('approver')}: {what} — {data.get('reason', '')}"
        case "approval.expired":
            return f"Expired without a decision: {what}"
        case _:
            return f"{kind}: {what}"


def payload(kind: str, data: dict[str, Any], request: dict[str, Any] | None,
            public_url: str) -> dict[str, Any]:
    sid, aid = data["session_id"], data["approval_id"]
    return {
        "type": kind,
        "event_id": data["event_id"],
        "session_id": sid,
        "approval_id": aid,
        "occurred_at": data["occurred_at"],
        "summary": summary(kind, data, request),
        "link": f"{public_url}/#session={sid}&approval={aid}",
        "event": data,
        "approval": request,
    }


def slack_message(p: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook format (also understood by Mattermost and others)."""
    text = f"{p['summary']}\n<{p['link']}|Open in the Interlock Command Center>"
    req = p.get("approval") or {}
    fields = []
    if req.get("expires_at") and p["type"] == "approval.requested":
        fields.append({"type": "mrkdwn", "text": f"*Expires:* {req['expires_at']}"})
    if req.get("expected_outcome"):
        fields.append({"type": "mrkdwn", "text": f"*Expected:* {req['expected_outcome'][:500]}"})
    places = list(dict.fromkeys(_target(c.get("target") or {}, c.get("context") or "")
                                for c in req.get("calls") or ()))
    if places:  # where, the cluster named plainly (issue 21)
        fields.append({"type": "mrkdwn", "text": f"*Where:* {'; '.join(places)[:500]}"})
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn",
                                                                 "text": text[:2900]}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    return {"text": text[:2900], "blocks": blocks}


async def deliver(http: aiohttp.ClientSession, hook: Webhook, p: dict[str, Any], secret: str,
                  *, attempts: int, timeout_s: float, backoff_s: float) -> bool:
    """Posts one notification; retries timeouts, 5xx, 408 and 429 with exponential backoff.
    Returns whether the webhook accepted it. Never raises: a webhook cannot block anything."""
    body = json.dumps(slack_message(p) if hook.format == "slack" else p,
                      ensure_ascii=False).encode()
    extra = {"approval_id": p["approval_id"], "session_id": p["session_id"], "tag": p["type"]}
    for attempt in range(attempts):
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", SIGNATURE: sign(secret, ts, body),
                   TIMESTAMP: ts, EVENT: p["type"], DELIVERY: p["event_id"],
                   "User-Agent": "interlock-notifier"}
        try:
            async with http.post(hook.url, data=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                if 200 <= r.status < 300:
                    return True
                if r.status < 500 and r.status not in (408, 429):
                    log.warning("webhook %s refused the notification: %d", hook.where,
                                r.status, extra=extra)
                    return False
                why = f"HTTP {r.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            why = type(exc).__name__
        if attempt + 1 < attempts:
            delay = min(backoff_s * 2**attempt, 30.0)
            log.info("webhook %s failed (%s); retrying in %.1fs", hook.where, why, delay,
                     extra=extra)
            await asyncio.sleep(delay)
    log.error("webhook %s gave up after %d attempts", hook.where, attempts, extra=extra)
    return False
