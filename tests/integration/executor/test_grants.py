"""The executor consuming an approval's grants from the log, on a real nats-server: each grant
of an approval on its own (one refused does not stop the next), and a grant on the gate's
subject that the gate's event key did not sign is recorded and never run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats

from sandbox.server import Sandbox
from schemas import events as E
from schemas import subjects as S
from schemas.approval import (
    ApprovalCall,
    ApprovalDecided,
    ApprovalGranted,
    ApprovalRequested,
    ToolClassified,
)
from schemas.base import Event, Target
from services.runtime import natsconf
from services.runtime.bus import Bus
from tests.conftest import NatsEnv
from tests.integration.executor.test_bus import (
    Log,
    executor_running,
    gate,
    keys,
    record_approval,
    refusal,
    replicas,
    rv,
    scale_command,
    session_log,
)

__all__ = ["gate", "keys", "session_log"]  # fixtures, used by name


async def store_unsigned(nats_env: NatsEnv, event: Event) -> None:
    """Stores `event` on its own subject unsigned, as the admin identity (the only one besides
    its emitter that can write there): a forgery the consume loop must catch."""
    admin = await nats.connect(nats_env.url, user=natsconf.ADMIN_USER,
                               password=nats_env.credentials[natsconf.ADMIN_USER])
    try:
        await admin.jetstream().publish(S.event_subject(event), E.encode(event))
    finally:
        await admin.close()


async def test_one_bad_grant_of_an_approval_does_not_stop_the_others(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        gate: Bus, session_log: tuple[str, Log]) -> None:
    """An approval's grants run in order, each on its own: the first (expired) is refused and
    recorded, the second still runs."""
    session, log = session_log
    private, public = keys
    current = rv(cluster)
    stale = scale_command(session, "c_first", 7, private, current, ttl=timedelta(seconds=-1),
                          approval_id="a_both")
    good = scale_command(session, "c_second", 7, private, current, approval_id="a_both")
    assert stale.grant is not None
    assert good.grant is not None
    await gate.append(ApprovalRequested(
        session_id=session, approval_id="a_both", calls=tuple(ApprovalCall(
            call_id=w.call_id, tool=w.tool, args=w.args, call_hash=w.grant.call_hash,
            target=w.target, resource_version=current) for w in (stale, good) if w.grant),
        requested_by="bob", expires_at=datetime.now(UTC) + timedelta(minutes=15)))
    gateway = await Bus.connect(nats_env.settings("gateway"), "gateway")
    try:
        await gateway.append(ApprovalDecided(session_id=session, approval_id="a_both",
                                             decision="approve", approver="alice",
                                             actor="alice"))
    finally:
        await gateway.close()
    async with executor_running(nats_env, public, kubeconfig):
        await gate.append(ApprovalGranted(session_id=session, approval_id="a_both",
                                          approver="alice", grants=(stale.grant, good.grant)))
        assert (await refusal(log, "c_first")).startswith("the grant expired at")
        result = await log.until(lambda e: e.type == "tool.result" and e.call_id == "c_second")
        assert result.status == "ok"
    assert not log.of("tool.started", "c_first")
    assert replicas(cluster) == 7


async def test_a_grant_the_gate_did_not_sign_is_recorded_and_not_run(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        session_log: tuple[str, Log]) -> None:
    """An approval.granted on the gate's subjects that the gate's event key did not sign (here
    stored by the admin identity, the only other one that can write there) carries a valid
    grant, request and human decision — and still runs nothing: the consume loop rejects it,
    and the executor records why."""
    session, log = session_log
    private, public = keys
    forged = scale_command(session, "c_forged", 6, private, rv(cluster))
    assert forged.grant is not None
    await record_approval(nats_env, forged, granted=False)
    await store_unsigned(nats_env, ApprovalGranted(
        session_id=session, approval_id=forged.grant.approval_id, approver="alice",
        grants=(forged.grant,)))
    async with executor_running(nats_env, public, kubeconfig):
        reason = await refusal(log, "c_forged")
    assert reason.startswith("rejected a forged approval.granted"), reason
    assert reason.endswith("it was not run")
    assert not log.of("tool.started", "c_forged")
    assert replicas(cluster) == 3


async def test_a_classification_the_gate_did_not_sign_is_recorded_and_not_run(
        cluster: Sandbox, kubeconfig: Path, nats_env: NatsEnv, keys: tuple[Path, Path],
        session_log: tuple[str, Log]) -> None:
    """A read released by a `tool.classified` on the gate's subject that the gate's event key
    did not sign runs nothing, although the executor's session reads skip verifying
    classifications (domain.NOT_ACTED_UPON): what it runs is checked by the consume loop."""
    session, log = session_log
    _, public = keys
    event = ToolClassified(session_id=session, call_id="c_forged_read", access="read",
                           rule="get is a read", tool="get",
                           args={"kind": "deployment", "name": "web", "namespace": "shop"},
                           target=Target(namespace="shop", kind="deployment", name="web"))
    await store_unsigned(nats_env, event)
    async with executor_running(nats_env, public, kubeconfig):
        reason = await refusal(log, "c_forged_read")
    assert reason.startswith("rejected a forged tool.classified"), reason
    assert not log.of("tool.result", "c_forged_read")
