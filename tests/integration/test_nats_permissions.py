"""The bus itself enforces who may say what (DESIGN.md §3.1): only the gate may publish on
the gate's subjects — among them `tool.classified` and `approval.granted`, which release what the
executor runs — no runtime user may create or change streams or consumers, and each service may
publish only events that name it as their emitter.

Two layers (services/runtime/natsconf.py): the streams live in the log account (APP) and each
runtime identity in an account of its own that imports exactly its own subjects from LOG; each user
also keeps an allow list, so that a publish outside its imports is a logged permissions error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from launcher.nats import NatsServerProcess, free_port
from schemas import subjects as S
from schemas.session import UserMessage
from services.runtime import natsconf
from services.runtime.errors import ConfigError
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


# What releases a call to the executor: only the gate may say it.
RELEASES = ("evt.s_1.gate.tool.classified.c_1", "evt.s_1.gate.approval.granted.a_1")


async def _gate_count(env: NatsEnv) -> int:
    """Messages stored on the gate's subjects."""
    nc = await nats.connect(env.url, user="admin", password=env.credentials["admin"])
    try:
        info = await nc.jetstream().stream_info(S.EVENTS_STREAM,
                                                subjects_filter="evt.*.gate.>")
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


@pytest.mark.parametrize("user", NON_GATE)
async def test_only_the_gate_may_release_calls(nats_env: NatsEnv, user: str) -> None:
    nc, errors = await _connect(nats_env, user)
    try:
        js = nc.jetstream()
        for subject in RELEASES:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await js.publish(subject, b"{}", timeout=1.0)
            await nc.publish(subject, b"{}")  # core publish, no ack expected
        await nc.flush()
        await asyncio.sleep(0.2)  # let the server's -ERR reach the error callback
        assert any("permissions violation" in str(e).lower() for e in errors), errors
    finally:
        await nc.close()
    assert await _gate_count(nats_env) == 0


async def test_the_gate_may_release_calls(nats_env: NatsEnv) -> None:
    nc, errors = await _connect(nats_env, "gate")
    try:
        for subject in RELEASES:
            ack = await nc.jetstream().publish(subject, b"{}", timeout=2.0)
            assert ack.stream == S.EVENTS_STREAM
    finally:
        await nc.close()
    assert errors == []
    assert await _gate_count(nats_env) == 2


@pytest.mark.parametrize("user", ["planner", "executor", "gateway", "gate", "notifier"])
async def test_runtime_users_cannot_create_streams_or_consumers(
    nats_env: NatsEnv, user: str
) -> None:
    nc, errors = await _connect(nats_env, user)
    try:
        js = nc.jetstream(timeout=1.0)
        # The server drops each denied request, so each one ends in its timeout: they wait
        # together rather than one timeout after another.
        outcomes = await asyncio.gather(
            js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"])),
            js.add_consumer(
                S.EVENTS_STREAM,
                ConsumerConfig(durable_name="evil",
                               deliver_subject="evt.s_1.gate.approval.granted.a_x"),
            ),
            js.delete_stream(S.EVENTS_STREAM),
            js.purge_stream(S.EVENTS_STREAM),
            return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, nats.errors.TimeoutError), outcome
    finally:
        await nc.close()
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    try:
        names = await admin.jetstream().streams_info()
        assert sorted(s.config.name for s in names) == [S.EVENTS_STREAM, S.PRESENCE_STREAM,
                                                        S.SEALED_STREAM]
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
        assert info.config.deny_delete
        assert info.config.deny_purge
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


def test_each_identity_has_an_account_of_its_own() -> None:
    conf = json.loads(natsconf.render(port=4222, store_dir=Path("/x"),
                                      credentials=natsconf.new_credentials()))
    users = natsconf.users(conf)
    assert users[natsconf.ADMIN_USER][0] == natsconf.LOG_ACCOUNT
    accounts = {users[u][0] for u in natsconf.RUNTIME_USERS}
    assert len(accounts) == len(natsconf.RUNTIME_USERS)  # none shared
    assert natsconf.LOG_ACCOUNT not in accounts
    for name, account in conf["accounts"].items():
        # Only LOG has JetStream: nothing a service does can create a stream or consumer.
        assert ("jetstream" in account) == (name == natsconf.LOG_ACCOUNT), name
    log_exports = conf["accounts"][natsconf.LOG_ACCOUNT]["exports"]
    assert all(e.get("accounts") for e in log_exports)  # every export restricted
    for user in natsconf.RUNTIME_USERS:
        name, entry = users[user]
        imported = [i["service"]["subject"] for i in conf["accounts"][name]["imports"]
                    if "service" in i]
        assert set(imported) == {*natsconf.log_imports(user), "$JS.API.INFO"}
        # Wildcards only: a reply aimed at a literally imported stream subject was stored.
        for subject in imported:
            # (and presence keys, exactly: one message each, its own — see natsconf.spoke_imports)
            assert subject.startswith(("$JS.", "$KV.CLUSTERS.")) or subject.endswith(">"), subject
        assert entry["permissions"] == natsconf.permissions(user)


async def test_an_import_of_another_services_subjects_is_refused(tmp_path: Path) -> None:
    """The `accounts` restriction on each export: a config in which the planner imports the
    gateway's event subjects does not start."""
    conf = json.loads(natsconf.render(port=free_port(), store_dir=tmp_path / "js",
                                      credentials=natsconf.new_credentials()))
    conf["accounts"]["PLANNER"]["imports"].append(
        {"service": {"account": natsconf.LOG_ACCOUNT, "subject": "evt.*.gateway.>"}})
    port = int(conf["listen"].rsplit(":", 1)[1])
    server = NatsServerProcess(json.dumps(conf), tmp_path / "nats", port)
    try:
        with pytest.raises(ConfigError, match="not authorized"):
            await server.start(timeout=10)
    finally:
        await server.stop()


async def test_a_service_cannot_pull_from_another_services_consumer(nats_env: NatsEnv) -> None:
    admin = await nats.connect(nats_env.url, user="admin", password=nats_env.credentials["admin"])
    nc, errors = await _connect(nats_env, "planner")
    try:
        await admin.jetstream().publish("evt.s_1.planner.tool.proposed.c_1", b"{}")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{S.EVENTS_STREAM}.gate",
                             b'{"batch": 1, "expires": 500000000}', timeout=1.0)
        info = await admin.jetstream().consumer_info(S.EVENTS_STREAM, "gate")
        assert info.num_ack_pending == 0  # nothing was taken
        assert info.num_pending == 1
    finally:
        await nc.close()
        await admin.close()
    assert any("permissions violation" in str(e).lower() for e in errors), errors
