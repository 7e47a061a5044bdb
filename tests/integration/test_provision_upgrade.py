"""Provisioning a log written before commands were events (issue 17), on a real nats-server:
the old EXEC command queue is deleted when empty and never dropped while it holds commands; new
executor consumers do not run the history again, and a switch of consumer layout loses nothing
in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from schemas import events as E
from schemas import subjects as S
from schemas.approval import ToolClassified
from schemas.base import Target
from services.runtime import natsconf, provision
from tests.conftest import NatsEnv


@pytest.fixture
async def admin(nats_env: NatsEnv) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                            password=nats_env.credentials[natsconf.ADMIN_USER])
    try:
        yield nc
    finally:
        await nc.close()


async def _provision(nats_env: NatsEnv, layout: str = "single") -> None:
    await provision.provision(nats_env.url, natsconf.ADMIN_USER,
                              nats_env.credentials[natsconf.ADMIN_USER], timeout=10,
                              executor_layout=layout)


async def _old_exec(admin: Client, commands: int) -> None:
    """The EXEC work queue as an earlier version provisioned it, holding `commands`."""
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name=provision.EXEC_STREAM, subjects=["exec.>"],
                                     retention=RetentionPolicy.WORK_QUEUE))
    for i in range(commands):
        await js.publish(f"exec.read.s_old{i}", b'{"kind": "read"}')


async def _classify(admin: Client, n: int, first: int = 0) -> list[int]:
    """n classifications stored on the gate's subjects (the admin writes them: what matters
    here is where consumers start, not who signed)."""
    seqs = []
    for i in range(first, first + n):
        ev = ToolClassified(session_id="s_up", call_id=f"c_{i}", access="read", rule="r",
                            tool="list", args={"kind": "pod", "namespace": "shop"})
        ack = await admin.jetstream().publish(S.event_subject(ev), E.encode(ev))
        seqs.append(ack.seq)
    return seqs


async def test_an_empty_exec_stream_is_deleted(nats_env: NatsEnv, admin: Client) -> None:
    await _old_exec(admin, 0)
    await _provision(nats_env)
    with pytest.raises(NotFoundError):
        await admin.jetstream().stream_info(provision.EXEC_STREAM)


async def test_commands_not_yet_run_stop_provisioning_and_are_kept(
        nats_env: NatsEnv, admin: Client) -> None:
    await _old_exec(admin, 3)
    with pytest.raises(provision.PendingCommands,
                       match=r"still holds 3 command\(s\) not yet executed.*previous version"):
        await _provision(nats_env)
    info = await admin.jetstream().stream_info(provision.EXEC_STREAM)
    assert info.state.messages == 3


async def test_a_fresh_log_delivers_from_the_start(nats_env: NatsEnv, admin: Client) -> None:
    info = await admin.jetstream().consumer_info(S.EVENTS_STREAM, "executor")
    assert info.config.deliver_policy == DeliverPolicy.ALL


async def test_an_upgraded_log_does_not_run_its_history_again(
        nats_env: NatsEnv, admin: Client) -> None:
    """A log of an earlier version: its classifications were all run from EXEC. The executor
    consumer created on it sees only what comes after."""
    js = admin.jetstream()
    await js.delete_consumer(S.EVENTS_STREAM, "executor")  # as before issue 17: none on EVENTS
    await _classify(admin, 5)
    await _old_exec(admin, 0)
    await _provision(nats_env)
    info = await js.consumer_info(S.EVENTS_STREAM, "executor")
    assert info.config.deliver_policy == DeliverPolicy.NEW
    assert info.num_pending == 0
    await _classify(admin, 1, first=5)
    info = await js.consumer_info(S.EVENTS_STREAM, "executor")
    assert info.num_pending == 1
    # Provisioning again keeps the consumer where it is.
    await _provision(nats_env)
    assert (await js.consumer_info(S.EVENTS_STREAM, "executor")).num_pending == 1


async def test_a_layout_switch_starts_where_the_old_consumers_got_to(
        nats_env: NatsEnv, admin: Client) -> None:
    js = admin.jetstream()
    seqs = await _classify(admin, 4)
    psub = await js.pull_subscribe_bind("executor", stream=S.EVENTS_STREAM)
    msgs = await psub.fetch(2, timeout=5)
    for msg in msgs:
        await msg.ack_sync()
    await psub.unsubscribe()
    await _provision(nats_env, "split")
    for durable in ("executor-read", "executor-write"):
        info = await js.consumer_info(S.EVENTS_STREAM, durable)
        assert info.config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
        assert info.config.opt_start_seq == seqs[2]
        assert info.num_pending == 2, durable  # the two not yet acked, nothing before them
    with pytest.raises(NotFoundError):
        await js.consumer_info(S.EVENTS_STREAM, "executor")
    # And back: the single consumer starts at the slower split consumer's floor.
    psub = await js.pull_subscribe_bind("executor-read", stream=S.EVENTS_STREAM)
    for msg in await psub.fetch(2, timeout=5):
        await msg.ack_sync()
    await psub.unsubscribe()
    await _provision(nats_env, "single")
    info = await js.consumer_info(S.EVENTS_STREAM, "executor")
    assert info.config.opt_start_seq == seqs[2]  # executor-write acked nothing past seqs[1]
    assert info.num_pending == 2


async def test_a_switch_to_per_cluster_durables_starts_where_the_shared_one_got_to(
        nats_env: NatsEnv, admin: Client) -> None:
    """Issue 21: INTERLOCK_CLUSTERS set on a data dir of one executor for everything. The
    shared `executor` durable is deleted (it would run every cluster's commands), each
    cluster's durables start where it had got to, and each takes only its cluster's."""
    js = admin.jetstream()
    seqs = await _classify(admin, 2)  # token `_` (no cluster named), taken by the shared one
    psub = await js.pull_subscribe_bind("executor", stream=S.EVENTS_STREAM)
    for msg in await psub.fetch(1, timeout=5):
        await msg.ack_sync()
    await psub.unsubscribe()
    await provision.provision(nats_env.url, natsconf.ADMIN_USER,
                              nats_env.credentials[natsconf.ADMIN_USER], timeout=10,
                              executor_layout="split", clusters=("a", "b"))
    names = sorted(c.name for c in await js.consumers_info(S.EVENTS_STREAM))
    assert names == ["executor-read_a", "executor-read_b", "executor-write_a",
                     "executor-write_b", "gate", "notifier", "planner"]
    for durable in names[:4]:
        info = await js.consumer_info(S.EVENTS_STREAM, durable)
        assert info.config.opt_start_seq == seqs[1], durable
        # The command in flight names no listed cluster: no durable takes it (provision.py).
        assert info.num_pending == 0, durable
    on_b = ToolClassified(session_id="s_up", call_id="c_b", access="write", rule="r",
                          tool="scale", args={}, target=Target(cluster="b"))
    await admin.jetstream().publish(S.event_subject(on_b), E.encode(on_b))
    pending = {d: (await js.consumer_info(S.EVENTS_STREAM, d)).num_pending for d in names[:4]}
    assert pending == {"executor-read_a": 0, "executor-read_b": 1, "executor-write_a": 0,
                       "executor-write_b": 1}
    # And back to one executor for everything: the shared durable returns, the others go.
    await _provision(nats_env, "single")
    names = sorted(c.name for c in await js.consumers_info(S.EVENTS_STREAM))
    assert names == ["executor", "gate", "notifier", "planner"]
