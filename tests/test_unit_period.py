"""Unit tests for middleware.period: the periods of the configuration (7y, 30d, 12h)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from middleware.period import Period, parse_period


def test_periods_are_read_in_years_days_hours_minutes_and_seconds() -> None:
    """Units add up; a bare number is seconds; years stay calendar years."""
    assert parse_period("7y") == Period(years=7)
    assert parse_period("30d") == Period(seconds=30 * 86400.0)
    assert parse_period("1d12h") == Period(seconds=36 * 3600.0)
    assert parse_period("90m") == Period(seconds=5400.0)
    assert parse_period("604800") == Period(seconds=604800.0)
    assert parse_period("1y6h") == Period(years=1, seconds=6 * 3600.0)
    assert str(parse_period("7y")) == "7y" and str(parse_period("1d12h")) == "1d12h"


@pytest.mark.parametrize("text", ["", "7 years", "1.5y", "7d7", "-3d", "0", "0y0d"])
def test_what_is_no_period_is_refused(text: str) -> None:
    """Anything but units with numbers, fractional years, and a period of nothing are
    refused."""
    with pytest.raises(ValueError):
        parse_period(text)


def test_years_are_counted_on_the_japan_time_calendar() -> None:
    """Seven years before 2033-12-02 09:00 in Japan is 2026-12-02 09:00 in Japan, whatever
    the leap days between; 29 February becomes 28 February."""
    moment = datetime(2033, 12, 2, 0, 0, tzinfo=UTC)  # 09:00 in Japan
    assert Period(years=7).before(moment) == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    # 2028-02-29 08:00 in Japan (23:00 UTC the day before): one year earlier has no 29th.
    leap = datetime(2028, 2, 28, 23, 0, tzinfo=UTC)
    assert Period(years=1).before(leap) == datetime(2027, 2, 27, 23, 0, tzinfo=UTC)
    assert Period(seconds=60).before(moment) == datetime(2033, 12, 1, 23, 59, tzinfo=UTC)
