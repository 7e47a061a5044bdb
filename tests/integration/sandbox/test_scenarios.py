"""Done-when 3: the scenarios are visible as described, through real kubectl and the client."""

from __future__ import annotations

import json
import re

import pytest
from kubernetes import client as k8s

from sandbox.scenarios.loader import ScenarioError, available
from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from tests.integration.sandbox.conftest import Call, Kubectl

PODS = by_plural("", "pods")
SECRETS = by_plural("", "secrets")
EVENTS = by_plural("", "events")
PVCS = by_plural("", "persistentvolumeclaims")
NAMESPACES = by_plural("", "namespaces")


def test_scenario_catalogue() -> None:
    assert available() == ["baseline", "payment-oom", "scaling-loop", "staging-cleanup", "two-auth"]
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        Sandbox(["nope"])


def test_scenarios_can_be_loaded_alone_and_together() -> None:
    for name in available():
        sandbox = Sandbox([name])
        assert sandbox.store.list(PODS, "kube-system"), name  # the cluster is always there
    everything = Sandbox(None)
    names = {n["metadata"]["name"] for n in everything.store.list(NAMESPACES)}
    assert names == {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "shop",
        "production",
        "staging",
    }


async def test_payment_oom_pods_show_restarts_and_oomkilled(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    out = await full_kubectl.ok("get", "pods", "-n", "production", "-l", "app=payment-service")
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert len(rows) == 2
    for row in rows:
        assert row[1:3] == ["1/1", "Running"]
        assert row[3] == "3"  # restarts, then "(89s ago)": the last OOM kill
        assert re.fullmatch(r"\((\d+s|\dm\d*s?)", row[4])
        assert row[5] == "ago)"
        assert row[-1] == "21m"
    pod = rows[0][0]
    describe = await full_kubectl.ok("describe", "pod", pod, "-n", "production")
    assert re.search(
        r"Last State:\s+Terminated\n\s+Reason:\s+OOMKilled\n\s+Exit Code:\s+137", describe
    )
    assert re.search(r"Restart Count:\s+3", describe)
    assert re.search(r"Limits:\n\s+cpu:\s+1\n\s+memory:\s+256Mi", describe)
    assert re.search(r"Warning\s+BackOff\s+.*\(x3 over 2\dm\)", describe)
    previous = await full_kubectl.ok("logs", pod, "-n", "production", "--previous")
    assert "container memory 255Mi of 256Mi limit" in previous
    current = await full_kubectl.ok("logs", pod, "-n", "production")
    assert "batchSize=5000" in current
    top = await full_kubectl.ok("top", "pod", pod, "-n", "production")
    assert top.split()[-2:] == ["180m", "251Mi"]
    events = await full_kubectl.ok(
        "get", "events", "-n", "default", "--field-selector", "reason=OOMKilling"
    )
    assert f"production/{pod}" in events


async def test_two_auth_exists_in_staging_and_production(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    out = await full_kubectl.ok(
        "get", "deploy", "-A", "--field-selector", "metadata.name=auth-service", "-o", "wide"
    )
    rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:]}
    assert set(rows) == {"staging", "production"}
    assert rows["production"][2] == "3/3"
    assert rows["staging"][2] == "1/1"
    assert rows["production"][7].endswith("auth-service:2.3.1")
    assert rows["staging"][7].endswith("auth-service:2.4.0-rc.1")


async def test_staging_cleanup_pvcs_look_unused_but_back_the_database(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    out = await full_kubectl.ok("get", "pvc", "-n", "staging")
    names = [line.split()[0] for line in out.strip().splitlines()[1:]]
    assert names == ["data-orders-db-0", "data-orders-db-1", "tmp-export-scratch"]
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for p in full_sandbox.store.list(PODS, "staging")
        for v in p["spec"].get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    assert mounted == set()  # nothing mounts them: they *look* unused
    sts = await full_kubectl.ok("get", "sts", "orders-db", "-n", "staging")
    assert sts.splitlines()[1].split()[:2] == ["orders-db", "0/0"]
    svc = await full_kubectl.ok(
        "get", "svc", "-n", "staging", "-l", "app in (orders-db,legacy-reports)"
    )
    assert [line.split()[2] for line in svc.strip().splitlines()[1:]] == ["None", "None"]
    cj = await full_kubectl.ok("get", "cronjobs", "-n", "staging")
    assert {line.split()[0] for line in cj.strip().splitlines()[1:]} == {
        "cache-warmer",
        "report-generator",
    }
    jobs = await full_kubectl.ok("get", "jobs", "-n", "staging")
    assert all(line.split()[1] == "Complete" for line in jobs.strip().splitlines()[1:])
    pv = await full_kubectl.ok("get", "pv")
    assert "staging/data-orders-db-0" in pv


async def test_scaling_loop_hpa_is_pinned_at_max(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    out = await full_kubectl.ok("get", "hpa", "order-service", "-n", "production")
    assert out.splitlines()[1].split()[1:7] == [
        "Deployment/order-service",
        "cpu:",
        "85%/70%",
        "3",
        "6",
        "6",
    ]
    describe = await full_kubectl.ok("describe", "hpa", "order-service", "-n", "production")
    assert "ScalingLimited" in describe
    assert "TooManyReplicas" in describe
    assert re.search(
        r"SuccessfulRescale\s+.*New size: 4; reason: All metrics below target", describe
    )
    logs = await full_kubectl.ok("logs", "deploy/order-service", "-n", "production")
    assert "total=10, active=10, idle=0" in logs
    cm = await full_kubectl.ok(
        "get",
        "cm",
        "order-service-config",
        "-n",
        "production",
        "-o",
        "jsonpath={.data.DB_POOL_MAX_SIZE}",
    )
    assert cm == "10"


async def test_client_sees_the_payment_last_state(
    full_sandbox: Sandbox, full_api_client: k8s.ApiClient, call: Call
) -> None:
    pods = await call(
        k8s.CoreV1Api(full_api_client).list_namespaced_pod,
        "production",
        label_selector="app=payment-service",
    )
    assert len(pods.items) == 2
    for pod in pods.items:
        (cs,) = pod.status.container_statuses
        assert cs.restart_count == 3
        assert cs.last_state.terminated.reason == "OOMKilled"
        assert cs.last_state.terminated.exit_code == 137


async def test_payment_budget_is_listed_with_its_allowance(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    out = await full_kubectl.ok("get", "pdb", "-n", "production")
    assert out.splitlines()[0].split() == [
        "NAME",
        "MIN",
        "AVAILABLE",
        "MAX",
        "UNAVAILABLE",
        "ALLOWED",
        "DISRUPTIONS",
        "AGE",
    ]
    assert out.splitlines()[1].split()[:4] == ["payment-service", "1", "N/A", "1"]


async def test_no_event_carries_a_secret_value(full_sandbox: Sandbox) -> None:
    import base64

    # Short values ("payments", a username) also occur in image names; look for the real ones.
    secrets = [
        base64.b64decode(v).decode()
        for s in full_sandbox.store.list(SECRETS)
        for v in (s.get("data") or {}).values()
        if len(v) > 16
    ]
    assert "s3cr3t-payments-db-password" in secrets
    for event in full_sandbox.store.list(EVENTS):
        text = json.dumps(event)
        assert not any(secret in text for secret in secrets), event["metadata"]["name"]


async def test_payment_rollback_to_the_previous_release_ends_the_ooms(
    full_sandbox: Sandbox, full_kubectl: Kubectl
) -> None:
    ns = ("-n", "production")
    history = await full_kubectl.ok("rollout", "history", "deploy/payment-service", *ns)
    assert re.search(r"^1\s+release 4\.11\.2$", history, re.M)
    assert re.search(r"^2\s+release 4\.12\.0: settlement batch size 5000$", history, re.M)
    await full_kubectl.ok("rollout", "undo", "deploy/payment-service", *ns)
    await full_kubectl.ok("rollout", "status", "deploy/payment-service", *ns, "--timeout=30s")
    pods = [
        p
        for p in full_sandbox.store.list(PODS, "production")
        if p["metadata"]["labels"]["app"] == "payment-service"
    ]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"].endswith(":4.11.2")
        assert "sandbox.interlock.dev/oom-every" not in pod["metadata"].get("annotations", {})
    logs = await full_kubectl.ok("logs", pods[0]["metadata"]["name"], *ns)
    assert "v4.11.2" in logs
    assert "batchSize=500;" in logs
