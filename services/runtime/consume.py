"""The consume loop: fetch from a service's durable consumer, decode and check each message
once, hand the handler a typed Delivery (per session, in order), keep every held message alive
with the one in-progress heartbeat, and settle it with the one reviewed ack policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError

from schemas import subjects as S
from services.runtime.connection import TRANSIENT
from services.runtime.delivery import Delivery, Poisoned, open_event
from services.runtime.errors import PoisonMessage, RetryableError
from services.runtime.provision import MAX_DELIVER, UNEXPECTED_ATTEMPTS
from services.runtime.reader import Reader

log = logging.getLogger(__name__)

# How many sessions a service handles at once, and how many messages it may hold per such
# slot (see Dispatcher).
SESSIONS_AT_ONCE = 16
HELD_PER_SESSION = 4

# What a service gives the loop: a handler of deliveries and a recorder of poison. The loop
# opens every message as an event (open_event) and checks it (Consumer.check).
Handler = Callable[[Delivery[Any]], Awaitable[None]]
OnPoison = Callable[[Poisoned[Any]], Awaitable[None]]
Check = Callable[[Delivery[Any]], None]
# Which decoded events the handler acts on (None: all). The rest are acked without being
# verified or handed over: a consumer whose filter delivers more than its service acts on (the
# executor's: refused classifications, the other role's) pays no signature check for those.
Select = Callable[[Any], bool]


class Consumer(Reader):
    """Consumes a durable consumer (it verifies what it decodes: a Reader)."""

    # -- verifying ---------------------------------------------------------------------------

    def check(self, delivery: Delivery[Any]) -> None:
        """The one check of who wrote what a service is about to act on: the event is signed
        by the key of the emitter its subject names. Raises ForgedEvent (a PoisonMessage)
        otherwise; the loop makes it for every event it consumes, once."""
        self.verify(delivery.seq, delivery.subject, delivery.data, delivery.signature)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        durable: str,
        handler: Handler,
        stop: asyncio.Event,
        *,
        batch: int = 32,
        on_poison: OnPoison | None = None,
        sessions_at_once: int = 1,
        select: Select | None = None,
    ) -> None:
        """Fetches from an admin-provisioned durable pull consumer until `stop` is set. Events
        reach the handler decoded and signature-checked — those `select` picks, when given.

        sessions_at_once > 1: messages are handled per session — in order within a session, up
        to that many sessions at a time (see Dispatcher)."""
        # A per-cluster executor durable (`executor_<ctok>`, issue 21) is on EVENTS too.
        stream = S.CONSUMER_FILTERS[durable][0] if durable in S.CONSUMER_FILTERS \
            else S.EVENTS_STREAM
        psub = await self.js.pull_subscribe_bind(
            durable, stream=stream, inbox_prefix=f"_INBOX_{self.service}.".encode()
        )
        try:
            info = await psub.consumer_info()
            self._ack_wait = float(info.config.ack_wait or self._ack_wait)
        except Exception as exc:  # noqa: BLE001 - the default keeps messages alive too
            log.warning("consumer info unavailable: %s", exc)
        try:
            await self._fetch_loop(psub, handler, stop, batch, on_poison, sessions_at_once,
                                   select=select)
        finally:
            # An open pull subscription makes drain() wait for its whole timeout.
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _fetch_loop(
        self,
        psub: Any,
        handler: Handler,
        stop: asyncio.Event,
        batch: int,
        on_poison: OnPoison | None,
        sessions_at_once: int = 1,
        *,
        select: Select | None = None,
    ) -> None:
        work = Dispatcher(handler, on_poison, sessions_at_once, self._ack_wait,
                          max_held=max(batch, HELD_PER_SESSION * sessions_at_once),
                          check=self.check, select=select)
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
    """The session a consumed message belongs to: `evt.<session>.…` (the subject itself when
    it has another shape, so such messages are never grouped)."""
    parts = subject.split(".")
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

    At most `max_held` messages are held at once, and every one of them — waiting behind a
    slow one, or being handled however long that takes (a model thinking, a slow cluster, a
    webhook retried) — is kept alive by the one in-progress heartbeat here, every third of
    ack_wait, so JetStream does not hand it to another instance while this one holds it.
    Handlers keep no heartbeat of their own.
    """

    def __init__(
        self,
        handler: Handler,
        on_poison: OnPoison | None,
        sessions_at_once: int,
        ack_wait: float,
        max_held: int,
        check: Check,
        select: Select | None = None,
    ) -> None:
        self.handler = handler
        self.on_poison = on_poison
        self.check = check
        self.select = select
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
                await handle_with_policy(msg, self.handler, self.on_poison,
                                         check=self.check, select=self.select)
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
    handler: Handler,
    on_poison: OnPoison | None = None,
    *,
    check: Check | None = None,
    select: Select | None = None,
) -> None:
    """The ack policy, in one place: open (decode) and check the message once, then ack on
    success (and at once, unchecked and unhandled, what `select` leaves out), nak with delay
    on a retryable error, terminate (and record) a poison message — undecodable, forged, or
    refused by the handler — and nak an unexpected failure (max_deliver bounds it).
    """
    meta = msg.metadata
    seq = int(meta.sequence.stream)
    extra = {"subject": msg.subject, "seq": seq}
    delivery: Delivery[Any] | None = None
    try:
        delivery = open_event(msg)
        if select is not None and not select(delivery.event):
            await _settle(msg, "ack")
            return
        if check is not None:
            check(delivery)
        await handler(delivery)
    except PoisonMessage as exc:
        log.error("poison message terminated: %s", exc, extra=extra)
        await _record(on_poison, Poisoned(msg.subject, seq, _event(delivery), exc), extra)
        await _settle(msg, "term")
        return
    except (RetryableError, *TRANSIENT) as exc:
        if meta.num_delivered >= MAX_DELIVER:
            await _give_up(msg, on_poison, delivery, f"still failing after "
                           f"{meta.num_delivered} deliveries: {type(exc).__name__}: {exc}", extra)
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
            await _give_up(msg, on_poison, delivery, f"failed {meta.num_delivered} times: "
                           f"{type(exc).__name__}: {exc}", extra)
            return
        log.exception("handler failed", extra=extra)
        await _settle(msg, "nak", delay=1.0)
        return
    await _settle(msg, "ack")


def _event(delivery: Delivery[Any] | None) -> Any:
    return None if delivery is None else delivery.event


async def _record(on_poison: OnPoison | None, poisoned: Poisoned[Any],
                  extra: dict[str, Any]) -> None:
    """Lets the service record a message that will never be handled; recording must not
    block its termination."""
    if on_poison is not None:
        try:
            await on_poison(poisoned)
        except Exception:
            log.exception("recording a failed message failed", extra=extra)


async def _give_up(
    msg: Msg,
    on_poison: OnPoison | None,
    delivery: Delivery[Any] | None,
    reason: str,
    extra: dict[str, Any],
) -> None:
    """Terminates a message that will never succeed, recording why where a session exists."""
    log.error("giving up: %s", reason, extra=extra)
    await _record(on_poison, Poisoned(msg.subject, int(msg.metadata.sequence.stream),
                                      _event(delivery), PoisonMessage(reason)), extra)
    await _settle(msg, "term")
