"""A real gateway (aiohttp on a random port) over a real nats-server, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from launcher.nats import free_port
from schemas.approval import ApprovalCall, ApprovalRequested
from schemas.base import Target
from schemas.catalogue import call_hash
from services.gateway.auth import Principal, TokenStore
from services.gateway.ratelimit import Limits, Network, RateLimiter
from services.gateway.routes import Api, make_app
from services.gateway.sse import Connection
from services.runtime.bus import Bus
from services.runtime.log import Expect
from services.runtime.settings import NatsSettings
from tests.conftest import NatsEnv
from tests.support import Client

TOKENS = {
    "viewer": ("vera", ("viewer",)),
    "operator": ("otto", ("operator",)),
    "approver": ("alice", ("operator", "approver")),
    "admin": ("root", ("admin",)),
}


def token_of(role: str) -> str:
    return f"test-token-{role}-0123456789"


@dataclass
class Gateway:
    url: str
    api: Api
    bus: Bus
    http: aiohttp.ClientSession
    gate_bus: Bus
    env: NatsEnv

    def bus_settings(self, user: str) -> NatsSettings:
        return self.env.settings(user)

    def client(self, role: str) -> Client:
        return Client(self.http, self.url, token_of(role))

    async def request_approval(self, session_id: str, replicas: int = 4,
                               ttl_s: float = 600.0) -> ApprovalRequested:
        """Appends an approval.requested as the gate would (as the gate's NATS user)."""
        from datetime import UTC, datetime, timedelta

        from schemas.approval import BlastRadius, FieldChange
        from schemas.ids import new_approval_id, new_call_id

        args = {"cluster": "", "kind": "deployment", "name": "web", "namespace": "shop",
                "replicas": replicas}
        target = Target(namespace="shop", kind="deployment", name="web")
        req = ApprovalRequested(
            session_id=session_id, approval_id=new_approval_id(), actor="gate",
            calls=(ApprovalCall(call_id=new_call_id(), tool="scale", args=args,
                                call_hash=call_hash("scale", args), target=target,
                                diff=(FieldChange(path="spec.replicas", before=3,
                                                  after=replicas),),
                                blast_radius=BlastRadius(replicas_before=3,
                                                         replicas_after=replicas,
                                                         summary="3 pods → 4")),),
            rationale="the shop is busy", expected_outcome="4 pods ready",
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
        )
        await self.gate_bus.append(req, Expect.new_key())
        return req


def tokens() -> TokenStore:
    store = TokenStore()
    for role, (name, roles) in TOKENS.items():
        store.add(token_of(role), Principal(name, frozenset(roles)))
    return store


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(nats_env: NatsEnv) -> AsyncIterator[GatewayFactory]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(rate: float = 1000.0, burst: int = 10_000,
                    heartbeat_s: float = 15.0, *, failure_rate: float = 1000.0,
                    failure_burst: int = 10_000, sse_per_principal: int = 32,
                    principal_keys: int = 10_000,
                    trusted_proxies: tuple[Network, ...] = ()) -> Gateway:
        connection = Connection()
        bus = await Bus.connect(nats_env.settings("gateway"), "gateway",
                                disconnected_cb=connection.changed,
                                reconnected_cb=connection.changed)
        gate_bus = await Bus.connect(nats_env.settings("gate"), "gate")
        api = Api(bus, tokens(), heartbeat_s, sse_per_principal=sse_per_principal)
        api.connection = connection
        limits = Limits.default(RateLimiter(rate, burst, max_keys=principal_keys),
                                RateLimiter(failure_rate, failure_burst), trusted_proxies)
        runner = web.AppRunner(make_app(api, limits=limits), shutdown_timeout=0.5,
                               access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        http = aiohttp.ClientSession()

        async def stop() -> None:
            await http.close()
            await runner.cleanup()
            await bus.close()
            await gate_bus.close()

        cleanups.append(stop)
        return Gateway(f"http://127.0.0.1:{port}", api, bus, http, gate_bus, nats_env)

    try:
        yield start
    finally:
        for stop in reversed(cleanups):
            await stop()


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()
