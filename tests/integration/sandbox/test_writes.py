"""Done-when 4 and the write semantics: dryRun=All changes nothing on every write verb,
resourceVersion preconditions give 409, the three patch types, and Status errors."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from sandbox.server import Sandbox
from sandbox.state.resources import by_plural

DEPLOYMENTS = by_plural("apps", "deployments")
PODS = by_plural("", "pods")
WEB = "/apis/apps/v1/namespaces/shop/deployments/web"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"


@pytest.fixture
async def http(sandbox: Sandbox) -> Any:
    async with aiohttp.ClientSession(base_url=sandbox.url) as session:
        yield session


async def send(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    async with http.request(method, path, data=data, headers=headers) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text.startswith("{") else text)


def snapshot(sandbox: Sandbox) -> tuple[str, list[Any]]:
    from sandbox.state.resources import RESOURCES, VIRTUAL_GROUPS

    return sandbox.store.resource_version, [
        sandbox.store.list(rt) for rt in RESOURCES if rt.group not in VIRTUAL_GROUPS
    ]


DRY_WRITES: list[tuple[str, str, Any, str | None]] = [
    ("POST", "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "x"}}, None),
    (
        "POST",
        "/apis/apps/v1/namespaces/shop/deployments",
        {
            "metadata": {"name": "api"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
        "application/json",
    ),
    ("PUT", WEB, "CURRENT", "application/json"),
    ("PATCH", WEB, {"spec": {"replicas": 7}}, SMP),
    ("PATCH", WEB, {"spec": {"replicas": 7}}, MERGE),
    ("PATCH", WEB, [{"op": "replace", "path": "/spec/replicas", "value": 7}], JSONPATCH),
    ("PATCH", WEB + "/scale", {"spec": {"replicas": 7}}, MERGE),
    ("PUT", WEB + "/scale", {"spec": {"replicas": 7}}, None),
    ("PATCH", WEB + "/status", {"status": {"replicas": 9}}, MERGE),
    ("DELETE", WEB, {"propagationPolicy": "Background"}, "application/json"),
    ("DELETE", "/api/v1/namespaces/shop/pods", None, None),
    ("DELETE", "/api/v1/namespaces/shop", None, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "ct"),
    DRY_WRITES,
    ids=[f"{m} {p.rsplit('/', 2)[-2]}/{p.rsplit('/', 1)[-1]} {c}" for m, p, _, c in DRY_WRITES],
)
async def test_dry_run_all_changes_nothing(
    sandbox: Sandbox, http: aiohttp.ClientSession, method: str, path: str, body: Any, ct: str | None
) -> None:
    if body == "CURRENT":
        body = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
        body["spec"]["replicas"] = 7
    before = snapshot(sandbox)
    status, answer = await send(http, method, path + "?dryRun=All", body, ct)
    assert status in (200, 201), answer
    assert snapshot(sandbox) == before
    if method in ("PUT", "PATCH") and "/status" in path:
        assert answer["status"]["replicas"] == 9  # the would-be result, not the stored one
    elif method in ("PUT", "PATCH"):
        assert answer["spec"]["replicas"] == 7


async def test_dry_run_still_validates(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, answer = await send(
        http, "PATCH", WEB + "?dryRun=All", {"spec": {"replicas": -1}}, MERGE
    )
    assert status == 422
    assert answer["reason"] == "Invalid"
    assert answer["details"]["causes"][0]["field"] == "spec.replicas"


async def test_stale_resource_version_conflicts(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    current = sandbox.store.must_get(DEPLOYMENTS, "shop", "web")
    stale = str(int(current["metadata"]["resourceVersion"]) - 1)
    stale_obj = {**current, "metadata": {**current["metadata"], "resourceVersion": stale}}
    attempts = [
        ("PUT", WEB, stale_obj, "application/json"),
        ("PATCH", WEB, {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 1}}, SMP),
        ("PATCH", WEB, {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 1}}, MERGE),
        (
            "PATCH",
            WEB + "/scale",
            {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 1}},
            MERGE,
        ),
        (
            "PUT",
            WEB + "/scale",
            {"metadata": {"resourceVersion": stale, "name": "web"}, "spec": {"replicas": 1}},
            None,
        ),
        ("DELETE", WEB, {"preconditions": {"resourceVersion": stale}}, "application/json"),
    ]
    for method, path, body, ct in attempts:
        for dry in ("", "?dryRun=All"):
            status, answer = await send(http, method, path + dry, body, ct)
            assert (status, answer["reason"]) == (409, "Conflict"), (method, path, dry)
            assert answer["message"] == (
                'Operation cannot be fulfilled on deployments.apps "web": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web") == current

    fresh = current["metadata"]["resourceVersion"]
    status, answer = await send(
        http,
        "PATCH",
        WEB + "/scale",
        {"metadata": {"resourceVersion": fresh}, "spec": {"replicas": 2}},
        MERGE,
    )
    assert (status, answer["spec"]["replicas"]) == (200, 2)


async def test_patch_types(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    # Strategic merge: containers merge by name, env by name, null deletes.
    status, d = await send(
        http,
        "PATCH",
        WEB,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "1"}]}]}
                }
            }
        },
        SMP,
    )
    assert status == 200
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert (c["image"], c["env"]) == ("nginx:1.27", [{"name": "A", "value": "1"}])
    status, d = await send(
        http,
        "PATCH",
        WEB,
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "web"}],
                        "containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}],
                    }
                }
            }
        },
        SMP,
    )
    assert [e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]] == ["A", "B"]
    # Merge patch: lists are replaced whole.
    status, d = await send(
        http,
        "PATCH",
        WEB,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}},
        MERGE,
    )
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert "env" not in c
    assert c["image"] == "nginx:1.28"
    # JSON patch, including a failing test op (422) that changes nothing.
    status, d = await send(
        http,
        "PATCH",
        WEB,
        [
            {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
            {"op": "replace", "path": "/spec/replicas", "value": 2},
        ],
        JSONPATCH,
    )
    assert (status, d["metadata"]["labels"]["tier"], d["spec"]["replicas"]) == (200, "front", 2)
    status, d = await send(
        http,
        "PATCH",
        WEB,
        [
            {"op": "test", "path": "/spec/replicas", "value": 99},
            {"op": "replace", "path": "/spec/replicas", "value": 5},
        ],
        JSONPATCH,
    )
    assert status == 422
    assert sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["spec"]["replicas"] == 2
    # Server-side apply is not supported: 415, as the notes prescribe.
    status, d = await send(http, "PATCH", WEB, {"spec": {}}, "application/apply-patch+yaml")
    assert (status, d["reason"]) == (415, "UnsupportedMediaType")


async def test_generation_tracks_spec_changes_only(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    _, d = await send(http, "PATCH", WEB, {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert d["metadata"]["generation"] == 1
    _, d = await send(http, "PATCH", WEB, {"spec": {"replicas": 4}}, MERGE)
    assert d["metadata"]["generation"] == 2
    await sandbox.wait_for(
        lambda: (
            sandbox.store.must_get(DEPLOYMENTS, "shop", "web")["status"].get("observedGeneration")
            == 2
        )
    )


async def test_status_errors(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, body = await send(http, "GET", "/apis/apps/v1/namespaces/shop/deployments/nope")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "nope" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "nope", "group": "apps", "kind": "deployments"},
    }
    status, body = await send(
        http, "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}}
    )
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')
    status, body = await send(
        http, "POST", "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "web-config"}}
    )
    assert (status, body["reason"], body["message"]) == (
        409,
        "AlreadyExists",
        'configmaps "web-config" already exists',
    )
    status, body = await send(
        http, "POST", "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "Bad_Name"}}
    )
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: ')
    status, body = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}},
    )
    assert (status, body["reason"]) == (400, "BadRequest")
    async with http.post("/api/v1/namespaces/shop/configmaps", data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["reason"] == "BadRequest"
    status, body = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/secrets",
        {"metadata": {"name": "s"}, "data": {"k": "not base64!"}},
    )
    assert (status, body["reason"]) == (400, "BadRequest")
    assert "illegal base64 data in data.k" in body["message"]
    status, body = await send(http, "GET", "/api/v1/namespaces/shop/pods/x/exec")
    assert status == 404
    status, body = await send(http, "GET", "/apis/apps/v1/namespaces/shop/deployments/web/log")
    assert status == 404


async def test_post_without_content_type_and_generate_name(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, body = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/configmaps",
        {"metadata": {"generateName": "cfg-"}},
        content_type=None,
    )
    assert status == 201
    assert body["kind"] == "ConfigMap"
    assert body["apiVersion"] == "v1"
    assert body["metadata"]["name"].startswith("cfg-")
    assert len(body["metadata"]["name"]) == 9


async def test_defaults_are_applied(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, d = await send(
        http,
        "POST",
        "/apis/apps/v1/namespaces/shop/deployments",
        {
            "metadata": {"name": "api"},
            "spec": {
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {
                        "containers": [
                            {"name": "api", "image": "api", "ports": [{"containerPort": 80}]}
                        ]
                    },
                },
            },
        },
    )
    assert status == 201
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    pod = spec["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["terminationGracePeriodSeconds"]) == (
        "Always",
        "ClusterFirst",
        30,
    )
    c = pod["containers"][0]
    assert c["imagePullPolicy"] == "Always"  # no tag means :latest
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    status, s = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/services",
        {
            "metadata": {"name": "api"},
            "spec": {"selector": {"app": "api"}, "ports": [{"port": 8080}]},
        },
    )
    assert s["spec"]["ports"] == [{"port": 8080, "protocol": "TCP", "targetPort": 8080}]
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["clusterIP"].startswith("10.96.")


async def test_unknown_fields_are_dropped_and_reported(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    body = {"metadata": {"name": "typo"}, "data": {"a": "1"}, "dta": {"b": "2"}}
    async with http.post("/api/v1/namespaces/shop/configmaps", json=body) as resp:
        assert resp.status == 201
        assert resp.headers.getall("Warning") == ['299 - "unknown field \\"dta\\""']
        assert "dta" not in await resp.json()
    stored = sandbox.store.must_get(by_plural("", "configmaps"), "shop", "typo")
    assert "dta" not in stored  # the client's models refuse extra keys: never store them
    status, answer = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/configmaps?fieldValidation=Strict",
        {"metadata": {"name": "typo2"}, "dta": {}},
    )
    assert (status, answer["reason"]) == (400, "BadRequest")
    assert answer["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
        'strict decoding error: unknown field "dta"'
    )


async def test_wrong_types_and_missing_fields(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, answer = await send(http, "PATCH", WEB, {"spec": {"replicas": "three"}}, MERGE)
    assert (status, answer["reason"]) == (400, "BadRequest")
    assert "spec.replicas" in answer["message"]
    status, answer = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/services",
        {"metadata": {"name": "noport"}, "spec": {"ports": [{"name": "http"}]}},
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["details"]["causes"][0]["field"] == "spec.ports[0].port"


async def test_update_rules(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    status, answer = await send(
        http,
        "PATCH",
        WEB,
        {
            "spec": {
                "selector": {"matchLabels": {"app": "web", "x": "y"}},
                "template": {"metadata": {"labels": {"x": "y"}}},
            }
        },
        SMP,
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["details"]["causes"][0] == {
        "reason": "FieldValueInvalid",
        "field": "spec.selector",
        "message": "Invalid value: field is immutable",
    }
    pod = sandbox.store.list(PODS, "shop")[0]["metadata"]["name"]
    path = f"/api/v1/namespaces/shop/pods/{pod}"
    status, answer = await send(
        http,
        "PATCH",
        path,
        {"spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "1"}]}]}},
        SMP,
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    assert "pod updates may not change fields other than" in answer["message"]
    status, answer = await send(
        http, "PATCH", path, {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}, SMP
    )
    assert status == 200
    assert answer["spec"]["containers"][0]["image"] == "nginx:1.28"


async def test_logs_of_a_multi_container_pod_need_a_container(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, _ = await send(
        http,
        "POST",
        "/api/v1/namespaces/shop/pods",
        {
            "metadata": {"name": "duo"},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1"},
                    {"name": "proxy", "image": "envoy:1"},
                ]
            },
        },
    )
    assert status == 201
    await sandbox.wait_for(
        lambda: all(
            "running" in cs["state"]
            for cs in sandbox.store.must_get(PODS, "shop", "duo")["status"].get(
                "containerStatuses", [{"state": {}}]
            )
        )
    )
    status, answer = await send(http, "GET", "/api/v1/namespaces/shop/pods/duo/log")
    assert (status, answer["message"]) == (
        400,
        "a container name must be specified for pod duo, choose one of: [app proxy]",
    )
    status, text = await send(http, "GET", "/api/v1/namespaces/shop/pods/duo/log?container=proxy")
    assert status == 200
    assert "INFO starting proxy (envoy:1)" in text
