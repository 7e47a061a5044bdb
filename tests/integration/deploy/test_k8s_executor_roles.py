"""Two executor identities (deploy/k8s): with the "split" consumer layout, an executor in the
`read` role binds `executor-read` and never runs a preview or a write — those wait for the
`write` role — so reads can run under a read-only Kubernetes ServiceAccount."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox
from schemas import catalogue
from schemas import subjects as S
from schemas.approval import (
    GRANT_VERSION,
    ApprovalCall,
    ApprovalGranted,
    ApprovalRequested,
    Grant,
    ToolClassified,
)
from schemas.base import Target
from schemas.ids import new_event_id
from services.executor import service
from services.executor.settings import ExecutorSettings
from services.runtime import natsconf, provision, signing
from services.runtime.bus import Bus
from services.runtime.errors import ConfigError
from tests.conftest import NatsEnv
from tests.integration.executor.test_bus import Log


@pytest.fixture
async def cluster() -> AsyncIterator[Sandbox]:
    sb = Sandbox(["baseline"], time_scale=0.02)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


async def _consumers(nats_env: NatsEnv) -> dict[str, object]:
    nc = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                            password=nats_env.credentials[natsconf.ADMIN_USER])
    try:
        js = nc.jetstream()
        return {c.name: c for c in await js.consumers_info(S.EVENTS_STREAM)}
    finally:
        await nc.close()


def test_roles_and_layouts_run_every_kind_once() -> None:
    released = {S.tag_filter("gate", "tool.classified"), S.tag_filter("gate", "approval.granted")}
    for layout, durables in S.EXECUTOR_LAYOUTS.items():
        kinds = [k for role, (d, ks) in S.EXECUTOR_ROLES.items() if d in durables for k in ks]
        assert sorted(kinds) == ["preview", "read", "write"], layout
        filters = {f for d in durables for f in S.CONSUMER_FILTERS[d][1]}
        assert filters == released, layout
        assert all(S.CONSUMER_FILTERS[d][0] == S.EVENTS_STREAM for d in durables)
    # Only the write role needs the grants.
    assert S.CONSUMER_FILTERS["executor-read"][1] == (S.tag_filter("gate", "tool.classified"),)
    with pytest.raises(ValueError, match="executor layout"):
        provision.consumers("both")
    assert set(provision.consumers("split")) & set(S.EXECUTOR_CONSUMERS) == \
        {"executor-read", "executor-write"}
    assert set(provision.consumers("single")) & set(S.EXECUTOR_CONSUMERS) == {"executor"}


async def test_a_read_executor_never_receives_previews_or_writes(
        nats_env: NatsEnv, cluster: Sandbox, tmp_path: Path) -> None:
    # Re-provision the running server as deploy/k8s does: the single consumer goes, two come.
    await provision.provision(nats_env.url, natsconf.ADMIN_USER,
                              nats_env.credentials[natsconf.ADMIN_USER], executor_layout="split")
    assert {"executor-read", "executor-write"} <= set(await _consumers(nats_env))
    assert "executor" not in await _consumers(nats_env)

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    signing.generate_keypair(tmp_path / "gate.key", tmp_path / "gate.pub")
    session = "s" + new_event_id()[-12:].lower()
    log = Log()
    watcher = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                                 password=nats_env.credentials[natsconf.ADMIN_USER])

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        log.add(msg.data)

    await watcher.subscribe(S.live_filter(session), cb=on_msg)
    gate = await Bus.connect(nats_env.settings("gate"), "gate")

    def settings(role: str) -> ExecutorSettings:
        return ExecutorSettings(nats=nats_env.settings("executor"),
                                gate_public_key=tmp_path / "gate.pub", kubeconfig=kubeconfig,
                                allowed_contexts=("sandbox",), call_timeout_s=10,
                                verify_timeout_s=5, role=role)

    scale = {"name": "web", "namespace": "shop", "replicas": 5}
    web = Target(namespace="shop", kind="deployment", name="web")
    unsigned = Grant(call_id="c_write", call_hash=catalogue.call_hash("scale", scale),
                     approval_id="a_write", approver="alice",
                     not_after=datetime.now(UTC) + timedelta(minutes=5), session_id=session,
                     target=web, version=GRANT_VERSION)
    # What the gate records: the preview's and the read's classifications, and a grant that
    # the write role refuses (unsigned). The first two are queued before the read.
    released = [
        ToolClassified(session_id=session, call_id="c_preview", access="write", rule="t",
                       tool="scale", args=scale, target=web),
        ApprovalRequested(session_id=session, approval_id="a_write", calls=(ApprovalCall(
            call_id="c_write", tool="scale", args=scale, call_hash=unsigned.call_hash,
            target=web),), requested_by="bob",
            expires_at=datetime.now(UTC) + timedelta(minutes=15)),
        ApprovalGranted(session_id=session, approval_id="a_write", approver="alice",
                        grants=(unsigned,)),
        ToolClassified(session_id=session, call_id="c_read", access="read", rule="t",
                       tool="list", args={"kind": "deployment", "namespace": "shop"},
                       target=Target(namespace="shop", kind="deployment")),
    ]
    stops: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for event in released:
            await gate.append(event)
        stops.append(asyncio.Event())
        tasks.append(asyncio.create_task(service.run(settings("read"), stops[-1])))
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_read")
        assert result.status == "ok"
        assert "web" in result.output
        info = await _consumers(nats_env)
        read, write = info["executor-read"], info["executor-write"]
        # Both classifications reached the read role, which ran only the read.
        assert read.delivered.consumer_seq == 2  # type: ignore[attr-defined]
        assert write.num_pending == 3  # type: ignore[attr-defined]
        assert write.delivered.consumer_seq == 0  # type: ignore[attr-defined]
        assert not [e for e in log.events if e.emitter == "executor"
                    and getattr(e, "call_id", "") in ("c_preview", "c_write")]

        # The write role takes them: a preview is recorded, an unsigned write refused.
        stops.append(asyncio.Event())
        tasks.append(asyncio.create_task(service.run(settings("write"), stops[-1])))
        preview = await log.until(lambda e: e.type == "preview.recorded"
                                  and e.call_id == "c_preview")
        assert preview.ok
        refused = await log.until(lambda e: e.type == "command.refused"
                                  and e.call_id == "c_write")
        assert refused.reason == "unsigned write command"
        info = await _consumers(nats_env)
        assert info["executor-read"].delivered.consumer_seq == 2  # type: ignore[attr-defined]
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await gate.close()
        await watcher.close()


async def test_an_executor_cannot_bind_another_layouts_consumer(nats_env: NatsEnv,
                                                                tmp_path: Path) -> None:
    """`read` against the default single layout fails at start instead of idling silently."""
    signing.generate_keypair(tmp_path / "gate.key", tmp_path / "gate.pub")
    settings = ExecutorSettings(nats=nats_env.settings("executor"),
                                gate_public_key=tmp_path / "gate.pub", kubeconfig=None,
                                allowed_contexts=(), role="read")
    with pytest.raises(ConfigError, match="INTERLOCK_EXECUTOR_CONSUMERS=split"):
        await asyncio.wait_for(service.run(settings, asyncio.Event()), 20)
