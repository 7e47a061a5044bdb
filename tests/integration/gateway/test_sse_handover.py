"""A slow SSE reader. The gateway writes live events straight to caught-up clients; a client
whose socket is full is handed back to its own task, the hub holds a few frames for it and,
past that, leaves it to re-read the log. Here the reader's socket buffers are tiny and it reads
nothing until the hub has given up holding frames for it: it must then get every event once,
in order, and the other clients must not have waited for it. Also: HTTP/1.0 framing."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from schemas.session import UserMessage
from services.gateway import sse
from tests.integration.gateway.conftest import Gateway, token_of
from tests.support import sse_events

NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)
TEXT = "x" * 2000
N = 30


class Tiny(sse.Follower):
    """A follower on a socket with small buffers, that says when the hub let go of it."""

    created: asyncio.Event
    overflowed: asyncio.Event

    def __init__(self, transport: asyncio.Transport, *args: Any) -> None:
        Tiny.created.set()
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport.set_write_buffer_limits(high=1024)
        super().__init__(transport, *args)

    def hold(self, batch: list[sse.Live]) -> None:
        super().hold(batch)
        if self.reread:
            Tiny.overflowed.set()


async def _raw_get(url: str, path: str) -> socket.socket:
    """Sends the request on a socket with a small receive buffer, which nothing reads yet."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                            f"Authorization: Bearer {token_of('viewer')}\r\n\r\n".encode())
    return sock


async def _read_chunked_sse(reader: asyncio.StreamReader, count: int) -> list[tuple[int, str]]:
    """(id, text) of the first `count` events on a chunked text/event-stream response."""
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    body, got = b"", []
    while len(got) < count:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        body += (await reader.readexactly(size + 2))[:-2]
        *frames, body = body.split(b"\n\n")
        for fr in frames:
            fields = dict(line.split(": ", 1) for line in fr.decode().split("\n")
                          if not line.startswith(":") and ": " in line)
            if "id" in fields:
                got.append((int(fields["id"]), json.loads(fields["data"]).get("text", "")))
    return got


async def test_a_slow_reader_gets_every_event_once_and_holds_up_no_one(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = await gateway.client("operator").new_session()
    monkeypatch.setattr(sse, "MAX_PENDING", 2)
    Tiny.created, Tiny.overflowed = asyncio.Event(), asyncio.Event()
    with monkeypatch.context() as m:  # only this client; the next one is an ordinary one
        m.setattr(sse, "Follower", Tiny)
        sock = await _raw_get(gateway.url, f"/v1/sessions/{sid}/events")
        await asyncio.wait_for(Tiny.created.wait(), 10)
    try:
        other_got: list[str] = []
        other_ready = asyncio.Event()

        async def other() -> None:
            async with gateway.http.get(
                f"{gateway.url}/v1/sessions/{sid}/events",
                headers={"Authorization": f"Bearer {token_of('viewer')}"}, timeout=NO_TIMEOUT,
            ) as r:
                async for ev in sse_events(r):
                    other_ready.set()
                    if ev.event == "user.message":
                        other_got.append(ev.data["text"])
                        if len(other_got) == N:
                            return

        other_task = asyncio.create_task(other())
        await asyncio.wait_for(other_ready.wait(), 10)  # it has session.started
        for i in range(N):
            await gateway.bus.append(UserMessage(session_id=sid, text=f"{i}{TEXT}", actor="o"))
        # The ordinary client has everything while the slow one has read nothing yet.
        await asyncio.wait_for(other_task, 20)
        assert other_got == [f"{i}{TEXT}" for i in range(N)]
        await asyncio.wait_for(Tiny.overflowed.wait(), 10)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            got = await asyncio.wait_for(_read_chunked_sse(reader, N + 1), 20)
        finally:
            writer.close()
    finally:
        sock.close()
    stored = await gateway.bus.session(sid)
    assert [seq for seq, _ in got] == [s.seq for s in stored]
    assert [text for _, text in got[1:]] == [f"{i}{TEXT}" for i in range(N)]


async def test_an_http_10_client_gets_bare_frames_until_close(gateway: Gateway) -> None:
    """No chunked encoding on HTTP/1.0: the hub writes the frames as they are."""
    sid = await gateway.client("operator").new_session()
    parts = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET /v1/sessions/{sid}/events HTTP/1.0\r\n"
                     f"Authorization: Bearer {token_of('viewer')}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding" not in head.lower()
        assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 10) == b"retry: 2000\n\n"
        first = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # from the log
        assert b"event: session.started\n" in first
        await gateway.bus.append(UserMessage(session_id=sid, text="live", actor="o"))
        live = await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # written by the hub
        stored = await gateway.bus.session(sid)
        assert live.startswith(b"id: %d\nevent: user.message\ndata: " % stored[-1].seq)
        assert json.loads(live.split(b"data: ", 1)[1])["text"] == "live"
    finally:
        writer.close()
