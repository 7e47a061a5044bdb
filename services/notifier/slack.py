"""The Slack approval message (pure): Block Kit built with slack_sdk's models, which check
Slack's limits as they serialise.

The message carries what an approver needs to decide without leaving Slack — each call's tool
and target, where it runs, its diff as the gate recorded it (secret values already sealed: a
fingerprint, never the value), risk flags, required approvals, who asked, expiry — and the
buttons the gate and the gateway agree on (docs/architecture.md, "The Slack approval message"):
`interlock.approve` / `interlock.deny` carry `{"approval_id", "call_hashes", "expires_at"}`,
`interlock.open` links to the card. A card the gate counts only key-signed decisions for
(`key_signed_only`) gets Open alone. Once decided or expired, the same message is rebuilt with
the outcome in place of the buttons.

Everything shown came from a cluster or a model: it is escaped (`&`, `<`, `>`), so a value
cannot mention `@channel` or disguise a link, and code spans cannot be closed from inside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from schemas.approval import ApprovalCall, ApprovalRequested
from services.runtime.sealing.blobs import show_refs

# Slack's limits (api.slack.com/reference/block-kit): blocks per message, section text, a
# section field, header text, button value and url, the top-level fallback text we send.
MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_VALUE = 2000
BUTTON_URL = 3000
FALLBACK_TEXT = 3000
# Our own budgets, so that a 30-call batch still reads (and fits) in a channel.
CALL_TEXT = 1400  # one call: its heading, where, and its diff
DIFF_LINES = 12  # changes shown per call; the card has them all
VALUE_TEXT = 200  # one before/after value
CALLS_TEXT = 24_000  # every call together

APPROVE, DENY, OPEN = "interlock.approve", "interlock.deny", "interlock.open"
ACTIONS_BLOCK = "interlock.actions"
OUTCOME_BLOCK = "interlock.outcome"

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def esc(text: str) -> str:
    """Slack's three control characters escaped, as its docs ask: nothing shown can become a
    mention (`<!channel>`), a user link or a disguised URL."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis when cut, never half an escape."""
    if len(text) <= limit:
        return text
    return _ENTITY_TAIL.sub("", text[: limit - 1]) + "…"


def code(text: str) -> str:
    """Inline code that its content cannot close (a backtick inside becomes a prime)."""
    return "`" + text.replace("`", "\u02b9") + "`"


def link(public_url: str, session_id: str, approval_id: str) -> str:
    return f"{public_url.rstrip('/')}/#session={session_id}&approval={approval_id}"


def button_value(request: ApprovalRequested) -> str:
    """The JSON the gate checks a click against: which approval, its calls, its expiry — the
    expiry exactly as the event serialises it."""
    expires = msgspec.to_builtins(request.expires_at)
    return json.dumps({"approval_id": request.approval_id,
                       "call_hashes": [c.call_hash for c in request.calls],
                       "expires_at": expires}, separators=(",", ":"))


def slack_date(when: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A time every reader sees in their own zone, with the UTC ISO text as the fallback."""
    iso = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{fmt}|{iso}>"


def _value(v: Any) -> str:
    if v is None:
        return "∅"
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
    # A reference to a sealed value is written as the card writes it (its fingerprint).
    return clip(esc(show_refs(text)), VALUE_TEXT)


def where(call: ApprovalCall) -> str:
    t = call.target
    obj = f"{t.kind or 'object'}/{t.name}" if t.name else (t.kind or "")
    parts = [code(esc(obj))] if obj else []
    if t.namespace:
        parts.append(f"in {code(esc(t.namespace))}")
    cluster = call.runs_on()
    if cluster:
        parts.append(f"on cluster {code(esc(cluster))}")
    return " ".join(parts)


def call_text(n: int, call: ApprovalCall) -> str:
    """One call: `*1. scale* deployment/web in shop on cluster prod-eu`, its diff (as much as fits,
    the rest counted), its dry run's word."""
    head = clip(f"*{n}. {esc(call.tool)}* {where(call)}".rstrip(), 400)
    notes = []
    br = call.blast_radius
    if br.summary:
        notes.append(f"_{clip(esc(br.summary), 300)}_")
    if call.preview_error:
        notes.append(f":warning: dry run: {clip(esc(call.preview_error), 300)}")
    room = CALL_TEXT - len(head) - sum(len(x) + 1 for x in notes) - 60
    lines = []
    for change in call.diff[:DIFF_LINES]:
        line = (f"• {code(clip(esc(change.path), 200))}: {_value(change.before)} → "
                f"{_value(change.after)}")
        if len(line) + 1 > room:
            break
        lines.append(line)
        room -= len(line) + 1
    if len(lines) < len(call.diff):
        lines.append(f"• … {len(call.diff) - len(lines)} more changes (open the card)")
    return "\n".join([head, *lines, *notes])


def title(request: ApprovalRequested) -> str:
    if request.title:
        return request.title
    if not request.calls:
        return request.approval_id
    first = request.calls[0]
    more = f" and {len(request.calls) - 1} more" if len(request.calls) > 1 else ""
    return f"{first.tool} {first.target.describe()}{more}"


def _plain(text: str, limit: int) -> PlainTextObject:
    return PlainTextObject(text=clip(text, limit), emoji=True)


def _md(text: str, limit: int = SECTION_TEXT) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, limit))


def _calls_blocks(request: ApprovalRequested, room: int) -> list[Block]:
    """The calls packed into as few sections as fit, at most `room` of them; what does not fit
    is counted in the last one (the card has everything)."""
    texts = [call_text(i, c) for i, c in enumerate(request.calls, 1)]
    sections: list[str] = []
    used = 0
    shown = 0
    for text in texts:
        if used + len(text) > CALLS_TEXT:
            break
        if sections and len(sections[-1]) + 2 + len(text) <= SECTION_TEXT:
            sections[-1] += "\n\n" + text
        elif len(sections) < room - 1:
            sections.append(text)
        else:
            break
        used += len(text)
        shown += 1
    rest = len(texts) - shown
    if rest:
        sections.append(f"… and {rest} more call{'s' if rest > 1 else ''}: open the card to "
                        "see them all.")
    return [SectionBlock(text=_md(s)) for s in sections]


def places(request: ApprovalRequested) -> str:
    """The namespaces and clusters the calls act in, each once: `shop` on cluster `prod-eu`."""
    seen: list[str] = []
    for call in request.calls:
        t = call.target
        ns = code(esc(t.namespace)) if t.namespace else "cluster-wide"
        cluster = call.runs_on()
        place = f"{ns} on cluster {code(esc(cluster))}" if cluster else ns
        if place not in seen:
            seen.append(place)
    more = f" and {len(seen) - 5} more" if len(seen) > 5 else ""
    return ", ".join(seen[:5]) + more if seen else "—"


def _essentials(request: ApprovalRequested) -> list[Block]:
    asked = esc(request.requested_by or "someone")
    if request.requested_via:
        asked += f" via {esc(request.requested_via)}"
    fields = [
        _md(f"*Asked by*\n{asked}", FIELD_TEXT),
        _md(f"*Approvals needed*\n{request.required_approvals}", FIELD_TEXT),
        _md(f"*Expires*\n{slack_date(request.expires_at)}", FIELD_TEXT),
        _md(f"*Where*\n{places(request)}", FIELD_TEXT),
    ]
    blocks: list[Block] = [SectionBlock(fields=fields)]
    if request.risk_flags:
        flags = ", ".join(esc(f) for f in request.risk_flags)
        blocks.append(SectionBlock(text=_md(f":warning: *Risk:* {flags}")))
    if request.rationale:
        blocks.append(SectionBlock(text=_md(f"*Why:* {clip(esc(request.rationale), 600)}")))
    return blocks


@dataclass(frozen=True)
class Outcome:
    """How an approval ended, as the gate recorded it; for a grant, what the executor did with
    each call so far (`ran`: "ok", "error", "unknown" or "refused: <why>", in call order)."""

    kind: Literal["granted", "denied", "amended", "expired"]
    at: datetime
    approver: str = ""
    reason: str = ""
    ran: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "at": self.at.isoformat(), "approver": self.approver,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, str], ran: tuple[str, ...] = ()) -> Outcome:
        kind = d.get("kind", "")
        if kind not in ("granted", "denied", "amended", "expired"):
            raise ValueError(f"not an outcome: {kind!r}")
        return cls(kind, datetime.fromisoformat(d["at"]),  # type: ignore[arg-type]
                   approver=d.get("approver", ""), reason=d.get("reason", ""), ran=ran)

    def heading(self) -> str:
        match self.kind:
            case "granted":
                return f"Approved by {self.approver}"
            case "denied":
                return f"Denied by {self.approver}"
            case "amended":
                return f"Changed by {self.approver}"
            case _:
                return "Expired"

    def text(self, calls: int = 1) -> str:
        when = slack_date(self.at, "{time}")
        match self.kind:
            case "granted":
                done = f":white_check_mark: *Approved by {esc(self.approver)}* at {when}"
                return done + (f"\n{ran_text(self.ran, calls)}" if self.ran else "")
            case "denied":
                why = f": {clip(esc(self.reason), 1500)}" if self.reason else ""
                return f":no_entry: *Denied by {esc(self.approver)}*{why} (at {when})"
            case "amended":
                return (f":pencil2: *Changed by {esc(self.approver)}* at {when}: they approved "
                        "other arguments, which wait for their own approval.")
            case _:
                return f":hourglass: *Expired* without a decision at {when}"


def ran_text(ran: Sequence[str], calls: int) -> str:
    """What the executor did with the granted calls: `Ran: 2 ok, 1 failed; 1 still to run`."""
    ok = sum(1 for r in ran if r == "ok")
    failed = sum(1 for r in ran if r == "error")
    unknown = sum(1 for r in ran if r == "unknown")
    refused = [r.removeprefix("refused: ") for r in ran if r.startswith("refused")]
    parts = [f"{ok} ok" if ok else "", f"{failed} failed" if failed else "",
             f"{unknown} with an unknown outcome" if unknown else "",
             f"{len(refused)} not run ({clip(esc(refused[0]), 300)})" if refused else ""]
    text = ", ".join(p for p in parts if p)
    left = calls - len(ran)
    if left > 0:
        text += f"; {left} still to run"
    icon = ":gear:" if left > 0 else (":white_check_mark:" if ok == len(ran) else ":x:")
    return f"{icon} *Ran:* {text}"


def decidable_in_slack(request: ApprovalRequested) -> bool:
    """Whether the message may carry Approve/Deny: not when only a person's own key counts,
    nor when the calls' hashes do not fit a button (the gate must see them all)."""
    return not key_signed_only(request) and len(button_value(request)) <= BUTTON_VALUE


def key_signed_only(request: ApprovalRequested) -> bool:
    return request.key_signed_only


def _actions(request: ApprovalRequested, url: str) -> list[Block]:
    open_button = ButtonElement(text="Open in Interlock", action_id=OPEN, url=url)
    if key_signed_only(request):
        note = (":lock: This request touches a namespace where only a decision signed with a "
                "person's own key counts: approve it with a passkey in the Command Center, or "
                f"with {code('interlock approve ' + esc(request.approval_id))}.")
        return [SectionBlock(text=_md(note)),
                ActionsBlock(block_id=ACTIONS_BLOCK, elements=[open_button])]
    if not decidable_in_slack(request):
        note = (f"This request has {len(request.calls)} calls, more than a Slack button can "
                "carry: decide it in the Command Center.")
        return [SectionBlock(text=_md(note)),
                ActionsBlock(block_id=ACTIONS_BLOCK, elements=[open_button])]
    value = button_value(request)
    n = len(request.calls)
    confirm = ConfirmObject(
        title="Approve this change?" if n == 1 else f"Approve these {n} changes?",
        text=clip(f"Interlock will run {esc(title(request))} as shown.", 300),
        confirm="Approve", deny="Cancel")
    return [ActionsBlock(block_id=ACTIONS_BLOCK, elements=[
        ButtonElement(text="Approve", action_id=APPROVE, value=value, style="primary",
                      confirm=confirm),
        ButtonElement(text="Deny", action_id=DENY, value=value, style="danger"),
        open_button,
    ])]


def message(request: ApprovalRequested, public_url: str,
            outcome: Outcome | None = None) -> dict[str, Any]:
    """`text` (the notification's fallback) and `blocks` for chat.postMessage / chat.update:
    the request with its buttons, or with `outcome` in their place."""
    url = link(public_url, request.session_id, request.approval_id)
    if len(url) > BUTTON_URL:  # ids are short; a public URL this long is a misconfiguration
        raise ValueError("INTERLOCK_PUBLIC_URL is too long for a Slack button")
    what = title(request)
    head = outcome.heading() if outcome else "Approval needed"
    top: list[Block] = [HeaderBlock(text=_plain(f"{head}: {what}", HEADER_TEXT)),
                        *_essentials(request)]
    tail: list[Block]
    if outcome is None:
        tail = _actions(request, url)
    else:
        tail = [SectionBlock(block_id=OUTCOME_BLOCK, text=_md(outcome.text(len(request.calls))))]
    ids = f"approval {code(esc(request.approval_id))} · session {code(esc(request.session_id))}"
    tail.append(ContextBlock(elements=[_md(f"{ids} · <{url}|Open the card>")]))
    room = MAX_BLOCKS - len(top) - len(tail)
    blocks = [*top, *_calls_blocks(request, room), *tail]
    fallback = f"{head}: {esc(what)}"
    if outcome is None and request.requested_by:
        fallback += f" (asked by {esc(request.requested_by)})"
    if outcome is not None and outcome.kind == "denied" and outcome.reason:
        fallback += f": {esc(outcome.reason)}"
    return {"text": clip(fallback, FALLBACK_TEXT),
            "blocks": [b.to_dict() for b in blocks]}


def texts(blocks: Sequence[dict[str, Any]]) -> str:
    """Every text of a message's blocks, joined: what a reader (or a test) can see."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "text" and isinstance(v, str):
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(list(blocks))
    return "\n".join(out)
