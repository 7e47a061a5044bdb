"""Issue 21: an executor of one cluster (INTERLOCK_CLUSTER) runs only what the gate signed for
that cluster and what came on that cluster's subject. A grant or classification for cluster a
re-published on b's subject (a compromised gate re-emitting it), or a b-subject command signed
for a, is refused — recorded, nothing touches the cluster — and every event it writes names
its cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import catalogue
from schemas import subjects as S
from schemas.approval import GRANT_VERSION, ApprovalGranted, Grant, ToolClassified
from schemas.base import Event, Target
from schemas.execution import CommandRefused
from services.executor import domain
from services.executor.handlers import Executor
from services.executor.settings import ExecutorSettings
from services.runtime import signing
from services.runtime.delivery import Delivery


class NoCluster:
    """A Kubernetes adapter that must never be used: the command is refused before."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the cluster was touched ({name})")


class RecordingBus:
    def __init__(self) -> None:
        self.appended: list[Event] = []

    async def append_once(self, event: Event, expect: object = None) -> tuple[int, str]:
        S.check_subject(S.event_subject(event), event)  # what it would be published on
        self.appended.append(event)
        return len(self.appended), "h"

    async def session(self, session_id: str, **_: object) -> list[object]:
        return []


def _executor(tmp_path: Path, cluster: str) -> tuple[Executor, RecordingBus]:
    signing.generate_keypair(tmp_path / "gate.key", tmp_path / "gate.pub")
    settings = ExecutorSettings.from_env({
        "INTERLOCK_NATS_PASSWORD": "p", "INTERLOCK_GATE_PUBKEY_FILE": str(tmp_path / "gate.pub"),
        "INTERLOCK_KEYRING_FILE": "k", "INTERLOCK_SIGNING_KEY_FILE": "s",
        "INTERLOCK_CLUSTER": cluster})
    bus = RecordingBus()
    return Executor(bus, settings, NoCluster()), bus  # type: ignore[arg-type]


def _delivery(event: Event, token: str | None = None) -> Delivery[Any]:
    subject = S.event_subject(event)
    if token is not None:  # the same event re-published on another cluster's subject
        subject = ".".join([*subject.split(".")[:6], token])
    return Delivery(event=event, seq=7, subject=subject, data=b"{}")


SCALE = {"cluster": "a", "kind": "deployment", "name": "web", "namespace": "shop",
         "replicas": 4}


def _classified(cluster: str, access: str = "read") -> ToolClassified:
    args = {**SCALE, "cluster": cluster}
    tool = "get" if access == "read" else "scale"
    if access == "read":
        args = {"cluster": cluster, "kind": "deployment", "name": "web", "namespace": "shop"}
    return ToolClassified(session_id="s_1", call_id="c_1", access=access,  # type: ignore[arg-type]
                          rule="catalogue", tool=tool, args=args,
                          target=Target(cluster=cluster, namespace="shop", kind="deployment",
                                        name="web"), actor="gate", causation_id="e_p")


def _granted(cluster: str, key_dir: Path) -> ApprovalGranted:
    args = {**SCALE, "cluster": cluster}
    grant = Grant(call_id="c_1", call_hash=catalogue.call_hash("scale", args),
                  approval_id="a_1", approver="bob",
                  not_after=datetime.now(UTC) + timedelta(minutes=5), session_id="s_1",
                  target=Target(cluster=cluster, namespace="shop", kind="deployment",
                                name="web"), version=GRANT_VERSION)
    grant = signing.sign(grant, signing.load_private(key_dir / "gate.key"))
    return ApprovalGranted(session_id="s_1", approval_id="a_1", approver="bob",
                           grants=(grant,), actor="gate")


def _refused(bus: RecordingBus) -> CommandRefused:
    assert len(bus.appended) == 1, bus.appended
    refused = bus.appended[0]
    assert isinstance(refused, CommandRefused)
    return refused


@pytest.mark.parametrize("access", ["read", "write"])
async def test_a_classification_for_another_cluster_replayed_here_is_refused(
        tmp_path: Path, access: str) -> None:
    executor, bus = _executor(tmp_path, "b")
    await executor.handle(_delivery(_classified("a", access), token="b"))
    refused = _refused(bus)
    assert "signed for cluster 'a', not this executor's cluster 'b'" in refused.reason
    assert refused.cluster() == "b"  # what this executor's identity may write


async def test_a_command_for_this_cluster_on_another_clusters_subject_is_refused(
        tmp_path: Path) -> None:
    executor, bus = _executor(tmp_path, "b")
    await executor.handle(_delivery(_classified("b"), token="a"))
    assert "subject for cluster token 'a'" in _refused(bus).reason
    # An old six-token subject (no cluster): not for a per-cluster executor either.
    executor, bus = _executor(tmp_path, "b")
    event = _classified("b")
    await executor.handle(Delivery(event=event, seq=7, data=b"{}",
                                   subject=".".join(S.event_subject(event).split(".")[:6])))
    assert "token 'none'" in _refused(bus).reason


async def test_a_grant_for_cluster_a_replayed_onto_b_is_refused_and_never_runs(
        tmp_path: Path) -> None:
    executor, bus = _executor(tmp_path, "b")
    await executor.handle(_delivery(_granted("a", tmp_path), token="b"))
    refused = _refused(bus)
    assert refused.call_id == "c_1"
    assert "signed for cluster 'a', not this executor's cluster 'b'" in refused.reason
    assert refused.cluster() == "b"


def test_the_cluster_check_itself() -> None:
    assert domain.cluster_problem("b", ["b"], "b") is None
    assert domain.cluster_problem("b", ["a"], "b") is not None
    assert domain.cluster_problem("b", ["b"], "a") is not None
    assert domain.cluster_problem("b", [""], "b") is not None  # a call naming no cluster
    assert domain.cluster_problem("b", ["b"], None) is not None
    arn = "arn:aws:eks:eu-west-1:1:cluster/prod"
    assert domain.cluster_problem(arn, [arn], S.cluster_token(arn)) is None


async def test_per_cluster_executor_binds_its_clusters_durable(tmp_path: Path) -> None:
    executor, _ = _executor(tmp_path, "b")
    assert executor.settings.consumer == S.executor_durable("all", "b") != "executor"


async def test_a_grant_replayed_on_another_clusters_subject_is_recorded_refused(
        tmp_path: Path) -> None:
    """What the consume loop hands over when the subject's cluster token is not the event's:
    a poison message that says what it carried, so the executor of b records its refusal."""
    from schemas import events as E
    from services.runtime.delivery import Poisoned
    from services.runtime.stored import Misrouted, decode_stored

    executor, bus = _executor(tmp_path, "b")
    granted = _granted("a", tmp_path)
    on_b = ".".join([*S.event_subject(granted).split(".")[:6], "b"])
    with pytest.raises(Misrouted) as caught:
        decode_stored(on_b, E.encode(granted))
    await executor.on_poison(Poisoned(on_b, 9, None, caught.value))
    refused = _refused(bus)
    assert refused.call_id == "c_1"
    assert "stored where it does not belong" in refused.reason
    assert refused.cluster() == "b"
