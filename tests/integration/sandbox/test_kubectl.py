"""Done-when 1: real kubectl 1.37 (the venv's, never /usr/bin) against the sandbox."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from tests.integration.sandbox.conftest import KUBECTL, Kubectl, eventually

PODS = by_plural("", "pods")
DEPLOYMENTS = by_plural("apps", "deployments")
REPLICASETS = by_plural("apps", "replicasets")
EVENTS = by_plural("", "events")

WEB_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - {containerPort: 80, name: http}
"""


async def test_the_venv_kubectl_1_37_is_used(kubectl: Kubectl) -> None:
    assert Path(sys.prefix, "bin", "kubectl") == KUBECTL
    version = json.loads(await kubectl.ok("version", "--client", "-o", "json"))
    assert (version["clientVersion"]["major"], version["clientVersion"]["minor"]) == ("1", "37")


async def test_get_deploy_wide_has_priority_columns(sandbox: Sandbox, kubectl: Kubectl) -> None:
    narrow = (await kubectl.ok("get", "deploy", "-n", "shop")).splitlines()
    wide = (await kubectl.ok("get", "deploy", "-n", "shop", "-o", "wide")).splitlines()
    assert narrow[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert wide[0].split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert wide[1].split() == ["web", "3/3", "3", "3", "3d", "web", "nginx:1.27", "app=web"]


async def test_get_pods_wide_shows_ip_and_node(sandbox: Sandbox, kubectl: Kubectl) -> None:
    lines = (await kubectl.ok("get", "pods", "-n", "shop", "-o", "wide")).splitlines()
    assert lines[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    for line in lines[1:]:
        cells = line.split()
        assert re.fullmatch(r"10\.244\.\d+\.\d+", cells[5])
        assert cells[6] in ("sandbox-worker-1", "sandbox-worker-2")


async def test_describe_deploy(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("describe", "deploy", "web", "-n", "shop")
    assert re.search(
        r"^Replicas:\s+3 desired \| 3 updated \| 3 total \| 3 available \| "
        r"0 unavailable$",
        out,
        re.M,
    )
    assert re.search(r"^StrategyType:\s+RollingUpdate$", out, re.M)
    assert re.search(r"^RollingUpdateStrategy:\s+25% max unavailable, 25% max surge$", out, re.M)
    assert re.search(r"^\s+Port:\s+80/TCP", out, re.M)
    rs = sandbox.store.list(REPLICASETS, "shop")[0]["metadata"]["name"]
    assert re.search(rf"^NewReplicaSet:\s+{rs} \(3/3 replicas created\)$", out, re.M)
    assert re.search(rf"ScalingReplicaSet .* Scaled up replica set {rs} from 0 to 3", out)


async def test_rollout_restart_then_status_completes(sandbox: Sandbox, kubectl: Kubectl) -> None:
    old_rs = {r["metadata"]["name"] for r in sandbox.store.list(REPLICASETS, "shop")}
    out = await kubectl.ok("rollout", "restart", "deploy/web", "-n", "shop")
    assert out.strip() == "deployment.apps/web restarted"
    out = await kubectl.ok("rollout", "status", "deploy/web", "-n", "shop", "--timeout=30s")
    assert out.strip().splitlines()[-1] == 'deployment "web" successfully rolled out'
    rss = {r["metadata"]["name"]: r for r in sandbox.store.list(REPLICASETS, "shop")}
    (new_name,) = set(rss) - old_rs
    assert rss[new_name]["spec"]["replicas"] == 3
    assert all(rss[name]["spec"]["replicas"] == 0 for name in old_rs)
    pods = sandbox.store.list(PODS, "shop")
    assert len(pods) == 3
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {
        rss[new_name]["metadata"]["labels"]["pod-template-hash"]
    }
    deploy = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
    assert deploy["metadata"]["generation"] == 2
    assert deploy["status"]["observedGeneration"] == 2
    assert (
        "kubectl.kubernetes.io/restartedAt" in deploy["spec"]["template"]["metadata"]["annotations"]
    )
    history = await kubectl.ok("rollout", "history", "deploy/web", "-n", "shop")
    assert re.search(r"^1\s", history, re.M)
    assert re.search(r"^2\s", history, re.M)


async def test_logs(sandbox: Sandbox, kubectl: Kubectl) -> None:
    pod = sandbox.store.list(PODS, "shop")[0]["metadata"]["name"]
    out = await kubectl.ok("logs", pod, "-n", "shop")
    assert "Configuration complete; ready for start up" in out
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[notice\] 1#1: nginx/1\.27", out, re.M)
    tail = await kubectl.ok("logs", "deploy/web", "-n", "shop", "--tail=1")
    assert tail.strip().endswith('"Mozilla/5.0"')
    code, _, err = await kubectl("logs", pod, "-n", "shop", "--previous")
    assert code == 1
    assert f'previous terminated container "web" in pod "{pod}" not found' in err


async def test_delete_pod_is_replaced_and_delete_deploy_cascades(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    victim = sandbox.store.list(PODS, "shop")[0]["metadata"]["name"]
    out = await kubectl.ok("delete", "pod", victim, "-n", "shop")
    assert out.strip() == f'pod "{victim}" deleted from shop namespace'
    await sandbox.wait_for(lambda: len(sandbox.store.list(PODS, "shop")) == 3)
    assert victim not in {p["metadata"]["name"] for p in sandbox.store.list(PODS, "shop")}
    await sandbox.wait_for(
        lambda: any(
            e["reason"] == "Killing" and e["involvedObject"]["name"] == victim
            for e in sandbox.store.list(EVENTS, "shop")
        )
    )

    out = await kubectl.ok("delete", "deploy", "web", "-n", "shop")
    assert out.strip() == 'deployment.apps "web" deleted from shop namespace'
    assert sandbox.store.list(DEPLOYMENTS, "shop") == []
    assert sandbox.store.list(REPLICASETS, "shop") == []
    assert sandbox.store.list(PODS, "shop") == []
    code, _, err = await kubectl("get", "deploy", "web", "-n", "shop")
    assert code == 1
    assert 'deployments.apps "web" not found' in err


async def test_apply_dry_run_server_changes_nothing(
    sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB_MANIFEST)
    before = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
    out = await kubectl.ok("apply", "--dry-run=server", "-f", str(manifest))
    assert out.strip() == "deployment.apps/web configured (server dry run)"
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web") == before

    new = tmp_path / "new.yaml"
    new.write_text(WEB_MANIFEST.replace("name: web\n  namespace", "name: web2\n  namespace"))
    out = await kubectl.ok("apply", "--dry-run=server", "-f", str(new))
    assert out.strip() == "deployment.apps/web2 created (server dry run)"
    assert sandbox.store.get(DEPLOYMENTS, "shop", "web2") is None


async def test_apply_creates_then_updates(
    sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "api.yaml"
    manifest.write_text(
        WEB_MANIFEST.replace("name: web\n  namespace", "name: api\n  namespace")
        .replace("app: web", "app: api")
        .replace("replicas: 4", "replicas: 2")
    )
    out = await kubectl.ok("apply", "-f", str(manifest))
    assert out.strip() == "deployment.apps/api created"
    await sandbox.wait_for(
        lambda: (
            len(
                [
                    p
                    for p in sandbox.store.list(PODS, "shop")
                    if p["metadata"]["labels"]["app"] == "api"
                ]
            )
            == 2
        )
    )
    manifest.write_text(manifest.read_text().replace("replicas: 2", "replicas: 1"))
    out = await kubectl.ok("apply", "-f", str(manifest))
    assert out.strip() == "deployment.apps/api configured"
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "api")["spec"]["replicas"] == 1


async def test_diff_exits_1_with_a_diff(sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB_MANIFEST)
    before = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
    code, out, err = await kubectl("diff", "-f", str(manifest))
    assert code == 1, err
    assert "-  replicas: 3" in out
    assert "+  replicas: 4" in out
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web") == before

    manifest.write_text(WEB_MANIFEST.replace("replicas: 4", "replicas: 3"))
    code, out, err = await kubectl("diff", "-f", str(manifest))
    assert (code, out) == (0, ""), err


async def test_get_events(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("get", "events", "-n", "shop")
    header = out.splitlines()[0].split()
    assert header == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert re.search(r"Normal\s+ScalingReplicaSet\s+deployment/web\s+Scaled up replica set", out)
    assert re.search(r"Normal\s+Scheduled\s+pod/web-\S+\s+Successfully assigned shop/web-", out)
    filtered = await kubectl.ok(
        "get", "events", "-n", "shop", "--field-selector", "involvedObject.kind=Deployment"
    )
    assert len(filtered.strip().splitlines()) == 2  # header + the one scaling event


async def test_get_all_and_short_names(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("get", "all", "-n", "shop")
    for kind in ("pod/web-", "service/web", "deployment.apps/web", "replicaset.apps/web-"):
        assert kind in out
    out = await kubectl.ok("get", "po,svc,cm,sa,secret,role,rolebinding", "-n", "shop")
    assert "configmap/web-config" in out
    assert "secret/web-tls" in out
    assert "role.rbac.authorization.k8s.io/web-config-reader" in out


async def test_label_selector(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("get", "pods", "-A", "-l", "app in (web,nothing)", "-o", "name")
    assert len(out.split()) == 3
    out = await kubectl.ok("get", "pods", "-A", "-l", "app!=web,k8s-app", "-o", "name")
    assert len(out.split()) == 5  # coredns x2, kube-proxy x3


async def test_top(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("top", "pods", "-n", "shop")
    assert out.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert len(out.strip().splitlines()) == 4
    out = await kubectl.ok("top", "nodes")
    assert "sandbox-worker-1" in out


async def test_get_watch_streams_table_rows(sandbox: Sandbox, kubectl: Kubectl) -> None:
    """`kubectl get -w` asks for Tables on the watch; new pods appear as rows."""
    proc = await kubectl.spawn("get", "pods", "-n", "shop", "-w")
    try:
        assert proc.stdout is not None
        header = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        await eventually(lambda: sandbox.api.open_watches > 0)
        await kubectl.ok("scale", "deploy/web", "--replicas=4", "-n", "shop")
        names: set[str] = set()
        while len(names) < 4:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "kubectl get -w ended early"
            names.add(line.split()[0])
        assert all(n.startswith("web-") for n in names)
    finally:
        proc.terminate()
        await proc.wait()


async def test_auth_can_i_reads_the_protobuf_review(sandbox: Sandbox, kubectl: Kubectl) -> None:
    assert (await kubectl.ok("auth", "can-i", "delete", "pods", "-n", "shop")).strip() == "yes"
    code, out, _ = await kubectl("auth", "can-i", "get", "secrets", "-n", "shop")
    assert (code, out.strip()) == (1, "no - sandbox policy: get on secrets is not granted")


async def test_logs_with_timestamps_and_since(sandbox: Sandbox, kubectl: Kubectl) -> None:
    pod = sandbox.store.list(PODS, "shop")[0]["metadata"]["name"]
    out = await kubectl.ok("logs", pod, "-n", "shop", "--timestamps")
    lines = out.strip().splitlines()
    assert len(lines) == 5
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ", line) for line in lines)
    assert (await kubectl.ok("logs", pod, "-n", "shop", "--since=1m")) == ""


async def test_scale_with_current_replicas_precondition(sandbox: Sandbox, kubectl: Kubectl) -> None:
    code, _, err = await kubectl(
        "scale", "deploy/web", "--current-replicas=9", "--replicas=4", "-n", "shop"
    )
    assert code == 1
    assert "Expected replicas to be 9, was 3" in err
    await kubectl.ok("scale", "deploy/web", "--current-replicas=3", "--replicas=4", "-n", "shop")
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["spec"]["replicas"] == 4


async def test_apply_rejects_unknown_fields_strictly(
    sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(WEB_MANIFEST.replace("  replicas: 4", "  replcas: 4"))
    code, _, err = await kubectl("apply", "-f", str(manifest))
    assert code == 1
    assert 'strict decoding error: unknown field "spec.replcas"' in err
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["spec"]["replicas"] == 3


async def test_logs_follow_stays_open_until_the_pod_goes(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    pod = sandbox.store.list(PODS, "shop")[0]
    proc = await kubectl.spawn("logs", "-f", pod["metadata"]["name"], "-n", "shop")
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "Configuration complete" in first
        await eventually(lambda: sandbox.store.subscribers > 0)
        assert proc.returncode is None  # still following
        sandbox.api.delete_object(PODS, pod)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def test_replace_keeps_the_allocated_cluster_ip(sandbox: Sandbox, kubectl: Kubectl) -> None:
    svc = sandbox.store.must_get(by_plural("", "services"), "shop", "web")
    manifest = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n"
    )
    out = await kubectl.ok("replace", "-f", "-", stdin=manifest)
    assert out.strip() == "service/web replaced"
    after = sandbox.store.must_get(by_plural("", "services"), "shop", "web")
    assert after["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    assert after["spec"]["ports"][0]["targetPort"] == 8080


async def test_describe_service_and_ingress_show_endpoints(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    ips = sorted(p["status"]["podIP"] for p in sandbox.store.list(PODS, "shop"))
    out = await kubectl.ok("describe", "svc", "web", "-n", "shop")
    (line,) = [x for x in out.splitlines() if x.startswith("Endpoints:")]
    assert sorted(a.split(":")[0] for a in line.split()[1].split(",")) == ips
    out = await kubectl.ok("describe", "ingress", "web", "-n", "shop")
    assert re.search(r"/\s+web:http \(10\.244\.", out)


async def test_explain_reads_schemas_from_openapi_v3(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok("explain", "deployment.spec.strategy")
    assert re.search(r"^FIELD: strategy <DeploymentStrategy>$", out, re.M)
    assert re.search(r"^  type\t<string>\n    Type of deployment\.", out, re.M)
    out = await kubectl.ok("explain", "pods.spec.containers.ports")
    assert "containerPort\t<integer> -required-" in out
