"""Every NATS subject, stream and consumer name, computed in one place.

Event subjects name their emitter, so the server's publish permissions — not trust — decide who
may say what: `evt.<session>.<emitter>.<noun>.<verb>.<key>`. A consumer re-checks that the
subject and the payload agree before believing an event.

Cluster-bound events (Event.cluster() is not None: the gate's commands and every executor
event) carry a 7th token, their cluster's (cluster_token): `…<key>.<cluster>`, so that one
cluster's executor identity may take only its cluster's commands and write only its cluster's
results (issue 21). Events stored before that have 6 tokens and are still read.
"""

from __future__ import annotations

import hashlib
import re
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
# Presence (issue 21): each executor puts `<cluster token>.<role>` in this KV bucket every few
# seconds (services/runtime/presence.py); a key not refreshed for a while means "not connected".
PRESENCE_BUCKET = "CLUSTERS"
PRESENCE_STREAM = f"KV_{PRESENCE_BUCKET}"
# Services that read the log but emit no events (their NATS users may publish none).
OBSERVERS: tuple[str, ...] = ("notifier",)

# What an executor runs: a read, the dry run (preview) of a write, an approved write.
ExecKind = Literal["read", "write", "preview"]


class SubjectMismatch(ValueError):
    """A message whose subject does not match its payload: forged or misrouted."""


class ClusterMismatch(SubjectMismatch):
    """An event on its own subject in every respect but the cluster token: another cluster's
    (a command re-published on another cluster's subject, issue 21)."""


# The token of a call that names no cluster (`Target.cluster == ""`: the executor's current
# context, in a deployment without INTERLOCK_CLUSTERS).
NO_CLUSTER = "_"
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What cluster_token makes of any other name; such a name itself is hashed too, so no cluster
# can be named after another's token.
_HASHED = re.compile(r"x-[0-9a-f]{20}")
# The cluster-bound tags (Event.cluster() is not None): every executor event, and these.
CLUSTER_BOUND_GATE_TAGS: frozenset[str] = frozenset({"tool.classified", "approval.granted"})


def cluster_token(name: str) -> str:
    """A cluster's subject token: its name when that is a safe token, else `x-` + 20 hex of its
    sha256 (kubeconfig context names such as EKS ARNs hold `:`, `/`, `.`). "" -> NO_CLUSTER."""
    if name == "":
        return NO_CLUSTER
    if _CLUSTER_NAME.fullmatch(name) and name != NO_CLUSTER and not _HASHED.fullmatch(name):
        return name
    return "x-" + hashlib.sha256(name.encode()).hexdigest()[:20]


def cluster_bound(emitter: str, tag: str) -> bool:
    """Whether events of this emitter and tag carry a cluster token (see the module docstring)."""
    return emitter == "executor" or (emitter == "gate" and tag in CLUSTER_BOUND_GATE_TAGS)


def event_subject(event: Event) -> str:
    session = check_token(event.session_id, "session id")
    key = check_token(event.key(), "event key")
    subject = f"{EVENTS_PREFIX}.{session}.{event.emitter}.{event.type}.{key}"
    cluster = event.cluster()
    return subject if cluster is None else f"{subject}.{cluster_token(cluster)}"


def presence_key(cluster: str, role: str) -> str:
    """An executor's presence key: `<cluster token>.<role>` (role: an EXECUTOR_ROLES key)."""
    if role not in EXECUTOR_ROLES:
        raise ValueError(f"unknown executor role {role!r}")
    return f"{cluster_token(cluster)}.{role}"


def presence_subject(cluster: str, role: str) -> str:
    return f"$KV.{PRESENCE_BUCKET}.{presence_key(cluster, role)}"


def once_filter(subject: str) -> str:
    """What an event recorded once per key is checked against: its own subject, or for one of
    the gate's cluster-bound events (its commands) its key under ANY cluster token
    (`<6 tokens>.*`), so that a call is classified, and an approval granted, once even if the
    cluster it resolves to changed in between (a restarted gate with another default cluster).

    An executor's events stay once per key on their own subject, i.e. per cluster: a call runs
    on its one cluster, and another cluster's executor event about it is not believed
    (schemas/lifecycle.py `misrouted`) — but were it counted here, a compromised spoke could
    record a "result" for another cluster's call first and so keep the real one out of the
    log."""
    parts = subject.split(".")
    if len(parts) == 7 and parts[2] == "gate":
        return ".".join((*parts[:6], "*"))
    return subject


def session_filter(session_id: str) -> str:
    return f"{EVENTS_PREFIX}.{check_token(session_id, 'session id')}.>"


def live_filter(session_id: str) -> str:
    return f"{LIVE_PREFIX}.{check_token(session_id, 'session id')}.>"


def delta_subject(session_id: str) -> str:
    return f"{DELTA_PREFIX}.{check_token(session_id, 'session id')}"


def tag_filter(emitter: Emitter, tag: str, session_id: str = "*", key: str = "*",
               cluster: str | None = None) -> str:
    """Events of one tag (of a session, of a key). For a cluster-bound tag: of one cluster when
    `cluster` is given; else any key ends in `.>`, matching 6 and 7 tokens (events stored before
    issue 21 too), and one key ends in `.*`, any cluster's."""
    base = f"{EVENTS_PREFIX}.{session_id}.{emitter}.{tag}"
    if not cluster_bound(emitter, tag):
        if cluster is not None:
            raise ValueError(f"{emitter} {tag} events are not bound to a cluster")
        return f"{base}.{key}"
    if cluster is not None:
        return f"{base}.{key}.{cluster_token(cluster)}"
    return f"{base}.>" if key == "*" else f"{base}.{key}.*"


def emitter_publish_allow(emitter: Emitter) -> str:
    return f"{EVENTS_PREFIX}.*.{emitter}.>"


def sealed_subject(sealer: str, session_id: str, blob_id: str) -> str:
    return (f"{SEALED_PREFIX}.{check_token(sealer, 'sealer')}."
            f"{check_token(session_id, 'session id')}.{check_token(blob_id, 'blob id')}")


def parse_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(session, emitter, tag, key) of an event (or live) subject: 6 tokens, or 7 for a
    cluster-bound event (subject_cluster gives the 7th)."""
    parts = subject.split(".")
    if len(parts) not in (6, 7) or parts[0] not in (EVENTS_PREFIX, LIVE_PREFIX):
        raise SubjectMismatch(f"not an event subject: {subject!r}")
    _, session, emitter, noun, verb, key = parts[:6]
    return session, emitter, f"{noun}.{verb}", key


def subject_cluster(subject: str) -> str | None:
    """The cluster token of an event subject (its 7th token), or None (6 tokens: an event
    that is not cluster-bound, or one stored before issue 21)."""
    parts = subject.split(".")
    return parts[6] if len(parts) == 7 else None


def check_subject(subject: str, event: Event) -> None:
    """Raises SubjectMismatch unless the subject is exactly the one this event belongs on.
    A cluster-bound event stored before issue 21 has no cluster token (6 tokens): still
    believed, only the gate and executor identities could write those."""
    session, emitter, tag, key = parse_event_subject(subject)
    if (session, emitter, tag, key) != (event.session_id, event.emitter, event.type, event.key()):
        raise SubjectMismatch(
            f"subject {subject!r} does not match a {event.type} event from {event.emitter}"
        )
    token = subject_cluster(subject)
    if token is None:
        return
    cluster = event.cluster()
    if cluster is None or token != cluster_token(cluster):
        raise ClusterMismatch(
            f"subject {subject!r} names cluster token {token!r}, but the {event.type} event "
            f"is {'not bound to a cluster' if cluster is None else f'for cluster {cluster!r}'}"
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


# Per-cluster mode (INTERLOCK_CLUSTERS set, issue 21): one executor identity per cluster, and
# per cluster the durables of one layout, each taking only its cluster's commands.
def executor_durable(role: str, cluster: str | None) -> str:
    """The durable an executor of this role binds: `executor_<ctok>` / `executor-read_<ctok>` /
    `executor-write_<ctok>` for a cluster, the shared legacy name for None."""
    base = EXECUTOR_ROLES[role][0]
    return base if cluster is None else f"{base}_{cluster_token(cluster)}"


def executor_filters(role: str, cluster: str | None) -> tuple[str, ...]:
    """What an executor of this role consumes: the classifications (and, unless it only reads,
    the grants) of its cluster; of every cluster for None (the legacy layouts)."""
    if cluster is None:
        return CONSUMER_FILTERS[EXECUTOR_ROLES[role][0]][1]
    tags = ("tool.classified",) if role == "read" else ("tool.classified", "approval.granted")
    return tuple(tag_filter("gate", t, cluster=cluster) for t in tags)


def executor_consumers(clusters: tuple[str, ...], layout: str = "single"
                       ) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The executor durables of a per-cluster deployment: durable -> (stream, filters)."""
    roles = {"single": ("all",), "split": ("read", "write")}[layout]
    return {executor_durable(r, c): (EVENTS_STREAM, executor_filters(r, c))
            for c in clusters for r in roles}


def durable_cluster(durable: str) -> tuple[str, str] | None:
    """(role's base durable, cluster token) of a per-cluster executor durable, else None."""
    base, sep, token = durable.partition("_")
    return (base, token) if sep and base in EXECUTOR_CONSUMERS and token else None
