"""Label selectors in direct mode, on the whole stack (issue 15): `delete pods -l app=x -n
staging` is one card listing exactly the pods it matched, and approving it deletes exactly those;
a pod that joins the selector between the preview and the approval is not deleted (the set is
bound into the grant, as a drain's pods are); `logs -l` is a read that runs at once; a selector
write in a production namespace is production-protected.

The stack runs the baseline scenario alone, and the test's pods are bare (no controller), so
nothing but the test adds or removes a pod that a selector matches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client

from launcher.stack import Stack
from tests.e2e.conftest import approve_and_result, kube, people, start_stack, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NS = "staging"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory, scenarios=("baseline",), sandbox_time_scale=0.05)
    try:
        core = client.CoreV1Api(kube(s))
        for ns in (NS, "production"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        yield s
    finally:
        codes = await s.stop()
    assert all(c == 0 for c in codes.values()), codes


def _pod(stack: Stack, name: str, labels: dict[str, str], ns: str = NS) -> None:
    client.CoreV1Api(kube(stack)).create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main",
                                                             image="busybox:1.36")])))


def _pods(stack: Stack, ns: str = NS) -> set[str]:
    """The pods that exist and are not being deleted, as the cluster says."""
    return {p.metadata.name for p in client.CoreV1Api(kube(stack)).list_namespaced_pod(ns).items
            if not p.metadata.deletion_timestamp}


async def _held(operator: Client, line: str) -> tuple[str, dict[str, Any], int]:
    sid = await operator.new_session()
    await operator.say(sid, line)
    got = await operator.wait_for(sid, lambda e: e.event in ("approval.requested", "tool.refused",
                                                             "command.rejected", "tool.result"))
    assert got[-1].event == "approval.requested", got[-1].data.get("reason")
    # One card: exactly one approval request for the one command.
    assert [e.event for e in got].count("approval.requested") == 1
    return sid, dict(got[-1].data), got[-1].id


async def test_delete_by_selector_is_one_card_of_the_exact_pods_and_deletes_those(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    for name in ("x-1", "x-2", "x-3"):
        _pod(stack, name, {"app": "x"})
    _pod(stack, "y-1", {"app": "y"})
    operator, approver = people(stack, http)
    sid, req, seen = await _held(operator, f"kubectl delete pods -l app=x -n {NS}")
    [call] = req["calls"]
    assert not call["preview_error"], call["preview_error"]
    assert req["title"] == f"Delete 3 pods matching app=x in {NS}: x-1, x-2, x-3"
    assert call["args"]["selector"] == "app=x"
    assert call["effect"] == [f"{NS}/pod/x-1", f"{NS}/pod/x-2", f"{NS}/pod/x-3"]
    assert [c["path"] for c in call["diff"]] == ["pod/x-1", "pod/x-2", "pod/x-3"]
    radius = call["blast_radius"]
    assert radius["summary"] == f"deletes 3 pods in {NS}: x-1, x-2, x-3"
    # Each one's own blast radius: bare pods do not come back.
    assert radius["selected"] == [f"pod/{n}: deleted; it has no controller and will not come "
                                  "back" for n in ("x-1", "x-2", "x-3")]
    assert any(f.startswith("deletes 3 running pod(s): x-1, x-2, x-3")
               for f in req["risk_flags"]), req["risk_flags"]

    result = await approve_and_result(operator, approver, sid, req, seen)
    assert result["status"] == "ok", result["output"]
    assert "3 pods matching app=x deleted" in result["output"]
    got = await operator.wait_for(sid, lambda e: e.event == "tool.verified", after=seen)
    assert got[-1].data["outcome"] == "verified", got[-1].data
    assert _pods(stack) == {"y-1"}, "exactly the matched pods are deleted"


async def test_a_pod_that_joins_the_selector_before_approval_is_not_deleted(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    for name in ("r-1", "r-2"):
        _pod(stack, name, {"app": "race"})
    operator, approver = people(stack, http)
    sid, req, seen = await _held(operator, f"kubectl delete pods -l app=race -n {NS}")
    assert req["calls"][0]["effect"] == [f"{NS}/pod/r-1", f"{NS}/pod/r-2"]

    _pod(stack, "r-3", {"app": "race"})  # matches the selector now, was not on the card
    result = await approve_and_result(operator, approver, sid, req, seen)
    assert result["status"] == "error", result
    assert result["data"]["effect_changed"] == {"added": [f"{NS}/pod/r-3"], "removed": []}
    assert "nothing was changed" in result["output"]
    # Nothing was deleted: not the joiner, and not the previewed pods either.
    assert {"r-1", "r-2", "r-3"} <= _pods(stack)


async def test_an_empty_match_is_refused_not_an_approval(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    operator, _ = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, f"kubectl delete pods -l app=nothing -n {NS}")
    got = await operator.wait_for(sid, lambda e: e.event in ("approval.requested",
                                                             "tool.refused", "tool.result",
                                                             "turn.completed"))
    events = [e.event for e in got]
    assert "approval.requested" not in events, events
    said = " ".join(str(e.data) for e in got)
    assert "no objects matched" in said, said


async def test_logs_by_selector_is_a_read_prefixed_per_pod(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    operator, _ = people(stack, http)
    sid = await operator.new_session()
    await operator.say(sid, "kubectl logs -l app=web -n shop --tail 3")
    got = await operator.wait_for(sid, lambda e: e.event in ("tool.result", "approval.requested",
                                                             "tool.refused"))
    assert got[-1].event == "tool.result", got[-1].data
    out = got[-1].data
    assert out["status"] == "ok", out
    lines = out["output"].splitlines()
    web = {p.metadata.name for p in client.CoreV1Api(kube(stack)).list_namespaced_pod(
        "shop", label_selector="app=web").items}
    assert lines
    assert {line.split("]")[0].removeprefix("[pod/").rsplit("/", 1)[0] for line in lines} == web
    assert len(lines) <= 3 * len(web)


async def test_a_selector_write_in_production_is_production_protected(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    _pod(stack, "pay-1", {"app": "pay"}, "production")
    admin = Client(http, stack.url, token(stack, "admin"))
    _, req, _ = await _held(admin, "kubectl label pods -l app=pay tier=x -n production")
    [call] = req["calls"]
    assert call["effect"] == ["production/pod/pay-1"]
    assert call["blast_radius"]["production_like"] is True
    assert "production-like namespace 'production'" in req["risk_flags"]
    assert req["forbidden_approvers"] == ["admin"]
    path = f"/v1/approvals/{req['approval_id']}/decision"
    status, body = await admin.call("POST", path, {"decision": "approve"})
    assert status == 403, body
    _, approver = people(stack, http)
    status, body = await approver.call("POST", path, {"decision": "deny", "reason": "test"})
    assert status == 202, body
    labels = client.CoreV1Api(kube(stack)).read_namespaced_pod("pay-1", "production")
    assert "tier" not in (labels.metadata.labels or {})
