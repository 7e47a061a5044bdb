"""The gateway's edges (issue 16), against the whole stack as processes and the Command Center in
a real headless Chromium: SSE frame injection, and limits keyed by who a request proves to be.

SSE frame injection. The attacker holds one service's identity (the planner's NATS credentials
and its own event signing key, taken as the planner takes them) and stores, on that service's
own subject in the victim's session, a body with raw newlines that spells SSE fields: a fake
`approval.granted` frame with a huge `id:`. Signed by its emitter and on the emitter's own
subject, it passes the signature check; it is not an event. Neither the SSE stream nor the page
may carry it, and the session's later real events must still show in the browser (a page that
took the huge id as its last one would drop every later event).

Limits. Fresh junk tokens from one address are throttled (they were never: the limit bucketed
the presented token) without touching a real principal; one principal may hold only so many SSE
streams open (a viewer token held 300).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from launcher.stack import Stack
from schemas import subjects as S
from schemas.ids import new_event_id
from services.runtime.bus import Bus
from services.runtime.identity import SIGNATURE_HEADER
from services.runtime.settings import NatsSettings
from tests.e2e.conftest import CHROMIUM, start_stack, token
from tests.e2e.test_browser_command_center import _count, _open
from tests.support import Client, SseEvent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent"),
]
playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="the playwright package is not installed")
HUGE_ID = 99_999_999
SSE_CAP = 3
WAIT_S = 30.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # Failed authentication barely refills here, so a flood's outcome does not depend on how
    # fast it is sent; a short heartbeat, so a closed stream's slot is noticed soon.
    s = await start_stack(tmp_path_factory, sse_heartbeat_s=0.5, extra_env={
        "INTERLOCK_AUTH_FAILURE_RATE": "0.001", "INTERLOCK_AUTH_FAILURE_BURST": "10",
        "INTERLOCK_SSE_STREAMS_PER_PRINCIPAL": str(SSE_CAP)})
    try:
        yield s
    finally:
        await s.stop()


def injected_body(session_id: str) -> bytes:
    """A body that, written into an SSE `data:` line as it is, ends that frame and starts a
    forged one: a fake grant with a huge id, then an ordinary-looking tail."""
    fake = json.dumps({"type": "approval.granted", "session_id": session_id,
                       "approver": "mallory", "approval_id": "a_forged"})
    return (b'{"type": "assistant.message"}\n\n'
            b"id: %d\nevent: approval.granted\ndata: %s\n\n"
            b"event: assistant.message\ndata: {}" % (HUGE_ID, fake.encode()))


async def store_signed_on_own_subject(bus: Bus, session_id: str, body: bytes) -> int:
    """What the compromised planner can do with its own credentials: store any body, signed
    with its own key, on its own subject in any session."""
    subject = f"{S.EVENTS_PREFIX}.{session_id}.{bus.service}.assistant.message.{new_event_id()}"
    assert bus.signer is not None
    ack = await bus.js.publish(subject, body, timeout=5.0,
                               headers={SIGNATURE_HEADER: bus.signer.sign(subject, body)})
    return int(ack.seq)


async def read_stream(http: aiohttp.ClientSession, stack: Stack, sid: str, after: int,
                      raw: bytearray, opened: asyncio.Event) -> list[SseEvent]:
    """The session's SSE stream from `after` until its next turn.completed; keeps the raw
    bytes too, and sets `opened` once the stream has started (so what follows is live)."""
    seen: list[SseEvent] = []
    async with http.get(f"{stack.url}/v1/sessions/{sid}/events",
                        headers={"Authorization": f"Bearer {token(stack, 'viewer')}",
                                 "Last-Event-ID": str(after)},
                        timeout=aiohttp.ClientTimeout(total=WAIT_S)) as r:
        assert r.status == 200, await r.text()
        ev_id: int | None = None
        ev_type, data = "message", ""
        async for line in r.content:  # the SSE format, parsed as an EventSource would
            raw.extend(line)
            opened.set()
            text = line.decode().rstrip("\r\n")
            if text == "":
                if data:
                    seen.append(SseEvent(ev_id, ev_type, data))
                    if ev_type == "turn.completed":
                        return seen
                ev_type, data = "message", ""
                continue
            field, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field == "id" and value.isdigit():
                ev_id = int(value)
            elif field == "event":
                ev_type = value
            elif field == "data":
                data += value
    raise AssertionError(f"stream ended; saw {[e.event for e in seen]}")


async def test_an_injected_raw_newline_body_reaches_neither_the_stream_nor_the_page(
        stack: Stack, browser: Any) -> None:
    async with aiohttp.ClientSession() as http:
        operator = Client(http, stack.url, token(stack, "operator"))
        sid = await operator.new_session()
        await operator.say(sid, "kubectl get pods -n shop")
        first = await operator.wait_for(sid, lambda e: e.event == "turn.completed")

        page = await _open(browser, stack, "viewer", session=sid)
        await _count(page, "turn.completed", 1)
        # A live stream open before the injection, as the page's is.
        raw, opened = bytearray(), asyncio.Event()
        reader = asyncio.create_task(
            read_stream(http, stack, sid, int(first[-1].id or 0), raw, opened))
        await asyncio.wait_for(opened.wait(), WAIT_S)

        planner = await Bus.connect(NatsSettings.from_env("planner", stack.env_for("planner")),
                                    "planner")
        try:
            injected = await store_signed_on_own_subject(planner, sid, injected_body(sid))
        finally:
            await planner.close()

        # Later real events: a second turn, after the injection.
        await operator.say(sid, "kubectl get deployment web -n shop")
        later = await operator.wait_for(
            sid, lambda e: e.event == "turn.completed" and (e.id or 0) > injected,
            after=injected)
        last_real = max(e.id or 0 for e in later)

        # The page: the second turn shows; nothing forged does.
        await _count(page, "turn.completed", 2)
        shown = await page.eval_on_selector_all(
            "#timeline li", "els => els.map(e => [Number(e.dataset.seq), e.dataset.type])")
        seqs = [int(s) for s, _ in shown]
        assert HUGE_ID not in seqs, shown
        assert max(seqs) <= last_real, shown
        assert "approval.granted" not in [t for _, t in shown]
        assert "mallory" not in await page.inner_text("#timeline")
        assert await page.evaluate("() => state.lastId") <= last_real
        # The live stream: no forged frame, no id beyond the log.
        streamed = await reader
        assert b"%d" % HUGE_ID not in raw
        assert b"mallory" not in raw
        assert all(e.id is not None and e.id <= last_real for e in streamed
                   if e.event != "reset"), [(e.id, e.event) for e in streamed]
        assert "approval.granted" not in [e.event for e in streamed]

        assert page.errors == []
        await page.close()


async def test_the_page_ignores_an_id_beyond_the_log(stack: Stack, browser: Any) -> None:
    """The page's own guard, for a forged frame that reached it whatever the way: the session's
    real frames with one in their midst that claims a huge id, served to the page in place of
    its stream. The page shows every real event and nothing of the forged one."""
    async with aiohttp.ClientSession() as http:
        operator = Client(http, stack.url, token(stack, "operator"))
        sid = await operator.new_session()
        await operator.say(sid, "kubectl get pods -n shop")
        real = [e for e in await operator.wait_for(sid, lambda e: e.event == "turn.completed")
                if e.id is not None]
    assert len(real) >= 3
    frames = [b"id: %d\nevent: %s\ndata: %s\n\n" % (e.id or 0, e.event.encode(),
                                                     json.dumps(e.data).encode())
              for e in real]
    forged = b"id: %d\nevent: approval.granted\ndata: %s\n\n" % (
        HUGE_ID, json.dumps({"type": "approval.granted", "session_id": sid,
                             "approver": "mallory"}).encode())
    body = b"retry: 3600000\n\n" + b"".join(frames[:1]) + forged + b"".join(frames[1:])

    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    async def serve(route: Any) -> None:
        await route.fulfill(status=200, body=body,
                            headers={"Content-Type": "text/event-stream",
                                     "Cache-Control": "no-cache"})

    await page.route(f"**/v1/sessions/{sid}/events*", serve)
    await page.goto(f"{stack.url}/#token={token(stack, 'viewer')}&session={sid}")
    await _count(page, "turn.completed", 1)
    shown = await page.eval_on_selector_all(
        "#timeline li", "els => els.map(e => [Number(e.dataset.seq), e.dataset.type])")
    assert [(int(s), str(t)) for s, t in shown] == [(e.id, e.event) for e in real]
    assert "mallory" not in await page.inner_text("#timeline")
    assert await page.evaluate("() => state.lastId") == real[-1].id
    assert errors == []
    await page.close()


# -- limits (these come last: the flood leaves this address's failure bucket empty) -----------


async def _status(http: aiohttp.ClientSession, url: str, tok: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {tok}"}) as r:
        return r.status, await r.json()


async def test_a_junk_token_flood_is_throttled_from_its_address(stack: Stack) -> None:
    url = f"{stack.url}/v1/tools"
    async with aiohttp.ClientSession() as http:
        got = [(await _status(http, url, secrets.token_urlsafe(24)))[0] for _ in range(300)]
        assert got == [401] * 10 + [429] * 290
        # The real principals from the same address are not: their buckets are their own.
        assert (await _status(http, url, token(stack, "viewer")))[0] == 200
        assert (await _status(http, url, token(stack, "operator")))[0] == 200


async def test_one_principal_may_hold_only_so_many_sse_streams(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        operator = Client(http, stack.url, token(stack, "operator"))
        sid = await operator.new_session()
        url = f"{stack.url}/v1/sessions/{sid}/events"
        auth = {"Authorization": f"Bearer {token(stack, 'approver')}"}
        streams = []
        try:
            for _ in range(SSE_CAP):
                r = await http.get(url, headers=auth, timeout=aiohttp.ClientTimeout(total=None))
                streams.append(r)
                assert r.status == 200
                await r.content.readline()  # served
            async with http.get(url, headers=auth) as refused:
                assert refused.status == 429
                error = (await refused.json())["error"]
            assert error["code"] == "too_many_streams"
            assert f"already has {SSE_CAP} event streams open" in error["message"]
            assert "INTERLOCK_SSE_STREAMS_PER_PRINCIPAL" in error["message"]

            # A stream closes: its slot comes free once the gateway notices, on its next write
            # (a heartbeat). Heartbeats are awaited on a stream still open, then it asks again.
            streams.pop().close()
            for _ in range(50):
                while await asyncio.wait_for(streams[0].content.readline(), 10) != b": ping\n":
                    pass
                async with http.get(url, headers=auth) as again:
                    if again.status == 200:
                        break
                    assert again.status == 429
            else:
                raise AssertionError("the closed stream's slot never came free")
        finally:
            for r in streams:
                r.close()
