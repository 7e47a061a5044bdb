"""Writes proposed together are one batch (issue 15): a scripted model proposing eight deletes
in one step yields one approval with all eight calls, decided once; approving runs each exactly
once, denying runs none. Several direct-mode lines in one message are one batch too. The whole
stack as processes, the model a scripted OpenAI-compatible server, the cluster checked with the
official client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from launcher.stack import Stack
from schemas.ids import new_call_id, new_id
from schemas.planning import ToolProposed
from tests.e2e.conftest import bus_as, kube, people
from tests.support import Client, SseEvent
from tests.support_llm import Reply, Request, calls, say

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
NS = "staging"
SCRIPT: dict[str, Callable[[Request], Reply]] = {}


API_KEY = "sk-batch-e2e"


@pytest.fixture(scope="module")
def stack(scripted_stack: Stack) -> Stack:
    return scripted_stack


def _of(events: list[SseEvent], tag: str) -> list[Any]:
    return [e.data for e in events if e.event == tag]


# -- the leftovers a cleanup deletes, made and checked with the official client -----------------

Obj = tuple[str, str]  # (kind, name)


def _leftovers(stack: Stack, prefix: str) -> list[Obj]:
    """3 PVCs, 3 services and 2 pods in staging: the eight objects of one cleanup."""
    core = client.CoreV1Api(kube(stack))
    objs: list[Obj] = []
    for i in range(3):
        name = f"{prefix}-pvc-{i}"
        core.create_namespaced_persistent_volume_claim(NS, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))
        objs.append(("persistentvolumeclaim", name))
    for i in range(3):
        name = f"{prefix}-svc-{i}"
        core.create_namespaced_service(NS, client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(selector={"app": name},
                                      ports=[client.V1ServicePort(port=80)])))
        objs.append(("service", name))
    for i in range(2):
        name = f"{prefix}-pod-{i}"
        core.create_namespaced_pod(NS, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"cleanup-run": prefix}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))
        objs.append(("pod", name))
    _until_ready(core, prefix, 2)
    return objs


def _until_ready(core: client.CoreV1Api, prefix: str, count: int) -> None:
    """Waits (a watch, not a sleep) until the kubelet has started the pods: it updates them until
    then, and a write approved against an older resourceVersion is refused as a conflict."""
    ready: set[str] = set()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, NS, label_selector=f"cleanup-run={prefix}",
                       timeout_seconds=60):
        pod = ev["object"]
        if any(c.type == "Ready" and c.status == "True"
               for c in (pod.status.conditions or [])):
            ready.add(pod.metadata.name)
        if len(ready) == count:
            w.stop()
            return
    raise AssertionError(f"pods of {prefix} never became ready: {sorted(ready)}")


def _exists(stack: Stack, obj: Obj) -> bool:
    core = client.CoreV1Api(kube(stack))
    read = {"persistentvolumeclaim": core.read_namespaced_persistent_volume_claim,
            "service": core.read_namespaced_service, "pod": core.read_namespaced_pod}[obj[0]]
    try:
        read(obj[1], NS)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _cleanup(objs: list[Obj]) -> Callable[[Request], Reply]:
    """A model that reads once and proposes every delete in one step, plus one delete the gate
    refuses (an unknown kind): that one is not in the batch, and the batch does not wait for it.
    The evidence quotes the person's message, which names the objects."""

    def script(req: Request) -> Reply:
        if not req.tool_results():
            deletes = [("delete", {"kind": kind, "name": name, "namespace": NS,
                                   "rationale": f"{name} is a leftover of the finished run",
                                   "evidence": [name],
                                   "expected_outcome": f"{name} no longer exists"})
                       for kind, name in objs]
            bogus = ("delete", {"kind": "widget", "name": "w", "namespace": NS,
                                "rationale": "also a leftover", "evidence": [objs[0][1]],
                                "expected_outcome": "gone"})
            return calls(("list", {"kind": "pod", "namespace": NS}), *deletes, bogus,
                         text="Cleaning up the leftovers you named.")
        return say("Done: the outcome of the cleanup is above.")

    return script


async def _propose_cleanup(stack: Stack, http: aiohttp.ClientSession, prefix: str
                           ) -> tuple[str, list[Obj], list[SseEvent], Client, Client]:
    objs = _leftovers(stack, prefix)
    assert all(_exists(stack, o) for o in objs)
    SCRIPT["now"] = _cleanup(objs)
    operator, approver = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, f"The run {prefix} is finished. Delete its leftovers in staging: "
                            + ", ".join(name for _, name in objs))
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    proposed = _of(events, "tool.proposed")
    deletes = [p for p in proposed if p["tool"] == "delete"]
    assert len(deletes) == 9
    assert len({p["batch_id"] for p in deletes}) == 1
    assert {p["batch_size"] for p in deletes} == {9}
    assert [p["batch_id"] for p in proposed if p["tool"] == "list"] == [""]
    return sid, objs, events, operator, approver


def _one_card(events: list[SseEvent], objs: list[Obj]) -> dict[str, Any]:
    (req,) = _of(events, "approval.requested")
    assert [(c["target"]["kind"], c["target"]["name"]) for c in req["calls"]] == objs
    assert req["title"] == "Delete 3 PVCs, 3 services, 2 pods in staging"
    assert req["batch_id"]
    assert any(f.startswith("not in this batch, refused by the gate") and "widget" in f
               for f in req["risk_flags"]), req["risk_flags"]
    return dict(req)


async def test_eight_deletes_in_one_step_are_one_card_and_approving_runs_each_once(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    sid, objs, events, operator, approver = await _propose_cleanup(stack, http, "run-a")
    req = _one_card(events, objs)
    # The read ran at once, outside the batch; nothing was deleted while the card waits.
    (listed,) = [r for r in _of(events, "tool.result") if r["tool"] == "list"]
    assert listed["status"] == "ok"
    assert all(_exists(stack, o) for o in objs)

    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    after = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                    after=events[-1].id or 0, timeout=90)
    everything = events + after
    (granted,) = _of(everything, "approval.granted")
    assert sorted(g["call_id"] for g in granted["grants"]) == sorted(
        c["call_id"] for c in req["calls"])
    results = [r for r in _of(everything, "tool.result") if r["tool"] == "delete"]
    assert sorted(r["call_id"] for r in results) == sorted(c["call_id"] for c in req["calls"])
    assert {r["status"] for r in results} == {"ok"}, [r["output"] for r in results]
    assert not any(_exists(stack, o) for o in objs)
    assert len(_of(everything, "approval.requested")) == 1
    # A second decision on the settled card changes nothing.
    status, _ = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                    {"decision": "approve"})
    assert status in (202, 409)


async def test_denying_the_card_runs_none_of_the_eight(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    sid, objs, events, operator, approver = await _propose_cleanup(stack, http, "run-b")
    req = _one_card(events, objs)
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "deny", "reason": "keep them for now"})
    assert status == 202, body
    after = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                    after=events[-1].id or 0, timeout=90)
    everything = events + after
    (denied,) = _of(everything, "approval.denied")
    assert sorted(denied["call_ids"]) == sorted(c["call_id"] for c in req["calls"])
    assert not [r for r in _of(everything, "tool.result") if r["tool"] == "delete"]
    assert not _of(everything, "approval.granted")
    assert all(_exists(stack, o) for o in objs)


async def test_several_direct_lines_are_one_card(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    objs = _leftovers(stack, "run-c")
    pvc, svc, pod = objs[0], objs[3], objs[6]
    operator, approver = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl delete pvc {pvc[1]} -n {NS}\n"
                            f"kubectl get pods -n {NS}\n"
                            f"kubectl delete svc {svc[1]} -n {NS}\n"
                            f"kubectl delete pod {pod[1]} -n {NS}")
    events = await operator.wait_for(sid, lambda e: e.event == "approval.requested", timeout=60)
    (req,) = _of(events, "approval.requested")
    assert [(c["target"]["kind"], c["target"]["name"]) for c in req["calls"]] == [pvc, svc, pod]
    assert req["title"] == f"Delete PVC {pvc[1]}, service {svc[1]}, pod {pod[1]} in staging"
    assert all(_exists(stack, o) for o in (pvc, svc, pod))
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    after = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                    after=events[-1].id or 0, timeout=90)
    everything = events + after
    # The turn ends once, after every line has its outcome.
    results = _of(everything, "tool.result")
    assert sorted(r["tool"] for r in results) == ["delete", "delete", "delete", "list"]
    assert {r["status"] for r in results} == {"ok"}, [r["output"] for r in results]
    assert not any(_exists(stack, o) for o in (pvc, svc, pod))
    assert all(_exists(stack, o) for o in objs if o not in (pvc, svc, pod))


async def test_a_member_refused_after_the_others_previews_still_lets_the_batch_be_decided(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """The last member to be recorded is one the gate refuses, after every other member's dry
    run is in: it gets no preview, so its refusal is what completes the batch's card."""
    objs = _leftovers(stack, "run-d")[:2]
    operator, _ = people(stack, http)
    sid = await operator.new_session()
    batch = new_id("b")

    def member(kind: str, name: str) -> ToolProposed:
        return ToolProposed(session_id=sid, call_id=new_call_id(), tool="delete", source="llm",
                            args={"kind": kind, "name": name, "namespace": NS},
                            requested_by="operator", batch_id=batch, batch_size=3)

    bus = await bus_as(stack, "planner")
    try:
        for kind, name in objs:
            await bus.append(member(kind, name))
        previews: set[str] = set()

        def both_previewed(e: SseEvent) -> bool:
            if e.event == "preview.recorded":
                previews.add(e.data["call_id"])
            return len(previews) == 2

        got = await operator.wait_for(sid, both_previewed, timeout=60)
        assert not _of(got, "approval.requested")  # the third member is not recorded yet
        await bus.append(member("widget", "w"))
    finally:
        await bus.close()
    # (A gate still handling the last preview may see the third member and decide first: the
    # card is the same either way, and there is exactly one.)
    seen: set[str] = set()

    def settled(e: SseEvent) -> bool:
        seen.add(e.event)
        return {"approval.requested", "tool.refused"} <= seen

    got = await operator.wait_for(sid, settled, timeout=60)
    (req,) = _of(got, "approval.requested")
    assert [(c["target"]["kind"], c["target"]["name"]) for c in req["calls"]] == objs
    assert any("widget" in f for f in req["risk_flags"]), req["risk_flags"]
