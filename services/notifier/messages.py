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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "slack-messages.json"
# Entries are dropped this long after their message was posted (approvals expire long before).
KEEP = timedelta(days=14)


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str
    posted_at: str


class MessageStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        state_dir.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, dict[str, str]]:
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
        if entry is None:
            return None
        return Posted(str(entry["channel"]), str(entry["ts"]), str(entry.get("posted_at", "")))

    def put(self, approval_id: str, channel: str, ts: str) -> None:
        now = datetime.now(UTC)
        entries = self._read()
        entries[approval_id] = {"channel": channel, "ts": ts, "posted_at": now.isoformat()}
        cutoff = (now - KEEP).isoformat()
        entries = {k: v for k, v in entries.items() if v.get("posted_at", "") >= cutoff}
        self._write(entries)

    def _write(self, entries: dict[str, dict[str, str]]) -> None:
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
