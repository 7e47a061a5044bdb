"""No JetStream reply can land on another identity's subject (issue 14; notes/nats.md §2 pitfall 4).

nats-server answers every JetStream API request, acked publish and ack-sync on the reply subject
the *requester* chose, from its own client, and publish permissions do not apply to it. In one
shared account a reply aimed at `evt.<sid>.gateway.…` was stored as the gateway's event. Each
runtime identity here tries every kind of request Interlock lets it make, with reply subjects on
every other identity's subjects (and on its own event subjects); the streams must not grow and
the gateway's live feed (`sse.>`) and token deltas (`delta.>`) must receive nothing.

Message traces (`Nats-Trace-Dest`) are aimed at the foreign subjects only: the server sends a
trace only where the publisher may publish itself, so on its own subjects it is no reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import subjects as S
from services.runtime import natsconf
from tests.conftest import NatsEnv

ATTACKER_SID = "s_attack"
TARGET_SID = "s_target"
SEED_SID = "s_seed"
DIRECT_GET = f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}"
# What each durable consumer takes, so that a seeded message is there for it to fetch and ack.
SEEDS: dict[str, tuple[str, str]] = {
    "planner": (S.EVENTS_STREAM, f"evt.{SEED_SID}.gateway.user.message.m_1"),
    "gate": (S.EVENTS_STREAM, f"evt.{SEED_SID}.planner.tool.proposed.c_1"),
    "notifier": (S.EVENTS_STREAM, f"evt.{SEED_SID}.gate.approval.requested.a_1"),
    "executor": (S.EVENTS_STREAM, f"evt.{SEED_SID}.gate.tool.classified.c_1"),
}


def _targets(me: str) -> list[str]:
    """Reply subjects that belong to someone else (or to the log itself)."""
    out = [f"evt.{TARGET_SID}.{other}.approval.decided.a_{other}"
           for other in S.SERVICES if other != me]
    if me != "gate":  # what releases a call to the executor: only the gate says it
        out += [f"evt.{TARGET_SID}.gate.tool.classified.c_x",
                f"evt.{TARGET_SID}.gate.approval.granted.a_x"]
    if me != "gateway":  # the gateway's own feeds: only the server and the planner write there
        out.append(f"{S.LIVE_PREFIX}.{TARGET_SID}.gateway.approval.decided.a_1")
        if me != "planner":
            out.append(S.delta_subject(TARGET_SID))
    if me in S.SERVICES:  # its own event subjects: a reply is no event either
        out.append(f"evt.{TARGET_SID}.{me}.approval.decided.a_own")
    # Sealed secret values (issue 16): nobody's reply may become a blob, not even its sealer's.
    out += [S.sealed_subject(sealer, TARGET_SID, f"b_{me}") for sealer in S.SEALERS]
    return out


def _own_subject(me: str) -> str | None:
    """A subject the identity may legitimately publish to (None: the notifier publishes none)."""
    if me in S.SERVICES:
        return f"evt.{ATTACKER_SID}.{me}.session.started.e_1"
    return None


def _durable(me: str) -> str | None:
    return me if me in S.CONSUMER_FILTERS else None


@dataclass
class Snapshot:
    totals: dict[str, tuple[int, int]]  # stream -> (messages, bytes)
    subjects: dict[str, dict[str, int]] = field(default_factory=dict)


async def _snapshot(admin: Client) -> Snapshot:
    snap = Snapshot({})
    for stream, prefix in ((S.EVENTS_STREAM, S.EVENTS_PREFIX),
                           (S.SEALED_STREAM, S.SEALED_PREFIX)):
        info = await admin.jetstream().stream_info(stream, subjects_filter=f"{prefix}.>")
        snap.totals[stream] = (int(info.state.messages), int(info.state.bytes))
        snap.subjects[stream] = dict(info.state.subjects or {})
    return snap


def _requests(me: str) -> Iterator[tuple[str, bytes, dict[str, str] | None]]:
    """(subject, payload, headers) of every request the identity may send; each is sent once
    per target reply subject."""
    yield DIRECT_GET, json.dumps({"seq": 1}).encode(), None
    yield DIRECT_GET, json.dumps({"last_by_subj": "evt.>"}).encode(), None
    yield DIRECT_GET, json.dumps({"seq": 1, "next_by_subj": "evt.>", "batch": 5}).encode(), None
    yield DIRECT_GET, json.dumps({"multi_last": ["evt.>"], "batch": 5}).encode(), None
    yield f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}.evt.{SEED_SID}.>", b"", None
    yield (f"$JS.API.STREAM.INFO.{S.EVENTS_STREAM}",
           json.dumps({"subjects_filter": "evt.>"}).encode(), None)
    for durable in natsconf.durables_of(me):  # the executor: both layouts' consumers
        stream, _ = S.CONSUMER_FILTERS[durable]
        yield f"$JS.API.CONSUMER.INFO.{stream}.{durable}", b"", None
        yield (f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
               json.dumps({"batch": 1, "no_wait": True}).encode(), None)
    if me == "executor":  # it alone reads sealed values
        yield (f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}",
               json.dumps({"last_by_subj": f"{S.SEALED_PREFIX}.>"}).encode(), None)
    if me in S.SEALERS:  # a sealer's acked publish of a blob that stores nothing
        yield (S.sealed_subject(me, ATTACKER_SID, "b_1"), b"x",
               {"Nats-Expected-Last-Subject-Sequence": "999999"})
    own = _own_subject(me)
    if own is not None:
        # Acked publishes that store nothing new: a duplicate (a real PubAck comes back) and a
        # failed expectation (an error reply comes back).
        yield own, b"{}", {"Nats-Msg-Id": "dup-1"}
        yield own, b"{}", {"Nats-Expected-Last-Subject-Sequence": "999999"}
    # Message tracing: trace events go to the header's subject, from the server.
    trace_on = own or f"evt.{ATTACKER_SID}.{me}.session.started.e_1"
    yield trace_on, b"{}", {"Nats-Trace-Dest": "", "Nats-Trace-Only": "true"}
    yield trace_on, b"{}", {"Nats-Msg-Id": "dup-1", "Nats-Trace-Dest": ""}


async def _connect(env: NatsEnv, user: str) -> Client:
    async def quiet(_exc: Exception) -> None:  # permission errors are expected here
        return None

    return await nats.connect(env.url, user=user, password=env.credentials[user],
                              inbox_prefix=f"_INBOX_{user}".encode(), error_cb=quiet,
                              allow_reconnect=False)


async def _admin(env: NatsEnv) -> Client:
    return await nats.connect(env.url, user=natsconf.ADMIN_USER,
                              password=env.credentials[natsconf.ADMIN_USER])


async def _seed(admin: Client, me: str) -> None:
    js = admin.jetstream()
    await js.publish(f"evt.{SEED_SID}.gateway.session.started.e_0", b'{"seed": true}')
    own = _own_subject(me)
    if own is not None:  # the first copy, so the attacker's same Msg-Id is a duplicate
        await js.publish(own, b"{}", headers={"Nats-Msg-Id": "dup-1"})
    durable = _durable(me)
    if durable is not None:
        _, subject = SEEDS[me]
        await js.publish(subject, b'{"seed": true}')


async def _settle_round_trips(nc: Client, me: str) -> None:
    """The same kinds of request with the identity's own inbox, awaited: each is answered after
    the attack requests before it (one connection, handled in order), so the replies aimed
    elsewhere have been sent by then. Failures are fine: a reply is all we wait for."""
    for subject, payload, _ in _requests(me):
        if subject.startswith("$JS.API."):
            with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await nc.request(subject, payload, timeout=5)
    await nc.flush()


async def _reflect(nc: Client, me: str) -> int:
    """Sends every request with every foreign reply subject; returns how many were sent."""
    sent = 0
    durable = _durable(me)
    acks: list[Msg] = []
    if durable is not None:
        # A real delivery, fetched with its own inbox, so that its ack can be aimed elsewhere.
        stream, _ = S.CONSUMER_FILTERS[durable]
        psub = await nc.jetstream().pull_subscribe_bind(
            durable, stream=stream, inbox_prefix=f"_INBOX_{me}.".encode())
        acks = await psub.fetch(1, timeout=5)
    for target in _targets(me):
        for subject, payload, headers in _requests(me):
            hdrs = dict(headers) if headers is not None else None
            if hdrs is not None and "Nats-Trace-Dest" in hdrs:
                if target.startswith((f"evt.{TARGET_SID}.{me}.",
                                      f"{S.SEALED_PREFIX}.{me}.{TARGET_SID}.")):
                    # The server checks a trace destination against the publisher's own
                    # publish permissions: a trace on its own subject is a publish it may make.
                    continue
                hdrs["Nats-Trace-Dest"] = target
            await nc.publish(subject, payload, reply=target, headers=hdrs)
            sent += 1
        for msg in acks:  # ack-sync: the server confirms the ack on the reply subject
            await nc.publish(msg.reply, b"+ACK", reply=target)
            sent += 1
    await nc.flush()
    return sent


@pytest.mark.parametrize("me", natsconf.RUNTIME_USERS)
async def test_no_reply_lands_on_another_identitys_subject(nats_env: NatsEnv, me: str) -> None:
    admin = await _admin(nats_env)
    gateway = await _connect(nats_env, "gateway") if me != "gateway" else None
    planner = await _connect(nats_env, "planner") if me != "planner" else None
    attacker = await _connect(nats_env, me)
    feed: list[str] = []
    sentinels = {"sse": asyncio.Event(), "delta": asyncio.Event()}

    async def on_feed(msg: Msg) -> None:
        if SEED_SID + "_end" in msg.subject:
            sentinels[msg.subject.split(".")[0]].set()
        else:
            feed.append(msg.subject)

    try:
        await _seed(admin, me)
        if gateway is not None:
            await gateway.subscribe(f"{S.LIVE_PREFIX}.>", cb=on_feed)
            await gateway.subscribe(f"{S.DELTA_PREFIX}.*", cb=on_feed)
            await gateway.flush()
        before = await _snapshot(admin)

        sent = await _reflect(attacker, me)
        await _settle_round_trips(attacker, me)
        after = await _snapshot(admin)
        sentinel = f"evt.{SEED_SID}_end.gateway.session.started.e_9"
        if gateway is not None:
            # Something the gateway legitimately receives, after the attack: once it is here,
            # anything the attack sent to the feeds would have arrived before it.
            await admin.jetstream().publish(sentinel, b"{}")
            await (planner or attacker).publish(S.delta_subject(SEED_SID + "_end"), b"{}")
            await asyncio.wait_for(sentinels["sse"].wait(), 10)
            await asyncio.wait_for(sentinels["delta"].wait(), 10)
        # Looked at again once everything has surely been answered: a late reply is seen too.
        final = await _snapshot(admin)
        landed = {
            stream: {subj: n - before.subjects[stream].get(subj, 0)
                     for subj, n in final.subjects[stream].items()
                     if n > before.subjects[stream].get(subj, 0) and subj != sentinel}
            for stream in final.subjects
        }
        grew = {s: (after.totals[s][0] - before.totals[s][0],
                    after.totals[s][1] - before.totals[s][1]) for s in after.totals}
        summary = (f"{me}: {sent} reflection attempts; stream growth (msgs, bytes) {grew}; "
                   f"stored on {sum(len(v) for v in landed.values())} subjects {landed}; "
                   f"{len(feed)} on the gateway's feeds {sorted(set(feed))[:8]}")
        assert not any(landed.values()), summary
        assert after.totals[S.EVENTS_STREAM] == before.totals[S.EVENTS_STREAM], summary
        assert final.totals[S.SEALED_STREAM] == before.totals[S.SEALED_STREAM], summary
        assert final.totals[S.EVENTS_STREAM][0] == before.totals[S.EVENTS_STREAM][0] + (
            gateway is not None), summary  # the sentinel alone
        assert feed == [], summary
    finally:
        for nc in (attacker, gateway, planner, admin):
            if nc is not None:
                await nc.close()
