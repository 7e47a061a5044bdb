"""`python -m sandbox` (what `interlock sandbox` runs): readiness line, kubeconfig, signals;
and the thread-based helper for synchronous callers."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import yaml
from kubernetes import client as k8s

from sandbox.cli import READY_PREFIX
from sandbox.testing import running_sandbox
from tests.integration.sandbox.conftest import Kubectl, api_client_for


async def test_runs_in_the_foreground_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--scenario",
        "baseline",
        "--scenario",
        "two-auth",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith(READY_PREFIX)
        url = line[len(READY_PREFIX) :].strip()
        assert url.startswith("http://127.0.0.1:")
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["current-context"] == "sandbox"
        assert config["clusters"][0]["cluster"]["server"] == url
        assert config["users"][0]["user"]["token"] == "sandbox-token"
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        kubectl = Kubectl(kubeconfig, tmp_path / "cache")
        out = await kubectl.ok("get", "ns", "-o", "name")
        assert out.split() == [
            "namespace/default",
            "namespace/kube-node-lease",
            "namespace/kube-public",
            "namespace/kube-system",
            "namespace/production",
            "namespace/shop",
            "namespace/staging",
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0


async def test_unknown_scenario_exits_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        "--kubeconfig",
        str(tmp_path / "kc"),
        "--scenario",
        "nope",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert out == b""
    assert b"unknown scenario 'nope'" in err


def test_running_sandbox_serves_synchronous_callers(tmp_path: Path) -> None:
    with running_sandbox(tmp_path / "kc", ["baseline"]) as running:
        api = k8s.AppsV1Api(api_client_for(running.kubeconfig))
        assert api.read_namespaced_deployment("web", "shop").spec.replicas == 3
        api.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 1}})
        assert api.read_namespaced_deployment_scale("web", "shop").spec.replicas == 1
