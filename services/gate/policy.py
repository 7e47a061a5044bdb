"""Policy: it can only make the gate stricter. There is no setting that approves a write.

Loaded from INTERLOCK_POLICY_FILE (JSON or YAML). Unknown keys are an error, so a hopeful
`auto_approve: true` fails loudly instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import yaml

from services.runtime.errors import ConfigError


class TwoApprovers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tools: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Effect:
    """Where one write's effect lands, as the gate judges it (services.gate.risk.effect_of):
    each namespace with why it is affected ("" for the target's own), or `unknown` saying why
    it could not be told — then every namespace rule applies (fail closed)."""

    tool: str
    namespaces: tuple[tuple[str, str], ...] = ()
    unknown: str = ""
    # The cluster it lands on, as the gate resolved it ("" = named by nobody: the legacy
    # executor's current kube context, which the gate cannot tell apart from any other).
    cluster: str = ""


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # In these namespaces the person who asked (or changed the args) may not approve.
    protected_namespaces: tuple[str, ...] = ("production",)
    forbid_tools: tuple[str, ...] = ()
    two_approvers: TwoApprovers = TwoApprovers()
    # In these namespaces only a decision signed with a person's own key counts (a passkey, or
    # `interlock approve` with their Ed25519 key), never a Slack click: Slack signs with a
    # shared secret (HMAC) that the gate holds to check it, so a compromised gate could forge a
    # click — but never a person's signature (issue 20). Every protected namespace is one too,
    # whatever the list says: a policy file adds namespaces here, never takes a protected one
    # out (policy only tightens).
    key_signed_namespaces: tuple[str, ...] = ("production",)
    # Every write on these clusters is protected, whatever its namespace: the requester may not
    # approve it alone, and only key-signed decisions count (issue 21). A write naming no
    # cluster (legacy mode: the executor's current context, unknown to the gate) counts as on
    # one of them when any is listed: fail closed.
    protected_clusters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        extra = tuple(ns for ns in self.protected_namespaces
                      if ns not in self.key_signed_namespaces)
        if extra:
            msgspec.structs.force_setattr(self, "key_signed_namespaces",
                                          self.key_signed_namespaces + extra)

    def forbids(self, tool: str) -> bool:
        return tool in self.forbid_tools

    def protected(self, namespace: str) -> bool:
        return namespace in self.protected_namespaces

    def key_signed(self, namespace: str) -> bool:
        return namespace in self.key_signed_namespaces

    def protected_cluster(self, cluster: str) -> bool:
        """A write on `cluster` is protected: it is listed, or it is "" (unknown) and any
        cluster is listed (fail closed)."""
        if not cluster:
            return bool(self.protected_clusters)
        return cluster in self.protected_clusters

    def required_approvals(self, tool: str, namespace: str) -> int:
        two = tool in self.two_approvers.tools or namespace in self.two_approvers.namespaces
        return 2 if two else 1

    def describe(self, tool: str, namespace: str, why: str = "") -> tuple[str, ...]:
        out = []
        if self.protected(namespace):
            because = f" ({why})" if why else ""
            out.append(f"{namespace} is protected{because}: the requester may not approve alone")
        if self.required_approvals(tool, namespace) > 1:
            out.append("two approvers required")
        return tuple(out)

    # -- the same rules applied to where a write's effect lands, not only its namespace field --

    def protects(self, e: Effect) -> bool:
        """Separation of duties applies: the effect lands in a protected namespace, or where
        it lands is unknown (and something is protected at all)."""
        if self.protected_cluster(e.cluster):
            return True
        if e.unknown:
            return bool(self.protected_namespaces)
        return any(self.protected(ns) for ns, _ in e.namespaces)

    def key_signed_only(self, e: Effect) -> bool:
        """Only decisions signed with a person's own key count: the effect lands in one of
        `key_signed_namespaces`, or where it lands is unknown (and one is listed: fail
        closed), or on a protected cluster (always key-signed, as protected namespaces are)."""
        if self.protected_cluster(e.cluster):
            return True
        if e.unknown:
            return bool(self.key_signed_namespaces)
        return any(self.key_signed(ns) for ns, _ in e.namespaces)

    def approvals_for(self, e: Effect) -> int:
        if e.unknown and self.two_approvers.namespaces:
            return 2
        clusters = self.two_approvers.clusters
        if clusters and (e.cluster in clusters or not e.cluster):  # unknown: fail closed
            return 2
        return max([self.required_approvals(e.tool, ns) for ns, _ in e.namespaces]
                   + [self.required_approvals(e.tool, "")])

    def describe_effect(self, e: Effect) -> tuple[str, ...]:
        out: list[str] = []
        if self.protected_cluster(e.cluster):
            which = (f"cluster {e.cluster} is protected" if e.cluster else
                     "no cluster named (the executor's current context): treated as "
                     f"protected ({', '.join(self.protected_clusters)})")
            out.append(f"{which}: the requester may not approve alone, and only a decision "
                       "signed with the approver's own key counts")
        if e.unknown and self.protected_namespaces:
            out.append(f"{e.unknown}: treated as protected "
                       f"({', '.join(self.protected_namespaces)}): the requester may not "
                       "approve alone")
        if (e.unknown or self.two_approvers.clusters) and self.approvals_for(e) > 1 \
                and "two approvers required" not in out:
            out.append("two approvers required")
        for ns, why in e.namespaces or (("", ""),):
            out += [line for line in self.describe(e.tool, ns, why) if line not in out]
        return tuple(out)


def load(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return msgspec.convert(raw, Policy)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(f"invalid policy file {path}: {exc}") from exc
