"""Protection follows the effect, not the namespace field (issue 15): the Namespace object itself
and a node running production pods are production, on the whole stack in direct mode.

The seed of the issue: the admin typed `kubectl delete ns production`, the card had no
production-like flag, no policy line and nobody barred, and the admin approved it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes import client

from launcher.stack import Stack
from tests.e2e.conftest import kube, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PROTECTED = "production is protected: the requester may not approve alone"


async def _held(stack: Stack, http: aiohttp.ClientSession, line: str) -> dict[str, Any]:
    """The admin types a command; the approval request it is held for (admin may approve
    anything the policy does not bar them from)."""
    admin = Client(http, stack.url, token(stack, "admin"))
    sid = await admin.new_session()
    await admin.say(sid, line)
    got = await admin.wait_for(sid, lambda e: e.event in ("approval.requested", "tool.refused",
                                                          "command.rejected"))
    assert got[-1].event == "approval.requested", got[-1].data
    return dict(got[-1].data)


async def _self_approval_refused(stack: Stack, http: aiohttp.ClientSession,
                                 req: dict[str, Any]) -> None:
    admin = Client(http, stack.url, token(stack, "admin"))
    path = f"/v1/approvals/{req['approval_id']}/decision"
    status, body = await admin.call("POST", path, {"decision": "approve"})
    assert status == 403, body
    # Deny it as someone else, so nothing is left pending for the rest of the module.
    approver = Client(http, stack.url, token(stack, "approver"))
    status, body = await approver.call("POST", path, {"decision": "deny", "reason": "test"})
    assert status == 202, body


def _namespace_exists(stack: Stack, name: str) -> bool:
    names = {n.metadata.name for n in client.CoreV1Api(kube(stack)).list_namespace().items}
    return name in names


async def test_delete_namespace_production_is_production(stack: Stack,
                                                         http: aiohttp.ClientSession) -> None:
    req = await _held(stack, http, "kubectl delete ns production")
    [call] = req["calls"]
    assert call["target"]["kind"] == "namespace"
    assert call["target"]["name"] == "production"
    assert "production-like namespace 'production'" in req["risk_flags"]
    assert PROTECTED in req["policy"]
    assert req["forbidden_approvers"] == ["admin"]
    radius = call["blast_radius"]
    assert radius["production_like"] is True
    assert radius["affected_namespaces"] == ["production"]
    # What dies with it, counted from the cluster and named.
    core = client.CoreV1Api(kube(stack))
    apps = client.AppsV1Api(kube(stack))
    deploys = sorted(d.metadata.name for d in apps.list_namespaced_deployment("production").items)
    pods = core.list_namespaced_pod("production").items
    services = core.list_namespaced_service("production").items
    assert radius["summary"].startswith(
        f"deletes namespace production: {len(deploys)} deployments, {len(pods)} pods, "
        f"{len(services)} services, "), radius["summary"]
    assert "configmaps/secrets" in radius["summary"]
    assert f"{len(deploys)} deployments: {', '.join(deploys)}" in radius["deletes_contents"]
    assert any("secret/payment-db-credentials" in line for line in radius["deletes_contents"])
    flags = "\n".join(req["risk_flags"])
    assert "deletes namespace production and everything in it: " in flags
    await _self_approval_refused(stack, http, req)
    assert _namespace_exists(stack, "production")


@pytest.mark.parametrize("line", ["kubectl label ns production team=x",
                                  "kubectl annotate namespace production owner=x"])
async def test_labelling_the_production_namespace_is_production(
        stack: Stack, http: aiohttp.ClientSession, line: str) -> None:
    req = await _held(stack, http, line)
    [call] = req["calls"]
    assert (call["target"]["kind"], call["target"]["name"]) == ("namespace", "production")
    assert "production-like namespace 'production'" in req["risk_flags"]
    assert PROTECTED in req["policy"]
    assert req["forbidden_approvers"] == ["admin"]
    key = "team" if "label" in line.split()[1] else "owner"
    assert [d["after"] for d in call["diff"] if d["path"].endswith(f".{key}")] == ["x"]
    await _self_approval_refused(stack, http, req)
    ns = client.CoreV1Api(kube(stack)).read_namespace("production")
    assert "team" not in (ns.metadata.labels or {})
    assert "owner" not in (ns.metadata.annotations or {})


def _node_with_production_pods(stack: Stack) -> tuple[str, set[str]]:
    pods = client.CoreV1Api(kube(stack)).list_pod_for_all_namespaces().items
    node = next(p.spec.node_name for p in pods if p.metadata.namespace == "production")
    return node, {f"production/{p.metadata.name}" for p in pods
                  if p.spec.node_name == node and p.metadata.namespace == "production"}


async def test_draining_a_node_with_production_pods_is_production(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    node, production_pods = _node_with_production_pods(stack)
    req = await _held(stack, http, f"kubectl drain {node} --ignore-daemonsets")
    [call] = req["calls"]
    assert call["target"]["namespace"] == ""  # cluster-scoped: the field alone says nothing
    why = f"drain of node/{node} evicts its pods"
    assert f"production-like namespace 'production': {why}" in req["risk_flags"]
    assert f"production is protected ({why}): the requester may not approve alone" \
        in req["policy"]
    assert req["forbidden_approvers"] == ["admin"]
    radius = call["blast_radius"]
    assert "production" in radius["affected_namespaces"]
    # What would be lost: every production pod on the node is named.
    assert production_pods <= set(radius["pods_affected"])
    assert f"{len(production_pods)} of production" in radius["summary"]
    await _self_approval_refused(stack, http, req)
    assert not client.CoreV1Api(kube(stack)).read_node(node).spec.unschedulable


async def test_cordoning_a_node_with_production_pods_is_production(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    node, _ = _node_with_production_pods(stack)
    req = await _held(stack, http, f"kubectl cordon {node}")
    assert f"production-like namespace 'production': cordon of node/{node} strands its pods" \
        in req["risk_flags"]
    assert req["forbidden_approvers"] == ["admin"]
    assert "production" in req["calls"][0]["blast_radius"]["summary"]
    await _self_approval_refused(stack, http, req)


async def test_a_namespace_write_whose_dry_run_failed_is_still_protected(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    # Changing an existing label without --overwrite fails the dry run (as kubectl refuses it):
    # no preview facts at all, yet the gate knows a Namespace object by its name (fail closed).
    req = await _held(stack, http, "kubectl label ns production kubernetes.io/metadata.name=x")
    [call] = req["calls"]
    assert "already has a value" in call["preview_error"]
    assert "production-like namespace 'production'" in req["risk_flags"]
    assert PROTECTED in req["policy"]
    assert req["forbidden_approvers"] == ["admin"]
    await _self_approval_refused(stack, http, req)
