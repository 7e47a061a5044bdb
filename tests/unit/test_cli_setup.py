"""What `interlock up` tells a new operator (issue 15), and how the CLI names a read's place."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import render
from launcher.cli import describe_setup
from launcher.stack import Stack, StackConfig
from schemas import catalogue
from services.runtime.errors import ConfigError


def _setup(tmp_path: Path, **env: str) -> str:
    return "\n".join(describe_setup(Stack(StackConfig(data_dir=tmp_path, extra_env=env))))


def test_a_model_is_named_with_its_server_and_never_its_key(tmp_path: Path) -> None:
    text = _setup(tmp_path, INTERLOCK_MODEL="qwen2.5", OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                  OPENAI_API_KEY="sk-live-very-secret-key")
    assert "  Mode            model qwen2.5 at http://127.0.0.1:9/v1" in text
    assert "sk-live" not in text
    keyed = _setup(tmp_path, INTERLOCK_MODEL="", OPENAI_BASE_URL="",
                   OPENAI_API_KEY="sk-live-very-secret-key")
    assert "  Mode            model gpt-4o-mini at the OpenAI API" in keyed
    assert "sk-live" not in keyed


def test_the_default_policy_and_how_to_approve_a_protected_write(tmp_path: Path) -> None:
    text = _setup(tmp_path, INTERLOCK_MODEL="", OPENAI_API_KEY="", INTERLOCK_POLICY_FILE="")
    assert "  Mode            direct" in text
    assert "  Policy          the default (INTERLOCK_POLICY_FILE tightens it)" in text
    assert "    protected namespaces  production" in text
    assert "    two approvers         none" in text
    assert "    forbidden tools       none" in text
    assert "the operator asks, the approver (or admin) approves" in text
    assert str(tmp_path / "tokens.json") in text


def test_a_bad_policy_stops_up_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("auto_approve: true\n")
    with pytest.raises(ConfigError, match="invalid policy file"):
        _setup(tmp_path, INTERLOCK_POLICY_FILE=str(bad))


def test_an_all_namespaces_read_is_not_in_default() -> None:
    args = catalogue.TOOLS["list"].parse_args({"kind": "pod", "all_namespaces": True})
    assert args.target().namespace == ""
    raw = {"kind": "pod", "all_namespaces": True}
    assert render.target(None, raw) == "pod in all namespaces"
    assert render.target({"kind": "pod", "namespace": "default"}, raw) == "pod in all namespaces"
    assert render.target(None, {"kind": "pod", "namespace": "shop"}) == "pod in shop"
    assert render.event(3, "user.message", {
        "actor": "ann", "text": "kubectl create secret generic a --from-literal=pw=hunter2"}) \
        == "[3] ann: kubectl create secret generic a --from-literal=pw=<redacted>"


def test_a_secrets_values_are_masked_in_a_proposal_line() -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"},
                "data": {"pw": "aHVudGVyMg=="}}
    line = render.event(4, "tool.proposed", {"tool": "create", "args": {"manifest": manifest}})
    assert line is not None
    assert "aHVudGVyMg" not in line
    assert "'pw': '<redacted>'" in line
    patch = render.event(5, "tool.proposed", {"tool": "patch", "args": {
        "kind": "secret", "name": "a", "body": {"stringData": {"pw": "hunter2"}}}})
    assert patch is not None
    assert "hunter2" not in patch
    cm = render.event(6, "tool.proposed", {"tool": "create", "args": {"manifest": {
        **manifest, "kind": "ConfigMap", "data": {"k": "visible"}}}})
    assert cm is not None
    assert "visible" in cm
