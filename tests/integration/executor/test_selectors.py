"""Label selectors against the sandbox, with kubectl's meaning: `logs -l` reads the matched pods
(prefixed like --prefix, at most --max-log-requests); a write by selector previews the exact set
it matched, acts on exactly those names with their resourceVersions, and acts on nothing if the
set changed since the preview."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from services.executor import evidence
from services.executor import kube_write as W
from services.executor import selector as S
from services.executor.kube import Kube, KubeError
from tests.integration.executor.test_writes import args, executed, previewed

DEPLOY = by_plural("apps", "deployments")
PODS = by_plural("", "pods")
# Also the order-service autoscaler (the executor conftest's cluster reads this).
SCENARIOS = ["baseline", "payment-oom", "scaling-loop"]


def web_pods(cluster: Sandbox) -> list[str]:
    return sorted(p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")
                  if p["metadata"]["labels"].get("app") == "web")


def bare_pod(cluster: Sandbox, name: str, labels: dict[str, str]) -> None:
    """A pod with no controller, as `kubectl run` leaves one."""
    cluster.store.create(PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    })


async def test_logs_by_selector_prefixes_each_pod(cluster: Sandbox, kube: Kube,
                                                  run: Any) -> None:
    pods = web_pods(cluster)
    a = catalogue.TOOLS["logs"].parse_args({"selector": "app=web", "namespace": "shop",
                                            "tail_lines": 10})
    out = await run(lambda: S.READERS[catalogue.LogsArgs](kube, a))
    lines = out.text.splitlines()
    assert lines, out.text
    # Every line names its source, as kubectl's --prefix: [pod/NAME/CONTAINER].
    assert all(line.startswith(tuple(f"[pod/{p}/web] " for p in pods)) for line in lines), lines
    assert {d["pod"] for d in out.data["pods"]} == set(pods)
    # --max-log-requests: the rest are named, not read.
    capped = catalogue.TOOLS["logs"].parse_args({"selector": "app in (web)", "namespace": "shop",
                                                 "max_log_requests": 2})
    out = await run(lambda: S.READERS[catalogue.LogsArgs](kube, capped))
    assert {d["pod"] for d in out.data["pods"]} == set(pods[:2])
    assert out.data["not_read"] == pods[2:]
    assert "1 more pods match 'app in (web)' and were not read" in out.text
    none = catalogue.TOOLS["logs"].parse_args({"selector": "app=nothing", "namespace": "shop"})
    out = await run(lambda: S.READERS[catalogue.LogsArgs](kube, none))
    assert out.text == "No resources found in shop namespace."


async def test_delete_by_selector_previews_and_deletes_exactly_the_set(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    pods = web_pods(cluster)
    assert len(pods) == 3
    a = args("delete", kind="pod", namespace="shop", selector="app=web")
    pv = await previewed(cluster, kube, run, a)
    assert [c.path for c in pv.diff] == [f"pod/{p}" for p in pods]
    assert {(c.before, c.after) for c in pv.diff} == {("exists", "deleted")}
    assert pv.radius.summary == f"deletes 3 pods in shop: {', '.join(pods)}"
    assert set(pv.radius.pods_affected) == set(pods)
    assert len(pv.radius.selected) == 3
    assert all("owned by ReplicaSet/" in line for line in pv.radius.selected), pv.radius.selected
    assert pv.resource_version.startswith("selected:sha256:")
    plan = await run(lambda: W.plan_for(kube, a))
    assert plan.effect == pv.effect == tuple(f"shop/pod/{p}" for p in pods)
    out, v = await executed(cluster, kube, run, a, pv)
    assert "3 pods matching app=web deleted in shop" in out.text
    left = web_pods(cluster)
    assert not set(pods) & set(left), "every previewed pod is deleted"
    assert v.outcome == "verified", v.detail


async def test_a_pod_that_joins_the_selector_after_the_preview_stops_the_write(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    bare_pod(cluster, "debug-a", {"app": "debug"})
    bare_pod(cluster, "debug-b", {"app": "debug"})
    a = args("delete", kind="pod", namespace="shop", selector="app=debug")
    pv = await previewed(cluster, kube, run, a)
    assert [c.path for c in pv.diff] == ["pod/debug-a", "pod/debug-b"]
    assert all("no controller and will not come back" in s for s in pv.radius.selected)
    bare_pod(cluster, "debug-c", {"app": "debug"})  # joins before the approval runs
    # The effect binding names what changed...
    with pytest.raises(W.EffectChanged) as changed:
        await run(lambda: W.execute(kube, a, pv.resource_version, pv.effect))
    assert changed.value.added == ("shop/pod/debug-c",)
    assert changed.value.removed == ()
    assert "now also shop/pod/debug-c" in changed.value.message
    # ...and the plan's own digest holds without it (an approval that bound no effect).
    with pytest.raises(KubeError) as err:
        await run(lambda: W.execute(kube, a, pv.resource_version, W.plan_for(kube, a).effect))
    assert err.value.reason == "Conflict"
    assert "changed since the preview" in err.value.message
    assert "debug-a, debug-b, debug-c" in err.value.message
    assert "Nothing was deleted" in err.value.message
    names = {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")}
    assert {"debug-a", "debug-b", "debug-c"} <= names, "nothing was deleted"
    # An execution with no previewed set (the dry run failed) acts on nothing either.
    with pytest.raises(W.EffectChanged):
        await run(lambda: W.execute(kube, a, ""))
    with pytest.raises(KubeError, match="never previewed"):
        await run(lambda: W.execute(kube, a, "", W.plan_for(kube, a).effect))
    # A previewed object replaced by another of the same name (a new uid): not the approved one.
    pv = await previewed(cluster, kube, run, a)
    cluster.store.delete(PODS, "shop", "debug-b")
    bare_pod(cluster, "debug-b", {"app": "debug"})
    with pytest.raises(KubeError, match="changed since the preview"):
        await run(lambda: W.execute(kube, a, pv.resource_version, pv.effect))
    assert {"debug-a", "debug-b", "debug-c"} <= {
        p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")}
    # What a delete does not depend on (a pod's status or annotations moving its
    # resourceVersion) does not void the approval; the write then acts on exactly the set.
    pv = await previewed(cluster, kube, run, a)
    pod = cluster.store.must_get(PODS, "shop", "debug-a")
    pod["metadata"]["annotations"] = {"touched": "yes"}
    cluster.store.update(PODS, pod, check_rv=False)
    bare_pod(cluster, "other", {"app": "other"})
    out, v = await executed(cluster, kube, run, a, pv)
    assert "3 pods matching app=debug deleted in shop" in out.text
    left = {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")}
    assert not {"debug-a", "debug-b", "debug-c"} & left
    assert "other" in left
    assert v.outcome == "verified", v.detail


async def test_a_label_changed_since_the_preview_voids_a_label_write(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    """A label write depends on the labels it changes: someone else setting one in between is
    a change the approver never saw."""
    a = args("label", kind="pod", namespace="shop", selector="app=web", labels={"tier": "x"},
             overwrite=True)
    pv = await previewed(cluster, kube, run, a)
    first = web_pods(cluster)[0]
    pod = cluster.store.must_get(PODS, "shop", first)
    pod["metadata"]["labels"]["tier"] = "other"
    cluster.store.update(PODS, pod, check_rv=False)
    with pytest.raises(KubeError, match="changed since the preview"):
        await run(lambda: W.execute(kube, a, pv.resource_version, pv.effect))
    assert all("tier" not in cluster.store.must_get(PODS, "shop", p)["metadata"]["labels"]
               for p in web_pods(cluster) if p != first)


async def test_an_empty_match_is_never_an_approval(cluster: Sandbox, kube: Kube,
                                                   run: Any) -> None:
    a = args("delete", kind="pod", namespace="shop", selector="app=nothing")
    with pytest.raises(KubeError, match="no objects matched") as err:
        await run(lambda: W.preview(kube, a))
    assert err.value.status == 404
    # A pod already being deleted leaves the set on its own: it is not part of one.
    bare_pod(cluster, "going", {"app": "gone"})
    pod = cluster.store.must_get(PODS, "shop", "going")
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster.store.update(PODS, pod, check_rv=False)
    g = args("delete", kind="pod", namespace="shop", selector="app=gone")
    with pytest.raises(KubeError, match=r"no objects matched: .*\(1 being deleted already\)"):
        await run(lambda: W.preview(kube, g))


async def test_label_annotate_scale_restart_by_selector(cluster: Sandbox, kube: Kube,
                                                        run: Any) -> None:
    pods = web_pods(cluster)
    a = args("label", kind="pod", namespace="shop", selector="app=web,!tier",
             labels={"tier": "front"})
    pv = await previewed(cluster, kube, run, a)
    assert [c.path for c in pv.diff] == [f"pod/{p} metadata.labels.tier" for p in pods]
    assert pv.radius.summary.startswith("labels 3 pods in shop: ")
    await executed(cluster, kube, run, a, pv)
    assert all(cluster.store.must_get(PODS, "shop", p)["metadata"]["labels"]["tier"] == "front"
               for p in pods)
    n = args("annotate", kind="pod", namespace="shop", selector="tier in (front)",
             annotations={"note": "checked"})
    pv = await previewed(cluster, kube, run, n)
    _, v = await executed(cluster, kube, run, n, pv)
    assert v.outcome == "verified", v.detail
    assert all(cluster.store.must_get(PODS, "shop", p)["metadata"]["annotations"]["note"] ==
               "checked" for p in pods)
    s = args("scale", kind="deployment", namespace="shop", selector="app=web", replicas=1)
    pv = await previewed(cluster, kube, run, s)
    assert [(c.path, c.before, c.after) for c in pv.diff] == [
        ("deployment/web spec.replicas", 3, 1)]
    assert (pv.radius.replicas_before, pv.radius.replicas_after) == (3, 1)
    assert pv.radius.selected == ("deployment/web: 2 of 3 pods will be removed",)
    _, v = await executed(cluster, kube, run, s, pv)
    assert cluster.store.must_get(DEPLOY, "shop", "web")["spec"]["replicas"] == 1
    assert v.outcome == "verified", v.detail
    r = args("rollout_restart", kind="deployment", namespace="shop", selector="app")
    pv = await previewed(cluster, kube, run, r)
    assert pv.diff[0].path.startswith("deployment/web spec.template")
    await executed(cluster, kube, run, r, pv)
    template = cluster.store.must_get(DEPLOY, "shop", "web")["spec"]["template"]
    assert W.RESTARTED_AT in template["metadata"]["annotations"]


async def test_evidence_is_gathered_for_each_matched_object(cluster: Sandbox, kube: Kube,
                                                            run: Any) -> None:
    """The card's facts gathered by Interlock, for each object the selector matched: the
    OOMKilled payment pods' restarts, and the autoscaler that undoes a scale by selector."""
    a = args("delete", kind="pod", namespace="production", selector="app=payment-service")
    g = await run(lambda: evidence.gather(kube, a))
    pods = sorted(p["metadata"]["name"] for p in cluster.store.list(PODS, "production")
                  if p["metadata"]["labels"].get("app") == "payment-service")
    text = "\n".join(g.lines)
    for pod in pods:
        assert f"pod/{pod}" in text, text
    assert "OOMKilled" in text, text
    s = args("scale", kind="deployment", namespace="production", selector="app=order-service",
             replicas=12)
    g = await run(lambda: evidence.gather(kube, s))
    assert g.autoscaler.startswith("HorizontalPodAutoscaler/order-service"), g.autoscaler


async def test_a_finished_pod_is_not_counted_as_a_running_pod_deleted(
    cluster: Sandbox, kube: Kube, run: Any
) -> None:
    """`delete pods -l app=report-generator`: a completed Job's pods are records. The card used
    to say each "owned by Job/…, which will replace it" and the gate flagged "deletes 3 running
    pod(s)" for pods that ran nothing."""
    stages = {"done-1": ("Never", {"sandbox.interlock.dev/run-for": "100ms"}, "Succeeded"),
              "done-2": ("Never", {"sandbox.interlock.dev/crash-after": "100ms"}, "Failed"),
              "live-1": ("Always", {}, "Running")}
    for name, (policy, notes, _) in stages.items():
        cluster.store.create(PODS, cluster.api._prepare(PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "annotations": notes,
                         "labels": {"app": "finished-demo"}},
            "spec": {"restartPolicy": policy,
                     "containers": [{"name": "main", "image": "busybox:1.36"}]},
        }))
    await cluster.wait_for(lambda: all(
        (cluster.store.must_get(PODS, "shop", n).get("status") or {}).get("phase") == phase
        for n, (_, _, phase) in stages.items()))
    pv = await previewed(cluster, kube, run, args("delete", kind="pod", namespace="shop",
                                                  selector="app=finished-demo"))
    assert pv.radius.pods_affected == ("live-1",)
    assert "pod/done-1: deleted; it has finished (Succeeded), so nothing running stops" in \
        pv.radius.selected
    assert "pod/done-2: deleted; it has finished (Failed), so nothing running stops" in \
        pv.radius.selected
    one = await previewed(cluster, kube, run, args("delete", kind="pod", namespace="shop",
                                                   name="done-1"))
    assert one.radius.pods_affected == ()
    assert one.radius.summary == "pod/done-1 will be deleted; it has finished (Succeeded)"
