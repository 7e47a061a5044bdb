"""Replay equals live: state rebuilt from the log by a cold reader is the state the live
services built incrementally while the events happened (issue 8)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from launcher.stack import Stack
from schemas import chain
from schemas import events as E
from schemas.approvers import REGISTRY_SESSION
from services.gateway import views
from services.gateway.auth import TokenStore
from services.gateway.routes import Api
from services.runtime import approvers, audit, audit_signers, identity
from tests.e2e.conftest import bus_as, token
from tests.support import Client

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def _approval_state(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {a["approval_id"]: (a["state"], a.get("decided_by", ""), tuple(a["approvals"]),
                               a["session_id"]) for a in body["approvals"]}


async def test_a_long_scripted_run_replays_to_the_live_state(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(7)
    operator = Client(http, stack.url, token(stack, "operator"))
    approver = Client(http, stack.url, token(stack, "approver"))
    sessions = [await operator.new_session() for _ in range(4)]
    last = dict.fromkeys(sessions, 0)
    live_snapshots = 0
    for step in range(175):
        sid = sessions[step % len(sessions)]
        if step % 7 == 3:
            n = rng.randint(1, 6)
            await operator.say(sid, f"kubectl scale deploy/web --replicas={n} -n shop")
            got = await operator.wait_for(sid, lambda e: e.event == "approval.requested",
                                          after=last[sid])
            aid = got[-1].data["approval_id"]
            choice = rng.choice(["approve", "deny", "leave"])
            if choice != "leave":
                body = {"decision": choice, "reason": "scripted" if choice == "deny" else ""}
                status, _ = await approver.call("POST", f"/v1/approvals/{aid}/decision", body)
                assert status == 202
                got = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                              after=got[-1].id)
            # The live index is refreshed incrementally as the run goes.
            status, _ = await approver.call("GET", "/v1/approvals?state=all")
            assert status == 200
            live_snapshots += 1
        else:
            await operator.say(sid, rng.choice(["kubectl get pods -n shop",
                                                "kubectl get deploy -n production",
                                                "kubectl get pods -n staging"]))
            got = await operator.wait_for(sid, lambda e: e.event == "turn.completed",
                                          after=last[sid])
        last[sid] = int(got[-1].id or last[sid])

    bus = await bus_as(stack, "admin")
    try:
        stored = {sid: await bus.session(sid) for sid in sessions}
        registry = [chain.Link(s.seq, s.subject, s.raw, s.signature)
                    for s in await bus.session(REGISTRY_SESSION)]
    finally:
        await bus.close()
    total = sum(len(v) for v in stored.values())
    assert total >= 1000, total
    assert live_snapshots > 10

    # Pending approvals: the live gateway (warm, incremental) vs a cold one reading the log.
    status, live = await approver.call("GET", "/v1/approvals?state=all")
    assert status == 200
    cold_bus = await bus_as(stack, "gateway")
    try:
        cold = Api(cold_bus, TokenStore())
        index = await cold.refresh_approvals()
        now = datetime.now(UTC)
        replayed = {"approvals": [e.to_json(now) for e in index.values()]}
    finally:
        await cold_bus.close()
    live_state = _approval_state(live)
    assert _approval_state(replayed) == live_state
    states = {v[0] for v in live_state.values()}
    assert {"granted", "denied", "pending"} <= states

    # Session views: the API's view vs a fold over an exported copy of the log.
    for sid in sessions:
        status, view = await operator.call("GET", f"/v1/sessions/{sid}")
        assert status == 200
        links = [chain.Link(s.seq, s.subject, s.raw, s.signature) for s in stored[sid]]
        reread, problems = audit.import_lines(audit.export_lines(links))
        assert problems == []
        folded = views.fold_session(sid, [(link.seq, E.decode(link.raw)) for link in reread])
        assert folded.to_json(datetime.now(UTC))["calls"] == view["calls"]
        assert folded.last_seq == view["last_seq"]
        ring = identity.load_keyring(stack.keys / identity.KEYRING_FILE)
        people = audit_signers.Approvers(approvers.load_admin_keys(stack.admin_keys), registry,
                                         ring)
        report = audit.audit(sid, reread, keyring=ring, approvers=people)
        assert report.ok, report.problems
