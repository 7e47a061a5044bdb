"""The tool catalogue: every call the planner may propose, its argument type and its access.

The gate classifies from this table alone and fails closed: a tool that is not here, or args that
do not convert to the tool's type, are never a read.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import msgspec

from schemas.base import Target

Access = Literal["read", "write"]
# Kubernetes names: DNS-1123 subdomain, bounded.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
Namespace = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
Selector = Annotated[str, msgspec.Meta(max_length=1_000)]
Replicas = Annotated[int, msgspec.Meta(ge=0, le=10_000)]

Kind = Literal[
    "pod",
    "deployment",
    "replicaset",
    "statefulset",
    "service",
    "namespace",
    "node",
    "event",
]
ScalableKind = Literal["deployment", "statefulset", "replicaset"]
CLUSTER_SCOPED: frozenset[str] = frozenset({"namespace", "node"})


class Args(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every tool's arguments."""

    cluster: str = ""

    def target(self) -> Target:
        return Target(
            cluster=self.cluster,
            namespace=getattr(self, "namespace", "") or "",
            kind=getattr(self, "kind", "") or "",
            name=getattr(self, "name", "") or "",
        )


class GetArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    name: Name
    namespace: Namespace = "default"


class ListArgs(Args, frozen=True, kw_only=True):
    kind: Kind
    namespace: Namespace = "default"
    all_namespaces: bool = False
    label_selector: Selector = ""


class ScaleArgs(Args, frozen=True, kw_only=True):
    kind: ScalableKind = "deployment"
    name: Name
    namespace: Namespace = "default"
    replicas: Replicas


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


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(name="get", access="read", args_type=GetArgs, summary="Read one object."),
        Tool(name="list", access="read", args_type=ListArgs, summary="List objects of a kind."),
        Tool(
            name="scale",
            access="write",
            args_type=ScaleArgs,
            summary="Set the replica count of a deployment, statefulset or replicaset.",
        ),
    )
}


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
