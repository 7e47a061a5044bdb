"""In-process planners against a real nats-server and a scripted OpenAI-compatible server. The
test plays the gateway, the gate and the executor by appending their events as their own NATS
users, so every append goes through the same permissions as in production."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from schemas import events as E
from schemas import subjects as S
from schemas.base import Event
from schemas.execution import ToolResult
from schemas.ids import new_session_id
from schemas.session import UserMessage
from services.planner.handlers import Planner
from services.planner.llm import OpenAIChat
from services.planner.settings import ModelSettings
from services.runtime.bus import Bus
from services.runtime.log import Expect
from tests.conftest import NatsEnv
from tests.support_llm import Script, ScriptedLLM

API_KEY = "sk-test-DO-NOT-LEAK-0123456789"


class Watch:
    """The session's events as they are stored (the EVENTS stream republishes to sse.>)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.seen: list[Event] = []

    async def until(self, pred: Callable[[Event], bool], timeout: float = 20.0) -> Event:  # noqa: ASYNC109
        async def scan() -> Event:
            while True:
                ev = await self.queue.get()
                self.seen.append(ev)
                if pred(ev):
                    return ev

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError as exc:
            raise AssertionError(f"timed out; saw {[e.type for e in self.seen]}") from exc

    async def tag(self, tag: str, timeout: float = 20.0) -> Event:  # noqa: ASYNC109
        return await self.until(lambda e: e.type == tag, timeout)


@dataclass
class Harness:
    env: NatsEnv
    llm: ScriptedLLM
    gateway: Bus
    gate: Bus
    executor: Bus
    planner_bus: Bus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    planners: list[Planner] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    deltas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    owned: list[Bus] = field(default_factory=list)

    def settings(self, **kw: Any) -> ModelSettings:
        return ModelSettings(model="scripted-1", base_url=self.llm.base_url, api_key=API_KEY,
                             **kw)

    def planner(self, bus: Bus | None = None, **kw: Any) -> Planner:
        s = self.settings(**kw)
        p = Planner(bus or self.planner_bus, OpenAIChat(s), s)
        self.planners.append(p)
        return p

    async def run_planners(self, n: int = 1, **kw: Any) -> list[Planner]:
        out = []
        for _ in range(n):
            bus = await Bus.connect(self.env.settings("planner"), "planner")
            self.owned.append(bus)
            p = self.planner(bus, **kw)
            self.tasks.append(asyncio.create_task(bus.consume("planner", p.handle, self.stop)))
            out.append(p)
        return out

    async def session(self) -> tuple[str, Watch]:
        sid = new_session_id()
        w = Watch()

        async def on(msg: Any) -> None:
            w.queue.put_nowait(E.decode(msg.data))

        async def on_delta(msg: Any) -> None:
            body = json.loads(msg.data)
            self.deltas.setdefault(body["step_id"], []).append(body)

        await self.gateway.nc.subscribe(S.live_filter(sid), cb=on)
        await self.gateway.nc.subscribe(S.delta_subject(sid), cb=on_delta)
        await self.gateway.nc.flush()
        return sid, w

    async def say(self, sid: str, text: str, actor: str = "alice") -> UserMessage:
        ev = UserMessage(session_id=sid, text=text, actor=actor, correlation_id="")
        await self.gateway.append(ev)
        return ev

    async def result(self, sid: str, call_id: str, tool: str, output: str,
                     status: str = "ok") -> ToolResult:
        ev = ToolResult(session_id=sid, call_id=call_id, tool=tool, status=status,  # type: ignore[arg-type]
                        output=output, actor="executor")
        await self.executor.append(ev, Expect.new_key())
        return ev

    async def events(self, sid: str) -> list[Event]:
        return [s.event for s in await self.gateway.session(sid)]

    async def raw(self, sid: str) -> bytes:
        return b"\n".join(s.raw for s in await self.gateway.session(sid))


@pytest.fixture
def script_holder() -> dict[str, Script]:
    return {}


@pytest.fixture
async def harness(nats_env: NatsEnv, script_holder: dict[str, Script]
                  ) -> AsyncIterator[Harness]:
    def script(req: Any) -> Any:
        return script_holder["script"](req)

    llm = await ScriptedLLM(script).start()
    buses = [await Bus.connect(nats_env.settings(u), u)
             for u in ("gateway", "gate", "executor", "planner")]
    h = Harness(nats_env, llm, *buses)
    try:
        yield h
    finally:
        h.stop.set()
        for t in h.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 10)
        for p in h.planners:
            if p.model is not None:
                await p.model.close()  # type: ignore[attr-defined]
        for b in [*h.owned, *buses]:
            await b.close()
        await llm.stop()
