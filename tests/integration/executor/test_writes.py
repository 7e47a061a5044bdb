"""Every write tool against the sandbox: its preview (a dry run that changes nothing, with the
exact field changes and blast radius), its execution, its verification, and the conflict when
the target changed after the preview."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from schemas.approval import FieldChange
from services.executor import kube_write as W
from services.executor.kube import Kube, KubeError

DEPLOY = by_plural("apps", "deployments")
PODS = by_plural("", "pods")
NODES = by_plural("", "nodes")
CONFIGMAPS = by_plural("", "configmaps")
PDBS = by_plural("policy", "poddisruptionbudgets")


def args(tool: str, **raw: Any) -> catalogue.Args:
    return catalogue.TOOLS[tool].parse_args(raw)


def web(cluster: Sandbox) -> dict[str, Any]:
    obj = cluster.store.get(DEPLOY, "shop", "web")
    assert obj is not None
    return obj


def web_pods(cluster: Sandbox) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")
            if p["metadata"]["labels"].get("app") == "web"}


def snapshot(cluster: Sandbox) -> dict[tuple[str, str, str], str]:
    """Every object's resourceVersion outside `production`, whose crashing pods move alone."""
    return {(rt.plural, o["metadata"].get("namespace", ""), o["metadata"]["name"]):
            o["metadata"]["resourceVersion"]
            for rt in (DEPLOY, PODS, NODES, CONFIGMAPS, PDBS) for o in cluster.store.list(rt)
            if o["metadata"].get("namespace") != "production"}


async def previewed(cluster: Sandbox, kube: Kube, run: Any, a: catalogue.Args) -> W.Preview:
    """Previews and proves the dry run stored nothing."""
    before = snapshot(cluster)
    pv = await run(lambda: W.preview(kube, a))
    assert snapshot(cluster) == before, "a preview must not change the cluster"
    return pv  # type: ignore[no-any-return]


async def executed(cluster: Sandbox, kube: Kube, run: Any, a: catalogue.Args,
                   pv: W.Preview) -> tuple[Any, W.Verification]:
    out, plan, after = await run(lambda: W.execute(kube, a, pv.resource_version, pv.effect))
    v = await run(lambda: W.verify(kube, a, plan, after, 10))
    return out, v


CONTAINER = "spec.template.spec.containers[name=web]"


async def test_scale_preview_execute_verify(cluster: Sandbox, kube: Kube, run: Any) -> None:
    pods = web_pods(cluster)
    a = args("scale", name="web", namespace="shop", replicas=1)
    pv = await previewed(cluster, kube, run, a)
    assert pv.diff == (FieldChange(path="spec.replicas", before=3, after=1),)
    assert (pv.radius.replicas_before, pv.radius.replicas_after) == (3, 1)
    assert set(pv.radius.pods_affected) == pods and pv.radius.summary == \
        "2 of 3 pods will be removed"
    assert pv.resource_version == web(cluster)["metadata"]["resourceVersion"]
    out, v = await executed(cluster, kube, run, a, pv)
    assert web(cluster)["spec"]["replicas"] == 1
    assert out.after == {"spec.replicas": 1}
    assert v.outcome == "verified" and len(web_pods(cluster)) == 1


async def test_set_resources_preview_is_exact(cluster: Sandbox, kube: Kube, run: Any) -> None:
    pods = web_pods(cluster)
    a = args("set_resources", name="web", namespace="shop", container="web",
             limits={"memory": "512Mi"}, requests={"cpu": "200m"})
    pv = await previewed(cluster, kube, run, a)
    assert pv.diff == (
        FieldChange(path=f"{CONTAINER}.resources.limits.memory", before="128Mi", after="512Mi"),
        FieldChange(path=f"{CONTAINER}.resources.requests.cpu", before="100m", after="200m"),
    )
    assert set(pv.radius.pods_affected) == pods
    assert pv.radius.summary == "3 pods will be replaced by a rolling update"
    _, v = await executed(cluster, kube, run, a, pv)
    res = web(cluster)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
    assert v.outcome == "verified", v.detail
    assert not web_pods(cluster) & pods, "every pod was replaced"


async def test_set_image_preview_and_rollout_undo(cluster: Sandbox, kube: Kube,
                                                  run: Any) -> None:
    a = args("set_image", name="web", namespace="shop", container="web", image="nginx:1.28")
    pv = await previewed(cluster, kube, run, a)
    assert pv.diff == (FieldChange(path=f"{CONTAINER}.image", before="nginx:1.27",
                                   after="nginx:1.28"),)
    assert len(pv.radius.pods_affected) == 3
    _, v = await executed(cluster, kube, run, a, pv)
    assert v.outcome == "verified"
    assert web(cluster)["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    undo = args("rollout_undo", name="web", namespace="shop")
    pv = await previewed(cluster, kube, run, undo)
    assert pv.diff == (FieldChange(path=f"{CONTAINER}.image", before="nginx:1.28",
                                   after="nginx:1.27"),)
    _, v = await executed(cluster, kube, run, undo, pv)
    assert web(cluster)["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert v.outcome == "verified"


async def test_rollout_restart_and_set_env(cluster: Sandbox, kube: Kube, run: Any) -> None:
    pods = web_pods(cluster)
    a = args("rollout_restart", name="web", namespace="shop")
    pv = await previewed(cluster, kube, run, a)
    assert [c.path for c in pv.diff] == [
        "spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt"]
    _, v = await executed(cluster, kube, run, a, pv)
    assert v.outcome == "verified" and not web_pods(cluster) & pods
    e = args("set_env", name="web", namespace="shop", env={"LOG_LEVEL": "debug",
                                                            "API_TOKEN": "s3cr3t-value"})
    pv = await previewed(cluster, kube, run, e)
    assert set(pv.diff) == {
        FieldChange(path=f"{CONTAINER}.env[name=LOG_LEVEL].name", after="LOG_LEVEL"),
        FieldChange(path=f"{CONTAINER}.env[name=LOG_LEVEL].value", after="debug"),
        FieldChange(path=f"{CONTAINER}.env[name=API_TOKEN].name", after="API_TOKEN"),
        FieldChange(path=f"{CONTAINER}.env[name=API_TOKEN].value", after="<redacted>"),
    }
    out, _ = await executed(cluster, kube, run, e, pv)
    env = web(cluster)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOG_LEVEL", "value": "debug"} in env
    assert "s3cr3t-value" not in out.text


async def test_apply_preview_create_then_update(cluster: Sandbox, kube: Kube, run: Any) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "flags", "namespace": "shop"}, "data": {"A": "1"}}
    a = args("apply", manifest=manifest)
    pv = await previewed(cluster, kube, run, a)
    assert FieldChange(path="data.A", after="1") in pv.diff
    assert pv.resource_version == "" and pv.radius.summary == "configmap/flags will be created"
    await executed(cluster, kube, run, a, pv)
    assert cluster.store.get(CONFIGMAPS, "shop", "flags")["data"] == {"A": "1"}  # type: ignore[index]
    changed = copy.deepcopy(manifest)
    changed["data"] = {"A": "2", "B": "x"}
    b = args("apply", manifest=changed)
    pv = await previewed(cluster, kube, run, b)
    assert [c for c in pv.diff if c.path.startswith("data")] == [
        FieldChange(path="data.A", before="1", after="2"),
        FieldChange(path="data.B", after="x")]
    out, v = await executed(cluster, kube, run, b, pv)
    assert cluster.store.get(CONFIGMAPS, "shop", "flags")["data"] == {"A": "2", "B": "x"}  # type: ignore[index]
    assert v.outcome == "verified"
    dup = args("create", manifest=manifest)
    with pytest.raises(KubeError) as err:
        await run(lambda: W.preview(kube, dup))
    assert err.value.reason == "AlreadyExists"


async def test_create_patch_label_annotate(cluster: Sandbox, kube: Kube, run: Any) -> None:
    c = args("create", manifest={"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "new-cm"}, "data": {"k": "v"}},
             namespace="shop")
    pv = await previewed(cluster, kube, run, c)
    await executed(cluster, kube, run, c, pv)
    assert cluster.store.get(CONFIGMAPS, "shop", "new-cm") is not None
    p = args("patch", kind="configmap", name="new-cm", namespace="shop", patch_type="merge",
             body={"data": {"k": None, "j": "w"}})
    pv = await previewed(cluster, kube, run, p)
    assert set(pv.diff) == {FieldChange(path="data.k", before="v"),
                            FieldChange(path="data.j", after="w")}
    await executed(cluster, kube, run, p, pv)
    assert cluster.store.get(CONFIGMAPS, "shop", "new-cm")["data"] == {"j": "w"}  # type: ignore[index]
    lab = args("label", kind="deployment", name="web", namespace="shop",
               labels={"tier": "frontend"})
    pv = await previewed(cluster, kube, run, lab)
    assert pv.diff == (FieldChange(path="metadata.labels.tier", after="frontend"),)
    await executed(cluster, kube, run, lab, pv)
    assert web(cluster)["metadata"]["labels"]["tier"] == "frontend"
    clash = args("label", kind="deployment", name="web", namespace="shop",
                 labels={"tier": "backend"})
    with pytest.raises(KubeError, match="overwrite is false"):
        await run(lambda: W.preview(kube, clash))
    ann = args("annotate", kind="deployment", name="web", namespace="shop",
               annotations={"owner": "team-web"})
    pv = await previewed(cluster, kube, run, ann)
    await executed(cluster, kube, run, ann, pv)
    assert web(cluster)["metadata"]["annotations"]["owner"] == "team-web"


async def test_delete_preview_lists_the_pods_that_disappear(cluster: Sandbox, kube: Kube,
                                                             run: Any) -> None:
    pods = web_pods(cluster)
    a = args("delete", kind="deployment", name="web", namespace="shop")
    pv = await previewed(cluster, kube, run, a)
    assert pv.diff == (FieldChange(path="deployment/web", before="exists", after="deleted"),)
    assert set(pv.radius.pods_affected) == pods
    assert pv.radius.summary == "deployment/web will be deleted with 3 pods"
    _, v = await executed(cluster, kube, run, a, pv)
    assert cluster.store.get(DEPLOY, "shop", "web") is None
    assert v.outcome == "verified"


async def test_cordon_uncordon_drain_respects_pdb(cluster: Sandbox, kube: Kube,
                                                  run: Any) -> None:
    pay = [p for p in cluster.store.list(PODS, "production")]
    node = pay[0]["spec"]["nodeName"]
    a = args("cordon", name=node)
    pv = await previewed(cluster, kube, run, a)
    assert pv.diff == (FieldChange(path="spec.unschedulable", after=True),)
    await executed(cluster, kube, run, a, pv)
    assert cluster.store.get(NODES, "", node)["spec"]["unschedulable"] is True  # type: ignore[index]
    u = args("uncordon", name=node)
    pv = await previewed(cluster, kube, run, u)
    await executed(cluster, kube, run, u, pv)
    assert not cluster.store.get(NODES, "", node)["spec"].get("unschedulable")  # type: ignore[index]
    # A budget that allows no disruption at all: the drain must stop, not force.
    pdb = cluster.store.get(PDBS, "production", "payment-service")
    assert pdb is not None
    pdb["spec"]["minAvailable"] = "100%"
    cluster.store.update(PDBS, pdb, check_rv=False)
    d = args("drain", name=node, timeout_seconds=1)
    on_node = {f"{p['metadata']['namespace']}/{p['metadata']['name']}"
               for p in cluster.store.list(PODS) if p["spec"].get("nodeName") == node
               and not any(r["kind"] == "DaemonSet"
                           for r in p["metadata"].get("ownerReferences", []))}
    node_rv = cluster.store.get(NODES, "", node)["metadata"]["resourceVersion"]  # type: ignore[index]
    # payment-oom's pods keep crashing, so the store moves on its own: check the targets.
    pv = await run(lambda: W.preview(kube, d))
    assert cluster.store.get(NODES, "", node)["metadata"]["resourceVersion"] == node_rv  # type: ignore[index]
    assert on_node <= {f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                       for p in cluster.store.list(PODS)}, "the dry run evicted nothing"
    assert set(pv.radius.pods_affected) == on_node
    assert "blocked now by a PodDisruptionBudget" in pv.radius.summary
    with pytest.raises(KubeError, match="would violate a PodDisruptionBudget") as err:
        await run(lambda: W.execute(kube, d, pv.resource_version, pv.effect))
    assert err.value.reason == "TooManyRequests"
    assert cluster.store.get(NODES, "", node)["spec"]["unschedulable"] is True  # type: ignore[index]
    blocked = {p["metadata"]["name"] for p in cluster.store.list(PODS, "production")
               if p["spec"].get("nodeName") == node}
    assert blocked, "pods protected by the budget are still there"


async def test_a_target_changed_after_the_preview_is_a_conflict(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    a = args("scale", name="web", namespace="shop", replicas=5)
    pv = await previewed(cluster, kube, run, a)
    # Someone else changes the deployment between the preview and the approved write.
    obj = web(cluster)
    obj["spec"]["replicas"] = 2
    cluster.store.update(DEPLOY, obj, check_rv=False)
    with pytest.raises(KubeError) as err:
        await run(lambda: W.execute(kube, a, pv.resource_version))
    assert err.value.reason == "Conflict" and err.value.status == 409
    assert "deployment/web changed since it was previewed" in err.value.message
    assert web(cluster)["spec"]["replicas"] == 2, "nothing was overwritten"


async def test_a_namespace_delete_counts_what_dies_with_it(cluster: Sandbox, kube: Kube,
                                                           run: Any) -> None:
    a = args("delete", kind="namespace", name="production")
    pv = await run(lambda: W.preview(kube, a))
    assert cluster.store.get(by_plural("", "namespaces"), "", "production") is not None, \
        "the dry run deleted nothing"
    r = pv.radius
    pods = {p["metadata"]["name"] for p in cluster.store.list(PODS, "production")}
    deploys = sorted(d["metadata"]["name"] for d in cluster.store.list(DEPLOY, "production"))
    assert deploys == ["payment-service"]  # the payment-oom scenario
    assert len(pods) == 2
    assert r.affected_namespaces == ("production",)
    assert r.production_like
    assert r.summary == ("deletes namespace production: 1 deployment, 2 pods, 1 service, "
                         "3 configmaps/secrets")
    assert r.deletes_contents[0] == "1 deployment: payment-service"
    assert r.deletes_contents[1] == f"2 pods: {', '.join(sorted(pods))}"
    assert set(r.pods_affected) == pods
    assert r.deletes_contents[3] == ("3 configmaps/secrets: configmap/kube-root-ca.crt, "
                                     "configmap/payment-service-config, "
                                     "secret/payment-db-credentials")

async def test_node_writes_name_the_namespaces_of_its_pods(cluster: Sandbox, kube: Kube,
                                                            run: Any) -> None:
    node = cluster.store.list(PODS, "production")[0]["spec"]["nodeName"]
    on_node = {p["metadata"]["namespace"] for p in cluster.store.list(PODS)
               if p["spec"].get("nodeName") == node}
    for tool in ("cordon", "drain"):
        pv = await run(lambda t=tool: W.preview(kube, args(t, name=node)))
        assert "production" in pv.radius.affected_namespaces, tool
        assert set(pv.radius.affected_namespaces) <= on_node
    pv = await run(lambda: W.preview(kube, args("drain", name=node)))
    assert "of production" in pv.radius.summary
    for tool, extra in (("uncordon", {}), ("label", {"kind": "node", "labels": {"a": "b"}})):
        pv = await run(lambda t=tool, x=extra: W.preview(kube, args(t, name=node, **x)))
        assert pv.radius.affected_namespaces == (), tool  # its running pods are left alone
    a = args("label", kind="namespace", name="production", labels={"team": "x"})
    pv = await run(lambda: W.preview(kube, a))
    assert pv.radius.affected_namespaces == ("production",)
