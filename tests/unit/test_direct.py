"""Direct mode parses what it can exactly and refuses everything else."""

from __future__ import annotations

import pytest

from services.planner import direct


@pytest.mark.parametrize(
    ("text", "tool", "args"),
    [
        ("kubectl get pods -n shop", "list", {"kind": "pod", "namespace": "shop"}),
        ("/kubectl get po -n shop", "list", {"kind": "pod", "namespace": "shop"}),
        ("kubectl get deploy -A", "list", {"kind": "deployment", "all_namespaces": True}),
        ("kubectl get pods -l app=web --namespace=shop", "list",
         {"kind": "pod", "namespace": "shop", "label_selector": "app=web"}),
        ("kubectl get deploy/web -n shop", "get",
         {"kind": "deployment", "name": "web", "namespace": "shop"}),
        ("kubectl get deployment web -n shop", "get",
         {"kind": "deployment", "name": "web", "namespace": "shop"}),
        ("kubectl scale deploy/web --replicas=5 -n shop", "scale",
         {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 5}),
        ("kubectl scale deployment web --replicas 0 -n shop", "scale",
         {"kind": "deployment", "name": "web", "namespace": "shop", "replicas": 0}),
    ],
)
def test_parses(text: str, tool: str, args: dict[str, object]) -> None:
    got = direct.parse(text)
    assert got == direct.Call(tool, args)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kubectl get pods -n shop | grep web", "shell"),
        ("kubectl delete ns production; echo", "shell"),
        ("kubectl exec -it web -- sh", "unsupported"),
        ("kubectl port-forward svc/web 8080", "unsupported"),
        ("kubectl edit deploy/web", "unsupported"),
        ("kubectl scale deploy/web -n shop", "--replicas"),
        ("kubectl scale deploy/web --replicas=five", "whole number"),
        ("kubectl scale deploy --replicas=3", "name"),
        ("kubectl get pods --dry-run=client", "unsupported flag"),
        ("kubectl get widgets", "unsupported resource kind"),
        ("kubectl", "missing verb"),
        ("kubectl get pods -n", "needs a value"),
        ("kubectl get pods 'unterminated", "cannot parse"),
    ],
)
def test_refuses(text: str, why: str) -> None:
    got = direct.parse(text)
    assert isinstance(got, direct.Refusal)
    assert why in got.reason
