"""Shared fixtures: a real nats-server per test, configured and provisioned as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.runtime import natsconf, provision
from services.runtime.embedded import NatsServerProcess, free_port
from services.runtime.settings import NatsSettings


@dataclass
class NatsEnv:
    server: NatsServerProcess
    credentials: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, user: str) -> NatsSettings:
        return NatsSettings(url=self.url, user=user, password=self.credentials[user])


@pytest.fixture
async def nats_env(tmp_path: Path) -> AsyncIterator[NatsEnv]:
    creds = natsconf.new_credentials()
    port = free_port()
    text = natsconf.render(port=port, store_dir=tmp_path / "js", credentials=creds)
    server = NatsServerProcess(text, tmp_path / "nats", port)
    await server.start()
    try:
        await provision.provision(server.url, natsconf.ADMIN_USER, creds[natsconf.ADMIN_USER])
        yield NatsEnv(server, creds)
    finally:
        await server.stop()
