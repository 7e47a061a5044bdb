"""Run a sandbox on a background thread, for synchronous code (tests of the executor, demos)
that cannot share an event loop with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox.kubeconfig import write_kubeconfig
from sandbox.server import Sandbox


@dataclass(frozen=True)
class Running:
    sandbox: Sandbox
    url: str
    kubeconfig: Path
    loop: asyncio.AbstractEventLoop


@contextmanager
def running_sandbox(
    kubeconfig: Path,
    scenarios: list[str] | None = None,
    *,
    time_scale: float = 0.02,
    start_timeout: float = 30.0,
) -> Iterator[Running]:
    """Starts a sandbox on its own thread and loop, writes `kubeconfig`, and stops it on exit.
    Read `running.sandbox.store` only; mutate the cluster through the API."""
    loop = asyncio.new_event_loop()
    sandbox = Sandbox(scenarios, time_scale=time_scale)
    started = threading.Event()
    thread = threading.Thread(target=loop.run_forever, name="sandbox", daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(sandbox.start(), loop).result(start_timeout)
        started.set()
        yield Running(sandbox, url, write_kubeconfig(kubeconfig, url), loop)
    finally:
        if started.is_set():
            asyncio.run_coroutine_threadsafe(sandbox.stop(), loop).result(start_timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(start_timeout)
        loop.close()
