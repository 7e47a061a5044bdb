"""Which clusters `interlock up` serves: the kubeconfig contexts named by `--context` (repeatable),
`--all-contexts`, or the caller's `INTERLOCK_KUBE_CONTEXTS`, checked against the kubeconfig
before anything starts. Each one becomes a cluster of its own (INTERLOCK_CLUSTERS, one local
spoke per context); none named: the single executor of before, unchanged."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.runtime import cluster_names
from services.runtime.errors import ConfigError

# The longest cluster a call may name (schemas/catalogue.py, ToolArgs.cluster).
MAX_NAME = cluster_names.MAX_LENGTH


@dataclass(frozen=True)
class Clusters:
    """The clusters to serve, in order (the first is the default), and the kubeconfig that
    holds their contexts."""

    names: tuple[str, ...]
    kubeconfig: Path


def default_kubeconfig(environ: Mapping[str, str]) -> Path:
    """The kubeconfig kubectl would use: $KUBECONFIG (one file), else ~/.kube/config."""
    value = environ.get("KUBECONFIG", "")
    if os.pathsep in value:
        raise ConfigError(f"KUBECONFIG names several files ({value}): merge them into one "
                          "(kubectl config view --flatten > merged.yaml) and give "
                          "--kubeconfig merged.yaml")
    return Path(value).expanduser() if value else Path.home() / ".kube" / "config"


def read_contexts(path: Path) -> dict[str, dict[str, object]]:
    """The contexts of a kubeconfig file, by name, in the file's order."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no kubeconfig at {path}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a kubeconfig (a YAML mapping)")
    out: dict[str, dict[str, object]] = {}
    for item in raw.get("contexts") or ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            body = item.get("context")
            out[item["name"]] = body if isinstance(body, dict) else {}
    return out


def _named(raw: object, key: str) -> set[str]:
    items = raw.get(key) if isinstance(raw, dict) else None
    return {str(i["name"]) for i in items or () if isinstance(i, dict) and "name" in i}


def unusable(name: str) -> str:
    """Why a context name cannot name a cluster here ("" if it can): INTERLOCK_CLUSTERS is a
    comma list, a call's cluster is at most 253 characters, and a name is shown on cards."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is longer than {MAX_NAME} characters"
    if "," in name:
        return "it contains a comma (INTERLOCK_CLUSTERS is a comma-separated list)"
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in name):
        return "it contains white space or a control character"
    return ""


def choose(kubeconfig: Path, contexts: Sequence[str], all_contexts: bool) -> Clusters | None:
    """The clusters asked for, checked against the kubeconfig; None when none were (the single
    executor of before). A name is checked before the file is read, so an unusable name is said
    as such even when the file also lacks it."""
    if not contexts and not all_contexts:
        return None
    if contexts and all_contexts:
        raise ConfigError("give --context or --all-contexts, not both")
    for name in contexts:
        if why := unusable(name):
            raise ConfigError(f"context {name!r} cannot name a cluster: {why}")
    found = read_contexts(kubeconfig)
    if all_contexts:
        if not found:
            raise ConfigError(f"--all-contexts: {kubeconfig} has no contexts")
        names = tuple(found)
        for name in names:
            if why := unusable(name):
                raise ConfigError(f"context {name!r} of {kubeconfig} cannot name a cluster: "
                                  f"{why}; name the others with --context")
    else:
        names = tuple(dict.fromkeys(contexts))  # a name given twice is one cluster
        missing = [n for n in names if n not in found]
        if missing:
            have = ", ".join(found) or "none"
            raise ConfigError(f"context {missing[0]!r} is not in {kubeconfig} (its contexts: "
                              f"{have})")
    raw = yaml.safe_load(kubeconfig.read_text())
    clusters, users = _named(raw, "clusters"), _named(raw, "users")
    for name in names:
        ctx = found[name]
        if ctx.get("cluster") not in clusters:
            raise ConfigError(f"context {name!r} of {kubeconfig} names cluster "
                              f"{ctx.get('cluster')!r}, which the file does not define")
        if ctx.get("user") and ctx.get("user") not in users:
            raise ConfigError(f"context {name!r} of {kubeconfig} names user "
                              f"{ctx.get('user')!r}, which the file does not define")
    return Clusters(names, kubeconfig.resolve())


def from_caller(flags: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The contexts named: the flags, else the caller's INTERLOCK_KUBE_CONTEXTS (a comma list,
    as the executor reads it)."""
    if flags:
        return tuple(flags)
    return tuple(c.strip() for c in environ.get("INTERLOCK_KUBE_CONTEXTS", "").split(",")
                 if c.strip())
