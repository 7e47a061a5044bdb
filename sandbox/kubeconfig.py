"""A kubeconfig that points kubectl and the official client at a sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    context: str = "sandbox",
    token: str = "sandbox-token",
) -> Path:
    """Write (overwrite) a kubeconfig with one cluster, one bearer-token user and one context,
    set as current. The file is private to the user: it holds a token."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": f"{context}-user", "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": f"{context}-user", "namespace": "default"},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(target)
    return target


def merge_kubeconfigs(path: str | os.PathLike[str], *sources: str | os.PathLike[str],
                      current: str = "") -> Path:
    """Write one kubeconfig holding every cluster, user and context of `sources` (as
    `KUBECONFIG=a:b kubectl config view --flatten` would), the current context `current` or
    the first source's. Names must not clash: two sandboxes need two `--context` names."""
    merged: dict[str, list[dict[str, object]]] = {"clusters": [], "users": [], "contexts": []}
    first = ""
    for src in sources:
        doc = yaml.safe_load(Path(src).read_text()) or {}
        first = first or str(doc.get("current-context", ""))
        for section, entries in merged.items():
            for entry in doc.get(section) or []:
                if any(e["name"] == entry["name"] for e in entries):
                    raise ValueError(f"{src}: {section[:-1]} {entry['name']!r} is in two sources")
                entries.append(entry)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    config = {"apiVersion": "v1", "kind": "Config", **merged,
              "current-context": current or first, "preferences": {}}
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(target)
    return target
