"""The base of every event: identity, time, actor, causality."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from schemas.ids import new_event_id

Emitter = Literal["gateway", "planner", "gate", "executor"]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
# Text that came from an LLM, a user or a cluster is bounded so one event can never be huge.
ShortText = Annotated[str, msgspec.Meta(max_length=2_000)]
LongText = Annotated[str, msgspec.Meta(max_length=64_000)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A past-tense fact in a session's log. Subclasses set `tag=` and `emitter`."""

    emitter: ClassVar[Emitter]

    session_id: str
    event_id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: UtcTime = msgspec.field(default_factory=utcnow)
    actor: str = ""
    causation_id: str = ""
    correlation_id: str = ""
    # Tamper evidence: the stream sequence and sha256 of the session's previous stored event,
    # as the appender saw it (schemas/chain.py verifies the chain).
    prev_seq: int = 0
    prev_hash: str = ""

    @property
    def type(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def key(self) -> str:
        """The last subject token; events that must happen at most once per key use it."""
        return self.event_id

    def cluster(self) -> str | None:
        """The cluster this event is bound to (its subject's 7th token, see
        schemas/subjects.cluster_token), or None: not cluster-bound. Cluster-bound are the
        gate's commands (a classification, a grant) and every executor event, so that the NATS
        identity of one cluster's executor can take only that cluster's commands and write only
        that cluster's results (issue 21). "" is the call's own "no cluster named"."""
        return None


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where a call acts: a kubeconfig context, a namespace, an object."""

    cluster: str = ""
    namespace: str = ""
    kind: str = ""
    name: str = ""

    def describe(self) -> str:
        obj = f"{self.kind}/{self.name}" if self.name else self.kind
        where = f" in {self.namespace}" if self.namespace else ""
        ctx = f" on {self.cluster}" if self.cluster else ""
        return f"{obj}{where}{ctx}"
