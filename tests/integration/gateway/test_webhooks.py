"""The notifier: approval events → HMAC-signed webhook posts received by a real local HTTP server,
retried with backoff, sent once by N notifier instances, never blocking anything."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from launcher.nats import free_port
from schemas.approval import ApprovalDenied
from services.notifier.service import run
from services.notifier.settings import NotifierSettings, parse_webhook
from services.runtime.errors import ConfigError
from services.runtime.log import Expect
from tests.conftest import NatsEnv
from tests.integration.gateway.conftest import Gateway

SECRET = "webhook-secret-0123456789"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    got: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> 500s to answer first
    attempts: dict[str, int] = field(default_factory=dict)

    async def next(self, within: float = 20.0) -> Received:
        return await asyncio.wait_for(self.got.get(), within)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}")

    async def hook(request: web.Request) -> web.Response:
        path = request.path
        rec.attempts[path] = rec.attempts.get(path, 0) + 1
        if rec.fail_first.get(path, 0) > 0:
            rec.fail_first[path] -= 1
            return web.Response(status=503)
        await rec.got.put(Received(path, dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def notifiers(nats_env: NatsEnv, hooks: str, n: int = 1) -> AsyncIterator[None]:
    settings = NotifierSettings.from_env({
        "INTERLOCK_NATS_URL": nats_env.url, "INTERLOCK_NATS_USER": "notifier",
        "INTERLOCK_NATS_PASSWORD": nats_env.credentials["notifier"],
        "INTERLOCK_KEYRING_FILE": nats_env.settings("notifier").keyring_file,
        "INTERLOCK_WEBHOOKS": hooks, "INTERLOCK_WEBHOOK_SECRET": SECRET,
        "INTERLOCK_PUBLIC_URL": "https://interlock.example", "INTERLOCK_WEBHOOK_BACKOFF": "0.05",
        "INTERLOCK_WEBHOOK_ATTEMPTS": "4", "INTERLOCK_WEBHOOK_TIMEOUT": "2",
    })
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run(settings, stop)) for _ in range(n)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)


def verify(r: Received) -> None:
    ts = r.headers["X-Interlock-Timestamp"]
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + r.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(r.headers["X-Interlock-Signature"], f"sha256={expected}")
    # A tampered body does not verify.
    forged = hmac.new(SECRET.encode(), ts.encode() + b"." + r.body + b" ", hashlib.sha256)
    assert r.headers["X-Interlock-Signature"] != f"sha256={forged.hexdigest()}"


async def test_an_approval_is_notified_signed_and_its_outcome_too(
    gateway: Gateway, nats_env: NatsEnv, receiver: Receiver
) -> None:
    receiver.fail_first["/json"] = 2  # two 503s, then success: retried with backoff
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"  # refused: must block nothing
    hooks = f"{receiver.url}/json, slack+{receiver.url}/slack, {dead}"
    sid = await gateway.client("operator").new_session()
    async with notifiers(nats_env, hooks, n=2):
        req = await gateway.request_approval(sid, replicas=4)
        got = {r.path: r for r in (await receiver.next(), await receiver.next())}
        assert set(got) == {"/json", "/slack"}
        for r in got.values():
            verify(r)
            assert r.headers["X-Interlock-Event"] == "approval.requested"
            assert r.headers["X-Interlock-Delivery"] == req.event_id
        body = got["/json"].json
        assert body["type"] == "approval.requested"
        assert body["approval_id"] == req.approval_id
        assert body["session_id"] == sid
        assert body["link"] == (f"https://interlock.example/#session={sid}"
                                f"&approval={req.approval_id}")
        assert "scale deployment/web in shop, spec.replicas: 3 → 4" in body["summary"]
        assert body["approval"]["calls"][0]["diff"] == [
            {"path": "spec.replicas", "before": 3, "after": 4}]
        assert body["approval"]["expires_at"] == body["event"]["expires_at"]
        assert receiver.attempts["/json"] == 3
        slack = got["/slack"].json
        assert set(slack) == {"text", "blocks"}
        assert body["summary"] in slack["text"]
        assert body["link"] in slack["text"]

        denied = ApprovalDenied(session_id=sid, approval_id=req.approval_id,
                                call_ids=req.call_ids, approver="alice",
                                reason="not during the sale", actor="gate")
        await gateway.gate_bus.append(denied, Expect.new_key())
        got = {r.path: r for r in (await receiver.next(), await receiver.next())}
        out = got["/json"].json
        verify(got["/json"])
        assert out["type"] == "approval.denied"
        assert out["event"]["approver"] == "alice"
        assert "Denied by alice" in out["summary"]
        assert "not during the sale" in out["summary"]
        assert out["approval"]["approval_id"] == req.approval_id  # with the request's context
    # Two notifier instances, one delivery each: nothing else arrived.
    assert receiver.got.empty()
    assert receiver.attempts == {"/json": 4, "/slack": 2}


async def test_history_is_not_notified(gateway: Gateway, nats_env: NatsEnv,
                                       receiver: Receiver) -> None:
    sid = await gateway.client("operator").new_session()
    await gateway.request_approval(sid, ttl_s=-5)  # already expired when the notifier sees it
    live = await gateway.request_approval(sid)
    async with notifiers(nats_env, f"{receiver.url}/json"):
        r = await receiver.next()
        assert r.json["approval_id"] == live.approval_id
    assert receiver.got.empty()


def test_settings_refuse_unsigned_or_odd_webhooks() -> None:
    base = {"INTERLOCK_NATS_PASSWORD": "x", "INTERLOCK_KEYRING_FILE": "/keys/keyring.json"}
    with pytest.raises(ConfigError, match="SECRET"):
        NotifierSettings.from_env({**base, "INTERLOCK_WEBHOOKS": "https://h.example/x"})
    with pytest.raises(ConfigError, match="not an http"):
        parse_webhook("ftp://h.example/x")
    assert parse_webhook("slack+https://hooks.slack.com/services/T/B/X").format == "slack"
    assert parse_webhook("https://hooks.slack.com/services/T/B/X").where == \
        "https://hooks.slack.com"
    assert NotifierSettings.from_env(base).webhooks == ()
