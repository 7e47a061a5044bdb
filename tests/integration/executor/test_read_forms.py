"""The read forms of issue 15 against the sandbox: `-o name|json|yaml|wide`, several kinds in one
get, `logs deploy/NAME` — each checked against what real kubectl prints from the same cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from schemas import catalogue
from services.executor.kube import Kube
from services.executor.kube_read import READERS
from services.planner import direct

PODS = by_plural("", "pods")


def read(kube: Kube, command: str) -> Any:
    """The command parsed exactly as direct mode parses it, then run by the executor's reader."""
    call = direct.parse(command)
    assert isinstance(call, direct.Call), call
    args = catalogue.TOOLS[call.tool].parse_args(call.args)
    return READERS[type(args)](kube, args)


async def kubectl(kubeconfig: Path, *argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), *argv,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_output_name_matches_kubectl(kube: Kube, kubeconfig: Path, run: Any) -> None:
    for cmd in ("get pods -n shop -l app=web -o name", "get deploy,svc -n shop -o name",
                "get deploy/web -n shop -o name"):
        ours = await run(lambda cmd=cmd: read(kube, f"kubectl {cmd}"))
        theirs = await kubectl(kubeconfig, *cmd.split())
        assert ours.text.strip().splitlines() == theirs.strip().splitlines(), cmd


async def test_output_json_and_yaml_are_the_objects(cluster: Sandbox, kube: Kube,
                                                    run: Any) -> None:
    listed = await run(lambda: read(kube, "kubectl get pods -n shop -l app=web -o json"))
    doc = json.loads(listed.text)
    names = {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")
             if p["metadata"].get("labels", {}).get("app") == "web"}
    assert doc["kind"] == "List"
    assert {i["metadata"]["name"] for i in doc["items"]} == names
    one = await run(lambda: read(kube, "kubectl get deploy/web -n shop -o yaml"))
    obj = yaml.safe_load(one.text)
    assert obj["kind"] == "Deployment"
    assert obj["spec"]["replicas"] == 3
    both = await run(lambda: read(kube, "kubectl get deploy,svc -n shop -o json"))
    assert {i["kind"] for i in json.loads(both.text)["items"]} == {"Deployment", "Service"}
    # a Secret's values stay redacted in every format
    secret = await run(lambda: read(
        kube, "kubectl get secret payment-db-credentials -n production -o yaml"))
    assert set(yaml.safe_load(secret.text)["data"].values()) == {"<redacted>"}


async def test_wide_and_several_kinds_have_kubectls_columns(kube: Kube, kubeconfig: Path,
                                                          run: Any) -> None:
    wide = await run(lambda: read(kube, "kubectl get pods -n shop -o wide"))
    theirs = await kubectl(kubeconfig, "get", "pods", "-n", "shop", "-o", "wide")
    head = wide.text.splitlines()[0].split()
    assert head[:7] == theirs.splitlines()[0].split()[:7]  # NAME … AGE IP NODE
    deploy = await run(lambda: read(kube, "kubectl get deploy -n shop -o wide"))
    assert deploy.text.splitlines()[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    several = await run(lambda: read(kube, "kubectl get deploy,svc -n shop"))
    names = [line.split()[0] for line in several.text.splitlines()
             if line and not line.startswith("NAME")]
    assert "deployment.apps/web" in names
    assert "service/web" in names
    assert {i["kind"] for i in several.data["items"]} == {"deployment", "service"}


async def test_logs_of_a_workload_reads_one_of_its_pods(cluster: Sandbox, kube: Kube,
                                                         run: Any) -> None:
    out = await run(lambda: read(kube, "kubectl logs deploy/web -n shop --tail=3"))
    pods = {p["metadata"]["name"] for p in cluster.store.list(PODS, "shop")
            if p["metadata"].get("labels", {}).get("app") == "web"}
    assert out.data["pod"] in pods
    assert out.text.startswith(f"Found {len(pods)} pods, using pod/{out.data['pod']}")
    assert len(out.text.strip().splitlines()) == 4  # the note and three lines
