"""The event bus: connect as a service's own NATS user, append events, read them back, and
consume a durable consumer with one reviewed ack policy. Each role is a module of its own
(connection, log, reader, consume); Bus is all of them on one connection."""

from __future__ import annotations

from services.runtime.connection import TRANSIENT
from services.runtime.consume import (
    HELD_PER_SESSION,
    SESSIONS_AT_ONCE,
    Consumer,
    Dispatcher,
    handle_with_policy,
    session_of,
)
from services.runtime.log import Log, write_error
from services.runtime.reader import (
    DIRECT_GET,
    READ_BATCH,
    SESSION_CACHE_BYTES,
    STALE_READ_WAIT_S,
)
from services.runtime.stored import Link, Stored, decode_stored

__all__ = [
    "DIRECT_GET",
    "HELD_PER_SESSION",
    "READ_BATCH",
    "SESSIONS_AT_ONCE",
    "SESSION_CACHE_BYTES",
    "STALE_READ_WAIT_S",
    "TRANSIENT",
    "Bus",
    "Dispatcher",
    "Link",
    "Stored",
    "decode_stored",
    "handle_with_policy",
    "session_of",
    "write_error",
]


class Bus(Log, Consumer):
    """A service's bus: appends (Log), reads (Reader) and consumes (Consumer)."""
