"""Raw replies for batched Direct Get.

nats-py builds a header dict and a Msg for every message it receives; for a replay of a long
session that was most of the reader's time. `RawClient` lets chosen subscriptions skip both:
their messages go to a plain callback as (subject, raw header bytes, data). Every other
subscription (consumers, requests, the gateway's live feed) takes nats-py's normal path.

It relies on one private nats-py hook, `Client._process_msg(sid, subject, reply, data, headers)`
as the protocol parser calls it; tests/unit/test_rawread.py pins it, so an upgrade that changes
it fails there rather than silently here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.subscription import Subscription

# (subject, raw header block or None, payload). Called from the connection's read loop: it must
# be quick and must not raise.
RawCallback = Callable[[bytes, bytes | None, bytes], None]

_STATUS_LINE = b"NATS/1.0"


class RawClient(Client):
    """A nats-py client whose `subscribe_raw` subscriptions bypass Msg and header parsing."""

    def __init__(self) -> None:
        super().__init__()
        self._raw: dict[int, RawCallback] = {}
        self._mux: ReplyMux | None = None
        self._mux_lock = asyncio.Lock()

    async def subscribe_raw(self, subject: str, cb: RawCallback) -> Subscription:
        # A normal subscription underneath, so that nats-py still resubscribes it after a
        # reconnect and unsubscribes it on drain; only delivery is diverted.
        sub = await self.subscribe(subject, cb=_unreachable)
        self._raw[sub._id] = cb
        return sub

    async def reply_mux(self) -> ReplyMux:
        """The connection's one inbox for Direct Get replies (created on first use)."""
        async with self._mux_lock:
            if self._mux is None:
                mux = ReplyMux(self.new_inbox() + ".")
                await self.subscribe_raw(mux.prefix + "*", mux.deliver)
                self._mux = mux
            return self._mux

    # nats-py annotates `headers: bytes`, but its parser passes None for a message without any.
    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        cb = self._raw.get(sid)
        if cb is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        cb(subject, headers, data)


async def _unreachable(_msg: object) -> None:  # pragma: no cover - raw delivery bypasses it
    raise AssertionError("a raw subscription's message reached nats-py's normal path")


@dataclass(eq=False)
class Replies:
    """The replies to one request, as they arrive: (raw headers, data) pairs."""

    items: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class ReplyMux:
    """One wildcard inbox subscription shared by all of a connection's requests, each request
    answered on its own `<prefix><n>` subject: no SUB/UNSUB per batch, and concurrent reads
    on one connection never see each other's replies."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._next = itertools.count(1)
        self._open: dict[bytes, Replies] = {}

    @contextmanager
    def open(self) -> Iterator[tuple[str, Replies]]:
        """A reply subject and where its replies land; late replies after exit are dropped."""
        subject = f"{self.prefix}{next(self._next)}"
        key = subject.encode()
        replies = Replies()
        self._open[key] = replies
        try:
            yield subject, replies
        finally:
            self._open.pop(key, None)

    def deliver(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        replies = self._open.get(subject)
        if replies is None:
            return
        replies.items.append((headers, data))
        replies.arrived.set()


def status(headers: bytes | None) -> tuple[str, str]:
    """The inline status and its description (`NATS/1.0 204 EOB`), or ("", "") if none.

    As nats-py reads it: the three characters after the version, when they are digits."""
    if not headers or headers[len(_STATUS_LINE) : len(_STATUS_LINE) + 1] != b" ":
        return "", ""
    end = headers.find(b"\r\n")
    line = headers[len(_STATUS_LINE) + 1 : end if end >= 0 else len(headers)]
    code = line[:3].strip().decode("ascii", "replace")
    if not code.isdigit():
        return "", ""
    return code, line[4:].strip().decode("utf-8", "replace")


def header(headers: bytes | None, name: bytes) -> str | None:
    """A header's value, or None. The last occurrence wins, as in nats-py's dict: the server
    appends its own Nats-* headers after the ones stored with the message, so a publisher's
    forged `Nats-Subject` can never shadow the server's."""
    if not headers:
        return None
    at = headers.rfind(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = headers.find(b"\r\n", start)
    return headers[start : end if end >= 0 else len(headers)].strip().decode("utf-8", "replace")
