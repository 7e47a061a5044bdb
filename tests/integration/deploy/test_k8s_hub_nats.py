"""The hub's NATS of deploy/k8s run for real: the three nodes of the StatefulSet, each with the
config from the Secret interlock-nats-config and its own server_name, on loopback (only the
addresses differ: a pod's DNS name becomes 127.0.0.1 and a port of its own). The provisioning
job's code waits for the cluster — it is started while a node is missing and completes only once
all three are up — and every stream is replicated on all three."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import nats
import pytest

from launcher.nats import NatsServerProcess, free_port
from schemas import subjects as S
from services.runtime import natsconf, provision
from tests.integration.deploy.test_k8s_manifests import _secret_data as secret_data
from tests.integration.deploy.test_k8s_manifests import build, one


def _on_loopback(conf: dict[str, Any], name: str, ports: dict[str, int], routes: list[int],
                 store: Path) -> str:
    conf = json.loads(json.dumps(conf))
    conf["server_name"] = name  # what `--name $(POD_NAME)` sets in the pod
    conf["listen"] = f"127.0.0.1:{ports['client']}"
    conf["http"] = f"127.0.0.1:{ports['monitor']}"
    conf["cluster"]["listen"] = f"127.0.0.1:{ports['cluster']}"
    conf["cluster"]["routes"] = [f"nats://127.0.0.1:{p}" for p in routes]
    conf["jetstream"]["store_dir"] = str(store)
    if "leafnodes" in conf:
        conf["leafnodes"]["listen"] = f"127.0.0.1:{ports['leaf']}"
    return json.dumps(conf)


async def test_the_three_hub_nodes_form_one_cluster_and_provisioning_waits_for_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, docs = build(tmp_path / "build")
    conf = json.loads(secret_data(one(docs, "Secret", "interlock-nats-config"))["nats.conf"])
    sts = one(docs, "StatefulSet", "nats")
    names = [f"nats-{i}" for i in range(sts["spec"]["replicas"])]
    assert len(conf["cluster"]["routes"]) == len(names) == 3
    ports = [{k: free_port() for k in ("client", "monitor", "cluster", "leaf")} for _ in names]
    nodes = [NatsServerProcess(
        _on_loopback(conf, name, p, [q["cluster"] for q in ports], tmp_path / name / "js"),
        tmp_path / name, p["client"]) for name, p in zip(names, ports, strict=True)]
    admin = secret_data(one(docs, "Secret", "interlock-admin"))["INTERLOCK_NATS_PASSWORD"]
    replicas = int(one(docs, "ConfigMap", "interlock-provision")["data"][
        "INTERLOCK_STREAM_REPLICAS"])
    urls = ",".join(n.url for n in nodes)
    try:
        await asyncio.gather(*(n.start() for n in nodes[:2]))
        caplog.set_level(logging.INFO, logger=provision.log.name)
        job = asyncio.create_task(provision.provision(
            urls, natsconf.ADMIN_USER, admin, replicas, timeout=120,
            executor_layout=one(docs, "ConfigMap", "interlock-provision")["data"][
                "INTERLOCK_EXECUTOR_CONSUMERS"]))
        # It has tried and is waiting (not failed, not done with fewer replicas).
        for _ in range(600):
            if any("not ready yet" in r.getMessage() for r in caplog.records) or job.done():
                break
            await asyncio.sleep(0.05)
        assert not job.done(), job.exception() if job.done() else None
        await nodes[2].start()
        await asyncio.wait_for(job, 120)

        nc = await nats.connect([n.url for n in nodes], user=natsconf.ADMIN_USER,
                                password=admin)
        try:
            js = nc.jetstream()
            for stream in (S.EVENTS_STREAM, S.SEALED_STREAM):
                info = await js.stream_info(stream)
                assert info.config.num_replicas == 3
                assert info.cluster is not None
                peers = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
                assert peers == set(names), stream
        finally:
            await nc.close()
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
