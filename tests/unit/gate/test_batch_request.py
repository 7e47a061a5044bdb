"""The gate's batch request over a log held in memory: the card waits for every write member's
dry run, leaves out (and names) members it refused, and is completed by a refusal recorded last,
which gets no preview of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.approval import ApprovalRequested, ToolRefused
from schemas.base import Event
from schemas.execution import PreviewRecorded
from schemas.planning import ToolProposed
from services.gate.handlers import Gate
from services.gate.settings import GateSettings
from services.runtime import approvers, signing
from services.runtime.bus import Stored
from services.runtime.log import NEW_KEY, Expect
from services.runtime.settings import NatsSettings

SID = "s_gate_batch"


class MemoryBus:
    """What the gate's request path uses of the bus, over a list."""

    def __init__(self) -> None:
        self.log: list[Event] = []
        self.keys: set[tuple[str, str]] = set()

    async def session(self, session_id: str, start_seq: int = 1) -> list[Stored]:
        return [Stored(seq=i + 1, subject="", event=e, raw=b"")  # type: ignore[arg-type]
                for i, e in enumerate(self.log) if e.session_id == session_id]

    async def append_once(self, event: Event, expect: Expect = NEW_KEY) -> tuple[int, str] | None:
        key = (event.type, event.key())
        if expect.new and key in self.keys:
            return None  # already recorded
        self.keys.add(key)
        self.log.append(event)
        return len(self.log), "h"

    async def read(self, subject_filter: str, start_seq: int = 1) -> AsyncIterator[Stored]:
        for _ in ():
            yield _


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    signing.generate_keypair(tmp_path / "gate.key", tmp_path / "gate.pub")
    roots = tmp_path / "admins.pub"
    roots.write_text(approvers.public_line(Ed25519PrivateKey.generate().public_key()) + "\n")
    settings = GateSettings(nats=NatsSettings(url="", user="gate", password=""),
                            key_file=tmp_path / "gate.key", admin_keys_file=roots)
    return Gate(MemoryBus(), settings)  # type: ignore[arg-type]


def _member(name: str, kind: str = "pod", size: int = 3) -> ToolProposed:
    return ToolProposed(session_id=SID, call_id=f"c_{name}", tool="delete", source="llm",
                        args={"kind": kind, "name": name, "namespace": "staging"},
                        batch_id="b_1", batch_size=size)


def _preview(p: ToolProposed) -> PreviewRecorded:
    return PreviewRecorded(session_id=SID, call_id=p.call_id, ok=True)


def _requests(gate: Gate) -> list[ApprovalRequested]:
    return [e for e in gate.bus.log if isinstance(e, ApprovalRequested)]  # type: ignore[attr-defined]


async def test_a_refusal_recorded_last_completes_the_batch(gate: Gate) -> None:
    bus: MemoryBus = gate.bus  # type: ignore[assignment]
    a, b, bad = _member("a"), _member("b"), _member("w", kind="widget")
    for p in (a, b):
        bus.log.append(p)
        await gate.on_proposed(p)
    for p in (a, b):
        pv = _preview(p)
        bus.log.append(pv)
        await gate.on_preview(pv)
    assert _requests(gate) == []  # the third member is not recorded yet
    bus.log.append(bad)
    await gate.on_proposed(bad)
    assert [e.call_id for e in bus.log if isinstance(e, ToolRefused)] == ["c_w"]
    (req,) = _requests(gate)
    assert req.call_ids == ("c_a", "c_b")
    assert req.title == "Delete 2 pods in staging"
    assert any(f.startswith("not in this batch") and "widget" in f for f in req.risk_flags)
    # Redelivered: the same approval, not a second one.
    await gate.on_preview(_preview(b))
    await gate.on_proposed(bad)
    assert len(_requests(gate)) == 1


async def test_the_card_waits_for_every_write_members_dry_run(gate: Gate) -> None:
    bus: MemoryBus = gate.bus  # type: ignore[assignment]
    members = [_member(n, size=2) for n in ("a", "b")]
    bus.log += members
    pv = _preview(members[0])
    bus.log.append(pv)
    await gate.on_preview(pv)
    assert _requests(gate) == []
    failed = PreviewRecorded(session_id=SID, call_id="c_b", ok=False, error="NotFound: gone")
    bus.log.append(failed)
    await gate.on_preview(failed)
    (req,) = _requests(gate)
    assert [c.preview_error for c in req.calls] == ["", "NotFound: gone"]
    assert any("dry run failed" in f for f in req.risk_flags)
