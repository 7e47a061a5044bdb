"""Every NATS subject, stream and consumer name, computed in one place.

Event subjects name their emitter, so the server's publish permissions — not trust — decide who
may say what: `evt.<session>.<emitter>.<noun>.<verb>.<key>`. A consumer re-checks that the
subject and the payload agree before believing an event.
"""

from __future__ import annotations

from typing import Literal

from schemas.base import Emitter, Event
from schemas.ids import check_token

EVENTS_STREAM = "EVENTS"
EVENTS_PREFIX = "evt"
LIVE_PREFIX = "sse"  # EVENTS republishes every stored event here, with its stream sequence
# Core NATS, not stored: the planner's token deltas while a model answers (`delta.<session>`).
# Only complete messages are events; a client that misses deltas loses nothing.
DELTA_PREFIX = "delta"
SERVICES: tuple[Emitter, ...] = ("gateway", "planner", "gate", "executor")
# Secret values of proposed writes, sealed to the executor, outside the log:
# `sealed.<sealer>.<session>.<blob id>` in the SEALED stream (services/runtime/sealing/).
SEALED_STREAM = "SEALED"
SEALED_PREFIX = "sealed"
SEALERS: tuple[Emitter, ...] = ("gateway", "planner")  # the services that first hold a secret
# Services that read the log but emit no events (their NATS users may publish none).
OBSERVERS: tuple[str, ...] = ("notifier",)

# What an executor runs: a read, the dry run (preview) of a write, an approved write.
ExecKind = Literal["read", "write", "preview"]


class SubjectMismatch(ValueError):
    """A message whose subject does not match its payload: forged or misrouted."""


def event_subject(event: Event) -> str:
    session = check_token(event.session_id, "session id")
    key = check_token(event.key(), "event key")
    return f"{EVENTS_PREFIX}.{session}.{event.emitter}.{event.type}.{key}"


def session_filter(session_id: str) -> str:
    return f"{EVENTS_PREFIX}.{check_token(session_id, 'session id')}.>"


def live_filter(session_id: str) -> str:
    return f"{LIVE_PREFIX}.{check_token(session_id, 'session id')}.>"


def delta_subject(session_id: str) -> str:
    return f"{DELTA_PREFIX}.{check_token(session_id, 'session id')}"


def tag_filter(emitter: Emitter, tag: str, session_id: str = "*", key: str = "*") -> str:
    return f"{EVENTS_PREFIX}.{session_id}.{emitter}.{tag}.{key}"


def emitter_publish_allow(emitter: Emitter) -> str:
    return f"{EVENTS_PREFIX}.*.{emitter}.>"


def sealed_subject(sealer: str, session_id: str, blob_id: str) -> str:
    return (f"{SEALED_PREFIX}.{check_token(sealer, 'sealer')}."
            f"{check_token(session_id, 'session id')}.{check_token(blob_id, 'blob id')}")


def parse_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(session, emitter, tag, key) of an event (or live) subject."""
    parts = subject.split(".")
    if len(parts) != 6 or parts[0] not in (EVENTS_PREFIX, LIVE_PREFIX):
        raise SubjectMismatch(f"not an event subject: {subject!r}")
    _, session, emitter, noun, verb, key = parts
    return session, emitter, f"{noun}.{verb}", key


def check_subject(subject: str, event: Event) -> None:
    """Raises SubjectMismatch unless the subject is exactly the one this event belongs on."""
    session, emitter, tag, key = parse_event_subject(subject)
    if (session, emitter, tag, key) != (event.session_id, event.emitter, event.type, event.key()):
        raise SubjectMismatch(
            f"subject {subject!r} does not match a {event.type} event from {event.emitter}"
        )


# Durable consumers, provisioned by the admin identity at start-up. Filters are per service.
CONSUMER_FILTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "planner": (
        EVENTS_STREAM,
        (
            tag_filter("gateway", "user.message"),
            tag_filter("gateway", "tool.requested"),  # an MCP client's call (issue 19)
            tag_filter("gateway", "session.cancelled"),
            tag_filter("executor", "tool.result"),
            tag_filter("gate", "tool.refused"),
            tag_filter("gate", "approval.denied"),
            tag_filter("gate", "approval.expired"),
            # A write's verdict ("not as approved": an HPA set it back) comes after its result;
            # the person and the model must hear it.
            tag_filter("executor", "tool.verified"),
        ),
    ),
    "gate": (
        EVENTS_STREAM,
        (
            tag_filter("planner", "tool.proposed"),
            tag_filter("executor", "preview.recorded"),
            tag_filter("gateway", "approval.decided"),
            # Its own amended calls: classified from the log like any proposal, so a gate
            # killed after recording one still classifies it (issue 17).
            tag_filter("gate", "tool.amended"),
        ),
    ),
    # The executor's work is the gate's own recorded facts (issue 17, commands are events): a
    # classification releases a read or the dry run of a write, an approval's signed grants
    # release writes. One executor consumer for all of it (`interlock up`, compose) ...
    "executor": (
        EVENTS_STREAM,
        (tag_filter("gate", "tool.classified"), tag_filter("gate", "approval.granted")),
    ),
    # ... or two, so that reads and writes can run under different Kubernetes identities
    # (deploy/k8s: a read-only and a write ServiceAccount). See EXECUTOR_LAYOUTS. Both see every
    # classification (a subject does not say its access), and each skips — acks, unverified —
    # those of the other's kind: one extra delivery per call on a split deployment, the price
    # of one log with no command copies.
    "executor-read": (EVENTS_STREAM, (tag_filter("gate", "tool.classified"),)),
    "executor-write": (
        EVENTS_STREAM,
        (tag_filter("gate", "tool.classified"), tag_filter("gate", "approval.granted")),
    ),
    # Webhooks for approvals; shared by every notifier instance, so each is sent once. The
    # executor's word on a call lets the Slack message of a granted approval say it ran.
    "notifier": (
        EVENTS_STREAM,
        (
            tag_filter("gate", "approval.requested"),
            tag_filter("gate", "approval.granted"),
            tag_filter("gate", "approval.denied"),
            tag_filter("gate", "approval.expired"),
            tag_filter("executor", "tool.result"),
            tag_filter("executor", "command.refused"),
        ),
    ),
}

# A deployment provisions one layout of executor consumers (two layouts at once would run
# every call twice). "single": `executor` runs everything. "split": `executor-read` runs reads
# only and `executor-write` previews (a server-side dry run needs write permissions) and writes.
EXECUTOR_LAYOUTS: dict[str, tuple[str, ...]] = {
    "single": ("executor",),
    "split": ("executor-read", "executor-write"),
}
# An executor's role (INTERLOCK_EXECUTOR_ROLE) -> the consumer it binds and what it runs.
EXECUTOR_ROLES: dict[str, tuple[str, tuple[ExecKind, ...]]] = {
    "all": ("executor", ("read", "preview", "write")),
    "read": ("executor-read", ("read",)),
    "write": ("executor-write", ("preview", "write")),
}
EXECUTOR_CONSUMERS: tuple[str, ...] = tuple(
    c for layout in EXECUTOR_LAYOUTS.values() for c in layout)
