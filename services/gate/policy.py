"""Policy: it can only make the gate stricter. There is no setting that approves a write.

Loaded from INTERLOCK_POLICY_FILE (JSON or YAML). Unknown keys are an error, so a hopeful
`auto_approve: true` fails loudly instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from services.runtime.errors import ConfigError


class TwoApprovers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tools: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # In these namespaces the person who asked (or changed the args) may not approve.
    protected_namespaces: tuple[str, ...] = ("production",)
    forbid_tools: tuple[str, ...] = ()
    two_approvers: TwoApprovers = TwoApprovers()

    def forbids(self, tool: str) -> bool:
        return tool in self.forbid_tools

    def protected(self, namespace: str) -> bool:
        return namespace in self.protected_namespaces

    def required_approvals(self, tool: str, namespace: str) -> int:
        two = tool in self.two_approvers.tools or namespace in self.two_approvers.namespaces
        return 2 if two else 1

    def describe(self, tool: str, namespace: str) -> tuple[str, ...]:
        out = []
        if self.protected(namespace):
            out.append(f"{namespace} is protected: the requester may not approve alone")
        if self.required_approvals(tool, namespace) > 1:
            out.append("two approvers required")
        return tuple(out)


def load(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return msgspec.convert(raw, Policy)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(f"invalid policy file {path}: {exc}") from exc
