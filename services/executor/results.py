"""What the executor records of the cluster's answers: every string masked (redact.py), every
size bounded, so that one event holds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from schemas.base import Event
from schemas.execution import CommandRefused, PreviewRecorded, ToolResult, ToolVerified
from services.executor.domain import Work
from services.executor.kube import Outcome
from services.executor.redact import scrub

ACTOR = "executor"
E = TypeVar("E", bound=Event)
MAX_OUTPUT = 16_000
MAX_DATA = 48_000


# What each event the executor appends carries from the cluster: every string in it is masked
# (services/executor/redact.py), whichever path produced it — reads, errors, previews, checks.
_CONTENT: dict[type[Event], tuple[str, ...]] = {
    ToolResult: ("output", "data", "before", "after"),
    PreviewRecorded: ("error", "gathered"),
    ToolVerified: ("check", "detail", "observed"),
    CommandRefused: ("reason",),
}


def clean(event: E) -> E:
    """The event with credential shapes masked in every field that holds cluster content."""
    changes = {f: scrub(getattr(event, f)) for f in _CONTENT.get(type(event), ())}
    if isinstance(event, PreviewRecorded):
        changes["diff"] = tuple(msgspec.structs.replace(
            c, path=scrub(c.path), before=scrub(c.before), after=scrub(c.after))
            for c in event.diff)
    return msgspec.structs.replace(event, **changes)


def result_of(work: Work, out: Outcome) -> ToolResult:
    """A tool's outcome as its recorded result: credentials masked, sizes bounded."""
    text, truncated = bounded_text(out.text, scrub)
    data, data_cut = bounded_data(scrub(out.data))
    return ToolResult(
        session_id=work.session_id, call_id=work.call_id, tool=work.tool, status="ok",
        output=text, truncated=truncated or data_cut, data=data,
        before=bounded_data(scrub(out.before))[0], after=bounded_data(scrub(out.after))[0],
        actor=ACTOR, causation_id=work.causation_id,
    )


# Masked beyond the cut by this much, so a credential across it is recognised whole (a longer
# private key is masked to the end of what is shown: its END line is not needed).
CUT_MARGIN = 4096


def bounded_text(text: str, mask: Callable[[str], str] = str) -> tuple[str, bool]:
    """At most MAX_OUTPUT characters, `mask`ed — only what is shown, and before it is cut."""
    if len(text) <= MAX_OUTPUT:
        return mask(text), False
    note = f"\n… [truncated: {len(text) - MAX_OUTPUT} more characters; narrow the query]"
    return mask(text[: MAX_OUTPUT + CUT_MARGIN])[: MAX_OUTPUT - len(note)] + note, True


def bounded_data(data: Any) -> tuple[Any, bool]:
    """Structured data small enough for one event; larger data is replaced by a note."""
    if data is None:
        return None, False
    size = len(msgspec.json.encode(data))
    if size <= MAX_DATA:
        return data, False
    return {"truncated": True, "note": f"{size} bytes of data left out (limit {MAX_DATA}); "
                                       "the text output has a summary"}, True
