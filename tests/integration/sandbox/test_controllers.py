"""Controllers and kwok-style stages: rollouts, readiness delays, OOM kills, CrashLoopBackOff,
jobs, statefulsets, endpoints, autoscaling and garbage collection."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from sandbox.state.timeutil import now
from tests.integration.sandbox.conftest import Kubectl

PODS = by_plural("", "pods")
EVENTS = by_plural("", "events")
ENDPOINTS = by_plural("", "endpoints")
PVCS = by_plural("", "persistentvolumeclaims")
DEPLOYMENTS = by_plural("apps", "deployments")
REPLICASETS = by_plural("apps", "replicasets")
STATEFULSETS = by_plural("apps", "statefulsets")
JOBS = by_plural("batch", "jobs")
HPAS = by_plural("autoscaling", "horizontalpodautoscalers")
A = "sandbox.interlock.dev/"


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def pods_of(sandbox: Sandbox, app: str, ns: str = "shop") -> list[dict[str, Any]]:
    return [
        p
        for p in sandbox.store.list(PODS, ns)
        if (p["metadata"].get("labels") or {}).get("app") == app
    ]


def create_pod(
    sandbox: Sandbox, name: str, annotations: dict[str, str], restart_policy: str = "Always"
) -> None:
    sandbox.api._prepare(
        PODS,
        pod := {
            "metadata": {
                "name": name,
                "namespace": "shop",
                "annotations": annotations,
                "labels": {"app": name},
            },
            "spec": {
                "restartPolicy": restart_policy,
                "containers": [{"name": "main", "image": "busybox:1.36"}],
            },
        },
    )
    sandbox.store.create(PODS, pod)


def deployment(
    name: str,
    replicas: int,
    annotations: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": f"{name}:1"}
    if requests:
        container["resources"] = {"requests": requests}
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [container]},
            },
        },
    }


def create(sandbox: Sandbox, rt: Any, obj: dict[str, Any]) -> None:
    sandbox.store.create(rt, sandbox.api._prepare(rt, copy.deepcopy(obj)))


async def test_readiness_follows_the_delay_annotation(sandbox: Sandbox) -> None:
    phases: list[tuple[str, bool]] = []
    sandbox.store.add_listener(
        lambda c: (
            phases.append((c.obj["status"].get("phase", ""), ready(c.obj)))
            if c.rt.kind == "Pod" and c.obj["metadata"]["name"] == "slow"
            else None
        )
    )
    create_pod(sandbox, "slow", {A + "ready-after": "10s"})  # x0.02 time scale = 0.2s
    await sandbox.wait_for(lambda: ready(sandbox.store.must_get(PODS, "shop", "slow")))
    assert ("Running", False) in phases
    assert phases[-1] == ("Running", True)
    assert phases.index(("Running", False)) < phases.index(("Running", True))


async def test_live_oom_kills_restart_the_container(sandbox: Sandbox) -> None:
    create_pod(sandbox, "leaky", {A + "oom-every": "150ms", A + "ready-after": "0s"})

    def restarts() -> int:
        return int(
            sandbox.store.must_get(PODS, "shop", "leaky")["status"]
            .get("containerStatuses", [{}])[0]
            .get("restartCount", 0)
        )

    await sandbox.wait_for(lambda: restarts() >= 2)
    cs = sandbox.store.must_get(PODS, "shop", "leaky")["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    reasons = {
        e["reason"]
        for e in sandbox.store.list(EVENTS, "shop")
        if e["involvedObject"]["name"] == "leaky"
    }
    assert {"Scheduled", "Pulled", "Created", "Started", "BackOff"} <= reasons


async def test_crash_loop_back_off(sandbox: Sandbox, kubectl: Kubectl) -> None:
    create_pod(sandbox, "crashy", {A + "crash-after": "50ms", A + "crash-backoff": "5s"})

    def waiting() -> str:
        cs = sandbox.store.must_get(PODS, "shop", "crashy")["status"].get(
            "containerStatuses", [{}]
        )[0]
        return str(cs.get("state", {}).get("waiting", {}).get("reason", ""))

    await sandbox.wait_for(lambda: waiting() == "CrashLoopBackOff")
    out = await kubectl.ok("get", "pod", "crashy", "-n", "shop")
    assert out.splitlines()[1].split()[1:4] == ["0/1", "CrashLoopBackOff", "0"]
    pod = sandbox.store.must_get(PODS, "shop", "crashy")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"] | {
        "startedAt": "",
        "finishedAt": "",
        "containerID": "",
    } == {"exitCode": 1, "reason": "Error", "startedAt": "", "finishedAt": "", "containerID": ""}
    assert pod["status"]["phase"] == "Running"


async def test_template_change_rolls_out_and_undo_reuses_the_old_replicaset(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    await kubectl.ok("set", "image", "deploy/web", "web=nginx:1.28", "-n", "shop")
    await kubectl.ok("rollout", "status", "deploy/web", "-n", "shop", "--timeout=30s")
    rss = sorted(
        sandbox.store.list(REPLICASETS, "shop"),
        key=lambda r: r["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
    )
    assert [r["spec"]["replicas"] for r in rss] == [0, 3]
    assert {p["spec"]["containers"][0]["image"] for p in pods_of(sandbox, "web")} == {"nginx:1.28"}
    await kubectl.ok("rollout", "undo", "deploy/web", "-n", "shop")
    await kubectl.ok("rollout", "status", "deploy/web", "-n", "shop", "--timeout=30s")
    after = {r["metadata"]["name"]: r for r in sandbox.store.list(REPLICASETS, "shop")}
    assert set(after) == {r["metadata"]["name"] for r in rss}  # no third ReplicaSet
    original = after[rss[0]["metadata"]["name"]]
    assert original["spec"]["replicas"] == 3
    assert original["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert {p["spec"]["containers"][0]["image"] for p in pods_of(sandbox, "web")} == {"nginx:1.27"}


async def test_a_crashing_rollout_keeps_the_old_pods_serving(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    (old_rs,) = sandbox.store.list(REPLICASETS, "shop")
    old_hash = old_rs["metadata"]["labels"]["pod-template-hash"]
    await kubectl.ok(
        "patch",
        "deploy/web",
        "-n",
        "shop",
        "-p",
        '{"spec":{"template":{"metadata":{"annotations":'
        '{"sandbox.interlock.dev/crash-after":"10ms"}}}}}',
    )

    def crashing_new_pods() -> int:
        return sum(
            1
            for p in pods_of(sandbox, "web")
            if p["metadata"]["labels"]["pod-template-hash"] != old_hash
            and p["status"].get("containerStatuses", [{}])[0].get("lastState")
        )

    await sandbox.wait_for(lambda: crashing_new_pods() >= 1)
    old_ready = [
        p
        for p in pods_of(sandbox, "web")
        if p["metadata"]["labels"]["pod-template-hash"] == old_hash and ready(p)
    ]
    assert len(old_ready) == 3  # maxUnavailable: 25% of 3 rounds down to 0
    code, out, _ = await kubectl("rollout", "status", "deploy/web", "-n", "shop", "--timeout=1s")
    assert code == 1
    assert "Waiting for deployment" in out


async def test_recreate_strategy(sandbox: Sandbox) -> None:
    obj = deployment("db", 2)
    obj["spec"]["strategy"] = {"type": "Recreate"}
    create(sandbox, DEPLOYMENTS, obj)
    await sandbox.wait_for(lambda: sum(ready(p) for p in pods_of(sandbox, "db")) == 2)
    d = sandbox.store.must_get(DEPLOYMENTS, "shop", "db")
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "db:2"
    sandbox.api._finish_write(DEPLOYMENTS, sandbox.store.must_get(DEPLOYMENTS, "shop", "db"), d)
    sandbox.store.update(DEPLOYMENTS, d)
    await sandbox.wait_for(
        lambda: (
            [p["spec"]["containers"][0]["image"] for p in pods_of(sandbox, "db") if ready(p)]
            == ["db:2", "db:2"]
        )
    )


async def test_job_runs_to_completion(sandbox: Sandbox, kubectl: Kubectl) -> None:
    code, _, err = await kubectl("create", "job", "once", "--image=busybox:1.36", "-n", "shop")
    assert code == 1
    assert "accepts JSON and YAML bodies only" in err
    await kubectl.ok(
        "create",
        "-f",
        "-",
        stdin=(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once, namespace: shop}\n"
            "spec:\n  template:\n    spec:\n      restartPolicy: Never\n"
            "      containers: [{name: once, image: 'busybox:1.36'}]\n"
        ),
    )
    await sandbox.wait_for(
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in sandbox.store.must_get(JOBS, "shop", "once")
            .get("status", {})
            .get("conditions", [])
        )
    )
    out = await kubectl.ok("get", "job", "once", "-n", "shop")
    assert out.splitlines()[1].split()[1:3] == ["Complete", "1/1"]
    pods = await kubectl.ok("get", "pods", "-n", "shop", "-l", "job-name=once")
    assert pods.splitlines()[1].split()[1:3] == ["0/1", "Completed"]


async def test_failing_job_gives_up_after_backoff_limit(sandbox: Sandbox) -> None:
    create(
        sandbox,
        JOBS,
        {
            "metadata": {"name": "doomed", "namespace": "shop"},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "metadata": {"annotations": {A + "crash-after": "10ms"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "x", "image": "busybox:1.36"}],
                    },
                },
            },
        },
    )

    def failed() -> bool:
        conds = (
            sandbox.store.must_get(JOBS, "shop", "doomed").get("status", {}).get("conditions", [])
        )
        return any(c["type"] == "Failed" for c in conds)

    await sandbox.wait_for(failed)
    assert sandbox.store.must_get(JOBS, "shop", "doomed")["status"]["failed"] == 2


async def test_statefulset_pods_and_claims(sandbox: Sandbox, kubectl: Kubectl) -> None:
    create(
        sandbox,
        STATEFULSETS,
        {
            "metadata": {"name": "pg", "namespace": "shop"},
            "spec": {
                "replicas": 2,
                "serviceName": "pg",
                "selector": {"matchLabels": {"app": "pg"}},
                "template": {
                    "metadata": {"labels": {"app": "pg"}},
                    "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    await sandbox.wait_for(
        lambda: (
            sandbox.store.must_get(STATEFULSETS, "shop", "pg")
            .get("status", {})
            .get("readyReplicas")
            == 2
        )
    )
    assert [p["metadata"]["name"] for p in pods_of(sandbox, "pg")] == ["pg-0", "pg-1"]
    assert sorted(c["metadata"]["name"] for c in sandbox.store.list(PVCS, "shop")) == [
        "data-pg-0",
        "data-pg-1",
    ]
    await kubectl.ok("scale", "sts/pg", "--replicas=0", "-n", "shop")
    await sandbox.wait_for(lambda: pods_of(sandbox, "pg") == [])
    assert len(sandbox.store.list(PVCS, "shop")) == 2  # claims outlive the pods


async def test_endpoints_track_ready_pods(sandbox: Sandbox, kubectl: Kubectl) -> None:
    ep = sandbox.store.must_get(ENDPOINTS, "shop", "web")
    assert len(ep["subsets"][0]["addresses"]) == 3
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP", "name": "http"}]
    await kubectl.ok("scale", "deploy/web", "--replicas=1", "-n", "shop")
    await sandbox.wait_for(
        lambda: (
            len(sandbox.store.must_get(ENDPOINTS, "shop", "web")["subsets"][0].get("addresses", []))
            == 1
        )
    )


async def test_hpa_scales_a_busy_deployment_up_to_max(sandbox: Sandbox) -> None:
    create(sandbox, DEPLOYMENTS, deployment("busy", 2, {A + "cpu": "900m"}, {"cpu": "1"}))
    create(
        sandbox,
        HPAS,
        {
            "metadata": {"name": "busy", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )
    await sandbox.wait_for(
        lambda: sandbox.store.must_get(DEPLOYMENTS, "shop", "busy")["spec"]["replicas"] == 4
    )
    await sandbox.wait_for(
        lambda: sandbox.store.must_get(HPAS, "shop", "busy")["status"].get("currentReplicas") == 4
    )
    status = sandbox.store.must_get(HPAS, "shop", "busy")["status"]
    assert status["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 90
    limited = next(c for c in status["conditions"] if c["type"] == "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")


async def test_orphan_delete_keeps_dependents(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl.ok("delete", "deploy/web", "-n", "shop", "--cascade=orphan")
    (rs,) = sandbox.store.list(REPLICASETS, "shop")
    assert rs["metadata"].get("ownerReferences") == []
    assert len(pods_of(sandbox, "web")) == 3


async def test_cronjob_runs_when_its_schedule_comes_due(
    full_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ("CronJob", "staging", "cache-warmer") in full_sandbox.controllers._timers
    before = {j["metadata"]["name"] for j in full_sandbox.store.list(JOBS, "staging")}
    later = now() + timedelta(minutes=31)  # */30: at least one run falls due
    monkeypatch.setattr("sandbox.controllers.batch.now", lambda: later)
    full_sandbox.controllers.enqueue(("CronJob", "staging", "cache-warmer"))
    await full_sandbox.wait_for(
        lambda: {j["metadata"]["name"] for j in full_sandbox.store.list(JOBS, "staging")} - before
    )
    (new,) = {j["metadata"]["name"] for j in full_sandbox.store.list(JOBS, "staging")} - before
    assert new.startswith("cache-warmer-")
    warmers = [
        j
        for j in full_sandbox.store.list(JOBS, "staging")
        if j["metadata"]["name"].startswith("cache-warmer-")
    ]
    assert len(warmers) <= 3  # history limit 2 plus the running one


async def test_a_stalled_rollout_exceeds_its_progress_deadline(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    # 60s x time_scale 0.02: the deadline passes after about a second without progress.
    await kubectl.ok(
        "patch",
        "deploy/web",
        "-n",
        "shop",
        "-p",
        '{"spec":{"progressDeadlineSeconds":60,"template":{"metadata":'
        '{"annotations":{"sandbox.interlock.dev/crash-after":"10ms"}}}}}',
    )

    def progressing() -> dict[str, Any]:
        conds = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["status"]["conditions"]
        return next(c for c in conds if c["type"] == "Progressing")

    await sandbox.wait_for(lambda: progressing()["reason"] == "ProgressDeadlineExceeded")
    assert progressing()["status"] == "False"
    code, _, err = await kubectl("rollout", "status", "deploy/web", "-n", "shop")
    assert code == 1
    assert 'deployment "web" exceeded its progress deadline' in err


async def test_a_node_created_without_spec_is_schedulable(sandbox: Sandbox) -> None:
    # The API server defaults a Node's spec; the scheduler and the DaemonSet controller used to
    # raise KeyError on a Node that has none, and stopped scheduling every pod after it.
    create(sandbox, by_plural("", "nodes"), {"metadata": {"name": "bare-node"}})
    create_pod(sandbox, "after-bare-node", {})
    pod = lambda: sandbox.store.must_get(PODS, "shop", "after-bare-node")  # noqa: E731
    await sandbox.wait_for(lambda: bool(pod()["spec"].get("nodeName")))
