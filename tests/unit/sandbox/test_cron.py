from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.controllers.cron import Schedule

AT = datetime(2026, 11, 25, 9, 47, 30, tzinfo=UTC)  # a Wednesday


def test_previous_and_next() -> None:
    s = Schedule("*/30 * * * *")
    assert s.previous(AT, limit=2) == [
        datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    ]
    assert s.next(AT) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_ranges_lists_and_macros() -> None:
    assert Schedule("0 */6 * * *").previous(AT) == [datetime(2026, 11, 25, 6, 0, tzinfo=UTC)]
    assert Schedule("15 9-17 * * 1-5").next(AT) == datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    assert Schedule("@daily").next(AT) == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert Schedule("0 0 * * 0").next(AT) == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    assert Schedule("0 12 * * *", "Europe/Berlin").next(AT) == datetime(
        2026, 11, 25, 11, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "*/0 * * * *"])
def test_invalid(expr: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        Schedule(expr)
