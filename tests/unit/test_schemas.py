from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from schemas import catalogue, events
from schemas import subjects as S
from schemas.approval import (
    GRANT_VERSION,
    ApprovalDecided,
    ApprovalRequested,
    Grant,
    effect_digest,
)
from schemas.base import Target
from schemas.ids import InvalidId, check_token
from schemas.session import UserMessage


def test_every_event_type_has_a_unique_tag_and_an_emitter() -> None:
    tags = [t.__struct_config__.tag for t in events.EVENT_TYPES]
    assert len(tags) == len(set(tags))
    for t in events.EVENT_TYPES:
        assert t.emitter in S.SERVICES
        assert len(str(t.__struct_config__.tag).split(".")) == 2  # noun.verb: fixed subject shape


def test_round_trip_and_subject() -> None:
    e = UserMessage(session_id="s_1", text="kubectl get pods -n shop", actor="alice")
    back = events.decode(events.encode(e))
    assert back == e
    subject = S.event_subject(back)
    assert subject == f"evt.s_1.gateway.user.message.{e.event_id}"
    S.check_subject(subject, back)


def test_a_payload_on_another_emitters_subject_is_rejected() -> None:
    d = ApprovalDecided(session_id="s_1", approval_id="a_1", decision="approve", approver="eve")
    with pytest.raises(S.SubjectMismatch):
        S.check_subject("evt.s_1.planner.approval.decided.a_1", d)
    with pytest.raises(S.SubjectMismatch):
        S.check_subject("evt.s_2.gateway.approval.decided.a_1", d)


@pytest.mark.parametrize("bad", ["", "a.b", "a*", "a>", "a b", "x" * 65, "évt"])
def test_ids_that_could_reach_a_subject_are_validated(bad: str) -> None:
    with pytest.raises(InvalidId):
        check_token(bad)


def test_unknown_event_type_does_not_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type": "approval.autogranted", "session_id": "s_1"}')


def test_call_hash_binds_every_arg() -> None:
    tool = catalogue.TOOLS["scale"]
    a = catalogue.canonical_args(tool.parse_args({"name": "web", "namespace": "shop",
                                                  "replicas": 5}))
    b = catalogue.canonical_args(tool.parse_args({"name": "web", "namespace": "shop",
                                                  "replicas": 6}))
    assert a["kind"] == "deployment"  # defaults are explicit in what is approved
    assert catalogue.call_hash("scale", a) != catalogue.call_hash("scale", b)
    assert catalogue.call_hash("scale", a) == catalogue.call_hash("scale", dict(reversed(a.items())))


def test_args_reject_unknown_fields_and_bad_names() -> None:
    tool = catalogue.TOOLS["scale"]
    with pytest.raises(msgspec.ValidationError):
        tool.parse_args({"name": "web", "replicas": 1, "force": True})
    with pytest.raises(msgspec.ValidationError):
        tool.parse_args({"name": "Web_Bad", "replicas": 1})
    with pytest.raises(msgspec.ValidationError):
        tool.parse_args({"name": "web", "replicas": -1})


def test_grant_signed_bytes_cover_every_field() -> None:
    g = Grant(call_id="c_1", call_hash="h", approval_id="a_1", approver="bob",
              not_after=datetime(2030, 1, 1, tzinfo=UTC), resource_version="7",
              session_id="s_1", target=Target(cluster="k", namespace="shop", kind="deployment",
                                              name="web"), version=GRANT_VERSION)
    assert g.signed_bytes().startswith(b"interlock-grant-v2\n")
    for field, value in [("call_id", "c_2"), ("call_hash", "h2"), ("approval_id", "a_2"),
                         ("approver", "eve"), ("not_after", datetime(2031, 1, 1, tzinfo=UTC)),
                         ("resource_version", "8"), ("session_id", "s_2"), ("version", 3),
                         ("target", msgspec.structs.replace(g.target, cluster="other")),
                         ("target", msgspec.structs.replace(g.target, namespace="prod")),
                         ("target", msgspec.structs.replace(g.target, kind="service")),
                         ("target", msgspec.structs.replace(g.target, name="db"))]:
        assert msgspec.structs.replace(g, **{field: value}).signed_bytes() != g.signed_bytes()


def test_a_v1_grant_of_an_old_log_decodes_and_signs_as_it_was() -> None:
    """Golden: a grant as the gate wrote it before v2 (no session, target or version)."""
    old = (b'{"call_id":"c_1","call_hash":"h","approval_id":"a_1","approver":"bob",'
           b'"not_after":"2030-01-01T00:00:00+00:00","resource_version":"7","signature":"x"}')
    g = msgspec.json.decode(old, type=Grant)
    assert (g.version, g.session_id, g.target) == (1, "", Target())
    assert g.signed_bytes() == (
        b'interlock-grant-v1\n{"approval_id":"a_1","approver":"bob","call_hash":"h",'
        b'"call_id":"c_1","not_after":"2030-01-01T00:00:00+00:00","resource_version":"7"}')


V2_NODE_GRANT = (
    b'interlock-grant-v2\n{"approval_id":"a_1","approver":"bob","call_hash":"h",'
    b'"call_id":"c_1","not_after":"2030-01-01T00:00:00+00:00","resource_version":"7",'
    b'"session_id":"s_1","target":{"cluster":"k","kind":"node","name":"n1","namespace":""}}')


def test_a_grant_binds_its_effect_only_when_it_has_one() -> None:
    """Golden: a v2 grant without an effect signs the bytes it did before effects were bound
    (so the grants of every older log verify as they were); one with an effect binds it."""
    g = Grant(call_id="c_1", call_hash="h", approval_id="a_1", approver="bob",
              not_after=datetime(2030, 1, 1, tzinfo=UTC), resource_version="7",
              session_id="s_1", target=Target(cluster="k", kind="node", name="n1"),
              version=GRANT_VERSION)
    assert g.signed_bytes() == V2_NODE_GRANT
    assert msgspec.json.decode(msgspec.json.encode(g), type=Grant) == g
    effect = ("/node/n1", "shop/pod/web-1")
    bound = msgspec.structs.replace(g, effect_digest=effect_digest(effect))
    assert bound.signed_bytes() != V2_NODE_GRANT
    assert f'"effect_digest":"{effect_digest(effect)}"'.encode() in bound.signed_bytes()
    other = msgspec.structs.replace(g, effect_digest=effect_digest((*effect, "shop/pod/web-2")))
    assert other.signed_bytes() != bound.signed_bytes()


def test_the_effect_digest_is_of_the_set() -> None:
    assert effect_digest(()) == ""
    a = effect_digest(("/node/n1", "shop/pod/a"))
    assert len(a) == 64
    assert effect_digest(("shop/pod/a", "/node/n1")) == a  # the set, not the order listed
    assert effect_digest(("/node/n1", "shop/pod/b")) != a
    assert effect_digest(("/node/n1",)) != a


def test_approval_requested_requires_an_expiry() -> None:
    with pytest.raises(TypeError):
        ApprovalRequested(session_id="s_1", approval_id="a_1", calls=())  # type: ignore[call-arg]
