"""The raw Direct Get path: the private nats-py hook it relies on, pinned, and the reading of
raw reply headers, status by status."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.client import Client
from nats.protocol.parser import Parser

from schemas import events as E
from schemas import subjects as S
from schemas.ids import new_session_id
from schemas.session import AssistantMessage
from services.runtime import rawsub
from services.runtime.bus import Bus, Stored
from services.runtime.errors import RetryableError


def test_the_private_nats_py_hook_is_what_rawsub_overrides() -> None:
    # RawClient overrides Client._process_msg; if nats-py renames it or changes its arguments,
    # raw delivery would silently stop (or misread them): fail here instead.
    params = list(inspect.signature(Client._process_msg).parameters)
    assert params == ["self", "sid", "subject", "reply", "data", "headers"]
    assert inspect.iscoroutinefunction(Client._process_msg)
    assert "self.nc._process_msg(sid, subject, reply, payload, hdr)" in inspect.getsource(
        Parser.parse
    )


async def test_the_parser_hands_raw_subscriptions_their_bytes_and_nothing_else() -> None:
    nc = rawsub.RawClient()
    got: list[tuple[bytes, bytes | None, bytes]] = []
    nc._raw[7] = lambda subject, headers, data: got.append((subject, headers, data))
    hdr = b"NATS/1.0\r\nNats-Sequence: 5\r\n\r\n"
    frame = b"HMSG _INBOX_x.1 7 %d %d\r\n%shello\r\nMSG _INBOX_x.2 7 3\r\nbye\r\n" % (
        len(hdr),
        len(hdr) + 5,
        hdr,
    )
    await Parser(nc).parse(frame)
    assert got == [(b"_INBOX_x.1", hdr, b"hello"), (b"_INBOX_x.2", None, b"bye")]
    assert nc.stats["in_msgs"] == 2
    assert nc.stats["in_bytes"] == 8


def test_status_as_nats_py_reads_it() -> None:
    assert rawsub.status(None) == ("", "")
    assert rawsub.status(b"NATS/1.0\r\nNats-Sequence: 1\r\n\r\n") == ("", "")
    assert rawsub.status(b"NATS/1.0 404 Message Not Found\r\n\r\n") == ("404", "Message Not Found")
    assert rawsub.status(b"NATS/1.0 404\r\n\r\n") == ("404", "")
    eob = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 12\r\nNats-Last-Sequence: 30\r\n\r\n"
    assert rawsub.status(eob) == ("204", "EOB")
    assert rawsub.header(eob, b"Nats-Num-Pending") == "12"
    assert rawsub.header(eob, b"Nats-Last-Sequence") == "30"


def test_the_last_header_wins_so_a_stored_one_cannot_shadow_the_servers() -> None:
    raw = (
        b"NATS/1.0\r\nNats-Subject: evt.forged\r\nX-Note: Nats-Subject: no\r\n"
        b"Nats-Subject: evt.real\r\nNats-Sequence: 9\r\n\r\n"
    )
    assert rawsub.header(raw, b"Nats-Subject") == "evt.real"
    assert rawsub.header(raw, b"Nats-Sequence") == "9"
    assert rawsub.header(raw, b"Nats-Stream") is None
    assert rawsub.header(None, b"Nats-Subject") is None


# No keyring: these replies carry no signatures (verification: tests/unit/test_identity.py).
_BUS = Bus(cast(Any, SimpleNamespace(jetstream=lambda: None)), "admin")


def _reply(event: AssistantMessage, seq: int) -> tuple[bytes, bytes]:
    headers = (
        f"NATS/1.0\r\nNats-Msg-Id: {event.event_id}\r\nNats-Stream: EVENTS\r\n"
        f"Nats-Subject: {S.event_subject(event)}\r\nNats-Sequence: {seq}\r\n"
        "Nats-Num-Pending: 3\r\nNats-Last-Sequence: 0\r\n\r\n"
    ).encode()
    return headers, E.encode(event)


def test_direct_reply_statuses() -> None:
    out: list[Stored] = []
    ev = AssistantMessage(session_id=new_session_id(), text="hi")
    headers, data = _reply(ev, 41)
    assert _BUS._direct_reply(headers, data, out, None) == (None, 41)
    assert out == [Stored(41, S.event_subject(ev), ev, data)]
    assert out[0].raw is data  # the exact stored bytes, which the audit hashes
    eob = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 2\r\nNats-Last-Sequence: 41\r\n\r\n"
    assert _BUS._direct_reply(eob, b"", out, 41) == (True, 41)
    eob0 = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 41\r\n\r\n"
    assert _BUS._direct_reply(eob0, b"", out, 41) == (False, 41)
    not_found = b"NATS/1.0 404 Message Not Found\r\n\r\n"
    assert _BUS._direct_reply(not_found, b"", out, 41) == (False, 41)
    with pytest.raises(RetryableError, match=r"^direct get failed: 408 Bad Request$"):
        _BUS._direct_reply(b"NATS/1.0 408 Bad Request\r\n\r\n", b"", out, 41)
    with pytest.raises(RetryableError, match=r"^direct get failed: 503 None$"):
        _BUS._direct_reply(b"NATS/1.0 503\r\n\r\n", b"", out, 41)
    assert len(out) == 1


def test_direct_reply_skips_a_poison_event_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out: list[Stored] = []
    ev = AssistantMessage(session_id=new_session_id(), text="hi")
    headers, _ = _reply(ev, 7)
    with caplog.at_level("WARNING", logger="services.runtime.bus"):
        assert _BUS._direct_reply(headers, b"{not json", out, 6) == (None, 7)
    assert out == []
    [record] = caplog.records
    assert record.getMessage().startswith("skipping undecodable stored event: ")
    assert (record.subject, record.seq) == (S.event_subject(ev), 7)  # type: ignore[attr-defined]
