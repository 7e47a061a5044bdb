"""The Command Center in a real headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`), against the whole stack as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from clients.stack import Stack, StackConfig
from services.runtime.embedded import free_port
from tests.support import Client

CHROMIUM = Path(os.environ.get("INTERLOCK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is absent: apt-get install -y chromium "
                              "(`make test` does it when run as root)"),
]
playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="the playwright package is not installed")
WAIT_MS = 30_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cc_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("cc"), http_port=free_port(),
                          admin_token="b" * 32))
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    pw = await playwright_api.async_playwright().start()
    b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                 headless=True)
    try:
        yield b
    finally:
        await b.close()
        await pw.stop()


def _replicas(stack: Stack, name: str = "web", ns: str = "shop") -> int:
    from kubernetes import client, config

    assert stack.kubeconfig is not None
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))
    return int(apps.read_namespaced_deployment(name, ns).spec.replicas)


def _token(stack: Stack, who: str) -> str:
    return str(stack.tokens[who]["token"])


async def _open(browser: Any, stack: Stack, who: str, base: str | None = None) -> Any:
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(f"{base or stack.url}/#token={_token(stack, who)}")
    await page.wait_for_selector("#app:not([hidden])")
    assert _token(stack, who) not in page.url  # the token leaves the address bar
    return page


async def _timeline(page: Any) -> list[tuple[int, str]]:
    items = await page.eval_on_selector_all(
        "#timeline li", "els => els.map(e => [Number(e.dataset.seq), e.dataset.type])")
    return [(int(s), str(t)) for s, t in items]


async def _count(page: Any, event_type: str, n: int) -> None:
    await page.wait_for_function(
        "([t, n]) => document.querySelectorAll(`#timeline li[data-type='${t}']`).length >= n",
        arg=[event_type, n])


async def _chat(page: Any, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.click("#send")
    await page.wait_for_function("() => document.querySelector('#chat-input').value === ''")


async def test_approve_a_scale_from_the_command_center(cc_stack: Stack, browser: Any) -> None:
    page = await _open(browser, cc_stack, "approver")
    await _chat(page, "kubectl scale deploy/web --replicas=4 -n shop")

    card = page.locator(".approval-card").first
    await card.wait_for()
    diff = card.locator("table.diff tr").first
    assert [t.strip() for t in await diff.locator("td").all_inner_texts()] == \
        ["spec.replicas", "3", "→", "4"]
    text = await card.inner_text()
    for needle in ("scale deployment/web in shop", "Where", "Why", "Expected",
                   "Blast radius", "replicas 3 → 4", "Expires"):
        assert needle in text, (needle, text)

    # Two quick clicks are one decision.
    approve = card.locator("button.approve", has_text="Approve").first
    await approve.dblclick()
    await card.locator(".card-status", has_text="Approved").wait_for()
    await _count(page, "tool.result", 1)
    result = page.locator("#timeline li[data-type='tool.result']").first
    assert await result.get_attribute("class") == "tool-result ok"
    assert "3 → 4" in await result.inner_text()
    assert _replicas(cc_stack) == 4

    timeline = await _timeline(page)
    types = [t for _, t in timeline]
    assert types.count("approval.decided") == 1
    assert types.index("approval.requested") < types.index("approval.granted") \
        < types.index("tool.result")
    seqs = [s for s, _ in timeline]
    assert seqs == sorted(set(seqs))
    assert page.errors == []
    await page.close()


def _second_gateway(stack: Stack, port: int) -> subprocess.Popen[bytes]:
    env = stack.env_for("gateway")
    env["INTERLOCK_HTTP_PORT"] = str(port)
    log = open(stack.data / "logs" / "gateway-2.log", "ab")  # noqa: SIM115
    try:
        return subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


async def test_the_page_resumes_after_the_gateway_is_killed(cc_stack: Stack,
                                                            browser: Any) -> None:
    page = await _open(browser, cc_stack, "approver")
    await page.click("#new-session")
    await page.wait_for_function("() => location.hash.includes('session=')")
    await _chat(page, "kubectl get pods -n shop")
    await _count(page, "turn.completed", 1)
    sid = (await page.evaluate("() => state.current"))
    assert sid

    await cc_stack.stop_service("gateway", signal.SIGKILL)
    await page.locator("#conn", has_text="reconnecting").wait_for()

    # While the page's gateway is down, the session goes on through another instance.
    port = free_port()
    other = _second_gateway(cc_stack, port)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            api = Client(http, base, _token(cc_stack, "operator"))
            await _wait_ready(http, base, other)
            await api.say(sid, "kubectl get deployment web -n shop")
            log = await api.wait_for(
                sid, lambda e, n=[0]: e.event == "turn.completed" and _nth(n, 2))

            cc_stack.start_service("gateway")
            await cc_stack.wait_gateway()
            await page.wait_for_function("n => document.querySelectorAll('#timeline li').length"
                                         " >= n", arg=len(log))
            await page.locator("#conn", has_text="live").wait_for()
    finally:
        other.send_signal(signal.SIGTERM)
        other.wait(timeout=20)

    shown = await _timeline(page)
    expected = [(int(e.id or 0), e.event) for e in log]
    assert shown[:len(expected)] == expected  # nothing lost, nothing repeated, same order
    assert len({s for s, _ in shown}) == len(shown)
    assert [t for _, t in shown].count("tool.result") == 2
    assert page.errors == []
    await page.close()


async def _wait_ready(http: aiohttp.ClientSession, base: str,
                      proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        assert proc.poll() is None, "the second gateway exited"
        try:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)  # polling a port that is not open yet; bounded
    raise AssertionError("the second gateway never became ready")


def _nth(counter: list[int], n: int) -> bool:
    counter[0] += 1
    return counter[0] >= n
