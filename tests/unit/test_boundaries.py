"""The layout tells the architecture (DESIGN.md §1): services never import each other, they
share only schemas/ and the runtime library, and schemas/ depends on msgspec alone; clients/
speak HTTP (JSON) to a gateway and import nothing of launcher/, services/ nor schemas/;
launcher/ (the local stack, `interlock up`) is the only code that starts services and the
sandbox, and nothing but it imports it; sandbox/ is a cluster on its own. Lint and types hold
too (STYLE.md): ruff on the code, mypy --strict on schemas/, services/, clients/ and launcher/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests import background

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


def _top_imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import under `folder`, in functions too."""
    return [(str(path.relative_to(ROOT)), mod) for path in sorted((ROOT / folder).rglob("*.py"))
            for mod in sorted(_imports(path))]


# What clients/ may import beyond the standard library and itself: the HTTP client library, and
# the crypto library a person's signing key needs (clients/keys.py; no crypto is hand-rolled),
# and the official MCP SDK (with anyio, which it runs on) that `interlock mcp` bridges stdio to
# the gateway's /mcp with (clients/mcp_bridge.py): MCP over HTTP, to the gateway only.
CLIENT_THIRD_PARTY = ("aiohttp", "cryptography", "mcp", "mcp_types", "anyio")


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


def test_clients_speak_http_only() -> None:
    for path, mod in _top_imports("clients"):
        top = mod.split(".")[0]
        # No exception: a secret is sealed or masked before it is recorded, so a terminal
        # has nothing to mask (clients/render.py) and needs no service's code.
        assert top in STDLIB or top in ("__future__", "clients", *CLIENT_THIRD_PARTY), (
            f"{path} imports {mod}")


def test_no_service_imports_clients_launcher_or_sandbox() -> None:
    for path, mod in _top_imports("services"):
        assert mod.split(".")[0] not in ("clients", "launcher", "sandbox"), f"{path}: {mod}"


def test_the_sandbox_is_a_cluster_on_its_own() -> None:
    # The executor must never know whether it talks to the sandbox or a real cluster, and the
    # sandbox knows nothing of Interlock: it runs alone (`python -m sandbox`).
    for path, mod in _top_imports("sandbox"):
        top = mod.split(".")[0]
        assert top not in ("schemas", "services", "clients", "launcher"), f"{path}: {mod}"


# The sandbox by role, bottom up: a package imports its own and the ones below it. Scenarios and
# the API server stand side by side: neither knows the other; server.py wires them together.
SANDBOX_LAYERS = {"state": {"state"}, "controllers": {"state", "controllers"},
                  "apiserver": {"state", "controllers", "apiserver"},
                  "scenarios": {"state", "controllers", "scenarios"}}


def _sandbox_module(mod: str, names: list[str]) -> list[str]:
    """The sandbox modules an import names (`from sandbox.state import gc`: sandbox.state.gc)."""
    found = [f"{mod}.{n}" for n in names if (ROOT / Path(*mod.split("."), f"{n}.py")).exists()]
    return found or [mod]


def _sandbox_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "sandbox").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "sandbox":
                    deps.update(_sandbox_module(node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "sandbox")
    return graph


def test_the_sandbox_is_layered_by_role() -> None:
    for module, deps in _sandbox_graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in SANDBOX_LAYERS:
            continue  # the top: server, cli, testing wire the roles together
        for dep in deps:
            dep_parts = dep.split(".")
            role = dep_parts[1] if len(dep_parts) > 2 else None
            assert role in SANDBOX_LAYERS[parts[1]], f"{module} imports {dep}"


def test_no_sandbox_module_imports_itself_back() -> None:
    graph = _sandbox_graph()
    # Imports inside functions and under TYPE_CHECKING count: a cycle hidden there is still one.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue  # a package's face (sandbox.state itself), not a module of code
            assert state.get(nxt) != 1, " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_only_the_launcher_starts_the_stack() -> None:
    for folder in ("schemas", "services", "clients", "sandbox"):
        for path, mod in _top_imports(folder):
            assert mod.split(".")[0] != "launcher", f"{path}: {mod}"


def _tool(name: str) -> str:
    return str(Path(sys.prefix, "bin", name))


def test_ruff_is_clean() -> None:
    out = subprocess.run([_tool("ruff"), "check", "schemas", "services", "clients", "launcher",
                          "sandbox"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:]


def test_mypy_strict_on_schemas_services_clients_and_launcher() -> None:
    # Started when the tests were collected (tests/background.py): it runs beside the suite.
    code, output = background.outcome("mypy")
    assert code == 0, output[-4000:]
