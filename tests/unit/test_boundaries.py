"""The layout tells the architecture (DESIGN.md §1): services never import each other, they
share only schemas/ and the runtime library, and schemas/ depends on msgspec alone. Lint and
types hold too (STYLE.md): ruff on the code, mypy --strict on schemas/ and services/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("planner", "gate", "executor", "gateway", "notifier")
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    for path in (ROOT / "services" / service).rglob("*.py"):
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "services" and len(parts) > 1:
                assert parts[1] in (service, "runtime"), f"{path.relative_to(ROOT)} imports {mod}"
            assert parts[0] not in ("clients", "sandbox"), f"{path.relative_to(ROOT)}: {mod}"


def test_schemas_depend_on_msgspec_alone() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        for mod in _imports(path):
            top = mod.split(".")[0]
            assert top in STDLIB or top in ("msgspec", "schemas", "__future__"), (
                f"{path.relative_to(ROOT)} imports {mod}")


def test_the_runtime_knows_no_service() -> None:
    for path in (ROOT / "services" / "runtime").rglob("*.py"):
        for mod in _imports(path):
            parts = mod.split(".")
            assert not (parts[0] == "services" and parts[1] != "runtime"), (
                f"{path.relative_to(ROOT)} imports {mod}")


def _tool(name: str) -> str:
    return str(Path(sys.prefix, "bin", name))


def test_ruff_is_clean() -> None:
    out = subprocess.run([_tool("ruff"), "check", "schemas", "services", "clients", "sandbox"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]


def test_mypy_strict_on_schemas_and_services() -> None:
    out = subprocess.run([_tool("mypy"), "schemas", "services"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:]
