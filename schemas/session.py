"""Events of a session's conversation."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from schemas.base import Emitter, Event, LongText, ShortText


class SessionStarted(Event, frozen=True, kw_only=True, tag="session.started"):
    """Emitted by the gateway when a principal opens a session."""

    emitter: ClassVar[Emitter] = "gateway"
    title: ShortText = ""
    # The session's default cluster (issue 21): calls that name none run there. "" = the
    # deployment's default (the first of INTERLOCK_CLUSTERS). `cluster` on the wire; not the
    # attribute `cluster`, which is Event.cluster() (a session start is bound to no cluster).
    cluster_name: ShortText = msgspec.field(default="", name="cluster")
    # Who acted, readably (an OIDC principal's name from its provider's ID token; "" for a
    # static token): shown beside `actor`, never taken for who acted (issue 20).
    actor_name: ShortText = ""


class UserMessage(Event, frozen=True, kw_only=True, tag="user.message"):
    """Emitted by the gateway when a principal sends a message."""

    emitter: ClassVar[Emitter] = "gateway"
    text: LongText
    # Who acted, readably (an OIDC principal's name from its provider's ID token; "" for a
    # static token): shown beside `actor`, never taken for who acted (issue 20).
    actor_name: ShortText = ""


class SessionCancelled(Event, frozen=True, kw_only=True, tag="session.cancelled"):
    """Emitted by the gateway when a principal cancels the run."""

    emitter: ClassVar[Emitter] = "gateway"
    reason: ShortText = ""
    # Who acted, readably (an OIDC principal's name from its provider's ID token; "" for a
    # static token): shown beside `actor`, never taken for who acted (issue 20).
    actor_name: ShortText = ""


class AssistantMessage(Event, frozen=True, kw_only=True, tag="assistant.message"):
    """Emitted by the planner when it says something to the person."""

    emitter: ClassVar[Emitter] = "planner"
    text: LongText


class TurnCompleted(Event, frozen=True, kw_only=True, tag="turn.completed"):
    """Emitted by the planner when it has answered and waits for the person."""

    emitter: ClassVar[Emitter] = "planner"
    reason: ShortText = ""
