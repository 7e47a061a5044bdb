"""Test helpers: an HTTP client for the gateway and an SSE reader. Waits are bounded by
timeouts on awaited events, never by sleeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients import keys
from schemas.approvers import Signature
from services.runtime import approvers


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


# The signing key of each token's principal, as the stacks under test made them (issue 18: a
# decision counts only when its approver signs it). `remember_keys` fills it when a stack starts.
KEYS: dict[str, Path] = {}


def remember_keys(stack: Any) -> None:
    """Records the keys `interlock up` made for the principals that may approve."""
    for who in ("admin", "approver"):
        token = stack.cfg.admin_token if who == "admin" else stack.tokens.get(who, {}).get("token")
        if token:
            KEYS[str(token)] = stack.person_key(who)


def decision_signature(approval: dict[str, Any], approver: str, body: dict[str, Any],
                       key: Ed25519PrivateKey | Path) -> Signature:
    """The approver's signature over the statement of decision `body` (decision, reason, args)
    of `approval` as served — what a client builds from the card its person saw."""
    if isinstance(key, Path):
        key = approvers.load_private_key(key)
    # Built as the CLI builds it (clients/keys), from the card as served.
    statement = keys.decision_statement(approval, approver=approver,
                                        decision=str(body.get("decision")),
                                        reason=body.get("reason", ""), edits=body.get("args"))
    return approvers.sign_statement(statement, key)


def signed_decision(approval: dict[str, Any], approver: str, body: dict[str, Any],
                    key: Ed25519PrivateKey | Path) -> dict[str, Any]:
    """`body` of a decision with its approver's signature (decision_signature)."""
    return {**body, "signature": msgspec.to_builtins(
        decision_signature(approval, approver, body, key))}


class Unsigned(Exception):
    """A decision that could not be signed: reading its approval failed with `status`."""

    def __init__(self, status: int, answer: str) -> None:
        super().__init__(status, answer)
        self.status = status
        self.answer = answer


class Client:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str,
                 key: Path | None = None) -> None:
        self.http = http
        self.base = base
        self.token = token
        self.key = key

    async def sign(self, path: str, body: Any, token: str) -> Any:
        """A decision posted without a signature is signed with the token's key, if known."""
        key_file = self.key if token == self.token and self.key else KEYS.get(token)
        if not (key_file and isinstance(body, dict) and "signature" not in body
                and path.startswith("/v1/approvals/") and path.endswith("/decision")):
            return body
        approval_id = path.split("/")[3]
        headers = {"Authorization": f"Bearer {token}"}
        approval = None
        # Pending first (what is decided, and a short list), then every state.
        for attempt, state in enumerate(("pending", "all", "pending", "all", "all")):
            async with self.http.get(f"{self.base}/v1/approvals?state={state}",
                                     headers=headers) as r:
                if r.status >= 500 or r.status == 429:
                    # What the person's client saw of the card failed (NATS away, say): the
                    # decision is not sent, and the caller hears the same answer it would have.
                    raise Unsigned(r.status, await r.text())
                listed = (await r.json()).get("approvals", []) if r.status == 200 else []
            approval = next((a for a in listed if a["approval_id"] == approval_id), None)
            if approval is not None or r.status != 200:
                break
            if state == "all":  # a replica behind the one the card came from: look again
                await asyncio.sleep(0.2 * attempt)
        async with self.http.get(self.base + "/v1/me", headers=headers) as r:
            me = await r.json() if r.status == 200 else {}
        if approval is None or "name" not in me:
            return body  # nothing to sign for: the gateway answers as it would
        if isinstance(body.get("args"), dict):  # secret values sealed first, as a client does
            async with self.http.post(f"{self.base}/v1/approvals/{approval_id}/edits",
                                      json={"args": body["args"]}, headers=headers) as r:
                if r.status == 200:
                    body = {**body, "args": (await r.json())["edits"]}
        return signed_decision(approval, me["name"], body, key_file)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if method == "POST":
            try:
                body = await self.sign(path, body, token or self.token)
            except Unsigned as exc:
                return exc.status, exc.answer
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
