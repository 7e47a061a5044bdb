"""What the consume loop hands a handler: a consumed message decoded and checked once, never
the NATS message itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.msg import Msg

from schemas import chain
from schemas.events import AnyEvent
from services.runtime.errors import PoisonMessage
from services.runtime.identity import SIGNATURE_HEADER
from services.runtime.stored import Link, Stored, decode_stored

T = TypeVar("T")


@dataclass(frozen=True)
class Delivery(Generic[T]):
    """One message off a service's consumer: the event it holds (checked against its
    emitter's signature), where it is stored, and how often it came."""

    event: T
    seq: int  # its stream sequence
    subject: str
    data: bytes  # the stored bytes, as signed and hashed
    delivered: int = 1  # 1 on the first delivery; more after a nak, a crash or an ack_wait
    signature: str | None = None  # the Interlock-Signature header it was stored with

    @property
    def link(self) -> Link:
        """What an event appended right after this one chains to (Expect.new_key's hint)."""
        return self.seq, chain.event_hash(self.data)


@dataclass(frozen=True)
class Poisoned(Generic[T]):
    """A message that will never be handled, for the service to record where a session can
    learn of it. event is None when it could not even be decoded: nothing trustworthy to
    attach a record to."""

    subject: str
    seq: int
    event: T | None
    error: PoisonMessage


def _place(msg: Msg) -> tuple[int, int]:
    meta = msg.metadata
    return int(meta.sequence.stream), int(meta.num_delivered or 1)


def open_event(msg: Msg) -> Delivery[AnyEvent]:
    """An event as consumed: its subject and payload agree (decode_stored), or PoisonMessage.
    Who wrote it is checked by the consumer (Consumer.check), which holds the keyring."""
    seq, delivered = _place(msg)
    return Delivery(decode_stored(msg.subject, msg.data), seq, msg.subject, msg.data,
                    delivered, (msg.headers or {}).get(SIGNATURE_HEADER))


def delivery_of(stored: Stored, delivered: int = 1) -> Delivery[AnyEvent]:
    """A stored event as the consume loop would hand it over (for calling a handler directly,
    e.g. in tests)."""
    return Delivery(stored.event, stored.seq, stored.subject, stored.raw, delivered,
                    stored.signature)
