"""The log's reading role: stored events by subject filter through batched Direct Get, each
checked against its emitter's signature, and a session's events as a handler needs them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from schemas import subjects as S
from services.runtime import identity, rawsub
from services.runtime.connection import Connection
from services.runtime.errors import PoisonMessage, RetryableError
from services.runtime.identity import ForgedEvent
from services.runtime.sessions import SessionCache
from services.runtime.stored import Stored, decode_stored

log = logging.getLogger(__name__)

DIRECT_GET = f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}"
# Events per Direct Get batch in Bus.read. Each request costs the server a fixed ~10 ms on a
# long log (it counts what matches after `seq`, for Nats-Num-Pending), so: few, large batches.
# A batch is yielded as it arrives; what bounds it is the memory of replies not yet consumed.
READ_BATCH = 20_000
# How long a read that must include an event (at_least) asks a lagging replica again: a stream
# follower answering Direct Get may lag behind the leader.
STALE_READ_WAIT_S = 3.0
SESSION_STARTS_KEPT = 50_000
# What a service that folds sessions keeps of them between events (see cache_sessions); a
# session over a quarter of it is not kept, and is read and verified whole at every event. At
# 4 MB (1 MB a session) an MCP client's session of the day passed that after ~150 reads and
# every read took 5x longer (BENCHMARKS.md, issue 19): 64 MB keeps sessions up to 16 MB.
SESSION_CACHE_BYTES = 64 << 20
# (stream seq → signature) pairs a Bus has verified, so that an event consumed and then folded
# by the same service is verified once (an Ed25519 verify costs ~170 µs here).
VERIFIED_KEPT = 100_000


@dataclass
class _BatchEnd:
    """Where a Direct Get batch stopped, and whether the log has more after it."""

    last_seen: int | None = None
    more: bool = False


class Reader(Connection):
    """Reads the log; verifies what another identity wrote."""

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
        """The session's stored events from start_seq. at_least: the read includes the event
        at that sequence (and so everything before it) — a handler passes the sequence of the
        event it handles: a replica that has not applied it yet is asked again, briefly,
        before giving up with a RetryableError.

        With a session cache (cache_sessions), a whole-session read asks the log only for the
        events after those already read. verify=False (the audit): every stored event, signed
        by its emitter or not (see read); the cache, which holds verified events only, is not
        used."""
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

    async def catch_up(self, session_id: str, seq: int) -> None:
        """Returns once this bus's reads of the session include the event at `seq`, for a
        handler whose reads of it do not say so themselves (session(at_least=…) does). A
        single-replica log has no follower to lag: nothing to do. Otherwise the session is
        read until it includes seq, and the session cache (cache_sessions, which such a
        service must have) starts every later read of it from there."""
        if await self.may_lag():
            await self.session(session_id, at_least=seq)

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

    async def last_stored(self, subject_filter: str) -> tuple[int, bytes] | None:
        """The last message STORED on a filter, (seq, raw body), decodable or not: what an
        append expecting that filter to be empty (or to end at a sequence) is checked against
        by the server. A decoding read skips what it cannot decode, so it cannot tell."""
        return await self._direct({"last_by_subj": subject_filter})
