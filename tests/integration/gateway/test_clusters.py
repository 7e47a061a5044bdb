"""Issue 21, what a person sees by cluster, through the real gateway over a real nats-server:
a session's default cluster (POST /v1/sessions {"cluster"}: checked against
INTERLOCK_CLUSTERS), the card's Where naming the cluster, and /v1/audit?cluster= filtering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import subjects as S
from schemas.approval import ApprovalCall, ApprovalRequested, BlastRadius, FieldChange
from schemas.base import Target
from schemas.catalogue import call_hash
from schemas.ids import new_approval_id, new_call_id
from schemas.session import SessionStarted
from services.runtime.log import Expect
from tests.integration.gateway.conftest import Gateway


async def _request_on(gateway: Gateway, sid: str, cluster: str,
                      context: str = "") -> ApprovalRequested:
    """An approval.requested for deployment/web in shop on `cluster`, as the gate writes it."""
    args = {"cluster": cluster, "kind": "deployment", "name": "web", "namespace": "shop",
            "replicas": 4}
    req = ApprovalRequested(
        session_id=sid, approval_id=new_approval_id(), actor="gate",
        calls=(ApprovalCall(call_id=new_call_id(), tool="scale", args=args,
                            call_hash=call_hash("scale", args),
                            target=Target(cluster=cluster, namespace="shop",
                                          kind="deployment", name="web"),
                            diff=(FieldChange(path="spec.replicas", before=3, after=4),),
                            blast_radius=BlastRadius(replicas_before=3, replicas_after=4),
                            context=context),),
        expires_at=datetime.now(UTC) + timedelta(minutes=10))
    await gateway.gate_bus.append(req, Expect.new_key())
    return req


async def test_a_session_names_its_cluster_only_among_the_allowed(gateway: Gateway) -> None:
    operator, viewer = gateway.client("operator"), gateway.client("viewer")
    gateway.api.clusters = ("a", "b")
    status, created = await operator.call("POST", "/v1/sessions", {"cluster": "b"})
    assert status == 201, created
    sid = created["session_id"]
    started = await gateway.bus.first(S.tag_filter("gateway", "session.started", sid))
    assert started is not None
    assert isinstance(started.event, SessionStarted)
    assert started.event.cluster_name == "b"
    status, listing = await viewer.call("GET", "/v1/sessions")
    assert listing["sessions"][0] == listing["sessions"][0] | {"session_id": sid, "cluster": "b"}
    status, view = await viewer.call("GET", f"/v1/sessions/{sid}")
    assert view["cluster"] == "b"
    # Not in the deployment's list: refused with the list, and nothing recorded.
    status, answer = await operator.call("POST", "/v1/sessions", {"cluster": "c"})
    assert status == 400
    assert answer["error"] == {"code": "invalid_cluster",
                               "message": "cluster 'c' is not allowed here (allowed: a, b)"}
    status, answer = await operator.call("POST", "/v1/sessions", {"cluster": "a b"})
    assert status == 400
    assert answer["error"]["code"] == "invalid_cluster"
    status, listing = await viewer.call("GET", "/v1/sessions")
    assert [s["session_id"] for s in listing["sessions"]].count(sid) == 1
    assert len(listing["sessions"]) == 1
    # No cluster: the deployment's default ("" recorded); legacy mode (no list) takes any name.
    status, plain = await operator.call("POST", "/v1/sessions", {})
    assert status == 201
    gateway.api.clusters = ()
    status, legacy = await operator.call("POST", "/v1/sessions", {"cluster": "kind-prod"})
    assert status == 201
    status, view = await viewer.call("GET", f"/v1/sessions/{legacy['session_id']}")
    assert view["cluster"] == "kind-prod"


async def test_the_card_says_the_cluster_and_the_audit_filters_by_it(gateway: Gateway) -> None:
    operator, viewer = gateway.client("operator"), gateway.client("viewer")
    on_a = await operator.new_session()
    on_b = await operator.new_session()
    legacy = await operator.new_session()
    req_a = await _request_on(gateway, on_a, "a")
    req_b = await _request_on(gateway, on_b, "b")
    # A call that named no cluster: the context its dry run resolved is where it runs.
    req_l = await _request_on(gateway, legacy, "", context="sandbox")
    status, listed = await viewer.call("GET", "/v1/approvals")
    assert status == 200
    cards = {a["approval_id"]: a for a in listed["approvals"]}
    assert cards[req_b.approval_id]["where"] == ["scale deployment/web in shop on cluster b"]
    assert cards[req_b.approval_id]["clusters"] == ["b"]
    assert cards[req_l.approval_id]["where"] == [
        "scale deployment/web in shop on cluster sandbox"]
    status, view = await viewer.call("GET", f"/v1/sessions/{on_a}")
    assert view["pending_approvals"][0]["where"] == ["scale deployment/web in shop on cluster a"]

    async def writes(query: str) -> list[str]:
        status, body = await viewer.call("GET", "/v1/audit" + query)
        assert status == 200, body
        return sorted(w["approval_id"] for w in body["writes"])

    assert await writes("") == sorted([req_a.approval_id, req_b.approval_id, req_l.approval_id])
    assert await writes("?cluster=b") == [req_b.approval_id]
    assert await writes("?cluster=sandbox") == [req_l.approval_id]
    assert await writes("?cluster=b&namespace=shop") == [req_b.approval_id]
    # Same namespace/kind/name, one cluster: the other's write is not in it.
    assert await writes("?cluster=a&namespace=shop") == [req_a.approval_id]
    # A cluster nobody wrote to: nothing, not an error.
    assert await writes("?cluster=elsewhere") == []
    status, body = await viewer.call("GET", "/v1/audit?cluster=arn:aws:eks:eu-west-1:1:cluster/x")
    assert status == 200
    assert body["writes"] == []
    status, rows = await viewer.call("GET", "/v1/audit?cluster=b&format=jsonl")
    assert status == 200
    assert rows["cluster"] == "b"  # one JSON line (the client decodes it), its cluster named
    assert rows["approval_id"] == req_b.approval_id
    # A value that cannot be a cluster name is a mistake, said as one.
    for bad in ("a%20b", "x" * 254, "a%2Cb", "a%0Ab", ""):
        status, body = await viewer.call("GET", f"/v1/audit?cluster={bad}")
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_filter"
        assert body["error"]["message"] == (
            "cluster: a cluster name is 1 to 253 characters, without a comma, white space or "
            "a control character")
