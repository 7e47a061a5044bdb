"""A small async client of the gateway's HTTP API and its SSE streams, for the CLI.

Reads INTERLOCK_URL and INTERLOCK_TOKEN; without a token, the sign-in `interlock login` stored
for that gateway (clients/credentials.py: its ID token, refreshed when due). Streams resume from
the last id they saw when the connection drops, so a watcher never misses or repeats an event.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from clients.credentials import LoginError, TokenSource

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code, self.message = status, code, message


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]


def default_url(url: str | None = None) -> str:
    return (url or os.environ.get("INTERLOCK_URL", "") or DEFAULT_URL).rstrip("/")


class Gateway:
    """`token`: a static bearer token; or `source`: the stored sign-in, asked for the current ID
    token before each request (it refreshes it when due) and once more after a 401."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str,
                 source: TokenSource | None = None) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.token = token
        self.source = source

    @classmethod
    def from_env(cls, http: aiohttp.ClientSession, url: str | None = None,
                 token: str | None = None) -> Gateway:
        url = default_url(url)
        token = token or os.environ.get("INTERLOCK_TOKEN", "")
        if token:
            return cls(http, url, token)
        try:
            source = TokenSource.stored(http, url)
        except LoginError as exc:
            raise ApiError(0, "no_token", str(exc)) from None
        if source is None:
            raise ApiError(0, "no_token", f"set INTERLOCK_TOKEN (or pass --token), or sign in "
                                          f"to {url} with `interlock login`")
        return cls(http, url, "", source)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def authorize(self, force: bool = False) -> dict[str, str]:
        """The Authorization header, from the stored sign-in when there is no static token."""
        if self.source is not None:
            try:
                self.token = await self.source.token(force=force)
            except LoginError as exc:
                raise ApiError(401, "unauthenticated", str(exc)) from None
        return self.headers

    def _retry(self, status: int, attempt: int) -> bool:
        """A 401 with a stored sign-in: refresh the ID token once and try again."""
        return status == 401 and attempt == 0 and self.source is not None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            for attempt in range(2):
                headers = await self.authorize(force=attempt > 0)
                async with self.http.request(method, self.url + path, json=body,
                                             headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=30)) as r:
                    if self._retry(r.status, attempt):
                        continue
                    text = await r.text()
                    try:
                        data = json.loads(text) if text else None
                    except ValueError:
                        data = None
                    if r.status >= 400:
                        err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                        raise ApiError(r.status, err.get("code", f"http_{r.status}"),
                                       err.get("message", text[:200] or r.reason or ""))
                    return data
        except aiohttp.ClientError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    async def text(self, path: str) -> str:
        """A GET whose answer is text (e.g. the audit timeline); errors as in `call`."""
        try:
            for attempt in range(2):
                headers = await self.authorize(force=attempt > 0)
                async with self.http.get(self.url + path, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=60)) as r:
                    if self._retry(r.status, attempt):
                        continue
                    body = await r.text()
                    if r.status >= 400:
                        try:
                            err = json.loads(body)["error"]
                        except (ValueError, KeyError, TypeError):
                            err = {"code": f"http_{r.status}", "message": body[:200]}
                        raise ApiError(r.status, err["code"], err["message"])
                    return body
        except aiohttp.ClientError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        raise AssertionError("unreachable")

    async def me(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.call("GET", "/v1/me")
        return data

    async def new_session(self, title: str = "", cluster: str = "") -> str:
        body = {"title": title} | ({"cluster": cluster} if cluster else {})
        return str((await self.call("POST", "/v1/sessions", body))["session_id"])

    async def say(self, session_id: str, text: str) -> None:
        await self.call("POST", f"/v1/sessions/{session_id}/messages", {"text": text})

    async def approvals(self, state: str = "pending") -> list[dict[str, Any]]:
        data = await self.call("GET", f"/v1/approvals?state={state}")
        return list(data["approvals"])

    async def approval(self, approval_id: str) -> dict[str, Any]:
        """One approval as GET /v1/approvals shows it (pending first: what is decided)."""
        for state in ("pending", "all"):
            for a in await self.approvals(state):
                if a.get("approval_id") == approval_id:
                    return a
        raise ApiError(404, "not_found", f"no approval {approval_id}")

    async def decide(self, approval_id: str, decision: str, reason: str = "",
                     args: dict[str, Any] | None = None,
                     signature: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": decision, "reason": reason}
        if args is not None:
            body["args"] = args
        if signature is not None:
            body["signature"] = signature
        data: dict[str, Any] = await self.call(
            "POST", f"/v1/approvals/{approval_id}/decision", body)
        return data

    async def sealed_edits(self, approval_id: str, edits: dict[str, Any]) -> dict[str, Any]:
        """The edits with any secret value sealed by the gateway: what is signed and sent."""
        data: dict[str, Any] = await self.call(
            "POST", f"/v1/approvals/{approval_id}/edits", {"args": edits})
        return dict(data["edits"])

    async def approvers(self) -> dict[str, Any]:
        """The registry: enrolled keys, passkeys waiting to be enrolled, the admin keys."""
        data: dict[str, Any] = await self.call("GET", "/v1/approvers")
        return data

    async def enrol(self, principal: str, credential: dict[str, Any],
                    admin: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = await self.call(
            "POST", "/v1/approvers",
            {"principal": principal, "credential": credential, "admin": admin})
        return data

    async def revoke(self, principal: str, key_id: str, admin: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = await self.call(
            "POST", "/v1/approvers/revocations",
            {"principal": principal, "key_id": key_id, "admin": admin})
        return data

    async def events(self, session_id: str, after: int = 0,
                     stop_at: int | None = None) -> AsyncIterator[Event]:
        """The session's events from `after`, following live; reconnects by itself.
        With stop_at, ends once the event with that id (or a later one) was yielded."""
        last = after
        backoff = 0.5
        force = False
        while True:
            try:
                headers = await self.authorize(force=force)
                async with self.http.get(
                    f"{self.url}/v1/sessions/{session_id}/events",
                    headers={**headers, "Last-Event-ID": str(last)},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                ) as r:
                    if self._retry(r.status, int(force)):
                        force = True
                        continue
                    force = False
                    if r.status >= 400:
                        body = await r.text()
                        try:
                            err = json.loads(body)["error"]
                        except (ValueError, KeyError, TypeError):
                            err = {"code": f"http_{r.status}", "message": body[:200]}
                        raise ApiError(r.status, err["code"], err["message"])
                    backoff = 0.5
                    async for ev in parse_sse(r):
                        if ev.type == "reset":
                            last = 0
                            continue
                        if ev.id <= last:
                            continue
                        last = ev.id
                        yield ev
                        if stop_at is not None and last >= stop_at:
                            return
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(backoff)  # the gateway restarts: resume from `last`
                backoff = min(backoff * 2, 5.0)


async def parse_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    ev_id, ev_type = 0, "message"
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode(errors="replace").rstrip("\r\n")
        if line == "":
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"raw": "\n".join(data)}
                yield Event(ev_id, ev_type, payload if isinstance(payload, dict) else {})
            ev_id, ev_type, data = 0, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id" and value.isdigit():
            ev_id = int(value)
        elif field == "event":
            ev_type = value
        elif field == "data":
            data.append(value)
