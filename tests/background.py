"""Checks that take long on one core and need nothing but the source (mypy: ~40 s on a fresh
clone), started as soon as pytest has collected the tests that want them, so they run beside the
suite's waits on processes instead of adding to the suite's time. A test takes the outcome with
`outcome(name)` (it waits for it; a check nobody started is run there and then)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
CHECKS: dict[str, list[str]] = {
    "mypy": [str(Path(sys.prefix, "bin", "mypy")), "schemas", "services", "clients", "launcher"],
}
_running: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}


def start(name: str) -> None:
    if name in _running:
        return
    out = tempfile.TemporaryFile()  # noqa: SIM115 - read back by outcome()
    proc = subprocess.Popen(CHECKS[name], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    _running[name] = (proc, out)


def outcome(name: str, timeout: float = 300) -> tuple[int, str]:
    """The check's exit code and output."""
    start(name)
    proc, out = _running[name]
    code = proc.wait(timeout)
    out.seek(0)
    return code, out.read().decode(errors="replace")
