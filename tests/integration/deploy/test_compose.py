"""compose.yaml kept honest without a Docker engine: every service, command, environment
variable, file, volume and port is checked against the code that reads it."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.stack import SERVICES
from services.runtime import natsconf

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"
SETTINGS = {
    "gateway": "services.gateway.settings:GatewaySettings",
    "planner": "services.planner.settings:PlannerSettings",
    "gate": "services.gate.settings:GateSettings",
    "executor": "services.executor.settings:ExecutorSettings",
    "notifier": "services.notifier.settings:NotifierSettings",
}
# The provisioning job reads these (services/runtime/provision.py main()).
PROVISION_KEYS = {"INTERLOCK_NATS_URL", "INTERLOCK_NATS_USER", "INTERLOCK_NATS_PASSWORD",
                  "INTERLOCK_STREAM_REPLICAS", "INTERLOCK_PROVISION_TIMEOUT",
                  "INTERLOCK_EVENTS_MAX_BYTES"}


# Plausible values for the variables compose passes through from the operator's environment.
SAMPLE = {
    "INTERLOCK_ADMIN_TOKEN": "a" * 32,
    "INTERLOCK_MODEL": "gpt-4o-mini",
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_BASE_URL": "http://model.example:8000/v1",
    "INTERLOCK_WEBHOOKS": "https://hooks.example/interlock",
    "INTERLOCK_WEBHOOK_SECRET": "s" * 32,
}


class Recording(Mapping[str, str]):
    """An environment that remembers every key the settings asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("secrets")
    subprocess.run([sys.executable, str(ROOT / "deploy" / "generate.py"), "compose", str(out)],
                   check=True, capture_output=True)
    return out


def _env_of(svc: dict[str, Any], secrets: Path) -> dict[str, str]:
    """The container's environment: env_file entries (from a generated secrets dir), then
    `environment`, with ${VAR:-default} interpolated to its default as compose would."""
    env: dict[str, str] = {}
    for f in svc.get("env_file", []):
        rel = Path(f).relative_to("deploy/secrets")
        for line in (secrets / rel).read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
    for key, value in (svc.get("environment") or {}).items():
        env[key] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
    return env


def _settings_class(service: str) -> Any:
    module, cls = SETTINGS[service].split(":")
    return getattr(importlib.import_module(module), cls)


def test_every_service_of_the_stack_is_in_compose(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*SERVICES, "nats", "provision"}
    assert set(SETTINGS) == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_its_module_with_only_settings_it_reads(
    compose: dict[str, Any], secrets: Path, service: str
) -> None:
    svc = compose["services"][service]
    assert svc["command"] == ["python", "-m", f"services.{service}"]
    assert (ROOT / "services" / service / "__main__.py").exists()
    assert svc["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    env = _env_of(svc, secrets)
    recording = Recording(env)
    settings = _settings_class(service).from_env(recording)  # required settings are present
    # Variables left to the operator (${VAR:-}) are read only once set: set them all, too.
    operator_set = {k: SAMPLE[k] for k, v in (svc.get("environment") or {}).items()
                    if str(v).startswith("${")}
    assert set(operator_set) <= set(SAMPLE)
    full = Recording({**env, **operator_set})
    _settings_class(service).from_env(full)
    unknown = set(env) - recording.asked - full.asked
    assert not unknown, f"{service}: compose sets variables its settings never read: {unknown}"
    assert settings.nats.user == service
    assert env["INTERLOCK_NATS_URL"] == "nats://nats:4222"
    # it starts after provisioning, and has a health check that names it
    assert svc["depends_on"] == {"provision": {"condition": "service_completed_successfully"}}
    assert svc["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", service]


@pytest.mark.parametrize("service", SERVICES)
def test_every_file_a_service_reads_is_mounted_and_generated(
    compose: dict[str, Any], secrets: Path, service: str
) -> None:
    svc = compose["services"][service]
    env = _env_of(svc, secrets)
    mounts = {}
    for v in svc["volumes"]:
        src, dst, *_ = v.split(":")
        assert (ROOT / src).resolve().is_relative_to(ROOT / "deploy"), v
        mounts[dst] = src
    for key, value in env.items():
        if key.endswith(("_FILE", "KUBECONFIG")) and value:
            mount = next((d for d in mounts if value == d or value.startswith(d + "/")), None)
            assert mount is not None, f"{service}: {key}={value} is not on a mounted volume"
            name = value[len(mount) + 1:] if value != mount else Path(mount).relative_to(
                "/secrets").as_posix()
            if key != "KUBECONFIG":  # the operator supplies the kubeconfig
                assert (secrets / name).exists(), f"{service}: {name} is not generated"


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_can_read_another_services_private_key(
    compose: dict[str, Any], service: str
) -> None:
    """Each container mounts single files, never the secrets folder: a service's signing key is
    readable by that service alone (issue 14), and only the gate holds the grant key."""
    sources = [v.split(":")[0] for v in compose["services"][service]["volumes"]]
    assert all(Path(src).suffix or Path(src).name == "kubeconfig" for src in sources), sources
    keys = {Path(src).name for src in sources if src.endswith(".key")}
    own = {f"{service}.key"} if service != "notifier" else set()
    assert keys == own | ({"gate.key"} if service == "gate" else set()), keys


def test_nats_runs_the_generated_accounts_config(compose: dict[str, Any], secrets: Path) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"] == "nats:2.15"
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "./deploy/secrets/nats.conf:/etc/nats/nats.conf:ro" in nats["volumes"]
    conf = json.loads((secrets / "nats.conf").read_text())
    assert conf["listen"] == "0.0.0.0:4222"
    assert conf["jetstream"] == {"store_dir": "/data/jetstream", "sync_interval": "always"}
    assert any(v.endswith(":/data") for v in nats["volumes"])  # JetStream on a named volume
    placed = natsconf.users(conf)
    users = {name: entry for name, (_, entry) in placed.items()}
    assert set(users) == {*natsconf.RUNTIME_USERS, natsconf.ADMIN_USER, "sys"}
    # The log and its admin in LOG, every service in an account of its own.
    assert placed[natsconf.ADMIN_USER][0] == natsconf.LOG_ACCOUNT
    assert {placed[s][0] for s in natsconf.RUNTIME_USERS} == {
        natsconf.account_of(s) for s in natsconf.RUNTIME_USERS}
    assert conf["accounts"] == json.loads(natsconf.render(
        port=4222, store_dir=Path("/data/jetstream"),
        credentials={u: e["password"] for u, e in users.items()}))["accounts"]
    # Each service's password in its env file is its user's password in the server config,
    # and its permissions are exactly what natsconf generates.
    for service in SERVICES:
        env = _env_of(compose["services"][service], secrets)
        assert users[service]["password"] == env["INTERLOCK_NATS_PASSWORD"]
        assert users[service]["permissions"] == natsconf.permissions(service)
    assert "permissions" not in users[natsconf.ADMIN_USER]


def test_the_provisioning_job_is_the_admin_and_runs_once(compose: dict[str, Any],
                                                         secrets: Path) -> None:
    job = compose["services"]["provision"]
    assert job["command"] == ["python", "-m", "services.runtime.provision"]
    assert job["restart"] == "no"
    env = _env_of(job, secrets)
    assert set(env) <= PROVISION_KEYS
    assert env["INTERLOCK_NATS_USER"] == natsconf.ADMIN_USER
    conf = json.loads((secrets / "nats.conf").read_text())
    _, admin = natsconf.users(conf)[natsconf.ADMIN_USER]
    assert admin["password"] == env["INTERLOCK_NATS_PASSWORD"]
    # No service holds the admin password.
    for service in SERVICES:
        assert _env_of(compose["services"][service], secrets)["INTERLOCK_NATS_PASSWORD"] \
            != env["INTERLOCK_NATS_PASSWORD"]


def test_the_gateway_port_is_published(compose: dict[str, Any], secrets: Path) -> None:
    gw = compose["services"]["gateway"]
    env = _env_of(gw, secrets)
    assert env["INTERLOCK_HTTP_HOST"] == "0.0.0.0"
    assert gw["ports"] == [f"8080:{env['INTERLOCK_HTTP_PORT']}"]
    others = [s for s in SERVICES if s != "gateway"]
    assert not any("ports" in compose["services"][s] for s in [*others, "nats", "provision"])


def test_the_image_installs_the_project_and_runs_unprivileged() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11" in text
    for part in ("schemas", "services", "clients", "launcher", "sandbox", "deploy/healthcheck.py"):
        assert f"COPY {part}" in text
    assert "USER 10001" in text


def test_the_provisioning_job_provisions_a_real_server(secrets: Path, tmp_path: Path) -> None:
    """The job's entry point, run as compose runs it, against a real nats-server started from
    the generated config (moved to loopback and a temporary store)."""
    import asyncio
    import os

    from launcher.nats import NatsServerProcess, free_port

    conf = json.loads((secrets / "nats.conf").read_text())
    port = free_port()
    conf.update(listen=f"127.0.0.1:{port}", http=f"127.0.0.1:{free_port()}",
                jetstream={"store_dir": str(tmp_path / "js"), "sync_interval": "always"})
    server = NatsServerProcess(json.dumps(conf), tmp_path / "nats", port)

    async def run() -> None:
        await server.start()
        try:
            env = {**os.environ, "INTERLOCK_NATS_URL": server.url,
                   "INTERLOCK_NATS_USER": "admin",
                   "INTERLOCK_NATS_PASSWORD": _env_of({"env_file": ["deploy/secrets/admin.env"]},
                                                      secrets)["INTERLOCK_NATS_PASSWORD"]}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.runtime.provision", env=env, cwd=str(ROOT),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, out.decode()
            hc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "deploy" / "healthcheck.py"), "gate",
                env={**env, "INTERLOCK_NATS_USER": "gate",
                     "INTERLOCK_NATS_PASSWORD": _env_of({"env_file": ["deploy/secrets/gate.env"]},
                                                        secrets)["INTERLOCK_NATS_PASSWORD"]},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            hout, _ = await asyncio.wait_for(hc.communicate(), 30)
            assert hc.returncode == 0, hout.decode()
        finally:
            await server.stop()

    asyncio.run(run())
