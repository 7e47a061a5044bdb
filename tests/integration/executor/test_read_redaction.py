"""The read tools against the sandbox, on the paths where a credential used to get through: list
items (which carry no kind), ConfigMap values, old rollout templates, logs and event messages.
The whole stack is tests/e2e/test_read_leaks.py; this is the executor's own layer."""

from __future__ import annotations

import json
from typing import Any

import yaml

from schemas import catalogue
from services.executor.kube import Kube
from services.executor.kube_read import READERS
from services.planner import direct
from tests import leaks as L


def read(kube: Kube, command: str) -> Any:
    call = direct.parse(command)
    assert isinstance(call, direct.Call), call
    args = catalogue.TOOLS[call.tool].parse_args(call.args)
    return READERS[type(args)](kube, args)


def _create(kube: Kube, path: str, body: dict[str, Any]) -> None:
    kube.request("", "POST", path, body=body)


async def test_a_list_of_secrets_as_json_masks_every_value(kube: Kube, run: Any) -> None:
    # Items of a list response say no kind: the reader tells redact what they are.
    listed = await run(lambda: read(kube, "kubectl get secrets -n production -o json"))
    items = json.loads(listed.text)["items"]
    assert items
    assert {v for i in items for v in (i.get("data") or {}).values()} == {"<redacted>"}


async def test_configmap_env_and_logs_through_the_readers(kube: Kube, run: Any) -> None:
    def seed() -> None:
        _create(kube, "/api/v1/namespaces", {"metadata": {"name": "billing"}})
        _create(kube, "/api/v1/namespaces/billing/configmaps", {
            "metadata": {"name": "billing-config"}, "data": L.configmap_data()})

    await run(seed)
    for command in ("kubectl get configmap billing-config -n billing -o yaml",
                    "kubectl get configmap billing-config -n billing -o json",
                    "kubectl get configmaps -n billing -o yaml",
                    "kubectl describe configmap billing-config -n billing"):
        out = await run(lambda c=command: read(kube, c))
        shown = out.text + json.dumps(out.data)
        assert L.found_in(shown) == [], command
        assert [x for x in (L.CA_B64, L.IMAGE, "token_ttl=30s") if x not in shown] == [], command
    cm = yaml.safe_load((await run(lambda: read(
        kube, "kubectl get configmap billing-config -n billing -o yaml"))).text)
    assert cm["data"]["ca.crt"] == L.CA_CERT
    assert "DB_PASSWORD=\n" in cm["data"][".env"]
