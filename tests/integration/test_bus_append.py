"""Appending with a chain hint (Expect.new_key's hint): one round trip when the hinted
event is still the session's last, the usual once-per-key checks otherwise — never a second
event of a key, never a broken chain."""

from __future__ import annotations

import msgspec
import nats
import pytest

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ToolClassified
from schemas.base import Target
from schemas.execution import ToolResult
from schemas.ids import new_call_id, new_session_id
from schemas.session import SessionStarted, UserMessage
from services.runtime import bus as B
from services.runtime import natsconf
from services.runtime.errors import ConcurrencyConflict
from services.runtime.log import Expect
from tests.conftest import NatsEnv


def _result(sid: str, call_id: str, text: str = "ok") -> ToolResult:
    return ToolResult(session_id=sid, call_id=call_id, tool="get", status="ok", output=text,
                      actor="executor")


async def _links(bus: B.Bus, sid: str) -> list[chain.Link]:
    return [chain.Link(s.seq, s.subject, s.raw) for s in await bus.session(sid)]


async def test_a_hint_that_is_still_the_last_event_saves_the_read(nats_env: NatsEnv) -> None:
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    ex = await B.Bus.connect(nats_env.settings("executor"), "executor")
    reads: list[str] = []
    last_in_session = ex._last_in_session

    async def counting(session_id: str) -> tuple[int, bytes] | None:
        reads.append(session_id)
        return await last_in_session(session_id)

    ex._last_in_session = counting  # type: ignore[method-assign]
    sid = new_session_id()
    try:
        hint = await gw.append_link(SessionStarted(session_id=sid, actor="alice"))
        seq, digest = await ex.append_link(_result(sid, new_call_id()),
                                           Expect.new_key(hint=hint))
        assert reads == []  # chained to the hint, no read of the session's last event
        stored = await gw.session(sid)
        assert [s.seq for s in stored] == [hint[0], seq]
        assert stored[-1].event.prev_seq == hint[0]
        assert digest == chain.event_hash(stored[-1].raw)
        report = chain.verify_chain(await _links(gw, sid))
        assert report.ok and not report.forks
    finally:
        await gw.close()
        await ex.close()


async def test_a_stale_hint_falls_back_to_the_checked_append(nats_env: NatsEnv) -> None:
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    ex = await B.Bus.connect(nats_env.settings("executor"), "executor")
    sid = new_session_id()
    call = new_call_id()
    try:
        hint = await gw.append_link(SessionStarted(session_id=sid, actor="alice"))
        later = await gw.append(UserMessage(session_id=sid, text="meanwhile", actor="alice"))
        seq = await ex.append(_result(sid, call), Expect.new_key(hint=hint))
        stored = await gw.session(sid)
        assert stored[-1].seq == seq and stored[-1].event.prev_seq == later  # the real last
        # The key is still once: a second result for the call (a redelivered command, whose
        # hint is the event before the first result) is refused, as without a hint.
        for h in (hint, None):
            with pytest.raises(ConcurrencyConflict):
                await ex.append(_result(sid, call, "again"), Expect.new_key(hint=h))
        assert len(await gw.session(sid)) == 3
        report = chain.verify_chain(await _links(gw, sid))
        assert report.ok and not report.forks
    finally:
        await gw.close()
        await ex.close()


async def test_a_key_filter_makes_a_key_once_across_sessions(nats_env: NatsEnv) -> None:
    """`Expect.new_key(key_filter)`: the server checks that a wildcard filter is empty, not
    only the event's own subject — so a key taken in one session cannot be taken in another
    (issue 14)."""
    gw = await B.Bus.connect(nats_env.settings("gateway"), "gateway")
    ex = await B.Bus.connect(nats_env.settings("executor"), "executor")
    call = new_call_id()
    one, two, three = new_session_id(), new_session_id(), new_session_id()
    taken = S.tag_filter("executor", "tool.result", "*", call)
    try:
        assert await ex.last_stored(taken) is None
        seq = await ex.append(_result(one, call), Expect.new_key(taken))
        with pytest.raises(ConcurrencyConflict, match=f"wrong last sequence: {seq}"):
            await ex.append(_result(two, call), Expect.new_key(taken))
        # A chain hint that is still the session's last event cannot skip the filter: the
        # expectation refuses the pair, and the filter alone is checked in that session too.
        hint = await gw.append_link(SessionStarted(session_id=three, actor="alice"))
        with pytest.raises(ValueError, match="no chain hint"):
            Expect.new_key(taken, hint=hint)
        with pytest.raises(ConcurrencyConflict):
            await ex.append(_result(three, call), Expect.new_key(taken))
        # What the filter adds: without it, only the event's own (empty) subject is checked.
        later = await ex.append(_result(two, call), Expect.new_key())
        last = await ex.last_stored(taken)
        assert last is not None
        assert last[0] == later
    finally:
        await gw.close()
        await ex.close()


async def test_a_cluster_bound_key_is_once_whatever_its_cluster_token(
        nats_env: NatsEnv) -> None:
    """Issue 21: a cluster-bound event's subject ends in its cluster's token, so a gate
    restarted with another default cluster would put a redelivered call's classification on
    another subject. For the gate's commands the server checks the key under every token (and
    a 6-token copy stored before cluster tokens counts too): one classification per call. An
    executor's events are once on their own cluster's subject: another cluster's executor
    writing first (a compromised spoke) cannot keep the real result out."""
    ex = await B.Bus.connect(nats_env.settings("executor"), "executor")
    gate = await B.Bus.connect(nats_env.settings("gate"), "gate")
    admin = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                               password=nats_env.credentials[natsconf.ADMIN_USER])
    sid, call, old_call = new_session_id(), new_call_id(), new_call_id()
    try:
        def classified(cluster: str, call_id: str = call) -> ToolClassified:
            return ToolClassified(session_id=sid, call_id=call_id, access="read",
                                  rule="get", tool="get", args={},
                                  target=Target(cluster=cluster), actor="gate")

        assert await gate.append_once(classified("a")) is not None
        assert await gate.append_once(classified("b")) is None
        # A classification stored before cluster tokens (6 tokens), then the same call again.
        legacy = classified("", old_call)
        await admin.jetstream().publish(S.event_subject(legacy).rsplit(".", 1)[0],
                                        E.encode(legacy))
        assert await gate.append_once(classified("a", old_call)) is None
        # The executor's word: once per cluster.
        on_b = msgspec.structs.replace(_result(sid, call), cluster_name="b")
        on_a = msgspec.structs.replace(_result(sid, call), cluster_name="a")
        assert await ex.append_once(on_b) is not None
        assert await ex.append_once(on_a) is not None
        assert await ex.append_once(on_a) is None
        subjects = [s.subject for s in await ex.session(sid, verify=False)]
        assert subjects == [f"evt.{sid}.gate.tool.classified.{call}.a",
                            f"evt.{sid}.gate.tool.classified.{old_call}",
                            f"evt.{sid}.executor.tool.result.{call}.b",
                            f"evt.{sid}.executor.tool.result.{call}.a"]
    finally:
        await admin.close()
        await gate.close()
        await ex.close()
