"""Restarts a killed service instance without paying for its imports again.

The kill test restarts an instance 200 times; a fresh interpreter spends about a second of CPU
importing a service (nats, kubernetes, openai, pydantic models) before it does anything, so on two
cores the restarts, not the faults, were most of the test's time. This server imports every service
once and then forks one child per restart: the child is a new process that has run nothing, gets the
instance's own environment (Stack.env_for: nothing is read from the environment at import time) with
the server as its launcher, its own session and log, and runs `python -m services.<service>` from
the top, as the launcher would. What the test proves is about what a service does after a SIGKILL
and a restart (recovery from the log and from NATS), and that is the same code either way; the first
start of every instance still goes through the launcher.

Run as `python -m tests.chaos.forkserver STATUS_DIR`: one JSON request per line on stdin
({"service", "env", "log"}), the child's pid per line on stdout; a child's exit status is
written to STATUS_DIR/<pid> when it ends. It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from launcher.stack import SERVICES, Stack, service_of


class Forked:
    """What Stack needs of a Popen, for a process that is the fork server's child, not ours: it
    is watched through a pidfd, and its exit status comes from the server."""

    def __init__(self, pid: int, status_dir: Path) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._status = status_dir / str(pid)
        self._fd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._fd], [], [], 0)[0]:
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._fd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            self._ended()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            signal.pidfd_send_signal(self._fd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _ended(self) -> None:
        # The server writes the status when it reaps the child, just after the pidfd fires.
        for _ in range(200):
            if self._status.exists() and self._status.read_text().strip():
                self.returncode = int(self._status.read_text())
                break
            select.select([], [], [], 0.01)
        else:
            self.returncode = -255  # ended, status never written (the server is gone)
        os.close(self._fd)


class ForkServer:
    """The test's end: starts the server and asks it for instances."""

    def __init__(self, workdir: Path) -> None:
        self.status_dir = workdir / "forkserver-status"
        self.status_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.forkserver", str(self.status_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)

    async def ready(self) -> None:
        """Waits until every service is imported (the server says so on its first line)."""
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line.strip() == b"ready", line

    def start_service(self, stack: Stack, name: str) -> Forked:
        """Stack.start_service, forked: the same environment and log."""
        service = service_of(name)
        assert service in SERVICES, name
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        request = {"service": service, "env": stack.env_for(name),
                   "log": str(stack.data / "logs" / f"{name}.log")}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        child = Forked(pid, self.status_dir)
        stack.procs[name] = child  # type: ignore[assignment]
        return child

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the server ----------------------------------------------------------------------------------


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the instance, run its __main__, never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(request["env"])
        # Its launcher is the server (it stops when it is no longer the server's child); the
        # server ends when the test does, as its stdin closes.
        os.environ["INTERLOCK_PARENT_PID"] = str(os.getppid())
        service = f"services.{request['service']}"
        sys.argv = [service]
        runpy.run_module(service, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - whatever it was, it goes to the instance's log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(status_dir: Path) -> None:
    for service in SERVICES:
        importlib.import_module(f"services.{service}.service")

    def reap(_sig: int, _frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            (status_dir / str(pid)).write_text(str(os.waitstatus_to_exitcode(status)))

    signal.signal(signal.SIGCHLD, reap)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        out.write(f"{pid}\n")
        out.flush()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
