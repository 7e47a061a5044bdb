"""A real gateway (aiohttp on a random port) over a real nats-server, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.nats import free_port
from schemas.approval import ApprovalCall, ApprovalRequested
from schemas.base import Target
from schemas.catalogue import call_hash
from services.gateway.auth import Principal, TokenStore
from services.gateway.oidc import Verifier
from services.gateway.ratelimit import Limits, Network, RateLimiter
from services.gateway.routes import Api, make_app
from services.gateway.sse import Connection
from services.runtime import approvers
from services.runtime.bus import Bus
from services.runtime.log import Expect
from services.runtime.settings import NatsSettings
from tests.conftest import NatsEnv
from tests.support import KEYS, Client

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


# The people who may decide, each with a key an admin enrolled (issue 18): tests.support.Client
# signs their decisions with it.
SIGNERS = ("approver", "admin")


async def enrol_signers(url: str, http: aiohttp.ClientSession, keys: Path,
                        admin: Ed25519PrivateKey) -> None:
    """Enrols, signed by the `admin` key, a key (made once in `keys`) for each signer's
    principal, through the gateway like any enrolment."""
    for role in SIGNERS:
        path = keys / f"{role}.key"
        if not path.exists():
            approvers.write_private_key(path, Ed25519PrivateKey.generate())
        KEYS[token_of(role)] = path
        principal = TOKENS[role][0]
        key = approvers.ed25519_key(approvers.load_private_key(path).public_key())
        body = {"principal": principal, "credential": msgspec.to_builtins(key),
                "admin": msgspec.to_builtins(approvers.sign_statement(
                    approvers.enrol_statement(principal, key), admin))}
        async with http.post(f"{url}/v1/approvers", json=body,
                             headers={"Authorization": f"Bearer {token_of('admin')}"}) as r:
            assert r.status == 201, await r.text()


@pytest.fixture
async def gateway_factory(nats_env: NatsEnv,
                          tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    cleanups: list[Callable[[], Awaitable[None]]] = []
    admin = Ed25519PrivateKey.generate()
    roots = tmp_path / "admins.pub"
    roots.write_text(approvers.public_line(admin.public_key()) + "\n")

    async def start(rate: float = 1000.0, burst: int = 10_000,
                    heartbeat_s: float = 15.0, *, failure_rate: float = 1000.0,
                    failure_burst: int = 10_000, sse_per_principal: int = 32,
                    principal_keys: int = 10_000,
                    trusted_proxies: tuple[Network, ...] = (),
                    oidc: Verifier | None = None) -> Gateway:
        connection = Connection()
        bus = await Bus.connect(nats_env.settings("gateway"), "gateway",
                                disconnected_cb=connection.changed,
                                reconnected_cb=connection.changed)
        gate_bus = await Bus.connect(nats_env.settings("gate"), "gate")
        api = Api(bus, tokens(), heartbeat_s, sse_per_principal=sse_per_principal,
                  admin_keys_file=roots, oidc=oidc)
        api.connection = connection
        limits = Limits.default(RateLimiter(rate, burst, max_keys=principal_keys),
                                RateLimiter(failure_rate, failure_burst), trusted_proxies)
        runner = web.AppRunner(make_app(api, limits=limits), shutdown_timeout=0.5,
                               access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        http = aiohttp.ClientSession()
        await enrol_signers(f"http://127.0.0.1:{port}", http, tmp_path, admin)

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
