"""GET /v1/clusters through the real gateway over a real nats-server (issue 21): any signed-in
role may ask; the rows come from the executors' presence beats in KV_CLUSTERS, which the
gateway reads with its own NATS identity."""

from __future__ import annotations

from services.runtime import presence
from services.runtime.bus import Bus
from tests.integration.gateway.conftest import Gateway


async def test_the_executor_listed_connected_once_it_beats(gateway: Gateway) -> None:
    viewer = gateway.client("viewer")
    status, body = await viewer.call("GET", "/v1/clusters")
    assert status == 200, body
    # Without INTERLOCK_CLUSTERS: the one executor of before, named "", not yet seen.
    assert body == {"clusters": [{"name": "", "default": True, "connected": False,
                                  "last_seen": None, "roles": [], "version": "",
                                  "contexts": []}]}
    executor = await Bus.connect(gateway.bus_settings("executor"), "executor")
    try:
        await presence.beat(executor, presence.ClusterStatus(
            cluster="", role="all", version="9.9.9", contexts=("sandbox",)))
    finally:
        await executor.close()
    status, body = await viewer.call("GET", "/v1/clusters")
    assert status == 200, body
    [row] = body["clusters"]
    assert (row["connected"], row["roles"], row["version"], row["contexts"]) == (
        True, ["all"], "9.9.9", ["sandbox"])
    assert row["last_seen"].endswith("Z")


async def test_the_clusters_served_in_order_the_first_the_default(gateway: Gateway) -> None:
    gateway.api.clusters = ("a", "arn:aws:eks:eu-west-1:1:cluster/b")
    status, body = await gateway.client("operator").call("GET", "/v1/clusters")
    assert status == 200, body
    assert [(c["name"], c["default"], c["connected"]) for c in body["clusters"]] == [
        ("a", True, False), ("arn:aws:eks:eu-west-1:1:cluster/b", False, False)]
