"""Watch streams: the client's Watch helper, WatchList with the initial-events bookmark that
`kubectl rollout status` and `kubectl wait` need, resuming from a resourceVersion, and open
watches that must not hold up shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from kubernetes import client as k8s
from kubernetes import watch

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural
from tests.integration.sandbox.conftest import Call, Kubectl, eventually

PODS = by_plural("", "pods")
CONFIGMAPS = by_plural("", "configmaps")


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        line = await asyncio.wait_for(resp.content.readline(), 10)
        assert line, "stream ended"
        out.append(json.loads(line))
    return out


async def test_watch_list_sends_initial_events_then_the_bookmark(sandbox: Sandbox) -> None:
    query = (
        "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true&labelSelector=app%3Dweb"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sandbox.url}/api/v1/namespaces/shop/pods?{query}") as resp,
    ):
        assert resp.status == 200
        events = await read_events(resp, 4)
        assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
        bookmark = events[3]["object"]
        assert bookmark["kind"] == "Pod"
        assert bookmark["apiVersion"] == "v1"
        assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert int(bookmark["metadata"]["resourceVersion"]) >= max(
            int(e["object"]["metadata"]["resourceVersion"]) for e in events[:3]
        )
        # Live events follow: deleting a pod yields DELETED for it.
        victim = events[0]["object"]["metadata"]["name"]
        sandbox.api.delete_object(PODS, sandbox.store.must_get(PODS, "shop", victim))
        (deleted,) = await read_events(resp, 1)
        assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", victim)


async def test_watch_resumes_from_a_resource_version(sandbox: Sandbox) -> None:
    rv = sandbox.store.resource_version
    sandbox.store.create(CONFIGMAPS, {"metadata": {"name": "a", "namespace": "shop"}})
    sandbox.store.create(CONFIGMAPS, {"metadata": {"name": "b", "namespace": "shop"}})
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{sandbox.url}/api/v1/namespaces/shop/configmaps?watch=1&resourceVersion={rv}"
        ) as resp,
    ):
        events = await read_events(resp, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "a"),
            ("ADDED", "b"),
        ]


async def test_watch_with_field_selector_on_name(sandbox: Sandbox) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{sandbox.url}/apis/apps/v1/namespaces/shop/deployments"
            "?watch=true&fieldSelector=metadata.name%3Dweb&timeoutSeconds=5"
        ) as resp,
    ):
        (added,) = await read_events(resp, 1)
        assert added["object"]["metadata"]["name"] == "web"


async def test_client_watch_helper_sees_scale_up(
    sandbox: Sandbox, api_client: k8s.ApiClient, call: Call
) -> None:
    core = k8s.CoreV1Api(api_client)

    def collect() -> set[str]:
        names: set[str] = set()
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, "shop", timeout_seconds=10):
            pod = event["object"]
            assert isinstance(pod, k8s.V1Pod)
            names.add(pod.metadata.name)
            if len(names) == 5:
                w.stop()
        return names

    collector = asyncio.create_task(call(collect))
    await eventually(lambda: sandbox.api.open_watches > 0)
    await call(
        k8s.AppsV1Api(api_client).patch_namespaced_deployment_scale,
        "web",
        "shop",
        {"spec": {"replicas": 5}},
    )
    names = await collector
    assert names == {p["metadata"]["name"] for p in sandbox.store.list(PODS, "shop")}


async def test_kubectl_wait_uses_watchlist(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = await kubectl.ok(
        "wait", "--for=condition=Available", "deploy/web", "-n", "shop", "--timeout=20s"
    )
    assert out.strip() == "deployment.apps/web condition met"


async def test_stop_ends_open_watches_promptly() -> None:
    sandbox = Sandbox(["baseline"], time_scale=0.02)
    await sandbox.start()
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{sandbox.url}/api/v1/pods?watch=true")
        await read_events(resp, 1)
        await asyncio.wait_for(sandbox.stop(), 5)
        rest = await asyncio.wait_for(resp.content.read(), 5)
        resp.release()
    assert sandbox.api.open_watches == 0
    assert isinstance(rest, bytes)


async def test_a_client_that_hangs_up_does_not_break_the_server(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{sandbox.url}/api/v1/pods?watch=true")
        await read_events(resp, 1)
        resp.close()
    sandbox.store.create(CONFIGMAPS, {"metadata": {"name": "poke", "namespace": "shop"}})
    await eventually(lambda: sandbox.api.open_watches == 0)
    async with aiohttp.ClientSession() as http, http.get(f"{sandbox.url}/api/v1/pods") as r:
        assert r.status == 200


async def test_objects_leaving_a_label_selector_arrive_as_deleted(sandbox: Sandbox) -> None:
    sandbox.store.create(
        CONFIGMAPS, {"metadata": {"name": "x", "namespace": "shop", "labels": {"tier": "a"}}}
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{sandbox.url}/api/v1/namespaces/shop/configmaps?watch=true&labelSelector=tier%3Da"
        ) as resp,
    ):
        (added,) = await read_events(resp, 1)
        assert added["type"] == "ADDED"
        cm = sandbox.store.must_get(CONFIGMAPS, "shop", "x")
        cm["metadata"]["labels"]["tier"] = "b"
        moved = sandbox.store.update(CONFIGMAPS, cm)
        cm["metadata"]["labels"]["tier"] = "a"
        sandbox.store.update(CONFIGMAPS, cm, check_rv=False)
        left, back = await read_events(resp, 2)
        assert (left["type"], left["object"]["metadata"]["labels"]) == ("DELETED", {"tier": "a"})
        assert left["object"]["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
        assert back["type"] == "ADDED"
