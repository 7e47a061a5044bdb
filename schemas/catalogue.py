"""The tool catalogue: every call the planner may propose, its argument type and its access.

The gate classifies from this table alone and fails closed: a tool that is not here, or args that
do not convert to the tool's type, are never a read. The planner hands each tool's JSON Schema to
the LLM, so every field is bounded and every name validated here, not in the executor.

Deliberately absent (see ABSENT): exec, port-forward, attach, and any way to read a Secret's
values (a Secret's keys may be listed; its values are redacted by the executor).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal, get_args

import msgspec

from schemas.base import Target

Access = Literal["read", "write"]
# Kubernetes names: DNS-1123 subdomain, bounded.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
Namespace = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
# Container names are DNS-1123 labels.
ContainerName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
Selector = Annotated[str, msgspec.Meta(max_length=1_000)]
# A name, or "" where a `selector` picks the objects instead (`kubectl delete pods -l app=web`).
NameOrNone = Annotated[str, msgspec.Meta(pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$")]
Replicas = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Image = Annotated[
    str, msgspec.Meta(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
]
# A resource.Quantity as people write them: 250m, 0.5, 512Mi, 2Gi, 1e3.
Quantity = Annotated[
    str,
    msgspec.Meta(max_length=64, pattern=r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"),
]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]{0,252}$")]
EnvValue = Annotated[str, msgspec.Meta(max_length=32_768)]
# Label and annotation keys: an optional DNS prefix, then a name segment.
MetaKey = Annotated[
    str,
    msgspec.Meta(
        max_length=317,
        pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    ),
]
LabelValue = Annotated[
    str, msgspec.Meta(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
]
AnnotationValue = Annotated[str, msgspec.Meta(max_length=65_536)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=3_600)]
Revision = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
TailLines = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
# A manifest or patch body is JSON (the planner converts YAML). Bounded in keys at the top level;
# the executor also bounds its encoded size.
Body = Annotated[dict[str, Any], msgspec.Meta(min_length=1, max_length=64)]
MAX_BODY_BYTES = 256 * 1024

Kind = Literal[
    "pod",
    "deployment",
    "replicaset",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "service",
    "endpoints",
    "configmap",
    "secret",
    "serviceaccount",
    "persistentvolumeclaim",
    "persistentvolume",
    "horizontalpodautoscaler",
    "poddisruptionbudget",
    "namespace",
    "node",
    "event",
    "role",
    "rolebinding",
    "clusterrole",
    "clusterrolebinding",
]
ScalableKind = Literal["deployment", "statefulset", "replicaset"]
# Kinds with a pod template that a rollout replaces.
WorkloadKind = Literal["deployment", "statefulset", "daemonset"]
# Kinds whose containers set_image/set_resources/set_env can change.
PodSpecKind = Literal["deployment", "statefulset", "daemonset", "replicaset", "job", "cronjob"]
CLUSTER_SCOPED: frozenset[str] = frozenset(
    {"namespace", "node", "persistentvolume", "clusterrole", "clusterrolebinding"}
)
Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
# A resource as RBAC names it: plural, optional subresource (pods/log, deployments/scale).
RbacResource = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9]{0,62}(/[a-z]{1,32})?$")]
RbacGroup = Annotated[str, msgspec.Meta(max_length=253, pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")]

# Named here so a test can prove they never enter the catalogue.
ABSENT: frozenset[str] = frozenset(
    {"exec", "port_forward", "attach", "cp", "proxy", "get_secret_value", "auth_token"}
)


# -- label selectors ---------------------------------------------------------------------------

# (key, op, values); op is one of = != in notin exists !exists (as the API server has them).
Requirement = tuple[str, str, tuple[str, ...]]
_KEY_RE = re.compile(get_args(MetaKey)[1].pattern)
_VALUE_RE = re.compile(get_args(LabelValue)[1].pattern)
_SET_RE = re.compile(r"^(.+?)\s+(in|notin)\s*\((.*)\)$")


def _top_level(text: str) -> list[str]:
    """Split on the commas outside `in (…)` parentheses."""
    parts, cur, depth = [], "", 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise ValueError("unbalanced parentheses")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError("unbalanced parentheses")
    return [*parts, cur]


def _key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"{key!r} is not a valid label key")
    return key


def _value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid label value")
    return value


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """A label selector as kubectl and the API server take it: `key=value` (or `==`), `key!=value`,
    `key in (a,b)`, `key notin (a,b)`, `key` (exists), `!key` (does not exist), comma-separated
    (all must hold). Raises ValueError saying what is wrong: a selector that is not understood
    must never select something else."""
    out: list[Requirement] = []
    for raw in _top_level(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"an empty requirement in {text!r}")
        if m := _SET_RE.match(part):
            values = tuple(_value(v.strip()) for v in m.group(3).split(","))
            if not any(values):
                raise ValueError(f"{part!r}: the set of values is empty")
            out.append((_key(m.group(1).strip()), m.group(2), values))
        elif part.startswith("!") and "=" not in part:
            out.append((_key(part[1:].strip()), "!exists", ()))
        elif "!=" in part or "=" in part:
            op = "!=" if "!=" in part else "==" if "==" in part else "="
            key, _, value = part.partition(op)
            out.append((_key(key.strip()), "!=" if op == "!=" else "=", (_value(value.strip()),)))
        elif any(ch in part for ch in "<>()"):
            raise ValueError(f"{part!r} is not supported (use =, ==, !=, in, notin, key or !key)")
        else:
            out.append((_key(part), "exists", ()))
    return tuple(out)


def _name_or_selector(args: Any, tool: str) -> None:
    """Exactly one of a name and a selector; a selector write stays in one namespace."""
    if bool(args.name) == bool(args.selector):
        raise ValueError(f"{tool} takes a name or a selector, exactly one")
    if args.selector:
        parse_selector(args.selector)
        if getattr(args, "kind", "pod") in CLUSTER_SCOPED:
            raise ValueError(f"{tool} by selector acts in one namespace; a {args.kind} is "
                             "cluster-scoped: name it")


class Args(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every tool's arguments. `cluster` is a kubeconfig context ("" = current)."""

    cluster: Annotated[str, msgspec.Meta(max_length=253)] = ""

    def target(self) -> Target:
        kind = getattr(self, "kind", "") or ""
        # A read of every namespace is not "in default" (the namespace field's default).
        every = kind in CLUSTER_SCOPED or getattr(self, "all_namespaces", False)
        return Target(
            cluster=self.cluster,
            namespace="" if every else (getattr(self, "namespace", "") or ""),
            kind=kind,
            name=getattr(self, "name", "") or "",
        )


# -- reads -------------------------------------------------------------------------------------


# How a read's answer is printed, as `kubectl -o`: "" is the tool's usual text (JSON for get, a
# table for list); json/yaml the whole (redacted) objects; wide a table with more columns; name
# one kind.group/name per line.
Output = Literal["", "json", "yaml", "wide", "name"]


class GetArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: Name
    namespace: Namespace = "default"
    output: Output = ""


class ListArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    namespace: Namespace = "default"
    all_namespaces: bool = False
    label_selector: Selector = ""
    output: Output = ""
    # `kubectl get deploy,svc`: further kinds listed in the same read, each after `kind`.
    more_kinds: Annotated[tuple[Kind, ...], msgspec.Meta(max_length=8)] = ()


class DescribeArgs(Args, frozen=True, kw_only=True):
    """The object, the events that involve it, and the objects it owns (and their pods)."""

    kind: Kind
    name: Name
    namespace: Namespace = "default"


class LogsArgs(Args, frozen=True, kw_only=True):
    name: NameOrNone = ""  # the pod ("" with a selector)
    namespace: Namespace = "default"
    container: ContainerName | None = None
    tail_lines: TailLines = 200
    previous: bool = False  # the last terminated instance, e.g. before an OOMKill
    # `kubectl logs deploy/web`: `name` is then that workload, and one of its pods is read, chosen
    # as kubectl chooses (ready and running first, then the newest).
    kind: Literal["pod", "deployment", "statefulset", "daemonset", "replicaset", "job"] = "pod"
    # `kubectl logs -l app=web`: the pods the selector matches, each line prefixed with its pod
    # and container as kubectl's --prefix; at most `max_log_requests` pods are read.
    selector: Selector = ""
    max_log_requests: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5

    def __post_init__(self) -> None:
        _name_or_selector(self, "logs")
        if self.selector and self.kind != "pod":
            raise ValueError("logs by selector reads pods: kind must be pod")


class EventsArgs(Args, frozen=True, kw_only=True):
    """Events of a namespace, optionally only those involving one object."""

    namespace: Namespace = "default"
    all_namespaces: bool = False
    kind: Kind | None = None  # of the involved object
    name: Name | None = None  # of the involved object
    warnings_only: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class RolloutStatusArgs(Args, frozen=True, kw_only=True):
    kind: WorkloadKind = "deployment"
    name: Name
    namespace: Namespace = "default"
    # 0 answers at once with the current state; otherwise wait up to this long for completion.
    wait_seconds: Annotated[int, msgspec.Meta(ge=0, le=300)] = 0


class RolloutHistoryArgs(Args, frozen=True, kw_only=True):
    kind: Literal["deployment"] = "deployment"
    name: Name
    namespace: Namespace = "default"
    revision: Revision | None = None  # show this revision's pod template


class TopPodsArgs(Args, frozen=True, kw_only=True):
    namespace: Namespace = "default"
    all_namespaces: bool = False
    label_selector: Selector = ""
    containers: bool = False


class TopNodesArgs(Args, frozen=True, kw_only=True):
    label_selector: Selector = ""


class ClusterInfoArgs(Args, frozen=True, kw_only=True):
    pass


class CanIArgs(Args, frozen=True, kw_only=True):
    """Whether the executor's own identity may do this (a SelfSubjectAccessReview)."""

    verb: Verb
    resource: RbacResource  # plural, e.g. "deployments" or "pods/log"
    group: RbacGroup = ""  # "" is the core group; "apps" for deployments
    namespace: Namespace = "default"
    name: Name | None = None


# -- writes ------------------------------------------------------------------------------------


class ScaleArgs(Args, frozen=True, kw_only=True):
    kind: ScalableKind = "deployment"
    name: NameOrNone = ""  # "" with a selector
    namespace: Namespace = "default"
    replicas: Replicas
    # A label selector instead of a name: every matched object of `kind` in the namespace, as
    # the preview enumerated them (the same for every write that takes one).
    selector: Selector = ""

    def __post_init__(self) -> None:
        _name_or_selector(self, "scale")


class RolloutRestartArgs(Args, frozen=True, kw_only=True):
    kind: WorkloadKind = "deployment"
    name: NameOrNone = ""  # "" with a selector
    namespace: Namespace = "default"
    selector: Selector = ""

    def __post_init__(self) -> None:
        _name_or_selector(self, "rollout_restart")


class RolloutUndoArgs(Args, frozen=True, kw_only=True):
    kind: Literal["deployment"] = "deployment"
    name: Name
    namespace: Namespace = "default"
    to_revision: Revision = 0  # 0: the revision before the current one


class SetImageArgs(Args, frozen=True, kw_only=True):
    kind: PodSpecKind = "deployment"
    name: Name
    namespace: Namespace = "default"
    container: ContainerName
    image: Image


class ResourceValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class SetResourcesArgs(Args, frozen=True, kw_only=True):
    """Requests and/or limits of one container (all containers when `container` is None)."""

    kind: PodSpecKind = "deployment"
    name: Name
    namespace: Namespace = "default"
    container: ContainerName | None = None
    requests: ResourceValues | None = None
    limits: ResourceValues | None = None

    def __post_init__(self) -> None:
        if not any(
            v is not None and (v.cpu is not None or v.memory is not None)
            for v in (self.requests, self.limits)
        ):
            raise ValueError("set_resources needs at least one request or limit")


class SetEnvArgs(Args, frozen=True, kw_only=True):
    """Set and/or remove plain environment variables of one container (all when None)."""

    kind: PodSpecKind = "deployment"
    name: Name
    namespace: Namespace = "default"
    container: ContainerName | None = None
    env: Annotated[dict[EnvName, EnvValue], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=dict
    )
    remove: Annotated[tuple[EnvName, ...], msgspec.Meta(max_length=64)] = ()

    def __post_init__(self) -> None:
        if not self.env and not self.remove:
            raise ValueError("set_env needs `env` or `remove`")
        if set(self.env) & set(self.remove):
            raise ValueError("a variable cannot be both set and removed")


def _check_body(body: dict[str, Any], what: str) -> None:
    if len(msgspec.json.encode(body)) > MAX_BODY_BYTES:
        raise ValueError(f"{what} is larger than {MAX_BODY_BYTES} bytes")


class PatchArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: Name
    namespace: Namespace = "default"
    patch_type: Literal["strategic", "merge"] = "strategic"
    body: Body

    def __post_init__(self) -> None:
        _check_body(self.body, "the patch body")


def _check_manifest(manifest: dict[str, Any]) -> None:
    _check_body(manifest, "the manifest")
    meta = manifest.get("metadata")
    if not isinstance(manifest.get("apiVersion"), str) or not isinstance(
        manifest.get("kind"), str
    ):
        raise ValueError("the manifest needs apiVersion and kind")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ValueError("the manifest needs metadata.name")
    try:
        msgspec.convert(meta["name"], Name)
        if "namespace" in meta:
            msgspec.convert(meta["namespace"], Namespace)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid manifest metadata: {exc}") from exc


class _ManifestArgs(Args, frozen=True, kw_only=True):
    manifest: Body  # one object, as JSON; its metadata.namespace wins over `namespace`
    namespace: Namespace = "default"

    def __post_init__(self) -> None:
        _check_manifest(self.manifest)

    def target(self) -> Target:
        kind = str(self.manifest.get("kind", "")).lower()
        meta = self.manifest.get("metadata") or {}
        return Target(
            cluster=self.cluster,
            namespace="" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or self.namespace),
            kind=kind,
            name=str(meta.get("name", "")),
        )


class ApplyArgs(_ManifestArgs, frozen=True, kw_only=True):
    """Create the object, or update it to match the manifest (client-side apply semantics)."""


class CreateArgs(_ManifestArgs, frozen=True, kw_only=True):
    """Create the object; fails if it exists."""


class DeleteArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: NameOrNone = ""  # "" with a selector
    namespace: Namespace = "default"
    propagation: Literal["background", "foreground", "orphan"] = "background"
    grace_period_seconds: Seconds | None = None
    selector: Selector = ""

    def __post_init__(self) -> None:
        _name_or_selector(self, "delete")


class CordonArgs(Args, frozen=True, kw_only=True):
    name: Name  # the node
    kind: Literal["node"] = "node"


class UncordonArgs(Args, frozen=True, kw_only=True):
    name: Name  # the node
    kind: Literal["node"] = "node"


class DrainArgs(Args, frozen=True, kw_only=True):
    """Cordon the node, then evict its pods through the Eviction API, so PodDisruptionBudgets
    are respected (a blocked eviction stops the drain rather than forcing it)."""

    name: Name  # the node
    kind: Literal["node"] = "node"
    ignore_daemonsets: bool = True
    delete_emptydir_data: bool = False
    grace_period_seconds: Seconds | None = None
    timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=1_800)] = 120


class LabelArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: NameOrNone = ""  # "" with a selector
    namespace: Namespace = "default"
    labels: Annotated[dict[MetaKey, LabelValue | None], msgspec.Meta(min_length=1, max_length=64)]
    # null removes the label; changing an existing value needs overwrite (as kubectl).
    overwrite: bool = False
    selector: Selector = ""

    def __post_init__(self) -> None:
        _name_or_selector(self, "label")


class AnnotateArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: NameOrNone = ""  # "" with a selector
    namespace: Namespace = "default"
    annotations: Annotated[
        dict[MetaKey, AnnotationValue | None], msgspec.Meta(min_length=1, max_length=64)
    ]
    overwrite: bool = False
    selector: Selector = ""

    def __post_init__(self) -> None:
        _name_or_selector(self, "annotate")


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    access: Access
    args_type: type[Args]
    summary: str

    def parse_args(self, raw: dict[str, Any]) -> Args:
        """Converts raw args to the tool's type; raises msgspec.ValidationError if they don't fit."""
        return msgspec.convert(raw, self.args_type)

    def args_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = msgspec.json.schema(self.args_type)
        return schema


def _r(name: str, args_type: type[Args], summary: str) -> Tool:
    return Tool(name=name, access="read", args_type=args_type, summary=summary)


def _w(name: str, args_type: type[Args], summary: str) -> Tool:
    return Tool(name=name, access="write", args_type=args_type, summary=summary)


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        # reads: run at once
        _r("get", GetArgs, "Read one object (Secret values are redacted; keys are listed)."),
        _r("list", ListArgs, "List objects of a kind, in a namespace or all, by label selector."),
        _r("describe", DescribeArgs, "One object with the events that involve it and the objects it owns."),
        _r("logs", LogsArgs, "A pod's logs (or those of the pods a selector matches): the last lines, of one container, or of the previous instance."),
        _r("events", EventsArgs, "Events of a namespace (or all), optionally of one object."),
        _r("rollout_status", RolloutStatusArgs, "Whether a rollout is complete, optionally waiting for it."),
        _r("rollout_history", RolloutHistoryArgs, "The revisions of a deployment, or one revision's template."),
        _r("top_pods", TopPodsArgs, "CPU and memory use of pods (needs metrics.k8s.io)."),
        _r("top_nodes", TopNodesArgs, "CPU and memory use of nodes (needs metrics.k8s.io)."),
        _r("cluster_info", ClusterInfoArgs, "The API server, its version, nodes and namespaces."),
        _r("can_i", CanIArgs, "Whether the executor's own identity may perform a verb on a resource."),
        # writes: previewed, approved by a human, signed, run once
        _w("scale", ScaleArgs, "Set the replica count of a deployment, statefulset or replicaset (or of those a selector matches)."),
        _w("rollout_restart", RolloutRestartArgs, "Restart all pods of a workload (or of those a selector matches) with a rolling update."),
        _w("rollout_undo", RolloutUndoArgs, "Roll a deployment back to a previous revision."),
        _w("set_image", SetImageArgs, "Change the image of one container of a workload."),
        _w("set_resources", SetResourcesArgs, "Change CPU/memory requests and limits of a workload's containers."),
        _w("set_env", SetEnvArgs, "Set or remove environment variables of a workload's containers."),
        _w("patch", PatchArgs, "Patch an object with a strategic-merge or merge patch body."),
        _w("apply", ApplyArgs, "Create or update one object to match a manifest."),
        _w("create", CreateArgs, "Create one object from a manifest; fails if it exists."),
        _w("delete", DeleteArgs, "Delete an object, or the objects a selector matches in one namespace (dependents follow, per propagation)."),
        _w("cordon", CordonArgs, "Mark a node unschedulable."),
        _w("uncordon", UncordonArgs, "Mark a node schedulable again."),
        _w("drain", DrainArgs, "Cordon a node and evict its pods, respecting PodDisruptionBudgets."),
        _w("label", LabelArgs, "Add, change (overwrite) or remove (null) labels of an object (or of those a selector matches)."),
        _w("annotate", AnnotateArgs, "Add, change (overwrite) or remove (null) annotations of an object (or of those a selector matches)."),
    )
}
assert not (ABSENT & TOOLS.keys())


def lookup(name: str) -> Tool | None:
    return TOOLS.get(name)


_canonical = msgspec.json.Encoder(order="sorted")


def canonical_args(args: Args) -> dict[str, Any]:
    """The args with every default made explicit: what a human approves is what runs."""
    out: dict[str, Any] = msgspec.to_builtins(args, order="sorted")
    return out


def call_hash(tool: str, args: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of a call. Binds a signature to the exact call."""
    body = _canonical.encode({"tool": tool, "args": args})
    return hashlib.sha256(body).hexdigest()
