"""The Command Center in a real headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`), against the whole stack as processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from launcher.nats import free_port
from launcher.stack import Stack, StackConfig
from tests.e2e.conftest import CHROMIUM
from tests.e2e.test_passkeys_browser import signing_passkey
from tests.support import Client, remember_keys

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
        remember_keys(s)
        yield s
    finally:
        await s.stop()


def _replicas(stack: Stack, name: str = "web", ns: str = "shop") -> int:
    from kubernetes import client, config

    assert stack.kubeconfig is not None
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))
    return int(apps.read_namespaced_deployment(name, ns).spec.replicas)


def _token(stack: Stack, who: str) -> str:
    return str(stack.tokens[who]["token"])


async def _open(browser: Any, stack: Stack, who: str, base: str | None = None,
                width: int = 1280, height: int = 800, session: str = "") -> Any:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    token = stack.cfg.admin_token if who == "admin" else _token(stack, who)
    fragment = f"#token={token}" + (f"&session={session}" if session else "")
    await page.goto(f"{base or stack.url}/{fragment}")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("body[data-ready]")  # sessions and approvals loaded
    assert token not in page.url  # the token leaves the address bar
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
    # At a host name, with a passkey enrolled for the approver: Approve signs with it.
    page = await _open(browser, cc_stack, "approver",
                       base=f"http://localhost:{cc_stack.cfg.http_port}")
    await signing_passkey(page, cc_stack, "approver")
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
    # The page opens the latest session when it loads: the new one is current once it differs
    # (the address already named a session, so it cannot tell).
    before = await page.evaluate("() => state.current")
    await page.click("#new-session")
    await page.wait_for_function("old => state.current && state.current !== old", arg=before)
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


# -- the card an operator trusts, at 1440 px and on a 390 px phone ----------------------------

PAYMENT = "kubectl set resources deploy/payment-service -n production --limits=memory=512Mi"
DESKTOP, PHONE = (1440, 900), (390, 844)


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (inner["x"] >= outer["x"] - 0.5 and inner["y"] >= outer["y"] - 0.5
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5)


async def _memory_diff_visible(page: Any, card: Any, width: int) -> None:
    """The memory row's new value is drawn inside the card's box and on screen, not clipped."""
    row = card.locator("table.diff tr", has=page.locator("td.path", has_text="memory")).first
    after, before = row.locator("td.after"), row.locator("td.before")
    assert (await after.inner_text()).strip() == "512Mi"
    assert (await before.inner_text()).strip() == "256Mi"
    assert "line-through" in await before.evaluate("e => getComputedStyle(e).textDecorationLine")
    await after.scroll_into_view_if_needed()
    a_box, c_box = await after.bounding_box(), await card.bounding_box()
    assert a_box is not None
    assert c_box is not None
    assert a_box["width"] > 0, a_box
    assert _inside(a_box, c_box), (a_box, c_box)
    assert a_box["x"] + a_box["width"] <= width, (a_box, width)
    # Nothing covers or clips it: the element at its centre is the value itself.
    assert await after.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === e; }")


async def _no_sideways_scroll(page: Any) -> None:
    sw, vw = await page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert sw <= vw, (sw, vw)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def payment_card(cc_stack: Stack, browser: Any) -> str:
    """The seed's own example in direct mode, asked for by `approver` (so barred from approving
    it: production is protected). Returns its session id."""
    page = await _open(browser, cc_stack, "approver", width=DESKTOP[0], height=DESKTOP[1])
    before = await page.evaluate("() => state.current")
    await page.click("#new-session")
    await page.wait_for_function("old => state.current && state.current !== old", arg=before)
    sid = str(await page.evaluate("() => state.current"))
    await _chat(page, PAYMENT)
    card = page.locator(f".approval-card[data-session-id='{sid}']").first
    await card.wait_for()
    # The card this session just caused is brought into view and marked.
    await page.wait_for_function(
        "sid => { const c = document.querySelector("
        "`.approval-card.highlight[data-session-id='${sid}']`);"
        " if (!c) return false; const r = c.getBoundingClientRect();"
        " return r.top < window.innerHeight && r.bottom > 0; }", arg=sid)
    await page.close()
    return sid


async def test_payment_memory_diff_inside_the_card_at_1440(
        cc_stack: Stack, browser: Any, payment_card: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = tmp_path_factory.mktemp("screenshots")
    page = await _open(browser, cc_stack, "approver", width=DESKTOP[0], height=DESKTOP[1],
                       session=payment_card)
    await page.wait_for_function("sid => state.current === sid", arg=payment_card)
    card = page.locator(f".approval-card[data-session-id='{payment_card}']").first
    await card.wait_for()
    # Grouped by session, the open session's group first and marked as this session.
    group = page.locator(".approval-group").first
    assert await group.get_attribute("data-session-id") == payment_card
    assert "current" in (await group.get_attribute("class") or "")
    await _memory_diff_visible(page, card, DESKTOP[0])
    await _no_sideways_scroll(page)

    text = await card.inner_text()
    # "Where" names the cluster the executor's dry run resolved (the sandbox's context).
    for needle in ("Where", "namespace production on cluster sandbox", "Blast radius", "Policy:",
                   "may not approve: approver"):
        assert needle in text, (needle, text)
    # Risk flags sit above the rationale.
    flags, why = card.locator(".flags"), card.locator("dt", has_text="Why")
    assert (await flags.bounding_box())["y"] < (await why.bounding_box())["y"]
    # The requester is barred: Approve is disabled and the card says why.
    approve = card.locator(".actions button.approve")
    assert await approve.is_disabled()
    reason = await card.locator(".barred").inner_text()
    assert "you (approver)" in reason, reason
    assert "may not" in reason, reason
    assert "may not" in (await approve.get_attribute("title") or "")
    # Session view → its card, and card → its session.
    await page.locator("#session-pending button").first.click()
    assert "highlight" in (await card.get_attribute("class") or "")
    assert "open session" in await group.locator(":scope > h3").inner_text()
    await page.screenshot(path=str(shots / "desktop-1440.png"), full_page=True)
    await card.screenshot(path=str(shots / "desktop-1440-card.png"))

    # Someone else (admin holds every role) may decide: nothing is disabled for them.
    other = await _open(browser, cc_stack, "admin", width=DESKTOP[0], height=DESKTOP[1])
    ocard = other.locator(".approval-card", has_text="payment-service").first
    await ocard.wait_for()
    assert await ocard.locator(".actions button.approve").is_enabled()
    assert await ocard.locator(".barred").is_hidden()
    # A Modify says the modifier is named in the new request's policy line (and barred there).
    await ocard.locator(".actions button", has_text="Modify").click()
    note = await ocard.locator(".modify-note").inner_text()
    assert "name you (admin) as its modifier in the policy line" in note, note
    assert "may not approve it" in note, note
    await ocard.screenshot(path=str(shots / "desktop-1440-modify.png"))
    assert page.errors == []
    assert other.errors == []
    await other.close()
    await page.close()


async def test_phone_shows_the_card_first_and_the_chat_box(
        cc_stack: Stack, browser: Any, payment_card: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = tmp_path_factory.mktemp("screenshots")
    page = await _open(browser, cc_stack, "approver", width=PHONE[0], height=PHONE[1],
                       session=payment_card)
    await page.wait_for_function("sid => state.current === sid", arg=payment_card)
    card = page.locator(".approval-card", has_text="payment-service").first
    await card.wait_for()
    await page.screenshot(path=str(shots / "phone-390-top.png"))
    await _no_sideways_scroll(page)
    # One column, pending approvals first: the pane starts above the conversation.
    pane = await page.locator("#approvals-pane").bounding_box()
    conv = await page.locator("#conversation").bounding_box()
    assert pane["y"] < conv["y"]
    assert pane["width"] <= PHONE[0]
    assert (await card.bounding_box())["y"] < PHONE[1]  # on the first screen
    await _memory_diff_visible(page, card, PHONE[0])
    await page.screenshot(path=str(shots / "phone-390-card.png"))

    box = page.locator("#chat-input")
    assert await box.evaluate("e => e.tagName") == "TEXTAREA"
    await box.scroll_into_view_if_needed()
    b = await box.bounding_box()
    assert b["width"] >= 200, b
    assert b["x"] >= 0, b
    assert b["x"] + b["width"] <= PHONE[0], b
    assert await page.locator("#send").is_visible()
    # Shift+Enter is a new line; the text stays until Enter sends it.
    await box.click()
    await box.type("kubectl get pods")
    await box.press("Shift+Enter")
    await box.type("-n shop")
    assert await box.input_value() == "kubectl get pods\n-n shop"
    await box.fill("")
    await _no_sideways_scroll(page)
    # The Slack help opens in the pane, says who to link, and fits the phone too.
    await page.locator("#slack-help summary").click()
    enrol = await page.locator("#slack-enrol").inner_text()
    assert enrol == "interlock keys enroll approver --slack TEAM_ID/USER_ID", enrol
    assert "No Slack user is linked to approver" in await page.locator("#slack-status").inner_text()
    await _no_sideways_scroll(page)
    await page.screenshot(path=str(shots / "phone-390-full.png"), full_page=True)
    assert page.errors == []
    await page.close()


async def test_audit_view_shows_the_verdict(cc_stack: Stack, browser: Any,
                                            payment_card: str,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    shots = tmp_path_factory.mktemp("screenshots")
    page = await _open(browser, cc_stack, "viewer", width=PHONE[0], height=PHONE[1],
                       session=payment_card)
    await page.wait_for_function("sid => state.current === sid", arg=payment_card)
    await page.click("#show-audit")
    verdict = page.locator("#audit-view .verdict")
    await verdict.wait_for()
    assert "intact" in await verdict.inner_text()
    assert "set_resources deployment/payment-service in production" in \
        await page.locator("#audit-view .writes").inner_text()
    assert await page.locator("#timeline").is_hidden()
    await _no_sideways_scroll(page)
    await page.screenshot(path=str(shots / "phone-390-audit.png"), full_page=True)
    assert page.errors == []
    await page.close()


NEW_FIELDS_JS = """() => {
  const target = {cluster: "kind-sandbox", namespace: "", kind: "namespace", name: "staging"};
  const card = renderCard({
    approval_id: "a_demo", session_id: "s_demo",
    expires_at: new Date(Date.now() + 6e5).toISOString(),
    summary: "Delete 3 PVCs, 5 services, 12 pods in staging",
    calls: [{call_id: "c1", tool: "delete", args: {kind: "namespace", name: "staging"}, target,
             diff: [], blast_radius: {summary: "deletes everything in it",
               production_like: false, affected_namespaces: ["staging"],
               owners: ["CronJob/nightly-reconcile"],
               mounted_by: ["statefulset/db (0 replicas)"], headless: true}}],
    rationale: "clean up", evidence: ["the model says it is unused"],
    gathered_evidence: ["OOMKilled 3 times in 20 min", "memory 241Mi of 256Mi limit (94%)"],
    forbidden_approvers: [], required_approvals: 2, approvals: ["someone"], policy: []});
  document.body.append(card);
  const verified = summary("tool.verified", {outcome: "not_as_approved", check: "replicas",
    detail: "observed 6, approved 12; changed back by HorizontalPodAutoscaler/order-service"});
  const step = stepLine({iteration: 2, text: "Memory is short.\\nRaise it.", calls: [
    {tool: "set_resources",
     args: {kind: "deployment", name: "payment-service", namespace: "production"}}]});
  const asked = summary("tool.requested", {actor: "alice", client: "Claude Code 1.2",
    tool: "scale", args: {kind: "deployment", name: "web", namespace: "shop", replicas: 5},
    evidence: ["ready 3/3"]});
  return [card.innerText, verified.join(""), step.join(""), asked.join("")];
}"""


async def test_fields_other_parts_add_render_in_words(
        cc_stack: Stack, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fields that land at the end of the events (gathered evidence, a batch summary, affected
    namespaces, "not as approved", a model step) are shown in words when present; a card without
    them (above) still renders."""
    page = await _open(browser, cc_stack, "approver", width=PHONE[0], height=PHONE[1])
    card_text, verified, step, asked = await page.evaluate(NEW_FIELDS_JS)
    await page.locator("body > .approval-card").screenshot(
        path=str(tmp_path_factory.mktemp("screenshots") / "phone-390-new-fields.png"))
    for needle in ("Approve: Delete 3 PVCs, 5 services, 12 pods in staging",
                   "namespaces affected: staging", "owned by CronJob/nightly-reconcile",
                   "still mounted by statefulset/db (0 replicas)", "a headless service",
                   "cluster kind-sandbox", "cluster-wide", "GATHERED BY INTERLOCK",
                   "OOMKilled 3 times in 20 min", "quoted by the requester", "1 of 2"):
        assert needle.lower() in card_text.lower(), (needle, card_text)
    assert "[" not in card_text  # words, not JSON
    assert "{" not in card_text
    assert verified.startswith("Not as approved: ")
    assert "HorizontalPodAutoscaler" in verified
    assert step.startswith("Model step 2: asks for 1 call(s): set_resources "
                           "deployment/payment-service in production")
    assert "\n" not in step
    # An MCP client's call (issue 19): who, through which client, the call compact.
    assert asked == ("alice via Claude Code 1.2 (MCP) asked: scale deployment/web --replicas=5 "
                     "-n shop — quoting: “ready 3/3”")
    assert page.errors == []
    await page.close()


# -- several clusters (issue 21) ----------------------------------------------------------------

CLUSTERS = {"clusters": [
    {"name": "a", "connected": True, "default": True, "last_seen": None, "roles": ["all"],
     "version": ""},
    {"name": "prod-eu-west-1-payments", "connected": True, "default": False,
     "last_seen": None, "roles": ["all"], "version": ""}]}


async def test_a_new_session_on_a_chosen_cluster_and_the_cluster_on_its_card(
        cc_stack: Stack, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """With several clusters the page offers a choice of cluster beside New; the session is
    started on it (recorded by the real gateway) and says so; a card's Where names the cluster.
    The cluster list (GET /v1/clusters, `interlock clusters`) is answered by the page's route
    here: this stack serves one kubeconfig context."""
    import json

    shots = tmp_path_factory.mktemp("screenshots")
    for width, height in (DESKTOP, PHONE):
        page = await browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        await page.route("**/v1/clusters", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(CLUSTERS)))
        await page.goto(f"{cc_stack.url}/#token={_token(cc_stack, 'operator')}")
        await page.wait_for_selector("body[data-ready]")
        pick = page.locator("#new-cluster")
        assert await pick.is_visible()
        assert await pick.input_value() == "a"  # the deployment's default first
        assert await pick.locator("option").all_inner_texts() == [
            "a (default)", "prod-eu-west-1-payments"]
        await pick.select_option("prod-eu-west-1-payments")
        before = await page.evaluate("() => state.current")
        await page.locator("#new-session").click()
        await page.wait_for_function(
            "old => state.current && state.current !== old && state.sessions.some((s) =>"
            " s.session_id === state.current && s.cluster === 'prod-eu-west-1-payments')",
            arg=before)
        sid = await page.evaluate("() => state.current")
        async with aiohttp.ClientSession() as http:
            status, view = await Client(http, cc_stack.url, _token(cc_stack, "viewer")).call(
                "GET", f"/v1/sessions/{sid}")
        assert status == 200
        assert view["cluster"] == "prod-eu-west-1-payments"
        assert await page.locator("#session-title").inner_text() == \
            f"Session {sid} · cluster prod-eu-west-1-payments"
        started = page.locator("#timeline li[data-type='session.started']")
        await started.wait_for()
        assert (await started.locator(".text").inner_text()).endswith(
            "Session started by operator: on cluster prod-eu-west-1-payments")
        item = page.locator(f"#sessions li[data-session-id='{sid}']")
        assert "cluster prod-eu-west-1-payments" in await item.inner_text()
        where = await page.evaluate("""() => renderCard({approval_id: "a_c", session_id: "s_c",
          expires_at: new Date(Date.now() + 6e5).toISOString(), required_approvals: 1,
          calls: [{call_id: "c1", tool: "scale", args: {replicas: 4}, diff: [],
                   target: {cluster: "b", namespace: "shop", kind: "deployment", name: "web"},
                   blast_radius: {}}]}).querySelector("dd.where").innerText""")
        assert where == "namespace shop on cluster b"
        await _no_sideways_scroll(page)
        await page.screenshot(path=str(shots / f"clusters-{width}.png"), full_page=True)
        assert errors == []
        await page.close()
    # One cluster (or a gateway that lists none): nothing to choose.
    page = await _open(browser, cc_stack, "operator", width=PHONE[0], height=PHONE[1])
    assert await page.locator("#new-cluster").is_hidden()
    await page.close()
