"""Resumable SSE at the HTTP level: disconnect after k events, reconnect with Last-Event-ID (or
?after= / ?last_event_id=), receive exactly the rest; many clients; resets; heartbeats."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from schemas.session import AssistantMessage, UserMessage
from services.runtime.bus import Bus
from tests.conftest import NatsEnv
from tests.integration.gateway.conftest import Gateway, GatewayFactory, token_of
from tests.support import SseEvent, sse_events

NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


async def _seed(gw: Gateway, n: int) -> tuple[str, list[int]]:
    """A session with n stored events from two emitters, interleaved with another session's."""
    api = gw.client("operator")
    sid = await api.new_session()
    other = await api.new_session()
    planner = await Bus.connect(gw.bus_settings("planner"), "planner")
    try:
        for i in range(n - 1):
            if i % 2:
                await planner.append(AssistantMessage(session_id=sid, text=f"a{i}"))
            else:
                await gw.bus.append(UserMessage(session_id=sid, text=f"u{i}", actor="otto"))
            await gw.bus.append(UserMessage(session_id=other, text="noise", actor="otto"))
    finally:
        await planner.close()
    seqs = [s.seq for s in await gw.bus.session(sid)]
    assert len(seqs) == n
    return sid, seqs


async def _read(gw: Gateway, sid: str, count: int, headers: dict[str, str] | None = None,
                query: str = "", within: float = 10.0) -> list[SseEvent]:
    got: list[SseEvent] = []

    async def go() -> None:
        async with gw.http.get(
            f"{gw.url}/v1/sessions/{sid}/events{query}",
            headers={"Authorization": f"Bearer {token_of('viewer')}", **(headers or {})},
            timeout=NO_TIMEOUT,
        ) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.headers["Cache-Control"] == "no-cache"
            async for ev in sse_events(r):
                got.append(ev)
                if len(got) >= count:
                    return  # leaving the block closes the connection: a disconnect

    await asyncio.wait_for(go(), within)
    return got


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("how", ["header", "after", "last_event_id"])
async def test_reconnect_receives_exactly_the_rest(gateway: Gateway, k: int, how: str) -> None:
    sid, seqs = await _seed(gateway, 8)
    first = await _read(gateway, sid, k)
    assert [e.id for e in first] == seqs[:k]
    last = str(first[-1].id)
    headers, query = {}, ""
    if how == "header":
        headers = {"Last-Event-ID": last}
    else:
        query = f"?{how}={last}"
    rest = await _read(gateway, sid, len(seqs) - k, headers=headers, query=query)
    assert [e.id for e in rest] == seqs[k:]
    # Live events after the replay arrive once, in order, on the same stream.
    live_task = asyncio.create_task(
        _read(gateway, sid, len(seqs) - k + 2, headers={"Last-Event-ID": last}))
    for text in ("live-1", "live-2"):
        await gateway.bus.append(UserMessage(session_id=sid, text=text, actor="otto"))
    live = await live_task
    ids = [e.id for e in live]
    assert ids[: len(seqs) - k] == seqs[k:]
    assert [e.data["text"] for e in live[-2:]] == ["live-1", "live-2"]
    assert ids == sorted(set(ids))  # no duplicate, no reordering


async def test_event_fields_and_retry_once(gateway: Gateway) -> None:
    sid, seqs = await _seed(gateway, 3)
    async with gateway.http.get(
        f"{gateway.url}/v1/sessions/{sid}/events",
        headers={"Authorization": f"Bearer {token_of('viewer')}"}, timeout=NO_TIMEOUT,
    ) as r:
        lines: list[str] = []
        while len([x for x in lines if x.startswith("id: ")]) < 3:
            lines.append((await asyncio.wait_for(r.content.readline(), 10)).decode().rstrip("\n"))
    assert lines[0] == "retry: 2000"
    assert [x for x in lines if x.startswith("retry:")] == ["retry: 2000"]
    assert [x for x in lines if x.startswith("id: ")] == [f"id: {s}" for s in seqs]
    assert "event: session.started" in lines


async def test_many_clients_each_get_every_event_once(gateway: Gateway) -> None:
    sid, seqs = await _seed(gateway, 4)
    total = len(seqs) + 5
    readers = [asyncio.create_task(_read(gateway, sid, total, within=20)) for _ in range(25)]
    # Wait until every client is streaming (they have all received the stored events).
    for _ in range(2000):
        if gateway.api.metrics.sse_clients == 25:
            break
        await asyncio.sleep(0.01)
    assert gateway.api.metrics.sse_clients == 25
    for i in range(5):
        await gateway.bus.append(UserMessage(session_id=sid, text=f"m{i}", actor="otto"))
    results = await asyncio.gather(*readers)
    expected = [e.id for e in results[0]]
    assert len(expected) == total
    assert expected == sorted(set(expected))
    assert all([e.id for e in r] == expected for r in results)


async def test_an_id_from_another_log_gets_a_reset(gateway: Gateway) -> None:
    sid, seqs = await _seed(gateway, 3)
    got = await _read(gateway, sid, 4, headers={"Last-Event-ID": "999999"})
    assert got[0].event == "reset"
    assert got[0].id is None
    assert got[0].data["last_event_id"] == 999999
    assert [e.id for e in got[1:]] == seqs  # then the whole session again


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "1" * 20, "٣"])
async def test_a_malformed_id_is_a_400(gateway: Gateway, bad: str) -> None:
    sid, _ = await _seed(gateway, 2)
    async with gateway.http.get(
        f"{gateway.url}/v1/sessions/{sid}/events",
        headers={"Authorization": f"Bearer {token_of('viewer')}", "Last-Event-ID": bad},
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_event_id"


async def test_heartbeat_comments_keep_the_stream_alive(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(heartbeat_s=0.05)
    sid, _ = await _seed(gw, 2)
    async with gw.http.get(
        f"{gw.url}/v1/sessions/{sid}/events",
        headers={"Authorization": f"Bearer {token_of('viewer')}"}, timeout=NO_TIMEOUT,
    ) as r:
        pings = 0
        while pings < 3:
            line = (await asyncio.wait_for(r.content.readline(), 10)).decode()
            pings += line == ": ping\n"
    assert pings == 3


async def test_a_disconnect_does_not_stop_anything(gateway: Gateway, nats_env: NatsEnv) -> None:
    """A client leaving mid-stream ends only its stream: appends go on, the gauge drops."""
    sid, seqs = await _seed(gateway, 2)
    await _read(gateway, sid, 1)
    appended = 0
    for _ in range(2000):  # the gateway notices the closed socket on its next write
        await gateway.bus.append(UserMessage(session_id=sid, text="after", actor="otto"))
        appended += 1
        if gateway.api.metrics.sse_clients == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway.api.metrics.sse_clients == 0
    rest = await _read(gateway, sid, appended, headers={"Last-Event-ID": str(seqs[-1])})
    assert [e.data["text"] for e in rest] == ["after"] * appended


async def test_unknown_session_is_a_404_before_streaming(gateway: Gateway) -> None:
    async with gateway.http.get(
        f"{gateway.url}/v1/sessions/s_nope/events",
        headers={"Authorization": f"Bearer {token_of('viewer')}"},
    ) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"


async def test_the_live_tail_catches_up_after_a_nats_reconnect(
    gateway_factory: GatewayFactory, nats_env: NatsEnv
) -> None:
    """Events stored while the gateway's NATS connection was down are not lost: the stream
    re-reads the log from its last id (the republish is core NATS and is not replayed) as soon
    as the connection changed — not at its next heartbeat, which here would be an hour away
    (the reader gives up after 30 s)."""
    gateway = await gateway_factory(heartbeat_s=3600.0)
    sid, _seqs = await _seed(gateway, 2)
    reader = asyncio.create_task(_read(gateway, sid, 5, within=30))
    for _ in range(2000):
        if gateway.api.metrics.sse_clients == 1:
            break
        await asyncio.sleep(0.01)
    # Force the gateway's connection to reconnect; meanwhile another writer appends.
    gen = gateway.api.connection.generation
    await gateway.bus.nc._process_op_err(ConnectionResetError("test"))
    writer = await Bus.connect(nats_env.settings("gateway"), "gateway")
    try:
        for i in range(3):
            await writer.append(UserMessage(session_id=sid, text=f"w{i}", actor="otto"))
    finally:
        await writer.close()
    got = await reader
    assert gateway.api.connection.generation > gen
    assert [e.data.get("text") for e in got[2:]] == ["w0", "w1", "w2"]
    ids = [e.id for e in got]
    assert ids == sorted(set(ids))
