"""The cause of the NATS-fault stalls (issue 9), reduced to one consume loop and one server.

A handler finishes its work while the server is away; the ack that follows is a request, so it
raised nats' TimeoutError. Nothing caught it, so the exception ended `Bus.consume`, the
service's `run` returned through its finally, and the process exited. In the whole-stack tests
the executor, the gate and the notifier died this way at the first NATS restart or stream-leader
kill, and the workload stalled. Fixed in bus.py (`_settle`, and `_fetch_loop` survives any batch).

Expected: the loop survives (an unconfirmed ack is harmless: the message comes back after
ack_wait and idempotent handlers find their work done) and later messages are handled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from launcher.nats import NatsServerProcess, free_port
from schemas import subjects as S
from schemas.events import AnyEvent
from schemas.session import UserMessage
from services.runtime import identity, natsconf, provision
from services.runtime.bus import Bus
from services.runtime.delivery import Delivery
from services.runtime.settings import NatsSettings

pytestmark = [
    pytest.mark.chaos, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[NatsServerProcess, dict[str, str]]]:
    data: Path = tmp_path_factory.mktemp("bus-loss")
    creds = natsconf.new_credentials()
    port = free_port()
    nats = NatsServerProcess(natsconf.render(port=port, store_dir=data / "js",
                                             credentials=creds), data / "nats", port)
    await nats.start()
    await provision.provision(nats.url, "admin", creds["admin"], ack_wait=2.0)
    try:
        yield nats, creds
    finally:
        await nats.stop()


async def test_an_ack_lost_to_a_server_restart_does_not_end_the_consume_loop(
    server: tuple[NatsServerProcess, dict[str, str]], tmp_path: Path,
) -> None:
    nats, creds = server

    keys = tmp_path / "keys"
    identity.provision_keys(keys, S.SERVICES)

    async def bus(user: str) -> Bus:
        return await Bus.connect(NatsSettings(
            url=nats.url, user=user, password=creds[user],
            signing_key_file=str(keys / f"{user}.key"),
            keyring_file=str(keys / identity.KEYRING_FILE)), user)

    planner, gateway = await bus("planner"), await bus("gateway")
    handled: list[str] = []
    working = asyncio.Event()
    finish = asyncio.Event()
    progress = asyncio.Event()  # set each time the handler finishes a message

    async def handler(d: Delivery[AnyEvent]) -> None:
        event = d.event
        if not handled:
            working.set()
            await finish.wait()  # the server dies while this message is being handled
        handled.append(event.event_id)
        progress.set()

    stop = asyncio.Event()
    loop_task = asyncio.create_task(planner.consume("planner", handler, stop))
    try:
        first = UserMessage(session_id="s_buslossone", text="hello")
        await gateway.append(first)
        await asyncio.wait_for(working.wait(), 30)
        nats.kill()  # SIGKILL: the handler's ack will find no server
        finish.set()
        async with asyncio.timeout(30):
            while first.event_id not in handled:
                progress.clear()
                await progress.wait()
        await nats.start()

        # The loop must still be consuming: a later message is handled.
        second = UserMessage(session_id="s_buslosstwo", text="again")
        await gateway.append(second, attempts=20)
        async with asyncio.timeout(30):
            while second.event_id not in handled:
                assert not loop_task.done(), f"consume() ended: {loop_task.exception()!r}"
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loop_task, 10)
        await planner.close()
        await gateway.close()
