"""The HTTP API over a real gateway and nats-server: roles, bad input (always a 4xx JSON error,
never a 5xx, never a stored event), rate limiting, sessions, metrics and the spec."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import catalogue
from schemas import subjects as S
from tests.integration.gateway.conftest import Gateway, GatewayFactory, token_of

# -- roles -------------------------------------------------------------------------------------


async def test_viewer_cannot_chat_or_decide(gateway: Gateway) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    viewer = gateway.client("viewer")
    before = await gateway.bus.last_sequence()
    for method, path, body in (
        ("POST", "/v1/sessions", {}),
        ("POST", f"/v1/sessions/{sid}/messages", {"text": "kubectl get pods"}),
        ("POST", f"/v1/sessions/{sid}/cancel", {}),
        ("POST", f"/v1/approvals/{req.approval_id}/decision", {"decision": "approve"}),
    ):
        status, answer = await viewer.call(method, path, body)
        assert status == 403, (path, answer)
        assert answer["error"]["code"] == "forbidden"
    assert await gateway.bus.last_sequence() == before  # nothing was written
    # ...but may watch.
    for path in ("/v1/sessions", f"/v1/sessions/{sid}", "/v1/approvals", "/v1/tools", "/v1/me",
                 "/metrics"):
        status, _ = await viewer.call("GET", path)
        assert status == 200, path


async def test_operator_can_chat_but_cannot_decide(gateway: Gateway) -> None:
    operator = gateway.client("operator")
    sid = await operator.new_session()
    await operator.say(sid, "kubectl get pods -n shop")
    req = await gateway.request_approval(sid)
    status, answer = await operator.call("POST", f"/v1/approvals/{req.approval_id}/decision",
                                         {"decision": "approve"})
    assert (status, answer["error"]["code"]) == (403, "forbidden"), answer
    status, pending = await operator.call("GET", "/v1/approvals?state=pending")
    assert [a["state"] for a in pending["approvals"]] == ["pending"]


async def test_approver_can_decide_and_is_recorded_as_the_approver(gateway: Gateway) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    status, answer = await gateway.client("approver").call(
        "POST", f"/v1/approvals/{req.approval_id}/decision", {"decision": "approve"})
    assert status == 202, answer
    assert answer["decision"] == "approve"
    assert answer["modified"] is False
    decided = await gateway.bus.first(
        S.tag_filter("gateway", "approval.decided", sid, req.approval_id))
    assert decided is not None
    assert decided.event.approver == "alice"
    assert decided.event.actor == "alice"
    assert decided.event.args is None
    metrics = await gateway.client("viewer").call("GET", "/metrics")
    assert 'interlock_approval_decisions_total{decision="approve"} 1' in metrics[1]
    assert "interlock_approval_latency_seconds_count 1" in metrics[1]


async def test_modified_args_are_merged_validated_and_recorded(gateway: Gateway) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    approver = gateway.client("approver")
    path = f"/v1/approvals/{req.approval_id}/decision"
    status, answer = await approver.call("POST", path, {"decision": "approve",
                                                        "args": {"replicas": -1}})
    assert (status, answer["error"]["code"]) == (400, "invalid_args"), answer
    status, answer = await approver.call("POST", path, {"decision": "deny", "reason": "x",
                                                        "args": {"replicas": 2}})
    assert status == 400, answer
    status, answer = await approver.call("POST", path, {"decision": "approve",
                                                        "args": {"replicas": 2}})
    assert (status, answer["modified"]) == (202, True), answer
    decided = await gateway.bus.first(
        S.tag_filter("gateway", "approval.decided", sid, req.approval_id))
    assert decided is not None
    # Merged, then validated: every default is explicit in what was approved.
    scale = catalogue.TOOLS["scale"]
    assert decided.event.args == catalogue.canonical_args(
        scale.parse_args({**req.calls[0].args, "replicas": 2}))
    assert decided.event.args["replicas"] == 2


async def test_first_decision_wins(gateway: Gateway) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    admin, approver = gateway.client("admin"), gateway.client("approver")
    path = f"/v1/approvals/{req.approval_id}/decision"
    assert (await approver.call("POST", path, {"decision": "deny", "reason": "no"}))[0] == 202
    status, answer = await admin.call("POST", path, {"decision": "approve"})
    assert (status, answer["error"]["code"]) == (409, "already_decided"), answer


async def test_a_squatted_decision_subject_is_named_not_a_409_loop(gateway: Gateway) -> None:
    """Issue 14, attack 3: something that is not a decision stored on an approval's decision
    subject (here by the admin user). The server refuses every append expecting the subject to
    end at the last *decision*; the API must say what holds the subject, and store nothing."""
    import nats

    from services.runtime import natsconf

    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    subject = S.tag_filter("gateway", "approval.decided", sid, req.approval_id)
    nc = await nats.connect(gateway.env.url, user=natsconf.ADMIN_USER,
                            password=gateway.env.credentials[natsconf.ADMIN_USER])
    try:
        squat = await nc.jetstream().publish(subject, b'{"type":"stream.info"}')
    finally:
        await nc.close()
    before = await gateway.bus.last_sequence()
    path = f"/v1/approvals/{req.approval_id}/decision"
    for body in ({"decision": "approve"}, {"decision": "deny", "reason": "no"}):
        status, answer = await gateway.client("approver").call("POST", path, body)
        assert (status, answer["error"]["code"]) == (409, "decision_subject_taken"), answer
        assert answer["error"]["message"] == (
            f"the decision subject {subject} holds something that is not a decision "
            f"(seq {squat.seq}); no decision can be recorded for this approval — an "
            "administrator must look at the log")
    assert await gateway.bus.last_sequence() == before


async def test_an_expired_approval_is_410(gateway: Gateway) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid, ttl_s=-1)
    status, answer = await gateway.client("approver").call(
        "POST", f"/v1/approvals/{req.approval_id}/decision", {"decision": "approve"})
    assert status == 410
    assert answer["error"]["code"] == "expired"


async def test_no_endpoint_of_the_api_without_a_token(gateway: Gateway) -> None:
    spec = (await gateway.client("viewer").call("GET", "/openapi.json"))[1]
    public = {"/healthz", "/readyz", "/openapi.json", "/",
              # signing in with an identity provider (404 here: none is configured)
              "/v1/auth/config", "/v1/auth/login", "/v1/auth/callback", "/v1/auth/refresh",
              "/v1/auth/logout"}
    for path, ops in spec["paths"].items():
        for method in ops:
            url = gateway.url + path.replace("{session_id}", "s_1").replace(
                "{approval_id}", "a_1")
            async with gateway.http.request(method.upper(), url, json={}) as r:
                if path in public:
                    assert r.status in (200, 404), path  # index.html may be absent
                else:
                    assert r.status == 401, (method, path, r.status)
                    assert (await r.json())["error"]["code"] == "unauthenticated"


# -- bad input ---------------------------------------------------------------------------------

BAD: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/v1/sessions", b"{not json", 400, "malformed_json"),
    ("POST", "/v1/sessions", b"[]", 400, "invalid_body"),
    ("POST", "/v1/sessions", {"title": "x", "evil": 1}, 400, "invalid_body"),
    ("POST", "/v1/sessions", {"title": "x" * 201}, 400, "invalid_body"),
    ("POST", "/v1/sessions", b'{"title": "\xff"}', 400, "malformed_json"),
    ("POST", "/v1/sessions", b"x" * (65 * 1024), 413, "too_large"),
    ("POST", "/v1/sessions/{sid}/messages", {}, 400, "invalid_body"),
    ("POST", "/v1/sessions/{sid}/messages", b"", 400, "invalid_body"),
    ("POST", "/v1/sessions/{sid}/messages", {"text": ""}, 400, "invalid_body"),
    ("POST", "/v1/sessions/{sid}/messages", {"text": 5}, 400, "invalid_body"),
    ("POST", "/v1/sessions/{sid}/messages", {"text": "hi", "as": "root"}, 400, "invalid_body"),
    ("POST", "/v1/sessions/{sid}/messages", {"text": "x" * 32_001}, 400, "invalid_body"),
    ("POST", "/v1/sessions/s.*.>/messages", {"text": "hi"}, 400, "invalid_id"),
    ("POST", "/v1/sessions/s_unknown/messages", {"text": "hi"}, 404, "not_found"),
    ("POST", "/v1/sessions/{sid}/cancel", {"reason": 1}, 400, "invalid_body"),
    ("GET", "/v1/sessions/s%20x", None, 400, "invalid_id"),
    ("GET", "/v1/sessions/s_unknown", None, 404, "not_found"),
    ("GET", "/v1/sessions?limit=0", None, 400, "invalid_limit"),
    ("GET", "/v1/sessions?limit=x", None, 400, "invalid_limit"),
    ("GET", "/v1/approvals?state=weird", None, 400, "invalid_state"),
    ("POST", "/v1/approvals/{aid}/decision", {}, 400, "invalid_body"),
    ("POST", "/v1/approvals/{aid}/decision", {"decision": "maybe"}, 400, "invalid_body"),
    ("POST", "/v1/approvals/{aid}/decision", {"decision": "deny"}, 400, "reason_required"),
    ("POST", "/v1/approvals/{aid}/decision", {"decision": "approve", "args": []}, 400,
     "invalid_body"),
    ("POST", "/v1/approvals/{aid}/decision", {"decision": "approve", "args": {"kind": "pod"}},
     400, "invalid_args"),
    ("POST", "/v1/approvals/{aid}/decision", {"decision": "approve", "why": 1}, 400,
     "invalid_body"),
    ("POST", "/v1/approvals/a*b/decision", {"decision": "approve"}, 400, "invalid_id"),
    ("POST", "/v1/approvals/a_unknown/decision", {"decision": "approve"}, 404, "not_found"),
    ("DELETE", "/v1/sessions", None, 405, "method_not_allowed"),
    ("GET", "/v2/anything", None, 404, "no_route"),
    ("GET", "/static/../app.py", None, 404, "no_route"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD,
                         ids=[f"{m} {p} {c}" for m, p, _, _, c in BAD])
async def test_bad_input_is_a_4xx_json_error_and_writes_nothing(
    gateway: Gateway, method: str, path: str, body: Any, status: int, code: str
) -> None:
    sid = await gateway.client("operator").new_session()
    req = await gateway.request_approval(sid)
    before = await gateway.bus.last_sequence()
    url = gateway.url + path.format(sid=sid, aid=req.approval_id)
    headers = {"Authorization": f"Bearer {token_of('admin')}"}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with gateway.http.request(method, url, headers=headers, **kwargs) as r:
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        answer = await r.json()
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"]
    assert await gateway.bus.last_sequence() == before


async def test_rate_limit_per_token(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(rate=0.5, burst=3)
    viewer, operator = gw.client("viewer"), gw.client("operator")
    statuses = [(await viewer.call("GET", "/v1/tools"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    async with gw.http.get(f"{gw.url}/v1/tools", headers=viewer.headers) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "rate_limited"
    # Another token has its own bucket; probes are never limited.
    assert (await operator.call("GET", "/v1/tools"))[0] == 200
    assert [(await viewer.call("GET", "/healthz"))[0] for _ in range(5)] == [200] * 5
    metrics = (await operator.call("GET", "/metrics"))[1]
    assert "interlock_http_rate_limited_total 2" in metrics
    assert 'route="/v1/tools",method="GET",status="429"} 2' in metrics


# -- reads -------------------------------------------------------------------------------------


async def test_sessions_are_listed_newest_first(gateway: Gateway) -> None:
    operator = gateway.client("operator")
    first = await operator.new_session()
    status, created = await operator.call("POST", "/v1/sessions", {"title": "checkout is slow"})
    assert status == 201
    status, listing = await gateway.client("viewer").call("GET", "/v1/sessions")
    assert status == 200
    ids = [s["session_id"] for s in listing["sessions"]]
    assert ids == [created["session_id"], first]
    assert listing["sessions"][0]["title"] == "checkout is slow"
    assert listing["sessions"][0]["started_by"] == "otto"
    status, one = await gateway.client("viewer").call("GET", "/v1/sessions?limit=1")
    assert [s["session_id"] for s in one["sessions"]] == [created["session_id"]]


async def test_me_says_what_the_token_may_do(gateway: Gateway) -> None:
    expected = {"viewer": (False, False), "operator": (True, False),
                "approver": (True, True), "admin": (True, True)}
    for role, (chat, decide) in expected.items():
        status, me = await gateway.client(role).call("GET", "/v1/me")
        assert status == 200
        assert (me["can_chat"], me["can_decide"]) == (chat, decide), role


async def test_the_command_center_is_served(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        html = await r.text()
        assert "/static/app.js" in html
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        async with gateway.http.get(f"{gateway.url}/static/{asset}") as r:
            assert (r.status, kind in r.content_type) == (200, True), asset


async def test_metrics_count_requests_by_route_and_status(gateway: Gateway) -> None:
    viewer = gateway.client("viewer")
    await viewer.call("GET", "/v1/sessions/s_unknown")
    await viewer.call("GET", "/v1/tools")
    status, text = await viewer.call("GET", "/metrics")
    assert status == 200
    assert 'route="/v1/sessions/{session_id}",method="GET",status="404"} 1' in text
    assert 'route="/v1/tools",method="GET",status="200"} 1' in text
    assert "# TYPE interlock_sse_clients gauge" in text
