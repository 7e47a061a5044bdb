"""`interlock up` as a user runs it, driven with curl exactly as the README shows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.nats import free_port

pytestmark = pytest.mark.e2e
TOKEN = "readme-admin-token-0123456789"
EXE = str(Path(sys.prefix, "bin", "interlock"))



def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without a model (direct mode), with the admin token."""
    return {**{k: v for k, v in os.environ.items()
               if k not in ("INTERLOCK_MODEL", "OPENAI_API_KEY")},
            "INTERLOCK_ADMIN_TOKEN": TOKEN, **extra}


def _up(port: int, data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`interlock up` as a person starts it, and what it printed until it was ready (or failed)."""
    proc = subprocess.Popen([EXE, "up", "--port", str(port), "--data", str(data)],
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line or "failed" in line:
            break
    return proc, "".join(lines)

def _curl(*args: str) -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "20", *args], check=True,
                         capture_output=True, text=True)
    return out.stdout


def _sse_until(url: str, token: str, needle: str, after: int = 0) -> list[dict[str, object]]:
    """Reads the SSE stream with curl until an event of type `needle` arrives."""
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", "30", "-H", f"Authorization: Bearer {token}",
         "-H", f"Last-Event-ID: {after}", url],
        stdout=subprocess.PIPE, text=True,
    )
    events: list[dict[str, object]] = []
    current: dict[str, object] = {}
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "event" in current:
                events.append(current)
                if current["event"] == needle:
                    return events
                current = {}
    finally:
        proc.kill()
        proc.wait()
    raise AssertionError(f"no {needle}: {[e['event'] for e in events]}")


def test_interlock_up_and_the_readme_requests(tmp_path: Path) -> None:
    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("protected_namespaces: [production, payments]\nforbid_tools: [drain]\n"
                      "two_approvers: {tools: [delete]}\n")
    # A policy exported for `interlock up` reaches the gate; no model: direct mode.
    env = _env(INTERLOCK_POLICY_FILE=str(policy))
    proc, text = _up(port, tmp_path / "data", env)
    try:
        assert f"Interlock is up: http://127.0.0.1:{port}" in text, text
        assert f"admin     {TOKEN}" in text
        for role in ("operator", "approver", "viewer"):
            assert f"    {role}" in text
        # What a new operator must know before the first write (issue 15).
        assert "  Mode            direct: kubectl-style commands only" in text
        assert f"  Policy          from {policy}" in text
        assert "    protected namespaces  production, payments (whoever asked" in text
        assert "    two approvers         tools delete" in text
        assert "    forbidden tools       drain" in text
        assert ("  Approving       a write in production needs someone other than its requester"
                in text)
        assert '"roles": ["operator", "approver"]' in text
        assert str(tmp_path / "data" / "tokens.json") in text
        # Where an MCP client connects (issue 19), with the operator's token it prints.
        [operator] = [ln.split()[1] for ln in text.splitlines()
                      if ln.startswith("    operator  ")]
        assert (f"  MCP             http://localhost:{port}/mcp  (Streamable HTTP; "
                f"Authorization: Bearer {operator})") in text
        assert (f"    stdio         INTERLOCK_URL=http://localhost:{port} "
                f"INTERLOCK_TOKEN={operator} interlock mcp") in text
        base = f"http://127.0.0.1:{port}"
        auth = f"Authorization: Bearer {TOKEN}"

        sid = json.loads(_curl("-X", "POST", "-H", auth, f"{base}/v1/sessions"))["session_id"]
        _curl("-X", "POST", "-H", auth, "-d", '{"text": "kubectl get pods -n shop"}',
              f"{base}/v1/sessions/{sid}/messages")
        events = _sse_until(f"{base}/v1/sessions/{sid}/events", TOKEN, "tool.result")
        assert [e["event"] for e in events][-3:] == ["tool.proposed", "tool.classified",
                                                     "tool.result"]
        result = events[-1]["data"]
        assert isinstance(result, dict) and "web-" in str(result["output"])

        _curl("-X", "POST", "-H", auth, "-d",
              '{"text": "kubectl scale deploy/web --replicas=5 -n shop"}',
              f"{base}/v1/sessions/{sid}/messages")
        events = _sse_until(f"{base}/v1/sessions/{sid}/events", TOKEN, "approval.requested",
                            after=int(events[-1]["id"]))  # type: ignore[call-overload]
        pending = json.loads(_curl("-H", auth, f"{base}/v1/approvals?state=pending"))
        [approval] = [a for a in pending["approvals"] if a["session_id"] == sid]
        assert approval["calls"][0]["diff"][0]["path"] == "spec.replicas"
        # The README's signed approve step: the CLI signs with the admin key `interlock up`
        # made (and printed), curl posts the body it printed.
        data = tmp_path / "data"
        assert f"    admin     {data / 'people' / 'admin.key'}" in text
        assert f"INTERLOCK_ADMIN_KEY) {data / 'people' / 'admin.key'}" in text
        aid = approval["approval_id"]
        signed = subprocess.run(
            ["sh", "-c", f'interlock keys sign-decision {aid} approve | curl -s -X POST '
                         f'-H "{auth}" -d @- {base}/v1/approvals/{aid}/decision'],
            env={**env, "PATH": f"{Path(EXE).parent}:{env['PATH']}",
                 "INTERLOCK_URL": base, "INTERLOCK_TOKEN": TOKEN,
                 "INTERLOCK_KEY": str(data / "people" / "admin.key")},
            capture_output=True, text=True, check=True, timeout=60)
        decided = json.loads(signed.stdout)
        assert decided["decision"] == "approve", decided
        assert "signed with SHA256:" in signed.stderr
        events = _sse_until(f"{base}/v1/sessions/{sid}/events", TOKEN, "tool.result",
                            after=int(events[-1]["id"]))  # type: ignore[call-overload]
        result = events[-1]["data"]
        assert isinstance(result, dict) and result["status"] == "ok", result
        assert "scaled from 3 to 5" in str(result["output"])

        _curl("-X", "POST", "-H", auth, "-d", '{"text": "kubectl drain node-1"}',
              f"{base}/v1/sessions/{sid}/messages")
        events = _sse_until(f"{base}/v1/sessions/{sid}/events", TOKEN, "tool.refused",
                            after=int(events[-1]["id"]))  # type: ignore[call-overload]
        assert "policy forbids the tool 'drain'" in str(events[-1]["data"])
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
    assert proc.returncode == 0, rest
    assert "stopped." in rest


def test_up_refuses_a_port_in_use_and_stops_its_services_on_sighup(tmp_path: Path) -> None:
    """Two first-hour stumbles: a second `interlock up` on a port still held by the first said
    "up" (the old gateway answered its health check) with tokens nothing accepted; and closing
    the terminal (SIGHUP) left every service running."""
    env = _env()
    data = tmp_path / "data"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = subprocess.run([EXE, "up", "--port", str(port), "--data", str(tmp_path / "x")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert busy.returncode == 1, busy
    assert f"port {port} is in use" in busy.stdout + busy.stderr
    assert "Interlock is up" not in busy.stdout

    proc, _ = _up(port, data, env)
    try:
        assert _curl("-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:{port}/v1/me")
        os.kill(proc.pid, signal.SIGHUP)  # the terminal closed: only the launcher hears it
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, rest
    assert "stopped." in rest
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert left.stdout == "", f"processes of the stack still run: {left.stdout}"
    with socket.socket() as again:  # the gateway let go of its port
        again.bind(("127.0.0.1", port))


def test_services_stop_when_the_launcher_is_killed_outright(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to stop anything: each service notices that the launcher that
    started it is gone (INTERLOCK_PARENT_PID) and drains and exits on its own."""
    proc, _ = _up(free_port(), tmp_path / "data", _env())
    children: list[int] = []
    try:
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)],
                                                   capture_output=True, text=True).stdout.split()]
        services = [p for p in children
                    if "services." in Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")]
        assert len(services) == 5, children
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        for pid in services:  # each drains and exits by itself (its stop event, not a signal)
            while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
                time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in children:  # nats-server and the sandbox cannot watch for us
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


def test_ctrl_c_stops_everything_when_its_output_reader_is_gone(tmp_path: Path) -> None:
    """`interlock up | tee up.log`, then Ctrl-C: the terminal interrupts tee as well, so the
    launcher's "stopping…" met a closed pipe, and the BrokenPipeError left NATS and the sandbox
    running (found in a new-user walk-through)."""
    data = tmp_path / "data"
    proc, _ = _up(free_port(), data, _env())
    try:
        assert proc.stdout is not None
        proc.stdout.close()  # the reader (tee) is gone ...
        os.kill(proc.pid, signal.SIGINT)  # ... and Ctrl-C reaches the launcher
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    for pid in left.stdout.split():  # (do not leave them to the next test)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    assert left.stdout == "", f"processes of the stack still run: {left.stdout}"
