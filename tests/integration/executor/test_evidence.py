"""The evidence Interlock gathers itself about a write's target (restarts and their reasons,
usage against limits, the autoscaler, references), and verification that says "not as
approved" when an autoscaler sets an approved scale back — against the sandbox, through the
official client."""

from __future__ import annotations

from typing import Any

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from services.executor import evidence
from services.executor import kube_write as W
from services.executor.kube import Kube

DEPLOY = by_plural("apps", "deployments")
# Also the order-service autoscaler (the executor conftest's cluster reads this).
SCENARIOS = ["baseline", "payment-oom", "scaling-loop"]


def args(tool: str, **raw: Any) -> catalogue.Args:
    return catalogue.TOOLS[tool].parse_args({"cluster": "sandbox", **raw})


async def test_oomkilled_workload_shows_restarts_reason_and_memory_against_limit(
        kube: Kube, run: Any) -> None:
    a = args("set_resources", kind="deployment", name="payment-service",
             namespace="production", limits={"memory": "512Mi"})
    g = await run(lambda: evidence.gather(kube, a))
    text = "\n".join(g.lines)
    # 2 pods, 3 OOM kills each in the scenario's 21 minutes.
    assert g.lines[0].startswith("deployment/payment-service: 2 pods (2 running), restarts 6 in "
                                 "21 min"), text
    assert "last termination OOMKilled (exit 137) on 2 of 2 pods" in g.lines[1], text
    assert "OOMKilled 6\u00d7 in 21 min" in g.lines[1], text
    assert "memory 251Mi, 98% of limit 256Mi, 131% of request 192Mi" in text, text
    assert "cpu 180m, 18% of limit 1, 72% of request 250m" in text, text
    assert g.autoscaler == ""


async def test_scale_names_the_autoscaler_and_says_the_scale_will_be_reverted(
        kube: Kube, run: Any) -> None:
    a = args("scale", kind="deployment", name="order-service", namespace="production",
             replicas=12)
    g = await run(lambda: evidence.gather(kube, a))
    assert g.autoscaler == "HorizontalPodAutoscaler/order-service (min 3, max 6, cpu 70%)"
    hpa = [line for line in g.lines if "HorizontalPodAutoscaler" in line]
    assert hpa == ["deployment/order-service is scaled by HorizontalPodAutoscaler/order-service "
                   "(min 3, max 6, cpu 70%); now at cpu 85%, wants 6 replicas: a manual scale "
                   "to 12 will be reverted by the autoscaler (12 is above its max 6)"], g.lines
    assert g.lines[0] == "deployment/order-service: 6 pods (6 running), no restarts in 3 h"
    # And the preview's blast radius does not carry it by itself: the executor adds it.
    web = await run(lambda: evidence.gather(kube, args("scale", name="web", namespace="shop",
                                                       replicas=1)))
    assert web.autoscaler == ""
    assert not [line for line in web.lines if "HorizontalPodAutoscaler" in line]


async def test_delete_says_what_references_the_object(kube: Kube, run: Any) -> None:
    cm = await run(lambda: evidence.gather(kube, args(
        "delete", kind="configmap", name="payment-service-config", namespace="production")))
    assert cm.lines == ["configmap/payment-service-config is referenced by "
                        "deployment/payment-service"]
    svc = await run(lambda: evidence.gather(kube, args(
        "delete", kind="service", name="web", namespace="shop")))
    assert svc.lines == ["service/web is referenced by ingress/web"]
    dep = await run(lambda: evidence.gather(kube, args(
        "delete", kind="deployment", name="order-service", namespace="production")))
    assert ("deployment/order-service is referenced by horizontalpodautoscaler/order-service, "
            "service/order-service") in dep.lines, dep.lines


async def test_a_scale_the_autoscaler_reverts_is_not_as_approved(
        cluster: Sandbox, kube: Kube, run: Any) -> None:
    a = args("scale", kind="deployment", name="order-service", namespace="production",
             replicas=12)
    pv = await run(lambda: W.preview(kube, a))
    assert [(c.path, c.before, c.after) for c in pv.diff] == [("spec.replicas", 6, 12)]
    _, plan, after = await run(lambda: W.execute(kube, a, pv.resource_version))
    v = await run(lambda: W.verify(kube, a, plan, after, 20))
    assert v.outcome == "not_as_approved", v
    assert v.detail.startswith("not as approved: spec.replicas is 6, approved 12 — changed back "
                               "by HorizontalPodAutoscaler/order-service (min 3, max 6, cpu "
                               "70%) (New size: "), v.detail  # its latest rescale event
    assert v.observed["differs"] == [{"path": "spec.replicas", "approved": 12, "observed": 6}]
    assert cluster.store.must_get(DEPLOY, "production", "order-service")["spec"]["replicas"] == 6


async def test_a_scale_that_holds_is_verified(kube: Kube, run: Any) -> None:
    a = args("scale", name="web", namespace="shop", replicas=4)
    pv = await run(lambda: W.preview(kube, a))
    _, plan, after = await run(lambda: W.execute(kube, a, pv.resource_version))
    v = await run(lambda: W.verify(kube, a, plan, after, 20))
    assert v.outcome == "verified", v
