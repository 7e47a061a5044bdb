"""The whole of Interlock on one machine: embedded nats-server, the sandbox cluster (unless a
kubeconfig is given) and the four services as separate processes. Used by `interlock up` and by
the end-to-end tests, so both run exactly the same thing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from services.runtime import natsconf, provision, signing
from services.runtime.embedded import NatsServerProcess, free_port
from services.runtime.errors import ConfigError

SERVICES = ("executor", "gate", "planner", "gateway")


@dataclass
class StackConfig:
    data_dir: Path
    http_port: int = 8080
    nats_port: int = 0
    kubeconfig: Path | None = None
    kube_context: str = ""
    admin_token: str = ""
    approval_ttl_s: float = 900.0
    scenarios: tuple[str, ...] = ()
    sse_heartbeat_s: float = 15.0
    extra_env: dict[str, str] = field(default_factory=dict)


def _load_or_create_json(path: Path, make: dict[str, object]) -> dict[str, object]:
    if path.exists():
        data: dict[str, object] = json.loads(path.read_text())
        return data
    path.write_text(json.dumps(make, indent=2))
    os.chmod(path, 0o600)
    return make


class Stack:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.data = cfg.data_dir.resolve()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nats: NatsServerProcess | None = None
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.sandbox_url = ""
        self.kubeconfig: Path | None = cfg.kubeconfig
        self.credentials: dict[str, str] = {}
        self.tokens: dict[str, dict[str, object]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.http_port}"

    # -- set-up ------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        creds = _load_or_create_json(self.data / "nats-credentials.json",
                                     dict(natsconf.new_credentials()))
        self.credentials = {k: str(v) for k, v in creds.items()}
        if not (self.data / "gate.key").exists():
            signing.generate_keypair(self.data / "gate.key", self.data / "gate.pub")
        people = {
            "operator": ["operator"],
            "approver": ["operator", "approver"],
            "viewer": ["viewer"],
        }
        doc = _load_or_create_json(self.data / "tokens.json", {"tokens": [
            {"principal": name, "roles": roles, "token": f"il_{name}_{secrets.token_urlsafe(18)}"}
            for name, roles in people.items()
        ]})
        self.tokens = {str(t["principal"]): t for t in doc["tokens"]}  # type: ignore[union-attr]
        if not self.cfg.admin_token:
            self.cfg.admin_token = str(
                _load_or_create_json(self.data / "admin-token.json",
                                     {"token": f"il_admin_{secrets.token_urlsafe(24)}"})["token"]
            )

    async def start_nats(self) -> None:
        port = self.cfg.nats_port or free_port()
        self.cfg.nats_port = port
        text = natsconf.render(port=port, store_dir=self.data / "jetstream",
                               credentials=self.credentials)
        self.nats = NatsServerProcess(text, self.data / "nats", port)
        await self.nats.start()
        await provision.provision(self.nats.url, natsconf.ADMIN_USER,
                                  self.credentials[natsconf.ADMIN_USER])

    async def start_sandbox(self) -> None:
        kubeconfig = self.data / "kubeconfig"
        cmd = [sys.executable, "-m", "sandbox", "--port", "0", "--kubeconfig", str(kubeconfig)]
        for s in self.cfg.scenarios:
            cmd += ["--scenario", s]
        with open(self.data / "logs" / "sandbox.log", "ab") as log:
            self.sandbox = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                            start_new_session=True)
        assert self.sandbox.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.sandbox.stdout.readline), 30)
        # Nothing more is read from it; the sandbox logs to stderr.
        self.sandbox.stdout.close()
        text = line.decode().strip()
        if "ready at" not in text:
            raise ConfigError(f"the sandbox did not start: {text!r}")
        self.sandbox_url = text.rsplit(" ", 1)[-1]
        self.kubeconfig = kubeconfig

    def env_for(self, service: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
        env.update({
            "INTERLOCK_NATS_URL": f"nats://127.0.0.1:{self.cfg.nats_port}",
            "INTERLOCK_NATS_USER": service,
            "INTERLOCK_NATS_PASSWORD": self.credentials[service],
            "PYTHONUNBUFFERED": "1",
        })
        if service == "gate":
            env["INTERLOCK_GATE_KEY_FILE"] = str(self.data / "gate.key")
            env["INTERLOCK_APPROVAL_TTL"] = str(self.cfg.approval_ttl_s)
        if service == "executor":
            env["INTERLOCK_GATE_PUBKEY_FILE"] = str(self.data / "gate.pub")
            if self.kubeconfig:
                env["KUBECONFIG"] = str(self.kubeconfig)
            if self.cfg.kube_context:
                env["INTERLOCK_KUBE_CONTEXTS"] = self.cfg.kube_context
        if service == "gateway":
            env["INTERLOCK_HTTP_PORT"] = str(self.cfg.http_port)
            env["INTERLOCK_TOKENS_FILE"] = str(self.data / "tokens.json")
            env["INTERLOCK_ADMIN_TOKEN"] = self.cfg.admin_token
            env["INTERLOCK_SSE_HEARTBEAT"] = str(self.cfg.sse_heartbeat_s)
        env.update(self.cfg.extra_env)
        return env

    def start_service(self, service: str) -> subprocess.Popen[bytes]:
        log = open(self.data / "logs" / f"{service}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"], env=self.env_for(service),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs[service] = proc
        return proc

    async def wait_gateway(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                gw = self.procs.get("gateway")
                if gw is not None and gw.poll() is not None:
                    raise ConfigError(f"the gateway exited: {self.log_tail('gateway')}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise ConfigError(f"the gateway was not ready in {timeout}s: {self.log_tail('gateway')}")

    def log_tail(self, service: str, size: int = 3000) -> str:
        path = self.data / "logs" / f"{service}.log"
        return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        self.prepare()
        await self.start_nats()
        if self.kubeconfig is None:
            await self.start_sandbox()
        for s in SERVICES:
            self.start_service(s)
        await self.wait_gateway()

    # -- tear-down ---------------------------------------------------------------------------

    async def stop_service(self, service: str, sig: int = signal.SIGTERM) -> int | None:
        proc = self.procs.get(service)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    async def stop(self) -> dict[str, int | None]:
        results = await asyncio.gather(*(self.stop_service(s) for s in SERVICES))
        codes = dict(zip(SERVICES, results, strict=True))
        if self.sandbox and self.sandbox.poll() is None:
            self.sandbox.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.sandbox.wait), 10)
            except TimeoutError:
                self.sandbox.kill()
        if self.nats:
            await self.nats.stop()
        return codes
