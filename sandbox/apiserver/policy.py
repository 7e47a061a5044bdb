"""What an operator's writes meet beyond plain storage: the Eviction API with
PodDisruptionBudgets (what `kubectl drain` uses), SelfSubjectAccessReview (`kubectl auth can-i`),
and a test hook that delays the answer to a write after it was stored.

The slow-write hook exists so tests can kill a client after the cluster applied its call and
before the client heard back: an object annotated `sandbox.interlock.dev/slow-write-seconds: "N"`
gets every non-dry-run write to it (including its scale subresource) answered N seconds late."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from sandbox.apiserver import protowire
from sandbox.apiserver.paths import Target, parse_path
from sandbox.controllers.disruption import PDBS, budget_status, ready
from sandbox.state import gc
from sandbox.state.errors import ApiError, bad_request
from sandbox.state.resources import by_plural
from sandbox.state.selectors import labels_match, selector_from_spec
from sandbox.state.store import Store

SLOW_WRITE = "sandbox.interlock.dev/slow-write-seconds"
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
PODS = by_plural("", "pods")

# The sandbox's one user may do everything except what the design keeps from any agent.
_DENIED: tuple[tuple[str, str, str], ...] = (
    # (group, resource, verb); "*" matches any
    ("", "pods/exec", "*"),
    ("", "pods/attach", "*"),
    ("", "pods/portforward", "*"),
    ("", "secrets", "get"),
    ("", "secrets", "watch"),
    ("*", "*", "impersonate"),
    ("*", "*", "escalate"),
    ("*", "*", "bind"),
)


async def evict(store: Store, request: web.Request, t: Target, dry_run: bool) -> web.Response:
    """POST pods/<name>/eviction: refused with 429 while a budget allows no disruption."""
    raw = await request.read()
    body = json.loads(raw) if raw.strip() else {}
    pod = store.must_get(PODS, t.namespace, t.name)
    for pdb in store.list(PDBS, t.namespace):
        reqs = selector_from_spec((pdb.get("spec") or {}).get("selector"))
        if not labels_match(reqs, pod["metadata"].get("labels")):
            continue
        status = budget_status(store, pdb)
        if ready(pod) and status["disruptionsAllowed"] < 1:
            raise ApiError(429, "TooManyRequests",
                           "Cannot evict pod as it would violate the pod's disruption budget.",
                           causes=[{"reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} "
                                               f"needs {status['desiredHealthy']} healthy pods "
                                               f"and has {status['currentHealthy']} currently"}])
    dry_run = dry_run or "All" in ((body.get("deleteOptions") or {}).get("dryRun") or [])
    if not dry_run:
        gc.delete(store, PODS, pod)
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, status=201)


def _matches(pattern: str, value: str) -> bool:
    return pattern in ("*", value)


ROLES = by_plural("rbac.authorization.k8s.io", "roles")
ROLE_BINDINGS = by_plural("rbac.authorization.k8s.io", "rolebindings")
CLUSTER_ROLES = by_plural("rbac.authorization.k8s.io", "clusterroles")
CLUSTER_ROLE_BINDINGS = by_plural("rbac.authorization.k8s.io", "clusterrolebindings")


def _subject_matches(subject: dict[str, Any], user: str, groups: list[str]) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user)
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        return user == f"system:serviceaccount:{subject.get('namespace', '')}:{name}"
    return False


def _rule_allows(rule: dict[str, Any], group: str, resource: str, verb: str,
                 name: str) -> bool:
    resources = rule.get("resources") or []
    sub = resource.partition("/")[2]
    return (
        any(_matches(v, verb) for v in rule.get("verbs") or [])
        and any(_matches(g, group) for g in rule.get("apiGroups") or [])
        and any(r in ("*", resource) or (sub and r == f"*/{sub}")
                for r in resources)
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
    )


def rbac_decision(store: Store, user: str, groups: list[str], attrs: dict[str, Any]
                  ) -> tuple[bool, str]:
    """What the stored Roles, ClusterRoles and their bindings grant `user` (RBAC semantics:
    additive, no deny). Used for impersonated access reviews (`kubectl auth can-i --as=...`)."""
    resource = attrs.get("resource", "")
    if attrs.get("subresource"):
        resource = f"{resource}/{attrs['subresource']}"
    group, verb, name = attrs.get("group", ""), attrs.get("verb", ""), attrs.get("name", "")
    namespace = attrs.get("namespace", "")
    bindings = [(b, "") for b in store.list(CLUSTER_ROLE_BINDINGS)]
    if namespace:
        bindings += [(b, namespace) for b in store.list(ROLE_BINDINGS, namespace)]
    for binding, ns in bindings:
        if not any(_subject_matches(s, user, groups) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        role = (store.get(CLUSTER_ROLES, "", ref.get("name", "")) if ref.get("kind") ==
                "ClusterRole" else store.get(ROLES, ns, ref.get("name", "")) if ns else None)
        for rule in (role or {}).get("rules") or []:
            if _rule_allows(rule, group, resource, verb, name):
                kind = "RoleBinding" if ns else "ClusterRoleBinding"
                return True, (f'RBAC: allowed by {kind} "{binding["metadata"]["name"]}" of '
                              f'{ref.get("kind")} "{ref.get("name")}"')
    return False, ""


def _impersonated(request: web.Request) -> tuple[str, list[str]] | None:
    user = request.headers.get("Impersonate-User")
    if not user:
        return None
    groups = request.headers.getall("Impersonate-Group", [])
    if user.startswith("system:serviceaccount:"):
        ns = user.split(":")[2]
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    return user, [*groups, "system:authenticated"]


async def access_review(request: web.Request, store: Store | None = None) -> web.Response:
    """POST selfsubjectaccessreviews: answers for the sandbox's single (powerful) user, or —
    impersonated (`kubectl auth can-i --as=USER [--as-group=G]`) — from the stored RBAC."""
    if request.method != "POST":
        raise ApiError(405, "MethodNotAllowed", "only create is supported")
    raw = await request.read()
    try:
        if raw.startswith(protowire.MAGIC):  # kubectl sends this typed request as protobuf
            review = protowire.self_subject_access_review(protowire.unwrap(raw)[2])
        else:
            review = json.loads(raw)
        attrs = review["spec"]["resourceAttributes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise bad_request("spec.resourceAttributes is required") from exc
    resource = attrs.get("resource", "")
    if attrs.get("subresource"):
        resource = f"{resource}/{attrs['subresource']}"
    group, verb = attrs.get("group", ""), attrs.get("verb", "")
    who = _impersonated(request)
    if who is not None and store is not None:
        allowed, why = rbac_decision(store, who[0], who[1], attrs)
        return web.json_response({**review, "apiVersion": "authorization.k8s.io/v1",
                                  "kind": "SelfSubjectAccessReview",
                                  "status": {"allowed": allowed, **({"reason": why} if why
                                                                    else {})}}, status=201)
    denied = any(_matches(g, group) and _matches(r, resource) and _matches(v, verb)
                 for g, r, v in _DENIED)
    status: dict[str, Any] = {"allowed": not denied}
    if denied:
        status["denied"] = True
        status["reason"] = f"sandbox policy: {verb} on {resource or '*'} is not granted"
    else:
        status["reason"] = "sandbox user may do this"
    return web.json_response({**review, "apiVersion": "authorization.k8s.io/v1",
                              "kind": "SelfSubjectAccessReview", "status": status}, status=201)


async def delay_write(store: Store, request: web.Request, response: web.StreamResponse) -> None:
    """Holds the answer to a stored write on an object annotated with SLOW_WRITE."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or "All" in \
            request.query.getall("dryRun", []) or not 200 <= response.status < 300:
        return
    t = parse_path(request.path)
    if t is None or not t.name:
        return
    obj = store.get(t.rt, t.namespace, t.name)
    if obj is None and isinstance(response, web.Response) and response.body:
        try:  # a delete: the object is gone, its last state is in the answer
            obj = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except ValueError:
            obj = None
    seconds = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(SLOW_WRITE)
    if seconds:
        await asyncio.sleep(float(seconds))
