"""The log's writing role: append an event, chained to its session and signed, with the
server's optimistic-concurrency checks."""

from __future__ import annotations

import asyncio
from typing import Any

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
from services.runtime.stored import Link, Stored

WRONG_LAST_SEQUENCE = 10071
STREAM_FULL = 10077  # "maximum bytes exceeded": the stream is at max_bytes (discard NEW)
MESSAGE_TOO_LARGE = 10054  # "message size exceeds maximum allowed": over max_msg_size
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


def write_error(subject: str, exc: APIError) -> Exception:
    """What a refused write means, said plainly: a full log is not "an unexpected error"."""
    if exc.err_code == STREAM_FULL:
        stream = S.EXEC_STREAM if subject.startswith(S.EXEC_PREFIX + ".") else S.EVENTS_STREAM
        return LogFull(f"stream {stream} is full (its max_bytes limit is reached): writes are "
                       f"refused until an operator raises the limit; nothing stored is lost")
    if exc.err_code == MESSAGE_TOO_LARGE:
        return EventTooLarge(f"{subject}: larger than the stream's max_msg_size")
    return exc


class Log(Reader):
    """Appends to the log (it reads the session's last event to chain to it: a Reader)."""

    # -- writing -----------------------------------------------------------------------------

    async def append(self, event: Event, **kwargs: Any) -> int:
        """Appends an event (see append_link) and returns its stream sequence."""
        seq, _ = await self.append_link(event, **kwargs)
        return seq

    async def append_link(
        self,
        event: Event,
        *,
        once_per_key: bool = False,
        key_filter: str | None = None,
        expect_subject_seq: int | None = None,
        expect_session_seq: int | None = None,
        after: Stored | None = None,
        after_hint: Link | None = None,
        timeout: float = 5.0,
        attempts: int = 5,
    ) -> Link:
        """Appends an event to the log, chained to the session's previous event, and returns
        its stream sequence and the hash of the stored bytes (what the next event chains to).

        once_per_key: the event's subject must be empty (e.g. one claim per call).
        key_filter (with once_per_key): a subject filter that must be empty instead, e.g.
        `evt.*.executor.tool.started.<call>` — one claim per call across all sessions, enforced
        by the server (Nats-Expected-Last-Subject-Sequence 0 with this filter).
        expect_subject_seq: the event's own subject must end at this sequence (0: empty).
        expect_session_seq / after: the session's last event must still be this one (one next
        step); raises ConcurrencyConflict otherwise. Without any of these, the append is still
        linearised: it chains to the session's last event and retries if another append won.
        Timeouts are retried with the same Nats-Msg-Id, so the server deduplicates a retry
        after a lost ack.

        after_hint (with once_per_key): the (seq, hash) of an event that was stored before the
        cause of this one existed — e.g. the event that triggered it — so no event of this key
        can precede it. If it is still the session's last event, the append chains to it in one
        round trip under the session check, and is then necessarily the first of its key;
        otherwise the usual once-per-key append follows. Saves the read of the session's last
        event on the hot path.
        """
        subject = S.event_subject(event)
        # The hint's check is on the session; a key filter needs the check on the filter.
        if after_hint is not None and once_per_key and key_filter is None:
            chained = msgspec.structs.replace(event, prev_seq=after_hint[0],
                                              prev_hash=after_hint[1])
            headers = {"Nats-Msg-Id": event.event_id, EXPECTED_SEQ: str(after_hint[0]),
                       EXPECTED_SEQ_SUBJECT: S.session_filter(event.session_id)}
            data = E.encode(chained)
            headers[SIGNATURE_HEADER] = self._sign(subject, data)
            try:
                return await self._publish(subject, data, headers, timeout, attempts), \
                    chain.event_hash(data)
            except ConcurrencyConflict:
                pass  # the session moved on since: check the key the usual way
        own_subject_check = once_per_key or expect_subject_seq is not None
        caller_occ = after is not None or expect_session_seq is not None
        for _ in range(50):
            if after is not None:
                prev: tuple[int, bytes] | None = (after.seq, after.raw)
            elif expect_session_seq is not None:
                prev = await self._at(expect_session_seq) if expect_session_seq else None
            else:
                prev = await self._last_in_session(event.session_id)
            chained = msgspec.structs.replace(
                event, prev_seq=prev[0] if prev else 0,
                prev_hash=chain.event_hash(prev[1]) if prev else "",
            )
            headers = {"Nats-Msg-Id": event.event_id}
            if once_per_key:
                headers[EXPECTED_SEQ] = "0"
                if key_filter is not None:
                    headers[EXPECTED_SEQ_SUBJECT] = key_filter
            elif expect_subject_seq is not None:
                headers[EXPECTED_SEQ] = str(expect_subject_seq)
            else:
                headers[EXPECTED_SEQ] = str(prev[0] if prev else 0)
                headers[EXPECTED_SEQ_SUBJECT] = S.session_filter(event.session_id)
            data = E.encode(chained)
            headers[SIGNATURE_HEADER] = self._sign(subject, data)
            try:
                return await self._publish(subject, data, headers, timeout, attempts), \
                    chain.event_hash(data)
            except ConcurrencyConflict:
                if own_subject_check or caller_occ:
                    raise
                # Another append to the session won the race: chain to it and try again.
        raise ConcurrencyConflict(f"{event.type}: the session is too busy to append to")

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

    async def publish_command(
        self, subject: str, data: bytes, msg_id: str, timeout: float = 5.0
    ) -> int:
        try:
            ack = await self.js.publish(subject, data, timeout=timeout,
                                        headers={"Nats-Msg-Id": msg_id})
        except APIError as exc:
            raise write_error(subject, exc) from exc
        return int(ack.seq)

    async def log_usage(self) -> tuple[int, int]:
        """The event log's stored bytes and its limit (max_bytes; 0 or less: none)."""
        info = await self.js.stream_info(S.EVENTS_STREAM)
        return int(info.state.bytes), int(info.config.max_bytes or 0)

    async def put_once(self, subject: str, data: bytes) -> None:
        """Stores a message on a subject that must not hold one yet (not an event: unsigned,
        outside EVENTS); ConcurrencyConflict if it does."""
        await self._publish(subject, data, {"Nats-Expected-Last-Subject-Sequence": "0"},
                            timeout=5.0, attempts=3)
