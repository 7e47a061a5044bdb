"""The card's "where" names the cluster: Kube.context_name resolves the context a call runs on
from the kubeconfig alone (no request to the cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.kubeconfig import write_kubeconfig
from services.executor.kube import Kube


def test_the_current_context_unless_the_call_names_one(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1", context="prod-eu")
    kube = Kube(path)
    assert kube.context_name("") == "prod-eu"
    assert kube.context_name("staging-us") == "staging-us"


def test_no_kubeconfig_names_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert Kube(None).context_name("") == ""
