"""Node.js packages the tests run (the MCP TypeScript SDK, the OpenID Provider): pinned by a
committed package-lock.json, installed beside it with `npm ci` when node_modules is not exactly
what the lock pins, and kept there for the next run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

NPM_WAIT_S = 300.0  # a bound on one `npm ci`, not an expectation


class NodeMissing(RuntimeError):
    """Node or npm is not on PATH, or `npm ci` failed: what to install, or npm's own words."""


def installed(node_dir: Path) -> bool:
    """node_modules holds exactly what package-lock.json pins (npm's own record of it)."""
    lock = json.loads((node_dir / "package-lock.json").read_text())["packages"]
    try:
        have = json.loads((node_dir / "node_modules" / ".package-lock.json").read_text())
    except (OSError, ValueError):
        return False
    got = have.get("packages", {})
    return all(got.get(path, {}).get("version") == entry.get("version")
               and (node_dir / path).is_dir() for path, entry in lock.items() if path)


def node_with(node_dir: Path, purpose: str) -> str:
    """Node on PATH, with `node_dir`'s pinned packages installed; `purpose` says what the test
    runs with them (for the message when Node or npm is missing)."""
    exe = shutil.which("node")
    if exe is None:
        raise NodeMissing(f"node (Node.js >= 20) is not on PATH: {purpose}; install Node.js and "
                          "npm")
    if not installed(node_dir):
        npm = shutil.which("npm")
        if npm is None:
            raise NodeMissing(f"npm is not on PATH: it installs {node_dir.name}'s pinned packages")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=node_dir,
            capture_output=True, text=True, timeout=NPM_WAIT_S,
            env={**os.environ, "npm_config_update_notifier": "false"}, check=False)
        if done.returncode != 0 or not installed(node_dir):
            raise NodeMissing(f"npm ci in {node_dir} failed:\n{done.stdout}\n{done.stderr}")
    return exe
