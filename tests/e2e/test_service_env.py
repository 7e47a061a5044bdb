"""Each process `interlock up` starts holds only the environment it needs (issue 16): the model's
key reaches the planner alone; the caller's other secrets reach none of them. Read from
/proc/<pid>/environ of the real processes, the way anyone who took over one of them could."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.childenv import BASE_NAMES, BASE_PREFIXES
from launcher.nats import free_port
from launcher.stack import CALLER_ENV, SERVICES

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")]
TOKEN = "env-admin-token-0123456789abcdef"
MODEL_KEY = "sk-proj-modelkey0123456789abcdefABCDEF"
# The caller's other secrets: no Interlock process needs any of them.
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_0123456789abcdefghijABCDEFGHIJ0123456",
    "DATABASE_URL": "postgres://app:hunter2-secret@db.internal:5432/app",
    "STRIPE_SECRET_KEY": "sk_live_0123456789abcdefghijklmn",
}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


def _what(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        return module.removeprefix("services.")
    return Path(argv[0]).name


def test_only_the_planner_holds_the_model_key(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "OPENAI_"))},
           **SECRETS, "OPENAI_API_KEY": MODEL_KEY,
           # A model mode that never calls out: nothing here sends it a message.
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
           "INTERLOCK_ADMIN_TOKEN": TOKEN, "INTERLOCK_WEBHOOK_SECRET": "whsec-notifier-only-0123"}
    exe = str(Path(sys.prefix, "bin", "interlock"))
    proc = subprocess.Popen([exe, "up", "--port", str(port), "--data", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line or "failed" in line:
                break
        assert "Interlock is up" in "".join(lines), "".join(lines)

        started = {_what(pid): _environ(pid) for pid in _children(proc.pid)}
        assert set(SERVICES) <= set(started), sorted(started)
        assert "sandbox" in started
        assert "nats-server" in started, sorted(started)
        for what, child_env in started.items():
            values = "\0".join(child_env.values())
            assert (MODEL_KEY in values) == (what == "planner"), what
            for name, secret in SECRETS.items():
                assert secret not in values, (what, name)
            assert ("whsec-notifier-only-0123" in values) == (what == "notifier"), what
            # Only the allow-list, the stack's own settings and what the service claims.
            names, prefixes = CALLER_ENV.get(what, ((), ()))
            extra = {k for k in child_env
                     if not (k in BASE_NAMES or k.startswith(BASE_PREFIXES)
                             or k.startswith("INTERLOCK_") or k == "PYTHONUNBUFFERED"
                             or k in names or k.startswith(prefixes))}
            assert extra == set(), (what, sorted(extra))
        assert started["planner"]["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"
        assert started["gateway"]["PATH"] == env["PATH"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0
