"""The executor on a real nats-server, consuming the gate's `approval.granted` from the log:
forged, stale, altered and misbound grants never run and each leaves a `command.refused`; a
grant recorded again runs nothing a second time; an executor SIGKILLed after calling the cluster
and before recording does not run the call again after a restart and reports its outcome.

Each grant here is recorded with the gate's own NATS identity and event key, as a compromised
gate could: what stops a bad one is the executor's checks of the grant (signed by the gate's
grant key) against the session's log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from sandbox.apiserver.policy import SLOW_WRITE
from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from schemas import events as E
from schemas import subjects as S
from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
)
from schemas.base import Target
from schemas.execution import ToolStarted
from schemas.ids import new_event_id
from services.executor import service
from services.executor.domain import Work
from services.executor.settings import ExecutorSettings
from services.runtime import natsconf, provision, signing
from services.runtime.bus import Bus
from services.runtime.log import Expect
from tests.conftest import NatsEnv

DEPLOY = by_plural("apps", "deployments")


class Log:
    """A session's events as the log republishes them, awaited with timeouts."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, data: bytes) -> None:
        try:
            self.events.append(E.decode(data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # something squatting a subject (see the squatting tests): not an event
        self._changed.set()

    async def until(self, pred: Callable[[Any], bool], timeout: float = 20) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                self._changed.clear()
                await self._changed.wait()

    def of(self, tag: str, call_id: str) -> list[Any]:
        return [e for e in self.events if e.type == tag and getattr(e, "call_id", "") == call_id]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "gate.key", tmp_path / "gate.pub"
    signing.generate_keypair(private, public)
    return private, public


@contextlib.asynccontextmanager
async def watching(nats_env: NatsEnv) -> AsyncIterator[tuple[str, Log]]:
    """A new session id and its events as the log republishes them."""
    session = "s" + new_event_id()[-12:].lower()
    log = Log()
    nc = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                            password=nats_env.credentials[natsconf.ADMIN_USER])

    async def on_msg(msg: Any) -> None:
        log.add(msg.data)

    await nc.subscribe(S.live_filter(session), cb=on_msg)
    try:
        yield session, log
    finally:
        await nc.close()


@pytest.fixture
async def session_log(nats_env: NatsEnv) -> AsyncIterator[tuple[str, Log]]:
    async with watching(nats_env) as watched:
        yield watched


@pytest.fixture
async def gate(nats_env: NatsEnv) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_env.settings("gate"), "gate")
    try:
        yield bus
    finally:
        await bus.close()


def scale_command(session: str, call_id: str, replicas: int, key_path: Path | None,
                  rv: str, *, ttl: timedelta = timedelta(minutes=5),
                  signed_replicas: int | None = None, **grant_fields: Any) -> Work:
    """A write as the gate would release it: the call and its grant (unsigned without a key)."""
    tool = catalogue.TOOLS["scale"]
    parsed = tool.parse_args({"name": "web", "namespace": "shop", "replicas": replicas})
    args = catalogue.canonical_args(parsed)
    signed_args = catalogue.canonical_args(tool.parse_args(
        {"name": "web", "namespace": "shop",
         "replicas": replicas if signed_replicas is None else signed_replicas}))
    grant = Grant(call_id=call_id, call_hash=catalogue.call_hash("scale", signed_args),
                  approval_id="a_" + call_id, approver="alice",
                  not_after=datetime.now(UTC) + ttl, resource_version=rv,
                  session_id=session, target=parsed.target(), version=GRANT_VERSION)
    grant = msgspec.structs.replace(grant, **grant_fields)
    if key_path is not None:
        grant = signing.sign(grant, signing.load_private(key_path))
    return Work(kind="write", session_id=session, call_id=call_id, tool="scale", args=args,
                target=parsed.target(), causation_id="", grant=grant)


async def record_approval(nats_env: NatsEnv, cmd: Work, *, decided: bool = True,
                          granted: bool = True) -> int:
    """What the gate and the gateway record for a write: the request (the call exactly as it
    will run), a human decision (the gateway's), and the grant (the gate's), which is what
    releases it to the executor — each with its own service's user. Returns the grant's seq."""
    assert cmd.grant is not None
    g = cmd.grant
    sid = cmd.session_id
    gate = await Bus.connect(nats_env.settings("gate"), "gate")
    gateway = await Bus.connect(nats_env.settings("gateway"), "gateway")
    try:
        await gate.append(ApprovalRequested(
            session_id=sid, approval_id=g.approval_id, calls=(ApprovalCall(
                call_id=cmd.call_id, tool=cmd.tool, args=cmd.args, call_hash=g.call_hash,
                target=g.target, resource_version=g.resource_version),),
            requested_by="bob", expires_at=datetime.now(UTC) + timedelta(minutes=15)))
        if decided:
            await gateway.append(ApprovalDecided(session_id=sid, approval_id=g.approval_id,
                                                 decision="approve", approver=g.approver,
                                                 actor=g.approver))
        return await grant_again(gate, cmd) if granted else 0
    finally:
        await gate.close()
        await gateway.close()


async def grant_again(gate: Bus, cmd: Work) -> int:
    """The gate records (another) approval.granted of the call's grant in its session: what
    releases it to the executor. Returns its stream sequence."""
    assert cmd.grant is not None
    return await gate.append(ApprovalGranted(
        session_id=cmd.session_id, approval_id=cmd.grant.approval_id,
        approver=cmd.grant.approver, grants=(cmd.grant,)))


async def handled(nats_env: NatsEnv, seq: int, durable: str = "executor") -> None:
    """Waits until the executor has acked everything up to `seq` (a skip records nothing)."""
    nc = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                            password=nats_env.credentials[natsconf.ADMIN_USER])
    try:
        async with asyncio.timeout(30):
            while True:
                info = await nc.jetstream().consumer_info(S.EVENTS_STREAM, durable)
                if info.ack_floor and info.ack_floor.stream_seq >= seq:
                    return
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


def replicas(cluster: Sandbox) -> int:
    obj = cluster.store.get(DEPLOY, "shop", "web")
    assert obj is not None
    return int(obj["spec"]["replicas"])


def rv(cluster: Sandbox) -> str:
    obj = cluster.store.get(DEPLOY, "shop", "web")
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])


async def test_bad_write_commands_never_run(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log], tmp_path: Path) -> None:
    session, log = session_log
    private, public = keys
    other_private = tmp_path / "other.key"
    signing.generate_keypair(other_private, tmp_path / "other.pub")
    settings = ExecutorSettings(nats=nats_env.settings("executor"), gate_public_key=public,
                                kubeconfig=kubeconfig, allowed_contexts=("sandbox",),
                                call_timeout_s=10, verify_timeout_s=5)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(settings, stop))
    try:
        current = rv(cluster)
        bad = {
            "unsigned": scale_command(session, "c_unsigned", 7, None, current),
            "other key": scale_command(session, "c_otherkey", 7, other_private, current),
            "expired": scale_command(session, "c_expired", 7, private, current,
                                     ttl=timedelta(seconds=-1)),
            "args changed": scale_command(session, "c_altered", 7, private, current,
                                          signed_replicas=4),
        }
        for cmd in bad.values():
            await record_approval(nats_env, cmd)
        reasons = {}
        for what, cmd in bad.items():
            ev = await log.until(lambda e, c=cmd.call_id: e.type == "command.refused"
                                 and e.call_id == c)
            reasons[what] = ev.reason
        assert reasons == {
            "unsigned": "unsigned write command",
            "other key": "invalid gate signature",
            "expired": reasons["expired"],
            "args changed": "args differ from the approved call (hash mismatch)",
        }
        assert reasons["expired"].startswith("the grant expired at")
        # A valid one runs once; the same grant recorded again (a redelivery, or a gate that
        # records it twice) runs nothing and records nothing.
        good = scale_command(session, "c_good", 4, private, current)
        await record_approval(nats_env, good)
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_good")
        assert result.status == "ok"
        assert replicas(cluster) == 4
        await log.until(lambda e: e.type == "tool.verified" and e.call_id == "c_good")
        await handled(nats_env, await grant_again(gate, good))
        assert not log.of("command.refused", "c_good")
        for cmd in bad.values():
            assert not log.of("tool.started", cmd.call_id)
            assert not log.of("tool.result", cmd.call_id)
        assert len(log.of("tool.started", "c_good")) == 1
        assert len(log.of("tool.result", "c_good")) == 1
        assert replicas(cluster) == 4
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def start_executor(nats_env: NatsEnv, public: Path, kubeconfig: Path,
                   logfile: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env.update({
        "INTERLOCK_NATS_URL": nats_env.url,
        "INTERLOCK_NATS_USER": "executor",
        "INTERLOCK_NATS_PASSWORD": nats_env.credentials["executor"],
        "INTERLOCK_GATE_PUBKEY_FILE": str(public),
        "INTERLOCK_SIGNING_KEY_FILE": nats_env.settings("executor").signing_key_file,
        "INTERLOCK_KEYRING_FILE": nats_env.settings("executor").keyring_file,
        "KUBECONFIG": str(kubeconfig),
        "INTERLOCK_KUBE_CONTEXTS": "sandbox",
        "INTERLOCK_CALL_TIMEOUT": "120",
        "PYTHONUNBUFFERED": "1",
    })
    with open(logfile, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.executor"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.chaos
async def test_sigkill_after_the_cluster_call_is_not_run_again(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log], tmp_path: Path) -> None:
    session, log = session_log
    private, public = keys
    # Redelivery comes after the consumer's ack wait: a short one, so the test takes seconds.
    await provision.provision(nats_env.url, natsconf.ADMIN_USER,
                              nats_env.credentials[natsconf.ADMIN_USER], ack_wait=2.0)
    # The sandbox stores the write, then holds its answer: the executor dies in between.
    obj = cluster.store.get(DEPLOY, "shop", "web")
    assert obj is not None
    obj["metadata"].setdefault("annotations", {})[SLOW_WRITE] = "120"
    cluster.store.update(DEPLOY, obj, check_rv=False)
    writes: list[str] = []
    original = cluster.api._scale

    async def counting(request: Any, t: Any) -> Any:
        if request.method == "PATCH" and "All" not in request.query.getall("dryRun", []):
            writes.append(t.name)
        return await original(request, t)

    cluster.api._scale = counting  # type: ignore[method-assign]
    first = start_executor(nats_env, public, kubeconfig, tmp_path / "executor-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        cmd = scale_command(session, "c_killed", 6, private, rv(cluster))
        await record_approval(nats_env, cmd)
        await cluster.wait_for(lambda: replicas(cluster) == 6, timeout=30)
        await log.until(lambda e: e.type == "tool.started" and e.call_id == "c_killed")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert not log.of("tool.result", "c_killed")
        second = start_executor(nats_env, public, kubeconfig, tmp_path / "executor-2.log")
        # Redelivery comes after the consumer's ack wait.
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_killed",
                                 timeout=90)
        assert result.status == "unknown"
        assert result.output.startswith("outcome unknown — verify")
        assert result.data["observed"]["replicas"] == 6
        assert writes == ["web"], "the cluster saw the write exactly once"
        assert len(log.of("tool.started", "c_killed")) == 1
        assert replicas(cluster) == 6
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@contextlib.asynccontextmanager
async def executor_running(nats_env: NatsEnv, public: Path,
                           kubeconfig: Path) -> AsyncIterator[None]:
    settings = ExecutorSettings(nats=nats_env.settings("executor"), gate_public_key=public,
                                kubeconfig=kubeconfig, allowed_contexts=("sandbox",),
                                call_timeout_s=10, verify_timeout_s=5)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def refusal(log: Log, call_id: str, index: int = 0) -> str:
    """The reason of the call's `index`-th refusal, once it is recorded."""
    await log.until(lambda _: len(log.of("command.refused", call_id)) > index)
    return str(log.of("command.refused", call_id)[index].reason)


async def test_a_grant_runs_only_in_its_session_for_its_target_with_a_recorded_approval(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log]) -> None:
    """Issue 14, attack 2: a valid gate-signed grant copied into another session (recorded
    there with the gate's own credentials, request and human decision included) must not run;
    nor may a grant whose session recorded no human decision, nor one for another target."""
    session, log = session_log
    private, public = keys
    current = rv(cluster)
    approved = scale_command(session, "c_bound", 8, private, current)
    async with executor_running(nats_env, public, kubeconfig), \
            watching(nats_env) as (other, other_log):
        copied = dataclasses.replace(approved, session_id=other)
        await record_approval(nats_env, copied)
        assert await refusal(other_log, "c_bound") == (
            f"the grant is for session {session}, not {other}")
        # Re-signed for the other session with the gate's key (a compromised gate), and
        # recorded there, but no human decided there: the decision above is another session's.
        resigned = scale_command(other, "c_bound2", 8, private, current)
        await record_approval(nats_env, resigned, decided=False)
        assert await refusal(other_log, "c_bound2") == (
            f"session {other} records no human approval of a_c_bound2 (the decisions "
            "recorded leave it pending); the write was not run")
        # The gate recorded the grant, but no human decided through the gateway.
        undecided = scale_command(session, "c_undecided", 8, private, current)
        await record_approval(nats_env, undecided, decided=False)
        assert await refusal(log, "c_undecided") == (
            f"session {session} records no human approval of a_c_undecided (the decisions "
            "recorded leave it pending); the write was not run")
        # A grant signed for another target than the args act on.
        elsewhere = scale_command(session, "c_elsewhere", 8, private, current,
                                  target=Target(namespace="production", kind="deployment",
                                                name="web"))
        await record_approval(nats_env, elsewhere)
        assert await refusal(log, "c_elsewhere") == (
            "the target differs from the approved one: deployment/web in shop is not "
            "deployment/web in production")
        # A v1 grant (not bound to a session), even signed by the gate's key.
        v1 = scale_command(session, "c_v1", 8, private, current, version=1)
        await record_approval(nats_env, v1)
        assert (await refusal(log, "c_v1")).startswith("a v1 grant is not accepted")
        for who, call in [(other_log, "c_bound"), (other_log, "c_bound2"),
                          (log, "c_undecided"), (log, "c_elsewhere"), (log, "c_v1")]:
            assert not who.of("tool.started", call)
            assert not who.of("tool.result", call)
        assert replicas(cluster) == 3
        # The same grant in its own session runs: the refusals above were the binding.
        await record_approval(nats_env, approved)
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_bound")
        assert result.status == "ok"
        assert replicas(cluster) == 8


async def test_a_call_id_is_claimed_once_across_all_sessions(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log]) -> None:
    session, log = session_log
    private, public = keys
    async with executor_running(nats_env, public, kubeconfig), \
            watching(nats_env) as (other, other_log):
        first = scale_command(session, "c_once", 5, private, rv(cluster))
        await record_approval(nats_env, first)
        done = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_once")
        assert done.status == "ok"
        assert replicas(cluster) == 5
        # Another session approved a call with the same id, fully recorded: it would run (its
        # resource version is current) but for the claim, which the server holds for the id.
        second = scale_command(other, "c_once", 6, private, rv(cluster))
        await record_approval(nats_env, second)
        claim = await gate.first(S.tag_filter("executor", "tool.started", session, "c_once"))
        assert claim is not None
        assert await refusal(other_log, "c_once") == (
            f"call c_once was already claimed in session {session} (seq {claim.seq}); a call "
            "runs at most once across all sessions")
        assert not other_log.of("tool.started", "c_once")
        assert not other_log.of("tool.result", "c_once")
        assert replicas(cluster) == 5


async def test_a_squatted_claim_or_result_subject_is_named_and_nothing_runs(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log]) -> None:
    """Issue 14, attack 3: something stored where the claim (or the result) goes. The claim is
    refused by the server; the executor must say what holds the subject, read raw — not that it
    stopped after claiming — and run nothing."""
    session, log = session_log
    private, public = keys
    current = rv(cluster)
    admin = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                               password=nats_env.credentials[natsconf.ADMIN_USER])
    ex = await Bus.connect(nats_env.settings("executor"), "executor")
    try:
        js = admin.jetstream()
        squatted = scale_command(session, "c_squat", 9, private, current)
        await record_approval(nats_env, squatted, granted=False)
        junk = await js.publish(f"evt.{session}.executor.tool.started.c_squat._", b"\x00junk")
        # The claim filter spans sessions: a decodable event of another session's subject.
        elsewhere = scale_command(session, "c_squat2", 9, private, current)
        await record_approval(nats_env, elsewhere, granted=False)
        foreign = await js.publish(
            "evt.sother.executor.tool.started.c_squat2._",
            E.encode(ToolStarted(session_id="sother", call_id="c_other", approval_id="a")))
        # A claim the executor really made, then junk where its result goes: a redelivery
        # must not take the junk for a crash (a decoding read would skip it).
        claimed = scale_command(session, "c_claimed", 9, private, current)
        await record_approval(nats_env, claimed, granted=False)
        await ex.append(ToolStarted(session_id=session, call_id="c_claimed",
                                    approval_id="a_c_claimed", actor="executor"),
                        Expect.new_key())
        junk_result = await js.publish(f"evt.{session}.executor.tool.result.c_claimed._", b"{}")
        async with executor_running(nats_env, public, kubeconfig):
            for cmd in (squatted, elsewhere, claimed):
                await grant_again(gate, cmd)
            for call, seq in (("c_squat", junk.seq), ("c_squat2", foreign.seq)):
                result = await log.until(lambda e, c=call: e.type == "tool.result"
                                         and e.call_id == c)
                assert result.status == "error"
                assert result.output == (
                    f"the claim subject evt.*.executor.tool.started.{call}.* holds something "
                    f"that is not a claim (seq {seq}); the write was not run")
            assert await refusal(log, "c_claimed") == (
                f"the result subject evt.{session}.executor.tool.result.c_claimed.* holds "
                f"something that is not a result (seq {junk_result.seq}); this claimed call "
                "was not run again")
        # No claim was made for the squatted calls (only the junk/foreign message is there),
        # and nothing was recorded as the claimed call's result.
        assert not log.of("tool.started", "c_squat")
        assert not log.of("tool.started", "c_squat2")
        assert len(log.of("tool.started", "c_claimed")) == 1
        assert not log.of("tool.result", "c_claimed")
        assert replicas(cluster) == 3
    finally:
        await ex.close()
        await admin.close()

