"""Shared fixtures: a real nats-server per test, configured and provisioned as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.nats import NatsServerProcess, free_port
from schemas import subjects as S
from services.runtime import identity, natsconf, provision
from services.runtime.settings import NatsSettings


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the long source checks the collected tests want (tests/background.py)."""
    if any(item.name == "test_mypy_strict_on_schemas_services_clients_and_launcher"
           for item in session.items):
        from tests import background

        background.start("mypy")


@dataclass
class NatsEnv:
    server: NatsServerProcess
    credentials: dict[str, str]
    keys: Path  # each service's event signing key and the keyring, as `interlock up` has them

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, user: str) -> NatsSettings:
        """A user's settings as a service gets them: its own signing key if it writes events,
        and the keyring (admin too: what it reads is verified)."""
        return NatsSettings(
            url=self.url, user=user, password=self.credentials[user],
            signing_key_file=str(self.keys / f"{user}.key") if user in S.SERVICES else "",
            keyring_file=str(self.keys / identity.KEYRING_FILE))


@pytest.fixture
async def nats_env(tmp_path: Path) -> AsyncIterator[NatsEnv]:
    creds = natsconf.new_credentials()
    port = free_port()
    text = natsconf.render(port=port, store_dir=tmp_path / "js", credentials=creds)
    server = NatsServerProcess(text, tmp_path / "nats", port)
    await server.start()
    try:
        await provision.provision(server.url, natsconf.ADMIN_USER, creds[natsconf.ADMIN_USER])
        keys = tmp_path / "keys"
        identity.provision_keys(keys, S.SERVICES)
        yield NatsEnv(server, creds, keys)
    finally:
        await server.stop()
