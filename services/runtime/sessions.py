"""What a service has already read of each session, so folding a session for every event it
handles reads only the events that are new since last time.

Safe because the log is append-only and a session's events are read in stream order from its
first one: what is cached is always a prefix of the session, and every read still asks the log
for everything after it. Bounded by the bytes it holds; the least recently used sessions go
first, and a session too large for the budget is simply not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar


class _Stored(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def raw(self) -> bytes: ...


T = TypeVar("T", bound=_Stored)


class SessionCache(Generic[T]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sessions: OrderedDict[str, tuple[list[T], int]] = OrderedDict()
        self._bytes = 0

    def prefix(self, session_id: str) -> list[T]:
        """The events of the session read so far, oldest first (do not mutate)."""
        entry = self._sessions.get(session_id)
        if entry is None:
            return []
        self._sessions.move_to_end(session_id)
        return entry[0]

    def keep(self, session_id: str, events: list[T]) -> None:
        """Remembers `events`, the session from its first event, in order."""
        old = self._sessions.pop(session_id, None)
        known, size = old if old is not None else ([], 0)
        self._bytes -= size
        # Usually the events known before plus a few new ones: count only what is new.
        if not (known and len(events) >= len(known) and events[len(known) - 1] is known[-1]):
            known, size = [], 0
        size += sum(len(s.raw) for s in events[len(known):])
        if not events or size > self.max_bytes // 4:
            return
        self._sessions[session_id] = (events, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._sessions.popitem(last=False)
            self._bytes -= dropped

    def forget(self, session_id: str) -> None:
        old = self._sessions.pop(session_id, None)
        if old is not None:
            self._bytes -= old[1]

    @property
    def size(self) -> tuple[int, int]:
        """(sessions, bytes) held."""
        return len(self._sessions), self._bytes
