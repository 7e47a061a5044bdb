"""Test helpers: an HTTP client for the gateway and an SSE reader. Waits are bounded by
timeouts on awaited events, never by sleeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class SseEvent:
    id: int | None
    event: str
    data: Any


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Parses a text/event-stream body; comments and retry lines are skipped."""
    ev_id: int | None = None
    ev_type = "message"
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield SseEvent(ev_id, ev_type, payload)
            ev_id, ev_type, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            ev_id = int(value)
        elif field == "event":
            ev_type = value
        elif field == "data":
            data.append(value)


class Client:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def new_session(self) -> str:
        status, body = await self.call("POST", "/v1/sessions", {})
        assert status == 201, body
        return str(body["session_id"])

    async def say(self, session_id: str, text: str) -> None:
        status, body = await self.call("POST", f"/v1/sessions/{session_id}/messages",
                                       {"text": text})
        assert status == 202, body

    async def wait_for(self, session_id: str, predicate: Any, after: int = 0,
                       timeout: float = 30.0) -> list[SseEvent]:
        """Reads the session's SSE stream from `after` until predicate(event) holds."""
        seen: list[SseEvent] = []

        async def read() -> list[SseEvent]:
            async with self.http.get(
                f"{self.base}/v1/sessions/{session_id}/events",
                headers={**self.headers, "Last-Event-ID": str(after)},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as r:
                assert r.status == 200, await r.text()
                async for ev in sse_events(r):
                    seen.append(ev)
                    if predicate(ev):
                        return seen
            raise AssertionError(f"stream ended; saw {[e.event for e in seen]}")

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError as exc:
            raise AssertionError(f"timed out; saw {[e.event for e in seen]}") from exc
