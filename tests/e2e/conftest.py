"""The whole stack as processes, once per test module."""

from __future__ import annotations

import asyncio
import os
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client, config

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from schemas.base import Event
from services.runtime.bus import Bus
from tests.support import Client, remember_keys
from tests.support_llm import ScriptedLLM


async def start_stack(tmp_path_factory: pytest.TempPathFactory, **cfg: object) -> Stack:
    """A stack on a free port, or on `http_port` when given (chosen before the stack starts:
    an OpenID Provider is told the gateway's redirect URI first)."""
    data = tmp_path_factory.mktemp("interlock")
    cfg.setdefault("http_port", free_port())
    s = Stack(StackConfig(data_dir=data, admin_token="t" * 32, **cfg))  # type: ignore[arg-type]
    await s.start()
    remember_keys(s)
    return s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory)
    try:
        yield s
    finally:
        codes = await s.stop()
    # SIGTERM → drain → exit 0 for every service that is still ours to stop.
    assert all(c == 0 for c in codes.values()), codes


async def stack_on_old_data(tmp_path_factory: pytest.TempPathFactory, fixture: Path) -> Stack:
    """A stack started on a data dir written by an earlier version (a tar.gz under data/), as
    an operator upgrading in place would: the upgrade tests' body."""
    data = tmp_path_factory.mktemp("old-data")
    with tarfile.open(fixture) as tar:
        tar.extractall(data, filter="data")
    stack = Stack(StackConfig(data_dir=data, http_port=free_port(), sandbox_time_scale=0.05))
    await stack.start()
    remember_keys(stack)
    return stack


async def model_stack(tmp_path_factory: pytest.TempPathFactory, base_url: str,
                      api_key: str) -> AsyncIterator[Stack]:
    """The stack with its planner on a scripted OpenAI-compatible model (tests/support_llm);
    the body of a module's `stack` fixture. The planner must exit cleanly."""
    s = Stack(StackConfig(
        data_dir=tmp_path_factory.mktemp("interlock"), http_port=free_port(),
        admin_token="t" * 32,
        extra_env={"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": api_key,
                   "INTERLOCK_MODEL": "scripted-1", "INTERLOCK_MODEL_RETRY_BASE": "0"},
    ))
    try:
        await s.start()
        remember_keys(s)
        yield s
    finally:
        codes = await s.stop()
    assert codes["planner"] == 0, codes


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def llm(request: pytest.FixtureRequest) -> AsyncIterator[ScriptedLLM]:
    """A scripted model that answers with the module's `SCRIPT["now"]`, set by each test."""
    script = request.module.SCRIPT
    async with ScriptedLLM(lambda req: script["now"](req)) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scripted_stack(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedLLM,
                         request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """`model_stack` on the module's `llm`, with the module's `API_KEY` (a value a test looks
    for in the log); a module's `stack` fixture returns it."""
    key = getattr(request.module, "API_KEY", "sk-e2e-scripted-never-logged")
    async for s in model_stack(tmp_path_factory, llm.base_url, key):
        yield s


async def approve_and_result(operator: Client, approver: Client, sid: str,
                             req: dict[str, Any], after: int) -> dict[str, Any]:
    """The approver approves the card `req`; the call's `tool.result`, as the operator sees it."""
    status, body = await approver.call("POST", f"/v1/approvals/{req['approval_id']}/decision",
                                       {"decision": "approve"})
    assert status == 202, body
    got = await operator.wait_for(sid, lambda e: e.event in ("tool.result", "command.refused"),
                                  after=after)
    assert got[-1].event == "tool.result", got[-1].data
    return dict(got[-1].data)


def people(stack: Stack, http: aiohttp.ClientSession) -> tuple[Client, Client]:
    """The operator who asks and the approver who decides, as HTTP clients."""
    return (Client(http, stack.url, str(stack.tokens["operator"]["token"])),
            Client(http, stack.url, str(stack.tokens["approver"]["token"])))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def bus_as(stack: Stack, user: str) -> Bus:
    """A bus connection with one of the stack's NATS identities (to attack, or to audit)."""
    return await Bus.connect(stack.nats_settings(user), user)


async def record_as(stack: Stack, user: str, *events: Event) -> None:
    """Events appended with a service's own NATS identity and event key, in order: what that
    service, compromised, could record."""
    bus = await bus_as(stack, user)
    try:
        for event in events:
            await bus.append(event)
    finally:
        await bus.close()


async def session_events(stack: Stack, sid: str) -> list[Any]:
    """A session's events as stored, read with the admin's NATS identity."""
    bus = await bus_as(stack, "admin")
    try:
        return [s.event for s in await bus.session(sid)]
    finally:
        await bus.close()


ROOT = Path(__file__).resolve().parents[2]
CLI_WAIT_S = 60.0  # a bound on one command, not an expectation


async def run_cli(env: dict[str, str], *args: str, exe: str | None = None
                  ) -> tuple[int, str, str]:
    """One `interlock ARGS` as a process in `env` (this checkout's code, or the console script
    `exe`): its exit code, stdout and stderr."""
    cmd = [exe] if exe else [sys.executable, "-m", "launcher.cli"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, *args, env=env, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_WAIT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return int(proc.returncode or 0), out.decode(), err.decode()


async def pending_scale(operator: Client, sid: str, n: int, after: int = 0) -> dict[str, Any]:
    """`kubectl scale deploy/web --replicas=N -n shop` said in the session: its card (with the
    stream id it was seen at as `seq`)."""
    await operator.say(sid, f"kubectl scale deploy/web --replicas={n} -n shop")
    seen = await operator.wait_for(sid, lambda e: e.event == "approval.requested", after=after)
    return {**seen[-1].data, "seq": seen[-1].id}


def token(stack: Stack, who: str) -> str:
    if who == "admin":
        return stack.cfg.admin_token
    return str(stack.tokens[who]["token"])


def kube(stack: Stack) -> client.ApiClient:
    """The official client on the stack's cluster (the sandbox unless a kubeconfig was given)."""
    assert stack.kubeconfig is not None
    return config.new_client_from_config(config_file=str(stack.kubeconfig))


def replicas(stack: Stack, name: str = "web", ns: str = "shop") -> int:
    """What the cluster says, not what Interlock says: the deployment's spec.replicas."""
    return int(client.AppsV1Api(kube(stack)).read_namespaced_deployment(name, ns).spec.replicas)


async def rolled_out(stack: Stack, name: str = "web", ns: str = "shop",
                     timeout: float = 60.0) -> None:
    """Until the deployment's last change has rolled out (the sandbox's controllers stop
    updating its status, so its resourceVersion stops moving): a write held on it now is not
    refused at run time because the object changed since its dry run."""
    api = client.AppsV1Api(kube(stack))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        d = await asyncio.to_thread(api.read_namespaced_deployment, name, ns)
        st = d.status
        if (st.observed_generation or 0) >= (d.metadata.generation or 0) \
                and st.updated_replicas == st.ready_replicas == st.replicas == d.spec.replicas:
            return
        assert loop.time() < deadline, f"deployment/{name} in {ns} did not roll out: {st}"
        await asyncio.sleep(0.1)


# Headless Chromium (Debian's `chromium`), driven by Playwright: modules that use `browser` mark
# themselves `browser` and skip when either is absent.
CHROMIUM = Path(os.environ.get("INTERLOCK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api",
                                         reason="the playwright package is not installed")
    pw = await playwright_api.async_playwright().start()
    b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                 headless=True)
    try:
        yield b
    finally:
        await b.close()
        await pw.stop()
