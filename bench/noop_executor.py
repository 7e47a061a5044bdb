"""The real executor service with a no-op cluster adapter, for benchmarks only.

Everything the executor does on the bus is unchanged (consume the gate's classifications and
grants from the log, verify signatures, claim, append results, ack); only the Kubernetes calls
are replaced by constant answers, so the throughput and latency figures taken with it show
Interlock's own cost. The cluster's cost is measured on its own (bench/cycles.py). Run as
`python -m bench.noop_executor`.
"""

from __future__ import annotations

from typing import Any

from schemas import catalogue as C
from schemas.approval import BlastRadius, FieldChange
from services.executor import evidence, handlers, kube_write
from services.executor.kube import Outcome, Preview

_POD = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop",
                                           "resourceVersion": "1"},
        "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}


def _read(_k: Any, a: Any) -> Outcome:
    return Outcome(text="NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    3/3     3            3"
                        "           1d", data=_POD)


class _Readers(dict):  # type: ignore[type-arg]
    def get(self, _key: Any, _default: Any = None) -> Any:
        return _read


def _preview(_k: Any, a: C.Args) -> Preview:
    replicas = getattr(a, "replicas", 3)
    return Preview((FieldChange(path="spec.replicas", before=3, after=replicas),),
                   BlastRadius(replicas_before=3, replicas_after=replicas,
                               summary="no-op cluster"), "1")


class _Plan:
    ref = "deployment/web"


def _execute(_k: Any, a: C.Args, _rv: str, _effect: tuple[str, ...] = ()
             ) -> tuple[Outcome, Any, Any]:
    return Outcome(text="deployment/web scaled", data={"changes": []}), _Plan(), None


def _verify(*_a: Any, **_kw: Any) -> kube_write.Verification:
    return kube_write.Verification("skipped", "no-op cluster", "")


def _gather(*_a: Any, **_kw: Any) -> evidence.Gathered:
    return evidence.Gathered()


handlers.READERS = _Readers()  # type: ignore[assignment]
kube_write.preview = _preview  # type: ignore[assignment]
kube_write.execute = _execute  # type: ignore[assignment]
kube_write.verify = _verify  # type: ignore[assignment]
evidence.gather = _gather  # type: ignore[assignment]

if __name__ == "__main__":
    from services.executor.service import main

    main()
