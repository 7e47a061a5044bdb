"""Two sandboxes as two clusters (issue 21): each writes its kubeconfig under its own context
name (`python -m sandbox --context a`), and one merged kubeconfig holds both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sandbox.cli import parse_args
from sandbox.kubeconfig import merge_kubeconfigs, write_kubeconfig


def test_context_option_names_the_kubeconfig_context(tmp_path: Path) -> None:
    assert parse_args([]).context == "sandbox"
    assert parse_args(["--context", "prod-eu"]).context == "prod-eu"


def test_two_sandboxes_merge_into_one_kubeconfig(tmp_path: Path) -> None:
    a = write_kubeconfig(tmp_path / "a.yaml", "http://127.0.0.1:1", context="a")
    b = write_kubeconfig(tmp_path / "b.yaml", "http://127.0.0.1:2", context="b")
    merged = yaml.safe_load(merge_kubeconfigs(tmp_path / "m.yaml", a, b).read_text())
    assert [c["name"] for c in merged["contexts"]] == ["a", "b"]
    assert [c["cluster"]["server"] for c in merged["clusters"]] == ["http://127.0.0.1:1",
                                                                    "http://127.0.0.1:2"]
    assert merged["current-context"] == "a"
    assert (tmp_path / "m.yaml").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="two sources"):
        merge_kubeconfigs(tmp_path / "x.yaml", a, a)
