"""Which Slack message shows which approval: channel and ts, kept in one small JSON file under
the notifier's state dir so that a restarted notifier still updates the messages it posted.

Written atomically (a temporary file in the same dir, fsync, rename): a crash leaves the old
file or the new one, never half of one. Re-read before every lookup and merged before every
write, so notifier instances that share the dir see each other's messages; two instances
writing at the same instant can still lose one entry (then that message is not updated) — the
documented limit: run one notifier with Slack, or accept that on a shared dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "slack-messages.json"
# Entries are dropped this long after their message was posted (approvals expire long before).
KEEP = timedelta(days=14)


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str
    posted_at: str = ""
    session_id: str = ""
    call_ids: tuple[str, ...] = ()
    # How the approval ended, as the message shows it (kind, approver, reason, at), once it did.
    outcome: dict[str, str] = field(default_factory=dict)
    # What the executor did with each granted call: "ok", "error", "unknown" or "refused: …".
    ran: dict[str, str] = field(default_factory=dict)


def _posted(entry: dict[str, Any]) -> Posted:
    return Posted(
        channel=str(entry["channel"]), ts=str(entry["ts"]),
        posted_at=str(entry.get("posted_at", "")), session_id=str(entry.get("session_id", "")),
        call_ids=tuple(str(c) for c in entry.get("call_ids") or ()),
        outcome={str(k): str(v) for k, v in (entry.get("outcome") or {}).items()},
        ran={str(k): str(v) for k, v in (entry.get("ran") or {}).items()})


class MessageStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        state_dir.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Unreadable: start again rather than stop notifying (old messages stay as they are).
            log.warning("slack message state unreadable (%s); starting empty",
                        type(exc).__name__)
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items()
                if isinstance(v, dict) and {"channel", "ts"} <= v.keys()}

    def get(self, approval_id: str) -> Posted | None:
        entry = self._read().get(approval_id)
        return None if entry is None else _posted(entry)

    def by_call(self, call_id: str) -> tuple[str, Posted] | None:
        """The approval (and its message) that holds this call, if a message was posted."""
        for approval_id, entry in self._read().items():
            if call_id in (entry.get("call_ids") or ()):
                return approval_id, _posted(entry)
        return None

    def put(self, approval_id: str, channel: str, ts: str, session_id: str = "",
            call_ids: tuple[str, ...] = ()) -> None:
        now = datetime.now(UTC)
        entries = self._read()
        entries[approval_id] = {"channel": channel, "ts": ts, "posted_at": now.isoformat(),
                                "session_id": session_id, "call_ids": list(call_ids)}
        cutoff = (now - KEEP).isoformat()
        entries = {k: v for k, v in entries.items() if v.get("posted_at", "") >= cutoff}
        self._write(entries)

    def note(self, approval_id: str, *, outcome: dict[str, str] | None = None,
             ran: dict[str, str] | None = None) -> Posted | None:
        """Records how the approval ended and what ran, for the next rewrite of its message."""
        entries = self._read()
        entry = entries.get(approval_id)
        if entry is None:
            return None
        if outcome is not None:
            entry["outcome"] = outcome
        if ran:
            entry["ran"] = {**(entry.get("ran") or {}), **ran}
        self._write(entries)
        return _posted(entry)

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{FILE}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
