"""Scenario files: YAML documents with Kubernetes objects plus what a manifest cannot say
(how old things are, what containers log, events that already happened).

    name: payment-oom
    description: ...
    age: 2h                      # default age of the objects (creationTimestamp backdated)
    objects: [ ...manifests... ] # annotation sandbox.interlock.dev/age overrides per object;
                                 # ownerReferences may give kind+name only
    logs:   [ {namespace, selector: {labels}, container?, image?, lines: [...],
               previous: [...]} ]  # the first entry that matches a container wins
    events: [ {namespace, involvedObject: {kind, name}, type, reason, message,
               count?, firstSeen?, lastSeen?} ]   # ages like 20m
    history: [ {namespace, deployment, age, change-cause?, patch: {template changes}} ]
                                 # earlier rollouts, oldest first (revisions 1..n)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sandbox.controllers.core import (
    CHANGE_CAUSE,
    DEPLOYMENTS,
    HASH_LABEL,
    REPLICASETS,
    REVISION,
    owner_ref,
    template_hash,
)
from sandbox.controllers.events import Recorder
from sandbox.controllers.telemetry import LogBook, LogSpec
from sandbox.state import schema
from sandbox.state.defaults import apply_defaults, validate
from sandbox.state.errors import ApiError
from sandbox.state.patch import strategic_merge
from sandbox.state.resources import by_kind
from sandbox.state.selectors import selector_from_spec
from sandbox.state.store import Obj, Store
from sandbox.state.timeutil import ago, iso, parse_duration

SCENARIO_DIR = Path(__file__).parent  # the YAML files live beside the loader
CLUSTER = "cluster"
AGE_ANNOTATION = "sandbox.interlock.dev/age"


class ScenarioError(Exception):
    """A scenario name that does not exist, or a file that does not load."""


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml") if p.stem != CLUSTER)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, mtime: float) -> dict[str, Any]:
    doc = yaml.load(path.read_text(), Loader=_LOADER)
    if not isinstance(doc, dict):
        raise ScenarioError(f"scenario {path.stem!r} is not a mapping")
    return doc


def read(name: str) -> dict[str, Any]:
    """A scenario document (a private copy: callers may mutate it)."""
    path = SCENARIO_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ScenarioError(f"unknown scenario {name!r}; available: {', '.join(available())}")
    return copy.deepcopy(_parsed(path, path.stat().st_mtime))


class Loader:
    def __init__(
        self, store: Store, logbook: LogBook, recorder: Recorder, allocate_ip: Callable[[], str]
    ) -> None:
        self.store = store
        self.logbook = logbook
        self.recorder = recorder
        self.allocate_ip = allocate_ip

    def load(self, name: str) -> None:
        doc = read(name)
        default_age = parse_duration(doc.get("age", "2h"))
        for obj in doc.get("objects") or []:
            self._object(name, obj, default_age)
        for revision, entry in enumerate(doc.get("history") or [], start=1):
            self._revision(name, revision, entry)
        for spec in doc.get("logs") or []:
            self.logbook.add(
                LogSpec(
                    namespace=spec["namespace"],
                    selector=selector_from_spec({"matchLabels": spec.get("selector") or {}}),
                    container=spec.get("container"),
                    image=spec.get("image"),
                    lines=[str(x) for x in spec.get("lines") or []],
                    previous=[str(x) for x in spec.get("previous") or []],
                )
            )

    def load_events(self, name: str) -> None:
        """Events refer to objects by kind and name, so they load after everything else."""
        for ev in read(name).get("events") or []:
            inv = ev["involvedObject"]
            rt = by_kind(inv.get("apiVersion", _guess_api_version(inv["kind"])), inv["kind"])
            if rt is None:
                raise ScenarioError(f"{name}: unknown kind {inv['kind']!r} in events")
            target = self.store.get(
                rt, ev.get("namespace", "") if rt.namespaced else "", inv["name"]
            )
            if target is None:
                raise ScenarioError(
                    f"{name}: event refers to missing {inv['kind']} {inv['name']!r}"
                )
            count = int(ev.get("count", 1))
            self.recorder.record(
                target,
                ev.get("type", "Normal"),
                ev["reason"],
                ev["message"],
                component=ev.get("source", "sandbox"),
                count=count,
                first=ago(parse_duration(ev.get("firstSeen", ev.get("lastSeen", "1m")))),
                last=ago(parse_duration(ev.get("lastSeen", "1m"))),
            )

    def _revision(self, scenario: str, revision: int, entry: dict[str, Any]) -> None:
        """An earlier rollout of a Deployment: a ReplicaSet scaled to zero whose template is
        the current one with `patch` (strategic merge) applied, so `rollout history` lists it
        and `rollout undo` returns to it."""
        d = self.store.get(DEPLOYMENTS, entry["namespace"], entry["deployment"])
        if d is None:
            raise ScenarioError(
                f"{scenario}: history names a missing Deployment "
                f"{entry['namespace']}/{entry['deployment']}"
            )
        template = strategic_merge(copy.deepcopy(d["spec"]["template"]), entry.get("patch") or {})
        thash = template_hash(template)
        template["metadata"].setdefault("labels", {})[HASH_LABEL] = thash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = thash
        annotations = {
            REVISION: str(revision),
            "deployment.kubernetes.io/desired-replicas": str(d["spec"].get("replicas", 1)),
        }
        if entry.get("change-cause"):
            annotations[CHANGE_CAUSE] = entry["change-cause"]
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{entry['deployment']}-{thash}",
                "namespace": entry["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref(d)],
                "creationTimestamp": iso(ago(parse_duration(entry.get("age", "30d")))),
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0, "observedGeneration": 1},
        }
        apply_defaults(REPLICASETS, rs)
        self.store.create(REPLICASETS, rs)

    def _object(self, scenario: str, obj: Obj, default_age: float) -> None:
        rt = by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rt is None:
            raise ScenarioError(
                f"{scenario}: unknown kind {obj.get('apiVersion')}/{obj.get('kind')}"
            )
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        age = parse_duration(annotations.pop(AGE_ANNOTATION, default_age))
        if not annotations:
            meta.pop("annotations", None)
        meta["creationTimestamp"] = iso(ago(age))
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        if rt.namespaced and not namespace:
            raise ScenarioError(f"{scenario}: {rt.kind} {meta.get('name')!r} has no namespace")
        if self.store.get(rt, namespace, meta.get("name", "")) is not None:
            if rt.kind == "Namespace":
                return  # scenarios that share a namespace each declare it
            raise ScenarioError(
                f"{scenario}: {rt.kind} {namespace}/{meta.get('name')} is defined twice"
            )
        for ref in meta.get("ownerReferences") or []:
            owner_rt = by_kind(ref.get("apiVersion", _guess_api_version(ref["kind"])), ref["kind"])
            owner = self.store.get(owner_rt, namespace, ref["name"]) if owner_rt else None
            if owner is None:
                raise ScenarioError(
                    f"{scenario}: owner {ref['kind']} {ref['name']!r} must be "
                    "listed before its dependents"
                )
            ref.setdefault("apiVersion", owner["apiVersion"])
            ref.setdefault("uid", owner["metadata"]["uid"])
            ref.setdefault("controller", True)
            ref.setdefault("blockOwnerDeletion", True)
        given_status = obj.get("status")
        apply_defaults(rt, obj, self.allocate_ip() if rt.kind == "Service" else "")
        validate(rt, obj)
        if given_status is not None:
            obj["status"] = given_status
        try:
            schema.check(rt, obj, "Strict")  # a typo in a scenario file fails loudly
        except ApiError as exc:
            raise ScenarioError(f"{scenario}: {exc.message}") from exc
        self.store.create(rt, obj)


_GUESS = {
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


def _guess_api_version(kind: str) -> str:
    return _GUESS.get(kind, "v1")
