"""One spoke on this machine (issue 21): a cluster's own nats-server, a leaf node of the hub, and
the executor process(es) of that cluster connected to it — what runs inside each cluster in a
deployment (deploy/k8s/spoke), run locally by `interlock up --context a --context b` and by the
tests.

The executor connects to its spoke's server exactly as it connects to the hub without spokes
(INTERLOCK_NATS_URL/USER/PASSWORD); the spoke's one outbound leaf connection, as the hub's user
`spoke-<ctok>`, is all it can reach of the hub, and that user's permissions bound it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from launcher.childenv import base_env
from launcher.nats import NatsServerProcess, free_port
from schemas import subjects as S
from services.runtime import natsconf
from services.runtime.errors import ConfigError

LEAF_CONNECTED = "Leafnode connection created"


class Spoke:
    """A leaf nats-server plus one executor per role (`all`, or `read` and `write`).

    signing_key: this cluster's own executor key (`identity.executor_key_file(cluster)` in the
    keys dir), never another cluster's nor the legacy `executor.key`: it signs what only this
    cluster may say and opens the secrets sealed for this cluster's writes alone."""

    def __init__(self, cluster: str, hub_leaf_url: str, hub_password: str,
                 kubeconfig: Path | None, data_dir: Path, gate_pubkey: Path, keyring: Path,
                 signing_key: Path, roles: tuple[str, ...] = ("all",), *, port: int = 0,
                 kube_context: str | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        for role in roles:
            if role not in S.EXECUTOR_ROLES:
                raise ConfigError(f"spoke {cluster}: unknown executor role {role!r}")
        self.cluster = cluster
        self.hub_leaf_url = hub_leaf_url
        self.hub_password = hub_password
        self.kubeconfig = kubeconfig
        self.data = data_dir
        self.gate_pubkey = gate_pubkey
        self.keyring = keyring
        self.signing_key = signing_key
        self.roles = roles
        self.port = port
        # The kubeconfig context the executors act on: locally, the cluster's own name.
        self.kube_context = cluster if kube_context is None else kube_context
        # Settings for the executors beyond their own (INTERLOCK_PRESENCE_INTERVAL, KUBECONFIG's
        # credential plugin's profile, …): the caller chooses what to pass.
        self.extra_env = dict(extra_env or {})
        self.credentials: dict[str, str] = {}
        self.leaf: NatsServerProcess | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def user_of(self, role: str) -> str:
        """The spoke's local NATS user of an executor role (executor / executor-read / …)."""
        return S.EXECUTOR_ROLES[role][0]

    def config_text(self) -> str:
        """The spoke server's configuration (its local passwords made once, kept in data_dir)."""
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        path = self.data / "spoke-credentials.json"
        if path.exists():
            self.credentials = {k: str(v) for k, v in json.loads(path.read_text()).items()}
        else:
            self.credentials = natsconf.new_spoke_credentials()
            path.write_text(json.dumps(self.credentials, indent=2))
            os.chmod(path, 0o600)
        self.port = self.port or free_port()
        return natsconf.render_spoke(cluster=self.cluster, hub_leaf_url=self.hub_leaf_url,
                                     hub_password=self.hub_password, port=self.port,
                                     local_credentials=self.credentials)

    # -- the leaf nats-server ----------------------------------------------------------------

    async def start_leaf(self, timeout: float = 20.0) -> None:
        """Starts the spoke's server and waits until its leaf connection to the hub is up."""
        text = self.config_text()
        if self.leaf is None:
            self.leaf = NatsServerProcess(text, self.data / "nats", self.port)
        await self.leaf.start(timeout)
        await self.wait_leaf(timeout)

    async def wait_leaf(self, timeout: float = 20.0) -> None:
        """Until the leaf connection of this start is up (its log says so) and the hub's log
        answers through it: the hub sends the interest of what the spoke may reach just after
        the connection, and an executor started before that would hear "no responders"."""
        assert self.leaf is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def check() -> None:
            assert self.leaf is not None
            if not self.leaf.running:
                raise ConfigError(f"spoke {self.cluster}: nats-server exited: "
                                  f"{self.leaf.tail_log()}")
            if loop.time() > deadline:
                raise ConfigError(f"spoke {self.cluster}: no leaf connection to "
                                  f"{self.hub_leaf_url} after {timeout}s: "
                                  f"{self.leaf.tail_log()}")

        while LEAF_CONNECTED not in self.leaf.log_since_start():
            check()
            await asyncio.sleep(0.05)
        user = self.user_of(self.roles[0])
        nc = await nats.connect(self.url, user=user, password=self.credentials[user],
                                inbox_prefix=natsconf.EXECUTOR_INBOX.encode(),
                                allow_reconnect=False, connect_timeout=5)
        try:
            while True:
                check()
                try:
                    msg = await nc.request(f"$JS.API.STREAM.INFO.{S.EVENTS_STREAM}", b"",
                                           timeout=1.0)
                    if b"stream_info_response" in msg.data:
                        return
                except (NoRespondersError, NatsTimeoutError):
                    pass
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    def kill_leaf(self) -> None:
        """SIGKILL the spoke's server: its executors lose the hub (they reconnect to it)."""
        if self.leaf is not None:
            self.leaf.kill()

    async def restart_leaf(self, timeout: float = 20.0) -> None:
        """Kills (if running) and starts the spoke's server again, on the same port."""
        self.kill_leaf()
        await self.start_leaf(timeout)

    # -- the executors -----------------------------------------------------------------------

    def env_for(self, role: str) -> dict[str, str]:
        env = base_env(os.environ)
        env.update(self.extra_env)
        env.update({
            "INTERLOCK_NATS_URL": self.url,
            "INTERLOCK_NATS_USER": self.user_of(role),
            "INTERLOCK_NATS_PASSWORD": self.credentials[self.user_of(role)],
            "INTERLOCK_KEYRING_FILE": str(self.keyring),
            "INTERLOCK_SIGNING_KEY_FILE": str(self.signing_key),
            "INTERLOCK_GATE_PUBKEY_FILE": str(self.gate_pubkey),
            "INTERLOCK_CLUSTER": self.cluster,
            "INTERLOCK_EXECUTOR_ROLE": role,
            "INTERLOCK_KUBE_CONTEXTS": self.kube_context,
            "PYTHONUNBUFFERED": "1",
            # A launcher killed outright takes its services along (like launcher/stack.py).
            "INTERLOCK_PARENT_PID": str(os.getpid()),
        })
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def start_executor(self, role: str | None = None) -> None:
        """Starts the executor of `role` (every role of this spoke: None), if not running."""
        for r in self.roles if role is None else (role,):
            proc = self.procs.get(r)
            if proc is not None and proc.poll() is None:
                continue
            log = open(self._log_path(r), "ab")  # noqa: SIM115 - handed to the child at once
            self.procs[r] = subprocess.Popen(
                [sys.executable, "-m", "services.executor"], env=self.env_for(r),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()

    def kill_executor(self, role: str | None = None) -> None:
        """SIGKILL the executor of `role` (all of them: None): a crash, mid-call or not."""
        for r in self.roles if role is None else (role,):
            proc = self.procs.get(r)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    def executor_running(self, role: str = "all") -> bool:
        proc = self.procs.get(role)
        return proc is not None and proc.poll() is None

    def _log_path(self, role: str) -> Path:
        return self.data / "logs" / f"executor-{role}.log"

    # -- the whole spoke ---------------------------------------------------------------------

    async def start(self, timeout: float = 20.0) -> None:
        await self.start_leaf(timeout)
        self.start_executor()

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except TimeoutError:
                proc.kill()
                proc.wait()
        if self.leaf is not None:
            await self.leaf.stop()

    def log_tail(self, size: int = 3000) -> str:
        """The end of each executor's log and of the spoke server's, for a failing test."""
        parts = []
        for role in self.roles:
            try:
                text = self._log_path(role).read_bytes()[-size:].decode(errors="replace")
            except OSError:
                text = ""
            parts.append(f"--- spoke {self.cluster} executor ({role})\n{text}")
        if self.leaf is not None:
            parts.append(f"--- spoke {self.cluster} nats-server\n{self.leaf.tail_log(size)}")
        return "\n".join(parts)
