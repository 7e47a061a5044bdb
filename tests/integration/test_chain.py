"""The session hash chain on a real log: appends from several writers verify clean; an altered,
cut or spliced event is pointed at exactly."""

from __future__ import annotations

import asyncio

import msgspec
import nats

from schemas import chain
from schemas import subjects as S
from schemas.execution import ToolStarted
from schemas.ids import new_session_id
from schemas.session import AssistantMessage, SessionStarted, UserMessage
from services.runtime.bus import Bus
from services.runtime.log import Expect
from tests.conftest import NatsEnv


async def _links(bus: Bus, sid: str) -> list[chain.Link]:
    return [chain.Link(s.seq, s.subject, s.raw) for s in await bus.session(sid)]


async def test_concurrent_appends_chain_and_verify(nats_env: NatsEnv) -> None:
    gw = await Bus.connect(nats_env.settings("gateway"), "gateway")
    pl = await Bus.connect(nats_env.settings("planner"), "planner")
    ex = await Bus.connect(nats_env.settings("executor"), "executor")
    try:
        sid = new_session_id()
        await gw.append(SessionStarted(session_id=sid, actor="alice"))
        await asyncio.gather(
            *(gw.append(UserMessage(session_id=sid, text=f"m{i}", actor="alice"))
              for i in range(20)),
            *(pl.append(AssistantMessage(session_id=sid, text=f"a{i}")) for i in range(20)),
            *(ex.append(ToolStarted(session_id=sid, call_id=f"c_{i}"), Expect.new_key())
              for i in range(10)),
        )
        links = await _links(gw, sid)
        assert len(links) == 51
        report = chain.verify_chain(links)
        assert report.ok, report.breaks
        assert report.head_seq == links[-1].seq
        # Linearised appends leave no fork; only once-per-key appends may share a predecessor.
        by_seq = {link.seq: link for link in links}
        for seq in report.forks:
            assert ".tool.started." in by_seq[seq].subject
    finally:
        for b in (gw, pl, ex):
            await b.close()


async def _session(nats_env: NatsEnv, n: int = 6) -> tuple[Bus, str]:
    bus = await Bus.connect(nats_env.settings("gateway"), "gateway")
    sid = new_session_id()
    await bus.append(SessionStarted(session_id=sid, actor="alice"))
    for i in range(n - 1):
        await bus.append(UserMessage(session_id=sid, text=f"kubectl get pods {i}", actor="alice"))
    return bus, sid


async def test_an_altered_event_is_pointed_at(nats_env: NatsEnv) -> None:
    bus, sid = await _session(nats_env)
    try:
        links = await _links(bus, sid)
        assert chain.verify_chain(links).ok
        victim = links[2]
        altered = victim.raw.replace(b"get pods 1", b"delete ns 1")
        assert altered != victim.raw
        tampered = [*links[:2], chain.Link(victim.seq, victim.subject, altered), *links[3:]]
        report = chain.verify_chain(tampered)
        assert not report.ok
        assert report.breaks == [{"seq": victim.seq, "problem":
                                  f"altered: its content no longer matches the hash recorded "
                                  f"by seq {links[3].seq}"}]
        cut = [*links[:2], *links[3:]]
        assert chain.verify_chain(cut).breaks[0]["seq"] == links[3].seq
        assert "missing" in str(chain.verify_chain(cut).breaks[0]["problem"])
    finally:
        await bus.close()


async def test_a_tampered_second_stream_copy_is_pointed_at(nats_env: NatsEnv) -> None:
    """A backup copy of the log (here a second stream) is verified the same way."""
    bus, sid = await _session(nats_env)
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    try:
        links = await _links(bus, sid)
        js = admin.jetstream()
        await js.add_stream(name="EVENTS_COPY", subjects=["copy.>"])
        for link in links:
            raw = link.raw
            if link.seq == links[4].seq:
                ev = msgspec.json.decode(raw)
                ev["actor"] = "mallory"
                raw = msgspec.json.encode(ev)
            await js.publish("copy." + link.subject, raw)
        copied = []
        for i in range(1, len(links) + 1):
            m = await js.get_msg("EVENTS_COPY", i)
            copied.append(chain.Link(links[i - 1].seq, m.subject.removeprefix("copy."), m.data))
        report = chain.verify_chain(copied)
        assert [b["seq"] for b in report.breaks] == [links[4].seq]
        assert chain.verify_chain(links).ok
    finally:
        await admin.close()
        await bus.close()


async def test_runtime_identities_cannot_delete_purge_or_edit_events(nats_env: NatsEnv) -> None:
    bus, _sid = await _session(nats_env, 2)
    await bus.close()

    async def attempts(user: str) -> None:
        errors: list[Exception] = []

        async def cb(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(nats_env.url, user=user, password=nats_env.credentials[user],
                                inbox_prefix=f"_INBOX_{user}".encode(), error_cb=cb)
        js = nc.jetstream(timeout=0.5)
        # The server drops a denied request, so each attempt ends in its timeout: they run at
        # once (every identity, every attempt) instead of one timeout after another.
        outcomes = await asyncio.gather(
            js.delete_msg(S.EVENTS_STREAM, 1), js.purge_stream(S.EVENTS_STREAM),
            js.delete_stream(S.EVENTS_STREAM),
            js.update_stream(name=S.EVENTS_STREAM, subjects=["evt.>"], deny_delete=False),
            return_exceptions=True)
        await nc.close()
        for outcome in outcomes:
            if not isinstance(outcome, nats.errors.TimeoutError | nats.js.errors.APIError):
                raise AssertionError(f"{user} changed EVENTS: {outcome!r}")
        assert any("permissions violation" in str(e).lower() for e in errors), (user, errors)

    await asyncio.gather(*(attempts(user) for user in S.SERVICES))
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    try:
        info = await admin.jetstream().stream_info(S.EVENTS_STREAM)
        assert info.state.messages == 2
        assert info.config.deny_delete
        assert info.config.deny_purge
    finally:
        await admin.close()
