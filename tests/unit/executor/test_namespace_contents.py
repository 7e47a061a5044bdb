"""What a namespace delete takes with it, counted and named (issue 15), from a stub listing."""

from __future__ import annotations

from typing import Any

from services.executor import kube_write as W
from services.executor.kube import KubeError


class Listing:
    def __init__(self, objects: dict[str, list[str]], broken: tuple[str, ...] = ()) -> None:
        self.objects, self.broken = objects, broken

    def list(self, ctx: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        if kind in self.broken:
            raise KubeError("Forbidden", f"cannot list {kind}", 403)
        return [{"metadata": {"name": n}} for n in self.objects.get(kind, [])]


def test_counts_and_names_are_truncated_sensibly() -> None:
    k = Listing({"deployment": ["b", "a"], "pod": [f"p{i:02}" for i in range(12)],
                 "persistentvolumeclaim": ["data"], "configmap": ["c"], "secret": ["s"]})
    counts, lines = W.namespace_contents(k, "ctx", "production")  # type: ignore[arg-type]
    assert counts == "2 deployments, 12 pods, 1 PVC, 2 configmaps/secrets"
    assert lines == ("2 deployments: a, b",
                     "12 pods: p00, p01, p02, p03, p04, p05, p06, p07 and 4 more",
                     "1 PVC: data", "2 configmaps/secrets: configmap/c, secret/s")


def test_what_cannot_be_listed_is_said_never_left_out() -> None:
    k = Listing({"pod": ["p"]}, broken=("secret",))
    counts, lines = W.namespace_contents(k, "ctx", "production")  # type: ignore[arg-type]
    assert counts == "1 pod, configmaps/secrets unknown"
    assert lines[-1] == "configmaps/secrets: could not be listed (Forbidden)"
    assert W.namespace_contents(Listing({}), "ctx", "x") == (  # type: ignore[arg-type]
        "nothing in it", ())
