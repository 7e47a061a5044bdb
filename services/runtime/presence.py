"""Which executors are connected (issue 21): each executor puts its presence in the CLUSTERS
key-value bucket every few seconds (`<cluster token>.<role>`); the gate refuses a call to a
cluster none of whose executors was seen lately, the gateway lists the clusters.

A spoke may put only its own keys (natsconf.spoke_permissions): a key's cluster is its
subject's token, never what the value claims — a value naming another cluster than its key is
not believed. When a key was last put is the server's stored time, not the spoke's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime

import msgspec

from schemas import subjects as S
from schemas.base import ShortText, UtcTime, utcnow
from services.runtime import rawsub
from services.runtime.connection import Connection

log = logging.getLogger(__name__)

DIRECT_GET = f"$JS.API.DIRECT.GET.{S.PRESENCE_STREAM}"
KEY_PREFIX = f"$KV.{S.PRESENCE_BUCKET}."
DEFAULT_INTERVAL_S = 5.0
# A cluster is connected while one of its executors was seen within this many intervals.
MISSED_BEATS = 3
_READ_BATCH = 1_000


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One executor's presence: put by the executor every interval, read by the gate and the
    gateway."""

    cluster: ShortText  # the cluster's name ("" for the one executor of a legacy deployment)
    role: ShortText  # S.EXECUTOR_ROLES: all, read, write
    version: ShortText = ""
    # The kubeconfig contexts it may act on (legacy: INTERLOCK_KUBE_CONTEXTS, or the current
    # one): the gate refuses a call to any other before a card is shown.
    contexts: tuple[ShortText, ...] = ()
    started_at: UtcTime = msgspec.field(default_factory=utcnow)
    # When it was put: on reading, the server's stored time (not the putter's clock).
    seen_at: UtcTime = msgspec.field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return S.presence_key(self.cluster, self.role)


_decoder = msgspec.json.Decoder(ClusterStatus)


def interval_from_env(env: Mapping[str, str] | None = None) -> float:
    """INTERLOCK_PRESENCE_INTERVAL (seconds), or DEFAULT_INTERVAL_S."""
    value = (env if env is not None else os.environ).get("INTERLOCK_PRESENCE_INTERVAL", "")
    return float(value) if value else DEFAULT_INTERVAL_S


async def beat(bus: Connection, status: ClusterStatus, timeout: float = 2.0) -> None:
    """Puts this executor's presence (a JetStream publish on its own key; acked)."""
    status = msgspec.structs.replace(status, seen_at=utcnow())
    await bus.js.publish(S.presence_subject(status.cluster, status.role),
                         msgspec.json.encode(status), timeout=timeout)


async def heartbeat(bus: Connection, status: ClusterStatus, stop: asyncio.Event,
                    interval: float = DEFAULT_INTERVAL_S) -> None:
    """Beats every `interval` until `stop` is set; a failed beat is logged and retried at the
    next one (the hub may be out of reach: that is what the absence of beats says)."""
    while not stop.is_set():
        try:
            await beat(bus, status)
        except Exception as exc:  # noqa: BLE001 - any failure is the next beat's to retry
            log.warning("presence beat failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def read_clusters(bus: Connection, timeout: float = 5.0
                        ) -> dict[str, list[ClusterStatus]]:
    """Every executor's latest presence, by cluster name: one Direct Get batch over the bucket
    (the gate and the gateway may Direct Get KV_CLUSTERS and nothing else of it)."""
    if not isinstance(bus.nc, rawsub.RawClient):
        raise TypeError("presence reads need the RawClient that Bus.connect creates")
    mux = await bus.nc.reply_mux()
    out: dict[str, list[ClusterStatus]] = {}
    seq = 1
    while True:
        more = False
        with mux.open() as (inbox, replies):
            req = {"seq": seq, "next_by_subj": f"{KEY_PREFIX}>", "batch": _READ_BATCH}
            await bus.nc.publish(DIRECT_GET, json.dumps(req).encode(), reply=inbox)
            done = False
            while not done:
                if not replies.items:
                    replies.arrived.clear()
                    await asyncio.wait_for(replies.arrived.wait(), timeout)
                chunk = replies.items[:]
                replies.items.clear()
                for headers, data in chunk:
                    code, _ = rawsub.status(headers)
                    if code in ("404", "408"):
                        done = True
                        break
                    if code == "204":
                        more = int(rawsub.header(headers, b"Nats-Num-Pending") or 0) > 0
                        done = True
                        break
                    if code:
                        raise RuntimeError(f"presence read failed: {code}")
                    seq = max(seq, int(rawsub.header(headers, b"Nats-Sequence") or 0) + 1)
                    status = _believed(rawsub.header(headers, b"Nats-Subject") or "", data,
                                       rawsub.header(headers, b"Nats-Time-Stamp"))
                    if status is not None:
                        out.setdefault(status.cluster, []).append(status)
        if not more:
            return out


def _believed(subject: str, data: bytes, stamp: str | None) -> ClusterStatus | None:
    """A stored presence, if its value is one and names the cluster and role of its key."""
    try:
        status = _decoder.decode(data)
        if KEY_PREFIX + status.key != subject:
            raise ValueError(f"a presence for {status.key!r} stored on {subject!r}")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        log.warning("ignoring presence on %s: %s", subject, exc)
        return None
    seen = _parse_stamp(stamp)
    return msgspec.structs.replace(status, seen_at=seen) if seen is not None else status


def _parse_stamp(stamp: str | None) -> datetime | None:
    """Nats-Time-Stamp (RFC 3339 with nanoseconds) -> datetime."""
    if not stamp:
        return None
    text = stamp.strip().replace("Z", "+00:00")
    if "." in text:  # datetime takes at most microseconds
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def connected(statuses: list[ClusterStatus], now: datetime, interval: float) -> bool:
    """Whether any of a cluster's executors was seen within MISSED_BEATS intervals."""
    return any((now - s.seen_at).total_seconds() <= MISSED_BEATS * interval for s in statuses)
