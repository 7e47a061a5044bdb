"""What `interlock up` tells a new operator (issue 15), and how the CLI names a read's place."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients import render
from launcher.cli import describe_setup, mcp_lines
from launcher.stack import Stack, StackConfig
from schemas import catalogue
from schemas import subjects as S
from services.runtime.errors import ConfigError
from services.runtime.sealing import blobs
from services.runtime.sealing.blobs import Ref


def _setup(tmp_path: Path, **env: str) -> str:
    return "\n".join(describe_setup(Stack(StackConfig(data_dir=tmp_path, extra_env=env))))


def test_up_names_the_mcp_endpoint_and_the_stdio_command_with_an_operator_token() -> None:
    http, stdio = mcp_lines("http://127.0.0.1:8080", "op-token-0123456789")
    assert http == ("  MCP             http://localhost:8080/mcp  (Streamable HTTP; "
                    "Authorization: Bearer op-token-0123456789)")
    assert stdio == ("    stdio         INTERLOCK_URL=http://localhost:8080 "
                     "INTERLOCK_TOKEN=op-token-0123456789 interlock mcp")
    assert "<an operator's token>" in mcp_lines("http://127.0.0.1:8080", "")[1]


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
    assert "    key-signed only       production (a passkey or `interlock approve`" in text
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


def _ref(sealer: str = "gateway") -> Ref:
    ref, _ = blobs.seal("hunter2", X25519PrivateKey.generate().public_key(), sealer, "s_1")
    return ref


@pytest.mark.parametrize("sealer", S.SEALERS)
def test_the_terminal_shows_a_sealed_reference_as_the_services_do(sealer: str) -> None:
    # clients/ shares no code with the services (tests/unit/test_boundaries.py): the format of a
    # reference in the gateway's JSON is held here to the one the services write and show.
    ref = _ref(sealer)
    text = f"--from-literal=pw={ref.text} and env {ref.text}"
    assert render.sealed_refs(text) == blobs.show_refs(text)
    assert ref.text not in render.sealed_refs(text)
    assert render.sealed_refs(ref.text[:-1]) == ref.text[:-1]  # not a reference


def test_a_sealed_value_is_shown_as_the_card_shows_it() -> None:
    ref = _ref()
    assert render.event(3, "user.message", {
        "actor": "ann", "text": f"kubectl create secret generic a --from-literal=pw={ref.text}"}) \
        == f"[3] ann: kubectl create secret generic a --from-literal=pw={ref.shown}"
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"},
                "stringData": {"pw": ref.text}}
    line = render.event(4, "tool.proposed", {"tool": "create", "args": {"manifest": manifest}})
    assert line is not None
    assert f"'pw': '{ref.shown}'" in line
    assert ref.fingerprint not in line
