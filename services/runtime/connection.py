"""A service's connection to the log: its own NATS user, its signing key and keyring, and the
state the log's roles share (see log, reader, consume)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Self

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

from schemas import subjects as S
from services.runtime import identity, rawsub
from services.runtime.errors import ConfigError
from services.runtime.identity import Keyring, Signer
from services.runtime.sessions import SessionCache
from services.runtime.settings import NatsSettings
from services.runtime.stored import Stored

log = logging.getLogger(__name__)

# The bus is away for a moment (reconnecting, or a stream electing a leader): retry with backoff.
TRANSIENT = (NatsTimeoutError, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError)


def _identity(settings: NatsSettings, service: str) -> tuple[Signer | None, Keyring | None]:
    """The signing key and keyring a connection works with. A service must have its keyring
    (and an emitter its own key, which the keyring must list under its name): a service that
    could not verify, or whose events nobody could verify, must not start."""
    signer = identity.load_signer(Path(settings.signing_key_file), service) \
        if settings.signing_key_file else None
    keyring = identity.load_keyring(Path(settings.keyring_file)) \
        if settings.keyring_file else None
    if service in (*S.SERVICES, *S.OBSERVERS) and keyring is None:
        raise ConfigError(f"{service}: no keyring (INTERLOCK_KEYRING_FILE)")
    if service in S.SERVICES and signer is None:
        raise ConfigError(f"{service}: no event signing key (INTERLOCK_SIGNING_KEY_FILE)")
    if signer is not None and keyring is not None:
        entry = keyring.entries.get(signer.kid)
        if entry is None or entry.service != service:
            raise ConfigError(f"{service}: the keyring does not list its signing key "
                              f"{signer.kid} under {service!r}")
    return signer, keyring


class Connection:
    def __init__(self, nc: NATS, service: str, signer: Signer | None = None,
                 keyring: Keyring | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.service = service
        # Signs every event this bus appends; a bus without one (an admin's) cannot append.
        self.signer = signer
        # Verifies every event this bus reads or consumes that another identity wrote. Only a
        # tool's bus (admin) may have none: every service is given one (NatsSettings.from_env).
        self.keyring = keyring
        # Event types this service never acts upon (see not_acted_upon): its reads return them
        # without checking their signature. What it consumes is always checked.
        self._unchecked: frozenset[str] = frozenset()
        self._verified: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self._skipped = 0  # stored events a read left out (see session)
        self._replicas: int | None = None
        self._ack_wait = 30.0
        self._session_starts: OrderedDict[str, int] = OrderedDict()
        self._cache: SessionCache[Stored] | None = None

    @classmethod
    async def connect(cls, settings: NatsSettings, service: str, **kwargs: Any) -> Self:
        signer, keyring = _identity(settings, service)

        async def error_cb(exc: Exception) -> None:
            # Permission violations reach only this callback (notes/nats.md §2).
            log.warning("nats error: %s", exc, extra={"error": type(exc).__name__})

        # RawClient: nats-py's client, plus raw delivery for Direct Get replies (see read).
        nc = rawsub.RawClient()
        await nc.connect(
            [u.strip() for u in settings.url.split(",") if u.strip()],  # a cluster: every URL
            user=settings.user,
            password=settings.password,
            name=f"interlock-{service}",
            inbox_prefix=f"_INBOX_{service}".encode(),
            error_cb=error_cb,
            max_reconnect_attempts=-1,
            # nats-py annotates an int, but only ever sleeps for it.
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            connect_timeout=5,
            **kwargs,
        )
        return cls(nc, service, signer, keyring)

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()
