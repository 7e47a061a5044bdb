"""A spoke's identity is bounded by the hub (issue 21, done-when 2): a real hub nats-server with
clusters a and b, provisioned by the real code, and real leaf nats-servers joined to it on
loopback. Spoke b — through its leaf connection, directly as the hub user `spoke-b`, and as a
hand-written leaf connection (a spoke whose nats-server the attacker replaced) — cannot take
cluster a's commands, create a consumer, write a's events, put a's presence, or get a reply
reflected onto a's subjects (notes/nats.md §2 pitfall 4). Each refused attempt stores nothing
and the hub records the denial. What spoke b should do works through its leaf: pull and ack
its own durable, append its own signed result, read the log, put and be seen present.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.js.api import ConsumerConfig

from launcher.nats import NatsServerProcess, free_port
from launcher.spoke import Spoke
from schemas import subjects as S
from schemas.execution import ToolResult
from services.runtime import identity, natsconf, presence, provision
from services.runtime.bus import Bus
from services.runtime.settings import NatsSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLUSTERS = ("a", "b")
SEED = "s_seed"
# What an attacker aims at: cluster a's subjects (and, for reflection, b's own ones too).
A_RESULT = "evt.s_atk.executor.tool.result.c_1.a"
A_PRESENCE = S.presence_subject("a", "all")


@dataclass
class Hub:
    server: NatsServerProcess
    credentials: dict[str, str]
    leaf_port: int
    http_port: int
    keys: Path
    spokes: dict[str, Spoke]
    evil: NatsServerProcess  # spoke b's server as an attacker runs it: no local permissions

    def admin(self) -> str:
        return self.credentials[natsconf.ADMIN_USER]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    tmp = tmp_path_factory.mktemp("leaf")
    creds = natsconf.new_credentials(CLUSTERS)
    port, leaf, http = free_port(), free_port(), free_port()
    server = NatsServerProcess(
        natsconf.render(port=port, store_dir=tmp / "js", credentials=creds, clusters=CLUSTERS,
                        leaf_port=leaf, http_port=http), tmp / "hub", port)
    await server.start()
    spokes: dict[str, Spoke] = {}
    evil: NatsServerProcess | None = None
    keys = tmp / "keys"
    identity.provision_keys(keys, S.SERVICES)
    try:
        await provision.provision(server.url, natsconf.ADMIN_USER, creds[natsconf.ADMIN_USER],
                                  clusters=CLUSTERS)
        # One command per cluster waits on each cluster's durable.
        nc = await nats.connect(server.url, user="admin", password=creds["admin"])
        for c in CLUSTERS:
            await nc.jetstream().publish(f"evt.{SEED}.gate.tool.classified.c_{c}.{c}", b"{}")
        await nc.close()
        for c in CLUSTERS:
            spokes[c] = Spoke(c, f"nats://127.0.0.1:{leaf}", creds[natsconf.spoke_user(c)],
                              None, tmp / f"spoke-{c}", tmp / "gate.pub",
                              keys / identity.KEYRING_FILE, keys / "executor.key")
            await spokes[c].start_leaf()
        conf = json.loads(spokes["b"].config_text())
        for user in conf["accounts"][natsconf.SPOKE_LOCAL_ACCOUNT]["users"]:
            del user["permissions"]
        evil_port = free_port()
        conf["listen"] = f"127.0.0.1:{evil_port}"
        conf["server_name"] = "evil-b"
        evil = NatsServerProcess(json.dumps(conf), tmp / "evil-b", evil_port)
        await evil.start()
        yield Hub(server, creds, leaf, http, keys, spokes, evil)
    finally:
        if evil is not None:
            await evil.stop()
        for spoke in spokes.values():
            await spoke.stop()
        await server.stop()


async def _connect(url: str, user: str, password: str) -> tuple[nats.NATS, list[Exception]]:
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(url, user=user, password=password, error_cb=error_cb,
                            inbox_prefix=natsconf.EXECUTOR_INBOX.encode(),
                            allow_reconnect=False)
    return nc, errors


async def _attempts(nc: nats.NATS) -> list[str]:
    """Every attack on cluster a that a spoke-b connection can try; what came back of each.
    None may succeed: each must end in a timeout, no responders or an error."""
    js = nc.jetstream(timeout=1.0)
    outcomes: list[str] = []

    async def attempt(name: str, coro: object) -> None:
        try:
            got = await coro  # type: ignore[misc]
            outcomes.append(f"{name}: SUCCEEDED {got!r}"[:300])
        except Exception as exc:  # noqa: BLE001 - every refusal is an outcome
            outcomes.append(f"{name}: {type(exc).__name__}")

    async def pull_a() -> object:
        psub = await js.pull_subscribe_bind("executor_a", stream=S.EVENTS_STREAM,
                                            inbox_prefix=f"{natsconf.EXECUTOR_INBOX}.".encode())
        return await psub.fetch(1, timeout=1.0)

    await asyncio.gather(
        attempt("pull a's durable", pull_a()),
        attempt("consumer info of a's durable", js.consumer_info(S.EVENTS_STREAM, "executor_a")),
        attempt("create a durable on a's commands", js.add_consumer(S.EVENTS_STREAM, ConsumerConfig(
            durable_name="evil", filter_subject="evt.*.gate.tool.classified.*.a"))),
        attempt("create an ephemeral consumer", js.add_consumer(S.EVENTS_STREAM, ConsumerConfig(
            filter_subject="evt.*.gate.tool.classified.*.a"))),
        attempt("publish a's result", js.publish(A_RESULT, b"{}")),
        attempt("put a's presence", js.publish(A_PRESENCE, b"{}")),
        attempt("make up a presence key", js.publish(f"$KV.{S.PRESENCE_BUCKET}.b.extra", b"{}")),
    )
    # Reply reflection (pitfall 4): the server answers on the reply subject the requester
    # chose. Aimed at a's subjects, and at b's own (imported) ones.
    for reply in ("evt.s_atk.executor.tool.result.c_r1.a", "evt.s_atk.executor.tool.result.c_r2.b",
                  A_PRESENCE, S.presence_subject("b", "all"), f"$KV.{S.PRESENCE_BUCKET}.b.extra"):
        await nc.publish(f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}",
                         json.dumps({"last_by_subj": "evt.>"}).encode(), reply=reply)
        await nc.publish(f"$JS.API.DIRECT.GET.{S.EVENTS_STREAM}",
                         json.dumps({"seq": 1, "next_by_subj": "evt.>", "batch": 5}).encode(),
                         reply=reply)
        await nc.publish(f"$JS.API.STREAM.INFO.{S.EVENTS_STREAM}",
                         json.dumps({"subjects_filter": "evt.>"}).encode(), reply=reply)
        await nc.publish(f"$JS.API.CONSUMER.INFO.{S.EVENTS_STREAM}.executor_b", b"", reply=reply)
        await nc.publish("evt.s_atk.executor.tool.result.c_t.b", b"{}",
                         headers={"Nats-Trace-Dest": reply, "Nats-Trace-Only": "true"})
    await nc.flush()
    return outcomes


async def _stored(hub: Hub) -> tuple[dict[str, int], dict[str, int], dict[str, object]]:
    """(EVENTS subjects and counts, KV_CLUSTERS subjects, executor_a's delivery state)."""
    nc = await nats.connect(hub.server.url, user="admin", password=hub.admin())
    try:
        js = nc.jetstream()
        events = (await js.stream_info(S.EVENTS_STREAM, subjects_filter=">")).state.subjects
        kv = (await js.stream_info(S.PRESENCE_STREAM, subjects_filter=">")).state.subjects
        a = await js.consumer_info(S.EVENTS_STREAM, "executor_a")
        names = sorted(c.name for c in await js.consumers_info(S.EVENTS_STREAM))
        return dict(events or {}), dict(kv or {}), {
            "delivered": a.delivered.stream_seq, "pending": a.num_pending, "consumers": names}
    finally:
        await nc.close()


def _leaf_ids(hub: Hub, account: str) -> set[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{hub.http_port}/leafz") as r:
        return {leaf["id"] for leaf in json.load(r)["leafs"] if leaf["account"] == account}


async def _raw_leaf(hub: Hub, message: bytes) -> tuple[int, bytes]:
    """A hand-made leaf connection as spoke-b (what a replaced spoke server sends): CONNECT,
    then one message. Returns its connection id on the hub and what the hub answered."""
    before = _leaf_ids(hub, natsconf.spoke_account("b"))
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.leaf_port)
    try:
        await reader.readline()  # INFO
        connect = {"user": natsconf.spoke_user("b"), "pass": hub.credentials["spoke-b"],
                   "headers": True, "name": "replaced-spoke-b", "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        while b"PONG" not in await asyncio.wait_for(reader.readline(), 5):
            pass
        lids = _leaf_ids(hub, natsconf.spoke_account("b")) - before
        assert len(lids) == 1, lids
        writer.write(message)
        await writer.drain()
        answer = b""
        while line := await asyncio.wait_for(reader.readline(), 5):
            answer += line  # the hub closes the connection after a violation
        return lids.pop(), answer
    finally:
        writer.close()


async def _until_logged(server: NatsServerProcess, pattern: str) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not re.search(pattern, log := server.log_since_start()):
        assert loop.time() < deadline, f"not logged: {pattern}\n{server.tail_log()}"
        await asyncio.sleep(0.05)
    return log


async def test_spoke_b_cannot_take_or_write_cluster_a(hub: Hub) -> None:
    before = await _stored(hub)
    # 1. Through its leaf connection, with the spoke's local limits removed (the attacker runs
    #    the spoke's nats-server): only the hub's permissions of spoke-b stand.
    assert hub.evil is not None
    leaf_nc, _ = await _connect(hub.evil.url, "executor", hub.spokes["b"].credentials["executor"])
    # 2. Directly as the hub user spoke-b (its password taken from the cluster's secret).
    direct_nc, direct_errors = await _connect(hub.server.url, "spoke-b",
                                              hub.credentials["spoke-b"])
    try:
        for nc in (leaf_nc, direct_nc):
            outcomes = await _attempts(nc)
            assert not [o for o in outcomes if "SUCCEEDED" in o], outcomes
    finally:
        await leaf_nc.close()
        await direct_nc.close()
    # 3. A leaf connection speaking the protocol itself (the spoke's server replaced).
    raw = {
        "publish a's result": f"LMSG {A_RESULT} 2\r\n{{}}\r\n",
        "pull a's durable": "LMSG $JS.API.CONSUMER.MSG.NEXT.EVENTS.executor_a "
                            f"{natsconf.EXECUTOR_INBOX}.x 0\r\n\r\n",
        "create a consumer": "LMSG $JS.API.CONSUMER.CREATE.EVENTS "
                             f"{natsconf.EXECUTOR_INBOX}.x 2\r\n{{}}\r\n",
        "put a's presence": f"LMSG {A_PRESENCE} 2\r\n{{}}\r\n",
    }
    for what, message in raw.items():
        lid, answer = await _raw_leaf(hub, message.encode())
        subject = message.split()[1]
        assert b"Permissions Violation" in answer, (what, answer)
        # The hub records the denial, on that connection (spoke-b's, leafz says), and drops it.
        log = await _until_logged(
            hub.server, rf"lid:{lid} - Publish Violation on \"{re.escape(subject)}\"")
        assert re.search(rf"lid:{lid} - Leafnode connection closed: Protocol Violation", log)

    # Nothing stored for a: no event or presence of a (nor anything reflected there), a's
    # command neither delivered nor consumed, no consumer created. A reply reflected onto
    # b's OWN imported subjects is stored (an answer's body on b's subject: not signed for it,
    # so never believed) — b's own subjects only, and only its three presence keys.
    await asyncio.sleep(0.5)  # replies in flight land now or never (a bound, not a wait-for)
    events, kv, a_state = await _stored(hub)
    new = set(events) - set(before[0])
    assert all(s.startswith("evt.s_atk.executor.") and s.endswith(".b") for s in new), new
    assert set(kv) <= {S.presence_subject("b", r) for r in S.EXECUTOR_ROLES}, kv
    assert a_state == before[2] == {
        "delivered": 0, "pending": 1,
        "consumers": ["executor_a", "executor_b", "gate", "notifier", "planner"]}
    # The direct connection's refusals are recorded by user and subject too.
    log = hub.server.log_since_start()
    for subject in (A_RESULT, A_PRESENCE, "$JS.API.CONSUMER.INFO.EVENTS.executor_a",
                    "$JS.API.CONSUMER.MSG.NEXT.EVENTS.executor_a"):
        assert f'"SPOKE_b/user:spoke-b" - Publish Violation - Subject "{subject}"' in log, subject
    assert any("permissions violation" in str(e).lower() for e in direct_errors)


async def test_the_legacy_executor_identity_reaches_nothing_in_per_cluster_mode(
        hub: Hub) -> None:
    nc, _ = await _connect(hub.server.url, "executor", hub.credentials["executor"])
    try:
        js = nc.jetstream(timeout=1.0)
        for coro in (js.publish("evt.s_atk.executor.tool.result.c_9._", b"{}"),
                     js.stream_info(S.EVENTS_STREAM),
                     js.consumer_info(S.EVENTS_STREAM, "executor_a")):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError,
                                nats.js.errors.ServiceUnavailableError)):
                await coro
    finally:
        await nc.close()
    assert await _until_logged(hub.server, r'"EXECUTOR/user:executor" - Publish Violation')


async def test_spoke_b_does_its_own_work_through_its_leaf(hub: Hub) -> None:
    spoke = hub.spokes["b"]
    settings = NatsSettings(url=spoke.url, user="executor",
                            password=spoke.credentials["executor"],
                            signing_key_file=str(hub.keys / "executor.key"),
                            keyring_file=str(hub.keys / identity.KEYRING_FILE))
    bus = await Bus.connect(settings, "executor")
    gate = await Bus.connect(NatsSettings(
        url=hub.server.url, user="gate", password=hub.credentials["gate"],
        signing_key_file=str(hub.keys / "gate.key"),
        keyring_file=str(hub.keys / identity.KEYRING_FILE)), "gate")
    try:
        # Its own durable: the seeded command of cluster b, pulled and acked through the leaf.
        psub = await bus.js.pull_subscribe_bind(
            S.executor_durable("all", "b"), stream=S.EVENTS_STREAM,
            inbox_prefix=f"{natsconf.EXECUTOR_INBOX}.".encode())
        msgs = await psub.fetch(1, timeout=5.0)
        assert [m.subject for m in msgs] == [f"evt.{SEED}.gate.tool.classified.c_b.b"]
        await msgs[0].ack_sync()
        info = await bus.js.consumer_info(S.EVENTS_STREAM, "executor_b")
        assert (info.num_ack_pending, info.num_pending) == (0, 0)
        # Its own signed result, appended once (the log's checks ride the leaf too), read back.
        result = ToolResult(session_id="s_b", call_id="c_b", tool="get", status="ok",
                            cluster_name="b", actor="executor")
        assert await bus.append_once(result) is not None
        assert await bus.append_once(result) is None
        stored = [s.subject for s in await gate.session("s_b")]
        assert stored == ["evt.s_b.executor.tool.result.c_b.b"]
        assert await bus.last_in(S.SEALED_STREAM, "sealed.planner.s_b.x") is None
        # Its presence, as the gate reads it (with the server's time of the put).
        started = datetime.now(UTC)
        await presence.beat(bus, presence.ClusterStatus(cluster="b", role="all",
                                                        version="t", contexts=("b",)))
        seen = await presence.read_clusters(gate)
        assert [(s.cluster, s.role, s.contexts) for s in seen["b"]] == [("b", "all", ("b",))]
        assert "a" not in seen
        assert presence.connected(seen["b"], datetime.now(UTC), 5.0)
        assert seen["b"][0].seen_at >= started.replace(microsecond=0)
    finally:
        await bus.close()
        await gate.close()
    # The deployment's health check of a spoke's executor binds its cluster's durable.
    check = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).parents[2] / "deploy" / "healthcheck.py"), "executor",
        env={**os.environ, "INTERLOCK_NATS_URL": spoke.url, "INTERLOCK_NATS_USER": "executor",
             "INTERLOCK_NATS_PASSWORD": spoke.credentials["executor"], "INTERLOCK_CLUSTER": "b"})
    assert await check.wait() == 0
    # The spoke's own local limits: its read executor may not take the write durable.
    nc, _ = await _connect(spoke.url, "executor-read", spoke.credentials["executor-read"])
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream(timeout=1.0).consumer_info(S.EVENTS_STREAM, "executor_b")
    finally:
        await nc.close()


async def test_a_killed_leaf_comes_back_and_its_executors_with_it(hub: Hub) -> None:
    """Spoke.kill_leaf / restart_leaf (the chaos of done-when 3 builds on them): while the
    spoke's server is down its executor reaches nothing; started again on its port, the leaf
    connection is back and the same connection appends again."""
    spoke = hub.spokes["a"]
    bus = await Bus.connect(NatsSettings(
        url=spoke.url, user="executor", password=spoke.credentials["executor"],
        signing_key_file=str(hub.keys / "executor.key"),
        keyring_file=str(hub.keys / identity.KEYRING_FILE)), "executor")
    try:
        spoke.kill_leaf()
        assert not _leaf_ids(hub, natsconf.spoke_account("a")) or await _leaf_gone(hub, "a")
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: the hub is away
            await presence.beat(bus, presence.ClusterStatus(cluster="a", role="all"),
                                timeout=0.5)
        await spoke.restart_leaf()
        result = ToolResult(session_id="s_a", call_id="c_a", tool="get", status="ok",
                            cluster_name="a", actor="executor")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # the client reconnects to the restarted spoke on its own
            try:
                assert await bus.append_once(result) is not None
                break
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await bus.close()


async def _leaf_gone(hub: Hub, cluster: str) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while _leaf_ids(hub, natsconf.spoke_account(cluster)):
        assert loop.time() < deadline, "the hub still lists the killed spoke's leaf"
        await asyncio.sleep(0.05)
    return True
