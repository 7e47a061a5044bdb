"""What each append expectation asks the server to check (the headers it publishes with) and
what it chains to — pinned, so the optimistic-concurrency semantics of the six keyword modes
they replaced stay exactly as they were. The server side of each check is shown in
tests/integration/test_bus_append.py; here the log is a fake that records the publishes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from schemas import chain
from schemas import events as E
from schemas import subjects as S
from schemas.approval import ToolClassified
from schemas.base import Target
from schemas.execution import ToolResult, ToolStarted
from schemas.ids import new_session_id
from schemas.session import UserMessage
from services.runtime import identity
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict
from services.runtime.log import EXPECTED_SEQ, EXPECTED_SEQ_SUBJECT, Expect

LAST = (7, b"the session's last event")


class RecordingBus(Bus):
    """A bus whose publishes are recorded (and refused while `conflicts` > 0)."""

    def __init__(self, signer: identity.Signer) -> None:
        super().__init__(SimpleNamespace(jetstream=lambda: None),  # type: ignore[arg-type]
                         "executor", signer)
        self.sent: list[dict[str, str]] = []
        self.reads = 0
        self.conflicts = 0
        self.legacy_reads: list[str] = []
        self.legacy_taken = False

    async def _last_in_session(self, session_id: str) -> tuple[int, bytes] | None:
        self.reads += 1
        return LAST

    async def last_stored(self, subject_filter: str) -> tuple[int, bytes] | None:
        self.legacy_reads.append(subject_filter)
        return (3, b"stored before cluster tokens") if self.legacy_taken else None

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str],
                       timeout: float, attempts: int) -> int:
        self.sent.append({k: v for k, v in headers.items() if k.startswith("Nats-Expected")}
                         | {"prev_seq": str(E.decode(data).prev_seq)})
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrencyConflict("wrong last sequence")
        return 100


@pytest.fixture
def bus(tmp_path: Path) -> RecordingBus:
    identity.provision_keys(tmp_path, S.SERVICES)
    return RecordingBus(identity.load_signer(tmp_path / "executor.key", "executor"))


def _result(sid: str) -> ToolResult:
    return ToolResult(session_id=sid, call_id="c_1", tool="get", status="ok", output="fine",
                      actor="executor")


async def test_session_tail_checks_the_session_and_retries_a_lost_race(
        bus: RecordingBus) -> None:
    sid = new_session_id()
    bus.conflicts = 1
    await bus.append(UserMessage(session_id=sid, text="hi"))  # the default expectation
    check = {EXPECTED_SEQ: "7", EXPECTED_SEQ_SUBJECT: S.session_filter(sid), "prev_seq": "7"}
    assert bus.sent == [check, check]  # lost the race once, read the tail again, won
    assert bus.reads == 2


async def test_new_key_checks_the_own_subject_or_the_filter_is_empty(bus: RecordingBus) -> None:
    sid = new_session_id()
    await bus.append(_result(sid), Expect.new_key())
    claims = S.tag_filter("executor", "tool.started", "*", "c_1")
    await bus.append(ToolStarted(session_id=sid, call_id="c_1"), Expect.new_key(claims))
    # An executor's event: once on its own subject, its cluster's (here none: `_`).
    once = f"evt.{sid}.executor.tool.result.c_1._"
    assert bus.sent == [{EXPECTED_SEQ: "0", EXPECTED_SEQ_SUBJECT: once, "prev_seq": "7"},
                        {EXPECTED_SEQ: "0", EXPECTED_SEQ_SUBJECT: claims, "prev_seq": "7"}]
    assert claims == "evt.*.executor.tool.started.c_1.*"
    # ... and not over the same key stored before cluster tokens (6 tokens), read first.
    assert bus.legacy_reads == [f"evt.{sid}.executor.tool.result.c_1"]
    bus.conflicts = 1
    with pytest.raises(ConcurrencyConflict):  # already recorded: never retried
        await bus.append(_result(sid), Expect.new_key())
    assert await bus.append_once(_result(sid)) is not None
    bus.conflicts = 1
    assert await bus.append_once(_result(sid)) is None


async def test_new_key_of_a_cluster_bound_event_is_once_across_cluster_tokens(
        bus: RecordingBus) -> None:
    """A gate restarted with another default cluster classifies a redelivered proposal under
    another token: the server's check covers every token, and a 6-token (pre issue 21) copy of
    the key stops it before any publish. An executor's event is once on its own cluster's
    subject only: another cluster's executor cannot keep it out."""
    sid = new_session_id()

    def classified(cluster: str) -> ToolClassified:
        return ToolClassified(session_id=sid, call_id="c_1", access="read", rule="get",
                              target=Target(cluster=cluster))

    on_a = classified("a")
    assert S.event_subject(on_a) == f"evt.{sid}.gate.tool.classified.c_1.a"
    await bus.append(on_a, Expect.new_key())
    assert bus.sent[-1][EXPECTED_SEQ_SUBJECT] == f"evt.{sid}.gate.tool.classified.c_1.*"
    bus.legacy_taken = True
    sent = len(bus.sent)
    assert await bus.append_once(classified("b")) is None
    assert len(bus.sent) == sent
    bus.legacy_taken = False
    result = msgspec.structs.replace(_result(sid), cluster_name="a")
    await bus.append(result, Expect.new_key())
    assert bus.sent[-1][EXPECTED_SEQ_SUBJECT] == f"evt.{sid}.executor.tool.result.c_1.a"
    # Not cluster-bound: its own subject, no read of a 6-token twin.
    bus.legacy_reads.clear()
    await bus.append(UserMessage(session_id=sid, text="hi"), Expect.new_key())
    assert EXPECTED_SEQ_SUBJECT not in bus.sent[-1]
    assert bus.legacy_reads == []


async def test_a_hint_chains_in_one_round_trip_then_falls_back_to_the_key(
        bus: RecordingBus) -> None:
    sid = new_session_id()
    hint = (5, chain.event_hash(b"the trigger"))
    await bus.append(_result(sid), Expect.new_key(hint=hint))
    assert bus.sent == [{EXPECTED_SEQ: "5", EXPECTED_SEQ_SUBJECT: S.session_filter(sid),
                         "prev_seq": "5"}]
    assert bus.reads == 0
    bus.sent.clear()
    bus.conflicts = 1  # the session moved on since the hint
    await bus.append(_result(sid), Expect.new_key(hint=hint))
    assert bus.sent == [{EXPECTED_SEQ: "5", EXPECTED_SEQ_SUBJECT: S.session_filter(sid),
                         "prev_seq": "5"},
                        {EXPECTED_SEQ: "0", EXPECTED_SEQ_SUBJECT: S.once_filter(
                            S.event_subject(_result(sid))), "prev_seq": "7"}]
    with pytest.raises(ValueError, match="no chain hint"):
        Expect.new_key("evt.*.executor.tool.started.c_1", hint=hint)


async def test_subject_at_and_after_are_one_attempt_each(bus: RecordingBus) -> None:
    sid = new_session_id()
    await bus.append(_result(sid), Expect.subject_at(3))
    link = (9, chain.event_hash(b"what the caller folded"))
    await bus.append(UserMessage(session_id=sid, text="next"), Expect.after(link))
    assert bus.sent == [{EXPECTED_SEQ: "3", "prev_seq": "7"},
                        {EXPECTED_SEQ: "9", EXPECTED_SEQ_SUBJECT: S.session_filter(sid),
                         "prev_seq": "9"}]
    assert bus.reads == 1  # after() chains to the caller's link: no read
    for expect in (Expect.subject_at(3), Expect.after(link)):
        bus.conflicts = 1
        with pytest.raises(ConcurrencyConflict):
            await bus.append(_result(sid), expect)
