"""The sandbox cluster: store + controllers + HTTP API, started and stopped as one unit."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web

from sandbox.apiserver import discovery, policy
from sandbox.apiserver.api import ResourceApi
from sandbox.apiserver.responses import error_response
from sandbox.controllers.autoscaling import Autoscaler
from sandbox.controllers.batch import Batch
from sandbox.controllers.core import Controllers
from sandbox.controllers.endpoints import Endpoints
from sandbox.controllers.events import Recorder
from sandbox.controllers.rollouts import Rollouts
from sandbox.controllers.telemetry import LogBook, Metrics
from sandbox.controllers.workloads import Workloads
from sandbox.scenarios.loader import CLUSTER, Loader, available, read
from sandbox.state.errors import ApiError
from sandbox.state.store import Store

log = logging.getLogger(__name__)


def _json(body: object, content_type: str = "application/json") -> web.Response:
    return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": content_type})


class Sandbox:
    """A practice Kubernetes cluster. Scenarios load (and controllers converge) in the
    constructor, so `store` is inspectable before `start()`.

    `time_scale` multiplies the pretend kubelet's start and readiness delays and Deployments'
    progress deadlines (tests use a small value); timelines written in scenario annotations
    (OOM every 6m30s) are not scaled."""

    def __init__(
        self, scenarios: list[str] | None = None, *, time_scale: float = 1.0, seed: int = 0
    ) -> None:
        self.scenarios = available() if scenarios is None else list(dict.fromkeys(scenarios))
        for name in self.scenarios:
            read(name)  # fail fast on unknown names
        self.store = Store()
        self.recorder = Recorder(self.store)
        self.logbook = LogBook(self.store)
        self.metrics = Metrics(self.store)
        self.api = ResourceApi(self.store, self.logbook, self.metrics)
        self.controllers = Controllers(self.store, self.recorder, time_scale=time_scale, seed=seed)
        # Each registers its reconcilers (and what wakes them) on the one queue.
        self.rollouts = Rollouts(self.controllers)
        self.endpoints = Endpoints(self.controllers)
        self.workloads = Workloads(self.controllers)
        self.batch = Batch(self.controllers)
        self.autoscaler = Autoscaler(self.controllers, self.metrics)
        self.url = ""
        self._runner: web.AppRunner | None = None
        loader = Loader(self.store, self.logbook, self.recorder, self.api.allocate_ip)
        for name in [CLUSTER, *self.scenarios]:
            loader.load(name)
        self.controllers.settle()
        for name in [CLUSTER, *self.scenarios]:
            loader.load_events(name)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a watch whose client hung up is cancelled at once instead of
        # lingering until its next write.
        self._runner = web.AppRunner(
            app,
            shutdown_timeout=0.5,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        self.controllers.start(asyncio.get_running_loop())
        self.controllers.resync()
        return self.url

    async def stop(self) -> None:
        self.api.stop_watches()
        self.controllers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Waits until `predicate()` is truthy, re-checking after every stored change (no
        polling); TimeoutError names nothing, so callers assert on the state afterwards."""
        queue = self.store.subscribe()
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    if await queue.get() is None:
                        raise RuntimeError("the sandbox stopped while waiting")
        finally:
            self.store.unsubscribe(queue)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- routing -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        accept = request.headers.get("Accept", "")
        try:
            if request.method == "GET":
                response = self._static(path, accept, request)
                if response is not None:
                    return response
            if path == policy.SSAR_PATH:
                return await policy.access_review(request, self.store)
            answer = await self.api.handle(request)
            if request.method != "GET":
                # What changed the cluster, for whoever watches the sandbox's log in a demo.
                dry = " (dry run)" if "All" in request.query.getall("dryRun", []) else ""
                log.info("%s %s -> %s%s", request.method, request.path, answer.status, dry)
            await policy.delay_write(self.store, request, answer)
            return answer
        except ApiError as err:
            return error_response(err)

    def _static(self, path: str, accept: str, request: web.Request) -> web.Response | None:
        if path == "/version":
            return _json(discovery.VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(core=True), discovery.AGGREGATED_CT)
            return _json(discovery.api_versions(request.host))
        if path == "/apis":
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(core=False), discovery.AGGREGATED_CT)
            return _json(discovery.api_group_list())
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return self._or_404(discovery.resource_list("", parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            return self._or_404(discovery.api_group(parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            return self._or_404(discovery.resource_list(parts[1], parts[2]))
        if path == "/openapi/v3":
            return _json(discovery.openapi_root())
        if parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            if rest[:1] == ["api"] and len(rest) == 2:
                return self._or_404(discovery.openapi_gv("", rest[1]))
            if rest[:1] == ["apis"] and len(rest) == 3:
                return self._or_404(discovery.openapi_gv(rest[1], rest[2]))
            return self._or_404(None)
        if parts[0] == "openapi":
            return self._or_404(None)
        return None

    @staticmethod
    def _or_404(body: object | None) -> web.Response:
        if body is None or (isinstance(body, dict) and body.get("paths") == {}):
            return error_response(
                ApiError(404, "NotFound", "the server could not find the requested resource")
            )
        return _json(body)
