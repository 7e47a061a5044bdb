"""The session hash chain: every event records the sequence and sha256 of the session's previous
stored event. Verifying it over stored bytes shows exactly where a log was altered, cut or
spliced. Pure: it runs on the live stream, a copy of it, or an exported file alike.

Appends are linearised by optimistic concurrency on the session, except the few that must also
be once-per-key (a claim, a decision): those may point at the same predecessor as a concurrent
append — a fork, which is reported as such and is not a break.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgspec

from schemas import events as E


def event_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Link:
    """One stored event: its stream sequence, subject and exact bytes, and the signature
    header it was stored with (None: unsigned; the chain does not cover it, the audit checks it:
    services/runtime/identity.py)."""

    seq: int
    subject: str
    raw: bytes
    signature: str | None = None


@dataclass
class ChainReport:
    ok: bool = True
    checked: int = 0
    head_seq: int = 0
    head_hash: str = ""
    breaks: list[dict[str, object]] = field(default_factory=list)
    forks: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "checked": self.checked, "head_seq": self.head_seq,
                "head_hash": self.head_hash, "breaks": self.breaks, "forks": self.forks}


def verify_chain(links: list[Link]) -> ChainReport:
    """Checks one session's stored events, in stream order."""
    report = ChainReport()
    hashes: dict[int, str] = {}
    pointed: dict[int, int] = {}
    for link in sorted(links, key=lambda x: x.seq):
        report.checked += 1
        h = event_hash(link.raw)
        try:
            ev = E.decode(link.raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            report.breaks.append({"seq": link.seq, "problem": f"undecodable event: {exc}"})
            hashes[link.seq] = h
            continue
        if ev.prev_seq == 0:
            if hashes:
                report.breaks.append({"seq": link.seq, "problem":
                                      "not linked to the events before it (spliced in?)"})
        elif ev.prev_seq not in hashes:
            report.breaks.append({"seq": link.seq, "problem":
                                  f"points at seq {ev.prev_seq}, which is missing from this "
                                  "session's log (deleted or cut)"})
        elif hashes[ev.prev_seq] != ev.prev_hash:
            report.breaks.append({"seq": ev.prev_seq, "problem":
                                  f"altered: its content no longer matches the hash recorded by "
                                  f"seq {link.seq}"})
        if ev.prev_seq:
            if ev.prev_seq in pointed:
                report.forks.append(link.seq)
            pointed[ev.prev_seq] = link.seq
        hashes[link.seq] = h
        report.head_seq, report.head_hash = link.seq, h
    report.ok = not report.breaks
    return report
