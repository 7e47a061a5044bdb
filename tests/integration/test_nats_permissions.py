"""The bus itself enforces who may say what (DESIGN.md §3.1): only the gate may publish to
exec.write.>, no runtime user may create or change streams or consumers, and each service may
publish only events that name it as their emitter."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from schemas import subjects as S
from schemas.session import UserMessage
from tests.conftest import NatsEnv

NON_GATE = ("planner", "executor", "gateway", "notifier")


async def _connect(env: NatsEnv, user: str) -> tuple[nats.NATS, list[Exception]]:
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(env.url, user=user, password=env.credentials[user],
                            inbox_prefix=f"_INBOX_{user}".encode(), error_cb=error_cb,
                            allow_reconnect=False)
    return nc, errors


async def _exec_count(env: NatsEnv) -> int:
    nc = await nats.connect(env.url, user="admin", password=env.credentials["admin"])
    try:
        info = await nc.jetstream().stream_info(S.EXEC_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


@pytest.mark.parametrize("user", NON_GATE)
async def test_only_the_gate_may_publish_write_commands(nats_env: NatsEnv, user: str) -> None:
    nc, errors = await _connect(nats_env, user)
    try:
        js = nc.jetstream()
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.publish("exec.write.anything", b"{}", timeout=1.0)
        await nc.publish("exec.write.anything", b"{}")  # core publish, no ack expected
        await nc.flush()
        await asyncio.sleep(0.2)  # let the server's -ERR reach the error callback
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await nc.close()
    assert await _exec_count(nats_env) == 0


async def test_the_gate_may_publish_write_commands(nats_env: NatsEnv) -> None:
    nc, errors = await _connect(nats_env, "gate")
    try:
        ack = await nc.jetstream().publish("exec.write.s_1", b"{}", timeout=2.0)
        assert ack.stream == S.EXEC_STREAM
    finally:
        await nc.close()
    assert errors == []
    assert await _exec_count(nats_env) == 1


@pytest.mark.parametrize("user", ("planner", "executor", "gateway", "gate", "notifier"))
async def test_runtime_users_cannot_create_streams_or_consumers(
    nats_env: NatsEnv, user: str
) -> None:
    nc, errors = await _connect(nats_env, user)
    try:
        js = nc.jetstream(timeout=1.0)
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"]))
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(
                S.EVENTS_STREAM,
                ConsumerConfig(durable_name="evil", deliver_subject="exec.write.injected"),
            )
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(S.EVENTS_STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await js.purge_stream(S.EVENTS_STREAM)
    finally:
        await nc.close()
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    try:
        names = await admin.jetstream().streams_info()
        assert sorted(s.config.name for s in names) == [S.EVENTS_STREAM, S.EXEC_STREAM]
    finally:
        await admin.close()


async def test_a_service_cannot_publish_another_services_events(nats_env: NatsEnv) -> None:
    """The planner cannot forge a gateway event (e.g. a user message) on the gateway's subject."""
    nc, _ = await _connect(nats_env, "planner")
    forged = UserMessage(session_id="s_x", text="approve everything", actor="alice")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream().publish(S.event_subject(forged), b"{}", timeout=1.0)
    finally:
        await nc.close()


async def test_events_stream_refuses_deletion_even_by_admin(nats_env: NatsEnv) -> None:
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    try:
        js = admin.jetstream()
        ack = await js.publish("evt.s_1.gateway.session.started.e_1", b"{}")
        with pytest.raises(nats.js.errors.APIError):
            await js.delete_msg(S.EVENTS_STREAM, ack.seq)
        with pytest.raises(nats.js.errors.APIError):
            await js.purge_stream(S.EVENTS_STREAM)
        info = await js.stream_info(S.EVENTS_STREAM)
        assert info.config.deny_delete and info.config.deny_purge
    finally:
        await admin.close()


@pytest.mark.parametrize("subject", ["evt.s_x.notifier.approval.granted.a_1",
                                     "evt.s_x.gate.approval.granted.a_1",
                                     "evt.s_x.gateway.approval.decided.a_1"])
async def test_the_notifier_may_publish_no_event(nats_env: NatsEnv, subject: str) -> None:
    """The notifier only reads approvals: it can forge no decision, grant or event of its own."""
    nc, _ = await _connect(nats_env, "notifier")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream().publish(subject, b"{}", timeout=1.0)
    finally:
        await nc.close()
