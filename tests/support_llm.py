"""A scripted OpenAI-compatible chat-completions server, for driving the planner's model loop
with the real `openai` client over real HTTP.

A script is a function of the request (the conversation so far) that returns a `Reply`: text,
tool calls, or an HTTP error such as a 429. Replies stream as SSE chunks the way OpenAI sends
them (role, content pieces, tool-call argument fragments, finish_reason, `[DONE]`). Like the real
API, the server rejects a conversation whose tool calls and tool results do not pair up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from launcher.nats import free_port


@dataclass
class Reply:
    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""


def say(text: str) -> Reply:
    return Reply(text=text)


def call(tool: str, **args: Any) -> Reply:
    return Reply(calls=[(tool, args)])


def calls(*items: tuple[str, dict[str, Any]], text: str = "") -> Reply:
    return Reply(text=text, calls=list(items))


def rate_limited(retry_after: str = "0") -> Reply:
    return Reply(status=429, headers={"retry-after": retry_after},
                 error="Rate limit reached for requests")


@dataclass
class Request:
    """One chat-completions request as the server saw it."""

    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = self.body["messages"]
        return msgs

    @property
    def system(self) -> str:
        return str(self.messages[0]["content"]) if self.messages[0]["role"] == "system" else ""

    def tool_results(self) -> list[str]:
        return [str(m["content"]) for m in self.messages if m["role"] == "tool"]

    def last(self) -> dict[str, Any]:
        return self.messages[-1]

    def user_texts(self) -> list[str]:
        return [str(m["content"]) for m in self.messages if m["role"] == "user"]

    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools", [])]


Script = Callable[[Request], Reply]


def sequence(*replies: Reply) -> Script:
    """Replies in order, one per request, whatever the request."""
    queue = list(replies)

    def script(_: Request) -> Reply:
        if not queue:
            return Reply(text="(script exhausted)")
        return queue.pop(0)

    return script


def _pairing_error(messages: list[dict[str, Any]]) -> str:
    """What the real API checks: every tool call answered by a tool message right after it."""
    open_ids: list[str] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in open_ids:
                return f"messages[{i}]: tool message without a preceding tool call"
            open_ids.remove(m["tool_call_id"])
            continue
        if open_ids:
            return f"messages[{i}]: tool calls {open_ids} have no tool messages"
        if role == "assistant":
            open_ids = [c["id"] for c in m.get("tool_calls") or []]
    return f"tool calls {open_ids} have no tool messages" if open_ids else ""


class ScriptedLLM:
    def __init__(self, script: Script, model: str = "scripted-1", chunk: int = 7) -> None:
        self.script = script
        self.model = model
        self.chunk = chunk
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.authorizations: list[str] = []
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> ScriptedLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ScriptedLLM:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def wait_requests(self, n: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.requests) >= n),
                                   timeout)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None
               ) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error", "code": None}},
            status=status, headers=headers or {})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.authorizations.append(request.headers.get("Authorization", ""))
        req = Request(body)
        async with self.arrived:
            self.requests.append(req)
            self.arrived.notify_all()
        problem = _pairing_error(body.get("messages", []))
        if problem:
            self.errors.append(problem)
            return self._error(400, problem)
        if not body.get("stream"):
            self.errors.append("not a streaming request")
            return self._error(400, "this server only streams")
        reply = self.script(req)
        if reply.status != 200:
            return self._error(reply.status, reply.error or "error", reply.headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = len(self.requests)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0,
                     "model": self.model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for i in range(0, len(reply.text), self.chunk):
            await send({"content": reply.text[i:i + self.chunk]})
        for idx, (name, args) in enumerate(reply.calls):
            text = json.dumps(args)
            await send({"tool_calls": [{"index": idx, "id": f"call_{n}_{idx}", "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
            for i in range(0, len(text), self.chunk * 3):
                await send({"tool_calls": [{"index": idx, "function": {
                    "arguments": text[i:i + self.chunk * 3]}}]})
        await send({}, "tool_calls" if reply.calls else "stop")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
