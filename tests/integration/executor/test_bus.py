"""The executor on a real nats-server: forged, stale, altered and replayed write commands never
run and each leaves a `command.refused`; an executor SIGKILLed after calling the cluster and
before recording does not run the call again after a restart and reports its outcome."""

from __future__ import annotations

import asyncio
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

from sandbox.policy import SLOW_WRITE
from sandbox.resources import by_plural
from sandbox.server import Sandbox
from schemas import catalogue
from schemas import events as E
from schemas import subjects as S
from schemas.approval import Grant
from schemas.commands import ExecCommand, command_encoder
from schemas.ids import new_event_id
from services.executor import service
from services.executor.settings import ExecutorSettings
from services.runtime import natsconf, signing
from services.runtime.bus import Bus
from tests.conftest import NatsEnv

DEPLOY = by_plural("apps", "deployments")


class Log:
    """A session's events as the log republishes them, awaited with timeouts."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, data: bytes) -> None:
        self.events.append(E.decode(data))
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


@pytest.fixture
async def session_log(nats_env: NatsEnv) -> AsyncIterator[tuple[str, Log]]:
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
async def gate(nats_env: NatsEnv) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_env.settings("gate"), "gate")
    try:
        yield bus
    finally:
        await bus.close()


def scale_command(session: str, call_id: str, replicas: int, key_path: Path | None,
                  rv: str, *, ttl: timedelta = timedelta(minutes=5),
                  signed_replicas: int | None = None) -> ExecCommand:
    tool = catalogue.TOOLS["scale"]
    args = catalogue.canonical_args(tool.parse_args(
        {"name": "web", "namespace": "shop", "replicas": replicas}))
    signed_args = catalogue.canonical_args(tool.parse_args(
        {"name": "web", "namespace": "shop",
         "replicas": replicas if signed_replicas is None else signed_replicas}))
    grant = Grant(call_id=call_id, call_hash=catalogue.call_hash("scale", signed_args),
                  approval_id="a_" + call_id, approver="alice",
                  not_after=datetime.now(UTC) + ttl, resource_version=rv)
    if key_path is not None:
        grant = signing.sign(grant, signing.load_private(key_path))
    return ExecCommand(kind="write", session_id=session, call_id=call_id, tool="scale",
                       args=args, grant=grant if key_path is not None else None)


async def publish(gate: Bus, cmd: ExecCommand, msg_id: str | None = None) -> None:
    await gate.publish_command(S.exec_subject("write", cmd.session_id),
                               command_encoder.encode(cmd), msg_id or cmd.call_id)


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
                                call_timeout_s=10, verify_timeout_s=5, progress_interval_s=1)
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
            await publish(gate, cmd)
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
        # A valid one runs once; the same command published again is a refused replay.
        good = scale_command(session, "c_good", 4, private, current)
        await publish(gate, good)
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_good")
        assert result.status == "ok" and replicas(cluster) == 4
        await log.until(lambda e: e.type == "tool.verified" and e.call_id == "c_good")
        await publish(gate, good, msg_id="replay-" + good.call_id)
        replay = await log.until(lambda e: e.type == "command.refused"
                                 and e.call_id == "c_good")
        assert replay.reason == "replayed command: this call has already been executed"
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
        "INTERLOCK_PROGRESS_INTERVAL": "1",
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
        await publish(gate, cmd)
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
