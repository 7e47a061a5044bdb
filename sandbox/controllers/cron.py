"""Five-field cron schedules (minute hour day-of-month month day-of-week) as CronJobs use
them, with the @hourly/@daily/... shorthands. Evaluated in UTC unless a timeZone is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
SEARCH_LIMIT = timedelta(days=8)  # previous()/next() look no further; enough for demo data


def _field(text: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if rng in ("*", "?"):
            start, end = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(rng)
            end = hi if step_s else start
        if start < lo or end > hi + (1 if hi == 6 else 0) or step < 1:
            raise ValueError(f"cron field {text!r} out of range")
        values.update(v % 7 if hi == 6 else v for v in range(start, end + 1, step))
    return frozenset(values)


class Schedule:
    def __init__(self, expr: str, tz: str | None = None) -> None:
        expr = _MACROS.get(expr.strip(), expr.strip())
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"a cron schedule has 5 fields: {expr!r}")
        self.minute, self.hour, self.dom, self.month, self.dow = (
            _field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True)
        )
        self._dom_any = fields[2] in ("*", "?")
        self._dow_any = fields[4] in ("*", "?")
        self.tz = ZoneInfo(tz) if tz else UTC

    def matches(self, t: datetime) -> bool:
        local = t.astimezone(self.tz)
        if local.minute not in self.minute or local.hour not in self.hour:
            return False
        if local.month not in self.month:
            return False
        dom_ok = local.day in self.dom
        dow_ok = (local.isoweekday() % 7) in self.dow
        # Like Vixie cron: when both day fields are restricted, either may match.
        if self._dom_any or self._dow_any:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def previous(self, at: datetime, limit: int = 1) -> list[datetime]:
        """Up to `limit` scheduled times at or before `at`, newest first."""
        t = at.replace(second=0, microsecond=0)
        out: list[datetime] = []
        end = t - SEARCH_LIMIT
        while t > end and len(out) < limit:
            if self.matches(t):
                out.append(t)
            t -= timedelta(minutes=1)
        return out

    def next(self, at: datetime) -> datetime | None:
        t = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = t + SEARCH_LIMIT
        while t < end:
            if self.matches(t):
                return t
            t += timedelta(minutes=1)
        return None
