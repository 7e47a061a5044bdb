"""The HorizontalPodAutoscaler controller, registered on the shared `Controllers` queue: it
scales its target from the pods' reported CPU (telemetry.Metrics)."""

from __future__ import annotations

import math

from sandbox.controllers.core import (
    DEPLOYMENTS,
    HPAS,
    PODS,
    STATEFULSETS,
    Controllers,
    Key,
)
from sandbox.controllers.telemetry import Metrics, quantity
from sandbox.state.selectors import labels_match, selector_from_spec
from sandbox.state.store import Change, Obj
from sandbox.state.timeutil import iso, now


class Autoscaler:
    def __init__(self, ctl: Controllers, metrics: Metrics) -> None:
        self.ctl = ctl
        self.store = ctl.store
        self.metrics = metrics
        ctl._reconcilers.update({"HorizontalPodAutoscaler": self._hpa})
        ctl.extra.append(self._related)

    def _related(self, change: Change) -> list[Key]:
        """HPAs follow their target and its pods."""
        kind, meta = change.rt.kind, change.obj["metadata"]
        ns = meta.get("namespace", "")
        keys: list[Key] = []
        if kind in ("Pod", "Deployment", "StatefulSet", "ReplicaSet"):
            keys.extend(
                ("HorizontalPodAutoscaler", ns, h["metadata"]["name"])
                for h in self.store.iter_raw(HPAS)
                if h["metadata"]["namespace"] == ns
            )
        return keys

    # ---- horizontal pod autoscalers ------------------------------------------------------
    def _hpa(self, ns: str, name: str) -> None:
        hpa = self.store.get(HPAS, ns, name)
        if hpa is None:
            return
        spec = hpa["spec"]
        ref = spec.get("scaleTargetRef") or {}
        rt = {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS}.get(ref.get("kind", ""))
        target = self.store.get(rt, ns, ref.get("name", "")) if rt else None
        old = hpa.get("status") or {}
        when = iso(now())
        if target is None:
            self.ctl._set_status(
                HPAS,
                hpa,
                {
                    "currentReplicas": old.get("currentReplicas", 0),
                    "desiredReplicas": 0,
                    "conditions": [
                        {
                            "type": "AbleToScale",
                            "status": "False",
                            "reason": "FailedGetScale",
                            "lastTransitionTime": when,
                            "message": f"the HPA controller was unable to get the target's "
                            f"current scale: {ref.get('kind', '').lower()}s.apps "
                            f'"{ref.get("name")}" not found',
                        }
                    ],
                },
            )
            return
        reqs = selector_from_spec(target["spec"].get("selector"))
        pods = [
            p
            for p in self.store.list(PODS, ns)
            if labels_match(reqs, p["metadata"].get("labels"))
            and p["status"].get("phase") == "Running"
        ]
        current = (target.get("status") or {}).get("replicas", target["spec"].get("replicas", 1))
        cpu_target = next(
            (
                m["resource"]["target"].get("averageUtilization")
                for m in spec.get("metrics")
                or [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"averageUtilization": 80}},
                    }
                ]
                if m.get("type") == "Resource" and m["resource"].get("name") == "cpu"
            ),
            80,
        )
        utils = [u for u in (self._cpu_utilization(p) for p in pods) if u is not None]
        min_r, max_r = spec.get("minReplicas", 1), spec["maxReplicas"]
        status: Obj = {"currentReplicas": current}
        if utils and cpu_target:
            util = round(sum(utils) / len(utils))
            avg_cores = sum(
                self.metrics.container_usage(p, c["name"])[0]
                for p in pods
                for c in p["spec"]["containers"]
            ) / len(pods)
            status["currentMetrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {
                            "averageUtilization": util,
                            "averageValue": f"{round(avg_cores * 1000)}m",
                        },
                    },
                }
            ]
            ratio = util / cpu_target
            raw = current if abs(ratio - 1) <= 0.1 else math.ceil(current * ratio)
        else:
            util, raw = None, current
        desired = max(min_r, min(max_r, raw))
        status["desiredReplicas"] = desired
        limited = raw > max_r or raw < min_r
        old_conds = {c["type"]: c for c in old.get("conditions") or []}

        def cond(type_: str, ok: bool, reason: str, message: str) -> Obj:
            prev = old_conds.get(type_)
            t = prev["lastTransitionTime"] if prev and prev.get("reason") == reason else when
            return {
                "type": type_,
                "status": "True" if ok else "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": t,
            }

        status["conditions"] = [
            cond(
                "AbleToScale",
                True,
                "ReadyForNewScale",
                "recommended size matches current size"
                if desired == current
                else "the last scale time was sufficiently old as to warrant a new scale",
            ),
            cond(
                "ScalingActive",
                util is not None,
                "ValidMetricFound" if util is not None else "FailedGetResourceMetric",
                "the HPA was able to successfully calculate a replica count from cpu resource "
                "utilization (percentage of request)"
                if util is not None
                else "the HPA was unable to compute the replica count: no metrics returned",
            ),
            cond(
                "ScalingLimited",
                limited,
                ("TooManyReplicas" if raw > max_r else "TooFewReplicas")
                if limited
                else "DesiredWithinRange",
                "the desired replica count is more than the maximum replica count"
                if raw > max_r
                else "the desired count is within the acceptable range",
            ),
        ]
        if old.get("lastScaleTime"):
            status["lastScaleTime"] = old["lastScaleTime"]
        if desired != current and rt is not None and target["spec"].get("replicas") != desired:
            target["spec"]["replicas"] = desired
            target["metadata"]["generation"] = target["metadata"].get("generation", 1) + 1
            self.ctl._write(rt, target)
            status["lastScaleTime"] = when
            direction = "above" if desired > current else "below"
            self.ctl.recorder.record(
                hpa,
                "Normal",
                "SuccessfulRescale",
                f"New size: {desired}; reason: cpu resource utilization (percentage of "
                f"request) {direction} target",
                component="horizontal-pod-autoscaler",
            )
        self.ctl._set_status(HPAS, hpa, status)

    def _cpu_utilization(self, pod: Obj) -> float | None:
        used = requested = 0.0
        for c in pod["spec"].get("containers") or []:
            req = ((c.get("resources") or {}).get("requests") or {}).get("cpu")
            if req is None:
                return None
            requested += quantity(req)
            used += self.metrics.container_usage(pod, c["name"])[0]
        return 100 * used / requested if requested else None
