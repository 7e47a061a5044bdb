"""The executor's settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from schemas import subjects as S
from services.runtime.errors import ConfigError
from services.runtime.settings import NatsSettings, require


@dataclass(frozen=True)
class ExecutorSettings:
    nats: NatsSettings
    gate_public_key: Path
    kubeconfig: Path | None
    allowed_contexts: tuple[str, ...]  # empty: only the kubeconfig's current context
    call_timeout_s: float = 30.0  # per Kubernetes request
    verify_timeout_s: float = 120.0  # how long a write's verification (rollout) may wait
    # all: one consumer for every command; read: reads only; write: previews and writes (each
    # under its own Kubernetes identity, deploy/k8s). The provisioned layout must match.
    role: str = "all"
    # The policy's `protected_clusters` (issue 21): every write on them is key-signed only.
    key_signed_clusters: tuple[str, ...] = ()
    # Where a click in Slack never suffices (the policy's `key_signed_namespaces`, issue 20):
    # checked here too, since the gate that checks Slack clicks could make one up.
    key_signed_namespaces: tuple[str, ...] = ("production",)
    # Per-cluster mode (issue 21, INTERLOCK_CLUSTER): the one cluster this executor serves. It
    # binds that cluster's durable, takes only commands signed for it, and stamps it on every
    # event it writes. "": legacy mode, one executor for every allowed context.
    cluster: str = ""
    presence_interval_s: float = 5.0

    @property
    def consumer(self) -> str:
        if self.cluster:
            return S.executor_durable(self.role, self.cluster)
        return S.EXECUTOR_ROLES[self.role][0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorSettings:
        env = os.environ if env is None else env
        require(env, "INTERLOCK_NATS_PASSWORD", "INTERLOCK_GATE_PUBKEY_FILE", service="executor")
        contexts = tuple(c for c in env.get("INTERLOCK_KUBE_CONTEXTS", "").split(",") if c)
        kubeconfig = env.get("KUBECONFIG")
        role = env.get("INTERLOCK_EXECUTOR_ROLE", "all")
        if role not in S.EXECUTOR_ROLES:
            raise ConfigError(f"executor: INTERLOCK_EXECUTOR_ROLE={role!r}: expected one of "
                             f"{', '.join(S.EXECUTOR_ROLES)}")
        return cls(
            nats=NatsSettings.from_env("executor", env),
            gate_public_key=Path(env["INTERLOCK_GATE_PUBKEY_FILE"]),
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            allowed_contexts=contexts,
            call_timeout_s=float(env.get("INTERLOCK_CALL_TIMEOUT", "30")),
            verify_timeout_s=float(env.get("INTERLOCK_VERIFY_TIMEOUT", "120")),
            key_signed_clusters=key_signed_clusters(env),
            role=role,
            key_signed_namespaces=key_signed_namespaces(env),
            cluster=env.get("INTERLOCK_CLUSTER", "").strip(),
            presence_interval_s=float(env.get("INTERLOCK_PRESENCE_INTERVAL", "5")),
        )


def key_signed_namespaces(env: Mapping[str, str]) -> tuple[str, ...]:
    """`key_signed_namespaces` of the policy file the gate is given (INTERLOCK_POLICY_FILE;
    default: production), and its protected namespaces, which always are (as the gate reads
    it). Only these keys are read: the rest is the gate's."""
    path = env.get("INTERLOCK_POLICY_FILE")
    if not path:
        return ("production",)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"executor: invalid policy file {path}: {exc}") from exc
    found: list[str] = []
    for key in ("key_signed_namespaces", "protected_namespaces"):
        value = raw.get(key, ["production"]) if isinstance(raw, dict) else None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"executor: {path}: {key} must be a list of namespaces")
        found += [ns for ns in value if ns not in found]
    return tuple(found)


def key_signed_clusters(env: Mapping[str, str]) -> tuple[str, ...]:
    """`protected_clusters` of the policy file the gate is given (INTERLOCK_POLICY_FILE; none
    by default): every write on them counts only key-signed decisions, as the gate reads it."""
    path = env.get("INTERLOCK_POLICY_FILE")
    if not path:
        return ()
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"executor: invalid policy file {path}: {exc}") from exc
    value = raw.get("protected_clusters", []) if isinstance(raw, dict) else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"executor: {path}: protected_clusters must be a list of clusters")
    return tuple(dict.fromkeys(value))
