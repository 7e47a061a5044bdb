"""The event bus: connect as a service's own NATS user, append events, read them back, and
consume a durable consumer with one reviewed ack policy."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.base import Event
from schemas.events import AnyEvent
from services.runtime import identity, rawsub
from services.runtime.errors import (
    ConcurrencyConflict,
    ConfigError,
    EventTooLarge,
    LogFull,
    PoisonMessage,
    RetryableError,
)
from services.runtime.identity import SIGNATURE_HEADER, ForgedEvent, Keyring, Signer
from services.runtime.provision import MAX_DELIVER, UNEXPECTED_ATTEMPTS
from services.runtime.sessions import SessionCache
from services.runtime.settings import NatsSettings

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
STREAM_FULL = 10077  # "maximum bytes exceeded": the stream is at max_bytes (discard NEW)
MESSAGE_TOO_LARGE = 10054  # "message size exceeds maximum allowed": over max_msg_size
# The bus is away for a moment (reconnecting, or a stream electing a leader): retry with backoff.
TRANSIENT = (NatsTimeoutError, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError)
DIRECT_GET = f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}"
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# Events per Direct Get batch in Bus.read. Each request costs the server a fixed ~10 ms on a
# long log (it counts what matches after `seq`, for Nats-Num-Pending), so: few, large batches.
# A batch is yielded as it arrives; what bounds it is the memory of replies not yet consumed.
READ_BATCH = 20_000
# The event being handled (its session and stream sequence), so that reads of that session wait
# until they include it: a stream follower answering Direct Get may lag behind the leader.
_TRIGGER: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "interlock_trigger", default=None)
STALE_READ_WAIT_S = 3.0
SESSION_STARTS_KEPT = 50_000
# What a service that folds sessions keeps of them between events (see cache_sessions).
SESSION_CACHE_BYTES = 4 << 20
# How many sessions a service handles at once, and how many messages it may hold per such
# slot (see Dispatcher).
SESSIONS_AT_ONCE = 16
HELD_PER_SESSION = 4
# (stream seq → signature) pairs a Bus has verified, so that an event consumed and then folded
# by the same service is verified once (an Ed25519 verify costs ~170 µs here).
VERIFIED_KEPT = 100_000


Link = tuple[int, str]  # a stored event's sequence and hash (see schemas.chain)


@dataclass(frozen=True)
class Stored:
    """An event as stored: its stream sequence and subject."""

    seq: int
    subject: str
    event: AnyEvent
    raw: bytes
    # The Interlock-Signature header it was stored with (None: unsigned).
    signature: str | None = None


def write_error(subject: str, exc: APIError) -> Exception:
    """What a refused write means, said plainly: a full log is not "an unexpected error"."""
    if exc.err_code == STREAM_FULL:
        stream = S.EXEC_STREAM if subject.startswith(S.EXEC_PREFIX + ".") else S.EVENTS_STREAM
        return LogFull(f"stream {stream} is full (its max_bytes limit is reached): writes are "
                       f"refused until an operator raises the limit; nothing stored is lost")
    if exc.err_code == MESSAGE_TOO_LARGE:
        return EventTooLarge(f"{subject}: larger than the stream's max_msg_size")
    return exc


def decode_stored(subject: str, data: bytes) -> AnyEvent:
    """Decodes an event and checks that its subject is the one it belongs on — but not who wrote
    it: what a service acts on goes through Bus.decode, which also checks the signature.

    Raises PoisonMessage for anything undecodable or misrouted.
    """
    try:
        event = E.decode(data)
        S.check_subject(subject, event)
    except (msgspec.DecodeError, msgspec.ValidationError, S.SubjectMismatch) as exc:
        raise PoisonMessage(str(exc)) from exc
    return event


def _identity(settings: NatsSettings, service: str) -> tuple[Signer | None, Keyring | None]:
    """The signing key and keyring a connection works with. A service must have its keyring
    (and an emitter its own key, which the keyring must list under its name): a service that
    could not verify, or whose events nobody could verify, must not start."""
    signer = identity.load_signer(Path(settings.signing_key_file), service) \
        if settings.signing_key_file else None
    keyring = identity.load_keyring(Path(settings.keyring_file)) \
        if settings.keyring_file else None
    if service in (*S.SERVICES, *S.OBSERVERS) and keyring is None:
        raise ConfigError(f"{service}: no keyring (INTERLOCK_KEYRING_FILE)")
    if service in S.SERVICES and signer is None:
        raise ConfigError(f"{service}: no event signing key (INTERLOCK_SIGNING_KEY_FILE)")
    if signer is not None and keyring is not None:
        entry = keyring.entries.get(signer.kid)
        if entry is None or entry.service != service:
            raise ConfigError(f"{service}: the keyring does not list its signing key "
                              f"{signer.kid} under {service!r}")
    return signer, keyring


@dataclass
class _BatchEnd:
    """Where a Direct Get batch stopped, and whether the log has more after it."""

    last_seen: int | None = None
    more: bool = False


class Bus:
    def __init__(self, nc: NATS, service: str, signer: Signer | None = None,
                 keyring: Keyring | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.service = service
        # Signs every event this bus appends; a bus without one (an admin's) cannot append.
        self.signer = signer
        # Verifies every event this bus reads or consumes that another identity wrote. Only a
        # tool's bus (admin) may have none: every service is given one (NatsSettings.from_env).
        self.keyring = keyring
        # Event types this service never acts upon (see not_acted_upon): its reads return them
        # without checking their signature. What it consumes is always checked.
        self._unchecked: frozenset[str] = frozenset()
        self._verified: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self._skipped = 0  # stored events a read left out (see session)
        self._replicas: int | None = None
        self._ack_wait = 30.0
        self._session_starts: OrderedDict[str, int] = OrderedDict()
        self._cache: SessionCache[Stored] | None = None

    @classmethod
    async def connect(cls, settings: NatsSettings, service: str, **kwargs: Any) -> Bus:
        signer, keyring = _identity(settings, service)

        async def error_cb(exc: Exception) -> None:
            # Permission violations reach only this callback (notes/nats.md §2).
            log.warning("nats error: %s", exc, extra={"error": type(exc).__name__})

        # RawClient: nats-py's client, plus raw delivery for Direct Get replies (see read).
        nc = rawsub.RawClient()
        await nc.connect(
            [u.strip() for u in settings.url.split(",") if u.strip()],  # a cluster: every URL
            user=settings.user,
            password=settings.password,
            name=f"interlock-{service}",
            inbox_prefix=f"_INBOX_{service}".encode(),
            error_cb=error_cb,
            max_reconnect_attempts=-1,
            # nats-py annotates an int, but only ever sleeps for it.
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            connect_timeout=5,
            **kwargs,
        )
        return cls(nc, service, signer, keyring)

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()

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

    # -- verifying ---------------------------------------------------------------------------

    def decode(self, msg: Msg) -> AnyEvent:
        """The one way a consumer decodes what it is about to act on: the subject and payload
        agree (decode_stored), and the event is signed by the key of the emitter its subject
        names. Raises PoisonMessage (ForgedEvent for a signature) otherwise."""
        event = decode_stored(msg.subject, msg.data)
        signature = (msg.headers or {}).get(SIGNATURE_HEADER)
        self.verify(int(msg.metadata.sequence.stream), msg.subject, msg.data, signature)
        return event

    def verify(self, seq: int, subject: str, data: bytes, signature: str | None, *,
               trust_own: bool = True) -> None:
        """Raises ForgedEvent unless the stored event at `seq` is signed by its emitter.

        Not checked again: an event on this service's own subjects (no other identity can
        write there once accounts isolate them; trust_own=False checks those too), and a
        (seq, signature) verified before — for the same subject and bytes: the memo holds
        their digest, so a message that only claims a verified seq and copies its signature
        (the live feed's sequence is a header) is still checked."""
        if self.keyring is None or (trust_own and identity.emitter_of(subject) == self.service):
            return
        if signature is not None:
            h = hashlib.blake2b(subject.encode(), digest_size=16)
            h.update(b"\0")
            h.update(data)
            digest = h.digest()
            if self._verified.get(seq) == (signature, digest):
                return
        self.keyring.check(subject, data, signature, seq)
        if signature is not None:
            self._verified[seq] = (signature, digest)
            if len(self._verified) > VERIFIED_KEPT:
                self._verified.popitem(last=False)

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

    async def _direct(self, request: dict[str, Any], api: str = DIRECT_GET
                      ) -> tuple[int, bytes] | None:
        """One stored message by a Direct Get request (`seq` or `last_by_subj`): (seq, data),
        or None if there is none. Read raw, like Bus.read's batches (see _direct_reply)."""
        mux = await self._reply_mux()
        with mux.open() as (inbox, replies):
            await self.nc.publish(api, json.dumps(request).encode(), reply=inbox)
            await asyncio.wait_for(replies.arrived.wait(), 5.0)
            headers, data = replies.items[0]
        status, description = rawsub.status(headers)
        if status == "404":
            return None
        if status:
            raise RetryableError(f"direct get failed: {status} {description or None}")
        seq = rawsub.header(headers, b"Nats-Sequence")
        if seq is None:
            raise RetryableError("direct get failed: a reply without its sequence")
        return int(seq), data

    async def _reply_mux(self) -> rawsub.ReplyMux:
        if not isinstance(self.nc, rawsub.RawClient):
            raise TypeError("Bus reads need the RawClient that Bus.connect creates")
        return await self.nc.reply_mux()

    async def _last_in_session(self, session_id: str) -> tuple[int, bytes] | None:
        return await self._direct({"last_by_subj": S.session_filter(session_id)})

    async def _at(self, seq: int) -> tuple[int, bytes] | None:
        return await self._direct({"seq": seq})

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

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self, subject_filter: str, start_seq: int = 1, batch: int = READ_BATCH,
        timeout: float = 5.0, *, verify: bool = True,
    ) -> AsyncIterator[Stored]:
        """Stored events matching a filter, in order, from start_seq to the end of the log.

        Uses batched Direct Get, so no consumer (and no consumer permission) is needed.
        An event that is not signed by its emitter is skipped with a warning, so no fold ever
        holds one; verify=False yields it too, for the audit, which judges it and says so.
        """
        seq = max(1, start_seq)
        while True:
            end = _BatchEnd()
            # Closed at once when the caller stops early (first()), so its inbox is let go.
            batch_items = self._direct_batch(subject_filter, seq, batch, timeout, end, verify)
            async with contextlib.aclosing(batch_items) as items:
                async for item in items:
                    yield item
            if not end.more or end.last_seen is None:
                return
            seq = end.last_seen + 1

    async def _direct_batch(
        self, subject_filter: str, seq: int, batch: int, timeout: float, end: _BatchEnd,
        verify: bool = True,
    ) -> AsyncGenerator[Stored, None]:
        """One Direct Get batch, yielded as its replies arrive (a large batch is not held
        whole); `end` says where it stopped and whether the log has more."""
        mux = await self._reply_mux()
        # Replies arrive raw (no Msg, no header dict: see rawsub) on the connection's one reply
        # inbox, collected by its callback and handed over in chunks: one wakeup per chunk, not
        # per message. `timeout` still bounds the wait for the next reply.
        with mux.open() as (inbox, replies):
            req = {"seq": seq, "next_by_subj": subject_filter, "batch": batch}
            await self.nc.publish(DIRECT_GET, json.dumps(req).encode(), reply=inbox)
            out: list[Stored] = []
            while True:
                if not replies.items:
                    replies.arrived.clear()
                    await asyncio.wait_for(replies.arrived.wait(), timeout)
                chunk = replies.items[:]
                replies.items.clear()
                done: bool | None = None
                for headers, data in chunk:
                    done, end.last_seen = self._direct_reply(headers, data, out, end.last_seen,
                                                             verify)
                    if done is not None:
                        end.more = done
                        break
                for item in out:
                    yield item
                out.clear()
                if done is not None:
                    return

    def _direct_reply(
        self, headers: bytes | None, data: bytes, out: list[Stored], last_seen: int | None,
        verify: bool = True,
    ) -> tuple[bool | None, int | None]:
        """One raw Direct Get reply: (None, last) to go on; (more to read?, last) at the end."""
        status, description = rawsub.status(headers)
        if status == "404":
            return False, last_seen
        if status == "204":  # end of batch
            pending = int(rawsub.header(headers, b"Nats-Num-Pending") or 0)
            return pending > 0, last_seen
        if status:
            raise RetryableError(f"direct get failed: {status} {description or None}")
        seq_text = rawsub.header(headers, b"Nats-Sequence")
        subject = rawsub.header(headers, b"Nats-Subject")
        if seq_text is None or subject is None:
            raise RetryableError("direct get failed: a reply without its sequence or subject")
        stored_seq = int(seq_text)
        # The stored header, not one the server adds: those come after it (see rawsub.header).
        signature = rawsub.header(headers, identity.SIGNATURE_HEADER_BYTES)
        try:
            event = decode_stored(subject, data)
            if verify and event.type not in self._unchecked:
                self.verify(stored_seq, subject, data, signature)
        except PoisonMessage as exc:
            log.warning(
                "skipping %s stored event: %s",
                "unverifiable" if isinstance(exc, ForgedEvent) else "undecodable",
                exc,
                extra={"subject": subject, "seq": stored_seq},
            )
            self._skipped += 1
            return None, stored_seq
        out.append(Stored(stored_seq, subject, event, data, signature))
        return None, stored_seq

    async def session(self, session_id: str, start_seq: int = 1, *,
                      at_least: int = 0, verify: bool = True) -> list[Stored]:
        """The session's stored events from start_seq. A read made while handling an event of
        this session includes that event (and so everything before it): a replica that has
        not applied it yet is asked again, briefly, before giving up with a RetryableError.

        With a session cache (cache_sessions), a whole-session read asks the log only for the
        events after those already read. verify=False (the audit): every stored event, signed
        by its emitter or not (see read); the cache, which holds verified events only, is not
        used."""
        trigger = _TRIGGER.get()
        if trigger is not None and trigger[0] == session_id:
            at_least = max(at_least, trigger[1])
        whole = start_seq <= 1
        cache = self._cache if verify else None
        known: list[Stored] = []
        if whole:
            known = cache.prefix(session_id) if cache is not None else []
            # A session's first event never moves: start the server's scan there, not at seq 1
            # (a wildcard Direct Get walks the log from where it is asked to start).
            start_seq = known[-1].seq + 1 if known else self._session_starts.get(session_id, 1)
        delay = 0.01
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALE_READ_WAIT_S
        while True:
            skipped = self._skipped
            got = [s async for s in self.read(S.session_filter(session_id), start_seq,
                                              verify=verify)]
            if got:
                known = known + got
                start_seq = got[-1].seq + 1
            # Where the session starts, only from a read that left nothing out: a skipped
            # event before the first one kept must still be found by the audit's reads.
            if whole and got and skipped == self._skipped:
                self._remember_start(session_id, known[0].seq)
                if cache is not None:
                    cache.keep(session_id, known)
            if not at_least or (known and known[-1].seq >= at_least) or start_seq > at_least:
                return list(known)
            if loop.time() >= deadline:
                raise RetryableError(f"the log for {session_id} is behind seq {at_least}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def not_acted_upon(self, tags: frozenset[str]) -> None:
        """Declares event types that this service's folds never look at (e.g. the planner and
        `tool.classified`): its reads return them unverified instead of spending an Ed25519
        verification (~170 µs here) on each — a third of the signature cost of a gated read.
        Verification protects what a service acts on; these it does not act on. A test of the
        service must show that its fold is the same with and without them."""
        self._unchecked = tags

    def cache_sessions(self, max_bytes: int) -> None:
        """Keeps what was read of each session (up to max_bytes of stored events), for a
        service that folds the same sessions over and over (see services/runtime/sessions)."""
        self._cache = SessionCache(max_bytes) if max_bytes > 0 else None

    def _remember_start(self, session_id: str, seq: int) -> None:
        starts = self._session_starts
        starts[session_id] = seq
        starts.move_to_end(session_id)
        while len(starts) > SESSION_STARTS_KEPT:
            starts.popitem(last=False)

    async def may_lag(self) -> bool:
        """Whether reads may come from a replica that lags the leader (a replicated log)."""
        if self._replicas is None:
            info = await self.js.stream_info(S.EVENTS_STREAM)
            self._replicas = int(info.config.num_replicas or 1)
        return self._replicas > 1

    async def last_sequence(self) -> int:
        info = await self.js.stream_info(S.EVENTS_STREAM)
        return int(info.state.last_seq)

    async def first(self, subject_filter: str) -> Stored | None:
        async for stored in self.read(subject_filter, batch=1):
            return stored
        return None

    async def last_in(self, stream: str, subject: str) -> bytes | None:
        """The last message stored on a subject of another stream (SEALED), or None."""
        found = await self._direct({"last_by_subj": subject}, f"$JS.API.DIRECT.GET.{stream}")
        return None if found is None else found[1]

    async def put_once(self, subject: str, data: bytes) -> None:
        """Stores a message on a subject that must not hold one yet (not an event: unsigned,
        outside EVENTS); ConcurrencyConflict if it does."""
        await self._publish(subject, data, {"Nats-Expected-Last-Subject-Sequence": "0"},
                            timeout=5.0, attempts=3)

    async def last_stored(self, subject_filter: str) -> tuple[int, bytes] | None:
        """The last message STORED on a filter, (seq, raw body), decodable or not: what an
        append expecting that filter to be empty (or to end at a sequence) is checked against
        by the server. A decoding read skips what it cannot decode, so it cannot tell."""
        return await self._direct({"last_by_subj": subject_filter})

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        durable: str,
        handler: Callable[[Msg], Awaitable[None]],
        stop: asyncio.Event,
        *,
        batch: int = 32,
        on_poison: Callable[[Msg, PoisonMessage], Awaitable[None]] | None = None,
        sessions_at_once: int = 1,
    ) -> None:
        """Fetches from an admin-provisioned durable pull consumer until `stop` is set.

        sessions_at_once > 1: messages are handled per session — in order within a session, up
        to that many sessions at a time (see Dispatcher)."""
        stream, _ = S.CONSUMER_FILTERS[durable]
        psub = await self.js.pull_subscribe_bind(
            durable, stream=stream, inbox_prefix=f"_INBOX_{self.service}.".encode()
        )
        try:
            info = await psub.consumer_info()
            self._ack_wait = float(info.config.ack_wait or self._ack_wait)
        except Exception as exc:  # noqa: BLE001 - the default keeps messages alive too
            log.warning("consumer info unavailable: %s", exc)
        try:
            await self._fetch_loop(psub, handler, stop, batch, on_poison, sessions_at_once)
        finally:
            # An open pull subscription makes drain() wait for its whole timeout.
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _fetch_loop(
        self,
        psub: Any,
        handler: Callable[[Msg], Awaitable[None]],
        stop: asyncio.Event,
        batch: int,
        on_poison: Callable[[Msg, PoisonMessage], Awaitable[None]] | None,
        sessions_at_once: int = 1,
    ) -> None:
        work = Dispatcher(handler, on_poison, sessions_at_once, self._ack_wait,
                          max_held=max(batch, HELD_PER_SESSION * sessions_at_once))
        try:
            while not stop.is_set() and not work.closed:
                room = work.room()
                if room <= 0:
                    await work.wait_for_room()
                    continue
                try:
                    msgs = await _next_batch(psub, min(batch, room))
                except (TimeoutError, NatsTimeoutError):
                    continue
                except ConnectionClosedError:
                    return
                except Exception as exc:  # noqa: BLE001 - the loop must survive bus hiccups
                    log.warning("fetch failed: %s", exc, extra={"error": type(exc).__name__})
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    work.submit(msg)
        finally:
            await work.finish()


async def _next_batch(psub: Any, batch: int) -> list[Msg]:
    """Waits for the next message, then takes what is already pending behind it.

    Not `fetch(batch, timeout)`: nats-py holds a message that arrives during its long poll until
    the batch is full or the timeout ends, which delayed an idle service's next step by up to
    the whole timeout (the ~0.5 s tail the benchmarks saw)."""
    msgs: list[Msg] = await psub.fetch(1, timeout=1.0)
    pending = int(msgs[-1].metadata.num_pending or 0) if msgs else 0
    if batch > 1 and pending:
        # Those messages are there now, so the no-wait probe answers at once; the short timeout
        # bounds the rare case where another instance took them first.
        with contextlib.suppress(NatsTimeoutError, asyncio.TimeoutError):
            msgs += await psub.fetch(min(batch - 1, pending), timeout=0.05)
    return msgs


def session_of(subject: str) -> str:
    """The session a consumed message belongs to: `evt.<session>.…` or `exec.<kind>.<session>`
    (the subject itself when it has neither shape, so such messages are never grouped)."""
    parts = subject.split(".")
    if parts[0] == S.EXEC_PREFIX and len(parts) >= 3:
        return parts[2]
    if parts[0] == S.EVENTS_PREFIX and len(parts) >= 2:
        return parts[1]
    return subject


class Dispatcher:
    """Hands fetched messages to the handler as they arrive, with the one ack policy: one
    session's messages strictly in order, different sessions concurrently (at most
    `sessions_at_once` handlers at a time). A service waits on the log (fsynced appends, acks)
    far more than it computes; fetching the next messages while earlier ones are handled keeps
    it busy, where waiting for a whole batch to finish left it idle behind the slowest message.
    Across sessions there was never an order to keep (N instances already handle them in
    parallel).

    At most `max_held` messages are held at once; those waiting behind a slow one are kept
    alive with in-progress heartbeats, so JetStream does not hand them to another instance
    while this one holds them.
    """

    def __init__(
        self,
        handler: Callable[[Msg], Awaitable[None]],
        on_poison: Callable[[Msg, PoisonMessage], Awaitable[None]] | None,
        sessions_at_once: int,
        ack_wait: float,
        max_held: int,
    ) -> None:
        self.handler = handler
        self.on_poison = on_poison
        self.ordered_by_session = sessions_at_once > 1
        self.slots = asyncio.Semaphore(max(1, sessions_at_once))
        self.ack_wait = ack_wait
        self.max_held = max_held
        self.held: dict[int, Msg] = {}
        self.tails: dict[str, asyncio.Task[None]] = {}
        self.closed = False  # the connection was closed under a handler
        self._freed = asyncio.Event()
        self._beat: asyncio.Task[None] | None = None

    def room(self) -> int:
        return self.max_held - len(self.held)

    async def wait_for_room(self) -> None:
        self._freed.clear()
        if self.room() <= 0:
            await self._freed.wait()

    def submit(self, msg: Msg) -> None:
        if self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat())
        key = session_of(msg.subject) if self.ordered_by_session else ""
        self.held[id(msg)] = msg
        self.tails[key] = asyncio.create_task(self._run(msg, key, self.tails.get(key)))

    async def _run(self, msg: Msg, key: str, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:
                await asyncio.wait({before})  # the session's earlier message first
            async with self.slots:
                await handle_with_policy(msg, self.handler, self.on_poison)
        except ConnectionClosedError:
            self.closed = True
        except Exception:  # a bad message must never end the service
            log.exception("handling a message failed; it will be redelivered",
                          extra={"subject": msg.subject})
        finally:
            self.held.pop(id(msg), None)
            if self.tails.get(key) is asyncio.current_task():
                del self.tails[key]
            self._freed.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(self.ack_wait / 3, 0.2))
            for msg in list(self.held.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def finish(self) -> None:
        """Lets every held message finish (a stop is graceful), then stops the heartbeats."""
        while self.tails:
            await asyncio.wait(list(self.tails.values()))
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat


async def _settle(msg: Msg, action: str, **kwargs: Any) -> None:
    """Acks, naks or terminates; while the bus is away that can fail, and then the message
    simply comes back after ack_wait to an idempotent handler — never a reason to stop."""
    try:
        if action == "ack":
            await msg.ack_sync()
        elif action == "nak":
            await msg.nak(**kwargs)
        else:
            await msg.term()
    except (*TRANSIENT, ConnectionClosedError) as exc:
        log.warning("%s not confirmed (the message will come back): %s", action, exc,
                    extra={"subject": msg.subject})


async def handle_with_policy(
    msg: Msg,
    handler: Callable[[Msg], Awaitable[None]],
    on_poison: Callable[[Msg, PoisonMessage], Awaitable[None]] | None = None,
) -> None:
    """The ack policy, in one place: ack on success, nak with delay on a retryable error,
    terminate (and record) a poison message, nak an unexpected failure (max_deliver bounds it).
    """
    meta = msg.metadata
    extra = {"subject": msg.subject, "seq": meta.sequence.stream}
    if msg.subject.startswith(S.EVENTS_PREFIX + "."):
        _TRIGGER.set((msg.subject.split(".")[1], int(meta.sequence.stream)))
    try:
        await handler(msg)
    except PoisonMessage as exc:
        log.error("poison message terminated: %s", exc, extra=extra)
        if on_poison is not None:
            try:
                await on_poison(msg, exc)
            except Exception:  # recording must not block termination
                log.exception("recording a poison message failed", extra=extra)
        await _settle(msg, "term")
        return
    except (RetryableError, *TRANSIENT) as exc:
        if meta.num_delivered >= MAX_DELIVER:
            await _give_up(msg, on_poison, f"still failing after {meta.num_delivered} "
                           f"deliveries: {type(exc).__name__}: {exc}", extra)
            return
        # Patient: a bus or cluster outage of minutes must not use up the deliveries.
        delay = min(0.5 * 2 ** (meta.num_delivered - 1), 30.0)
        log.warning("retrying in %.1fs: %s", delay, exc, extra=extra)
        await _settle(msg, "nak", delay=delay)
        return
    except Exception as exc:  # unexpected: retry a bounded number of times
        if meta.num_delivered >= UNEXPECTED_ATTEMPTS:
            # The last attempt: terminate and record it, so the session learns of the failure
            # instead of waiting forever for an answer that will never come.
            log.exception("handler failed on its last attempt", extra=extra)
            await _give_up(msg, on_poison, f"failed {meta.num_delivered} times: "
                           f"{type(exc).__name__}: {exc}", extra)
            return
        log.exception("handler failed", extra=extra)
        await _settle(msg, "nak", delay=1.0)
        return
    await _settle(msg, "ack")


async def _give_up(
    msg: Msg,
    on_poison: Callable[[Msg, PoisonMessage], Awaitable[None]] | None,
    reason: str,
    extra: dict[str, Any],
) -> None:
    """Terminates a message that will never succeed, recording why where a session exists."""
    log.error("giving up: %s", reason, extra=extra)
    if on_poison is not None:
        try:
            await on_poison(msg, PoisonMessage(reason))
        except Exception:
            log.exception("recording a failed message failed", extra=extra)
    await _settle(msg, "term")
