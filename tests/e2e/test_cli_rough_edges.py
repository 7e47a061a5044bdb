"""The CLI's rough edges of issue 15, run as a user runs them: `interlock sandbox` with the
documented flags, and `interlock audit --verify` of a file that is not there."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.nats import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]
INTERLOCK = str(Path(sys.prefix, "bin", "interlock"))


async def test_sandbox_serves_on_the_port_and_writes_the_kubeconfig(tmp_path: Path) -> None:
    port, kubeconfig = free_port(), tmp_path / "sandbox.yaml"
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, "sandbox", "--port", str(port), "--kubeconfig", str(kubeconfig),
        "--scenario", "baseline", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.strip() == f"sandbox ready at http://127.0.0.1:{port}", line
        assert kubeconfig.is_file()
        kubectl = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kubeconfig), "get", "deploy", "-n", "shop", "-o",
            "name", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(kubectl.communicate(), 30)
        assert kubectl.returncode == 0, err.decode()
        assert "deployment.apps/web" in out.decode().split()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


async def test_sandbox_on_a_busy_port_says_so(tmp_path: Path) -> None:
    busy = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = busy.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            INTERLOCK, "sandbox", "--port", str(port), "--kubeconfig",
            str(tmp_path / "k.yaml"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        busy.close()
    assert proc.returncode == 1
    text = err.decode()
    assert "error:" in text, text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("what", ["missing", "directory"])
async def test_audit_verify_of_a_file_that_is_not_there(tmp_path: Path, what: str) -> None:
    path = tmp_path / "nope.jsonl" if what == "missing" else tmp_path
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, "audit", "--verify", str(path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "INTERLOCK_TOKEN": ""})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip() == (
        f"interlock audit: cannot read {path}: "
        f"{'No such file or directory' if what == 'missing' else 'Is a directory'}")
    assert not out


async def test_up_with_an_unknown_scenario_says_which(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, "up", "--port", str(free_port()), "--data", str(tmp_path / "data"),
        "--scenario", "nope", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "interlock up failed: the sandbox did not start: error: unknown scenario 'nope'" \
        in out.decode(), out.decode()
