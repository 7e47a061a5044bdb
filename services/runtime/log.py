"""The log's writing role: append an event, chained to its session and signed, with the
server's optimistic-concurrency checks."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.base import Event
from services.runtime.errors import (
    ConcurrencyConflict,
    ConfigError,
    EventTooLarge,
    LogFull,
    RetryableError,
)
from services.runtime.identity import SIGNATURE_HEADER
from services.runtime.reader import Reader
from services.runtime.stored import Link

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
STREAM_FULL = 10077  # "maximum bytes exceeded": the stream is at max_bytes (discard NEW)
MESSAGE_TOO_LARGE = 10054  # "message size exceeds maximum allowed": over max_msg_size
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


def write_error(subject: str, exc: APIError) -> Exception:
    """What a refused write means, said plainly: a full log is not "an unexpected error"."""
    if exc.err_code == STREAM_FULL:
        stream = S.SEALED_STREAM if subject.startswith(S.SEALED_PREFIX + ".") \
            else S.EVENTS_STREAM
        return LogFull(f"stream {stream} is full (its max_bytes limit is reached): writes are "
                       f"refused until an operator raises the limit; nothing stored is lost")
    if exc.err_code == MESSAGE_TOO_LARGE:
        return EventTooLarge(f"{subject}: larger than the stream's max_msg_size")
    return exc


@dataclass(frozen=True)
class Expect:
    """What the log must hold for an append to be stored: the append's one explicit
    expectation, checked by the server (Nats-Expected-Last-Subject-Sequence, on the subject
    or filter below), so that of two writers racing for the same step exactly one wins.
    Build it with one of the constructors; each says what a ConcurrencyConflict means."""

    # What the server checks: check_filter (None: the event's own subject) ends at check_seq.
    # check_seq None: the session ends at the event this one chains to (session_tail, after).
    check_filter: str | None = None
    check_seq: int | None = None
    # The event this one chains to, when the caller knows it (after, new_key's hint).
    prev: Link | None = None
    # The event's own subject (or key filter) must hold nothing yet (new_key).
    new: bool = False

    @classmethod
    def session_tail(cls) -> Expect:
        """Chain to whatever the session's last event is. Still linearised: if another append
        to the session wins the race, chain to it and try again (never a conflict)."""
        return cls()

    @classmethod
    def new_key(cls, key_filter: str | None = None, *, hint: Link | None = None) -> Expect:
        """Once per key: the event's own subject — or key_filter, e.g.
        `evt.*.executor.tool.started.<call>`, one claim per call across all sessions — must
        hold nothing yet; ConcurrencyConflict if it does (already recorded).

        hint (no key_filter): the link of an event stored before the cause of this one
        existed — e.g. the event that triggered it — so no event of this key can precede it.
        While it is still the session's last event, the append chains to it in one round trip
        under the session check, and is then necessarily the first of its key; otherwise the
        key is checked as usual. Saves the read of the session's last event on the hot path.
        A key filter needs the check on the filter, so it takes no hint."""
        if hint is not None and key_filter is not None:
            raise ValueError("a key filter is checked on the filter: it takes no chain hint")
        return cls(check_filter=key_filter, check_seq=0, prev=hint, new=True)

    @classmethod
    def subject_at(cls, seq: int) -> Expect:
        """The event's own subject must end at this sequence (0: be empty);
        ConcurrencyConflict otherwise."""
        return cls(check_seq=seq)

    @classmethod
    def after(cls, link: Link) -> Expect:
        """The session's last event must still be this one (one next step, e.g. of several
        instances exactly one takes it); ConcurrencyConflict otherwise."""
        return cls(prev=link)


SESSION_TAIL = Expect.session_tail()
NEW_KEY = Expect.new_key()


class Log(Reader):
    """Appends to the log (it reads the session's last event to chain to it: a Reader)."""

    # -- writing -----------------------------------------------------------------------------

    async def append(self, event: Event, expect: Expect = SESSION_TAIL, *,
                     timeout: float = 5.0, attempts: int = 5) -> int:
        """Appends an event (see append_link) and returns its stream sequence."""
        seq, _ = await self.append_link(event, expect, timeout=timeout, attempts=attempts)
        return seq

    async def append_link(self, event: Event, expect: Expect = SESSION_TAIL, *,
                          timeout: float = 5.0, attempts: int = 5) -> Link:
        """Appends an event to the log, chained to the session's previous event, under the
        expectation `expect` (see Expect), and returns its stream sequence and the hash of the
        stored bytes (what the next event chains to). Timeouts are retried with the same
        Nats-Msg-Id, so the server deduplicates a retry after a lost ack."""
        subject = S.event_subject(event)
        session = S.session_filter(event.session_id)
        if expect.new and expect.prev is not None:
            try:
                return await self._put(event, subject, expect.prev, str(expect.prev[0]),
                                       session, timeout, attempts)
            except ConcurrencyConflict:
                pass  # the session moved on since: check the key the usual way
        for _ in range(50):
            if expect.prev is not None and not expect.new:
                prev: Link | None = expect.prev
            else:
                last = await self._last_in_session(event.session_id)
                prev = (last[0], chain.event_hash(last[1])) if last else None
            if expect.check_seq is not None:
                check_seq, check_filter = str(expect.check_seq), expect.check_filter
                if expect.new and check_filter is None and S.subject_cluster(subject):
                    # Once per key whatever its cluster token (S.once_filter) — and not again
                    # over the same key stored before cluster tokens existed.
                    check_filter = S.once_filter(subject)
                    if await self._legacy_key_taken(subject):
                        raise ConcurrencyConflict(f"{subject}: recorded before (6 tokens)")
            else:  # the session must still end where it is chained to
                check_seq, check_filter = str(prev[0] if prev else 0), session
            try:
                return await self._put(event, subject, prev, check_seq, check_filter, timeout,
                                       attempts)
            except ConcurrencyConflict:
                if expect != SESSION_TAIL:
                    raise
                # Another append to the session won the race: chain to it and try again.
        raise ConcurrencyConflict(f"{event.type}: the session is too busy to append to")

    async def _legacy_key_taken(self, subject: str) -> bool:
        """Whether the 6-token subject of a cluster-bound key (as stored before issue 21) holds
        anything. Read, not checked by the server: nothing writes 6-token subjects any more."""
        return await self.last_stored(subject.rsplit(".", 1)[0]) is not None

    async def append_once(self, event: Event, expect: Expect = NEW_KEY) -> Link | None:
        """Appends an event that is recorded once (by default once per subject: see
        Expect.new_key); None if it already was — a redelivered or raced message finds its
        work done, which is not a failure."""
        try:
            return await self.append_link(event, expect)
        except ConcurrencyConflict:
            log.info("already recorded %s", event.type,
                     extra={"session_id": event.session_id, "subject": S.event_subject(event)})
            return None

    async def _put(self, event: Event, subject: str, prev: Link | None, check_seq: str,
                   check_filter: str | None, timeout: float, attempts: int) -> Link:
        """One signed publish of the event chained to `prev`, with the server's check that
        `check_filter` (None: the event's own subject) ends at `check_seq`."""
        chained = msgspec.structs.replace(event, prev_seq=prev[0] if prev else 0,
                                          prev_hash=prev[1] if prev else "")
        headers = {"Nats-Msg-Id": event.event_id, EXPECTED_SEQ: check_seq}
        if check_filter is not None:
            headers[EXPECTED_SEQ_SUBJECT] = check_filter
        data = E.encode(chained)
        headers[SIGNATURE_HEADER] = self._sign(subject, data)
        return await self._publish(subject, data, headers, timeout, attempts), \
            chain.event_hash(data)

    def _sign(self, subject: str, data: bytes) -> str:
        if self.signer is None:
            raise ConfigError(f"{self.service} has no event signing key: it cannot append")
        return self.signer.sign(subject, data)

    async def _publish(
        self, subject: str, data: bytes, headers: dict[str, str], timeout: float, attempts: int
    ) -> int:
        last_exc: Exception | None = None
        for attempt in range(attempts):
            try:
                ack = await self.js.publish(subject, data, timeout=timeout, headers=headers)
                return int(ack.seq)
            except APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConcurrencyConflict(f"{subject}: {exc.description}") from exc
                raise write_error(subject, exc) from exc
            # A stream without a leader (an election) answers 503: NoStreamResponseError.
            except (TimeoutError, NatsTimeoutError, NoRespondersError,
                    NoStreamResponseError) as exc:
                last_exc = exc
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise RetryableError(f"append to {subject} failed: {last_exc}")

    async def log_usage(self) -> tuple[int, int]:
        """The event log's stored bytes and its limit (max_bytes; 0 or less: none)."""
        info = await self.js.stream_info(S.EVENTS_STREAM)
        return int(info.state.bytes), int(info.config.max_bytes or 0)

    async def put_once(self, subject: str, data: bytes) -> None:
        """Stores a message on a subject that must not hold one yet (not an event: unsigned,
        outside EVENTS); ConcurrencyConflict if it does."""
        await self._publish(subject, data, {"Nats-Expected-Last-Subject-Sequence": "0"},
                            timeout=5.0, attempts=3)
