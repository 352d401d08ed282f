"""A period as the configuration gives one: calendar years and seconds (``7y``, ``30d``).

Retention is stated in years in law (情報提供等記録 are kept 7 years), and a year is a
calendar year: a record made on 2026-12-02 (Japan time) is past seven years of retention on
2033-12-02, whatever the leap days in between. A period is therefore a number of calendar
years, counted on the Japan-time calendar, plus a number of seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["JAPAN", "Period", "parse_period"]

JAPAN = ZoneInfo("Asia/Tokyo")

_UNITS = {"y": 0.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(y|d|h|m|s)")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Period:
    """``years`` calendar years (Japan time) and ``seconds`` more."""

    years: int = 0
    seconds: float = 0.0

    def before(self, moment: datetime) -> datetime:
        """The moment this period before ``moment`` (aware): the same date and time of day
        ``years`` earlier on the Japan-time calendar (29 February becomes 28 February), then
        ``seconds`` earlier."""
        local = moment.astimezone(JAPAN)
        year = local.year - self.years
        try:
            shifted = local.replace(year=year)
        except ValueError:  # 29 February in a year that has none
            shifted = local.replace(year=year, day=28)
        return shifted.astimezone(UTC) - timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        parts = [f"{self.years}y"] if self.years else []
        rest = self.seconds
        for unit in ("d", "h", "m"):
            whole = int(rest // _UNITS[unit])
            if whole:
                parts.append(f"{whole}{unit}")
                rest -= whole * _UNITS[unit]
        if rest or not parts:
            parts.append(f"{rest:g}s")
        return "".join(parts)


def parse_period(text: str) -> Period:
    """The period written ``7y``, ``30d``, ``1d12h``, ``90m``, ``45s`` or as a bare number of
    seconds (``604800``); ValueError for anything else, or for a period of nothing."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return _above_nothing(text, Period(0, float(text)))
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(
            f"{text!r} is not a period such as 7y, 30d, 12h, 90m or a number of seconds"
        )
    years = 0
    seconds = 0.0
    for number, unit in parts:
        if unit != "y":
            seconds += float(number) * _UNITS[unit]
        elif "." in number:
            raise ValueError(f"{text!r}: years are whole (7y, not 1.5y)")
        else:
            years += int(number)
    return _above_nothing(text, Period(years, seconds))


def _above_nothing(text: str, period: Period) -> Period:
    if period.years == 0 and period.seconds <= 0:
        raise ValueError(f"{text!r}: a period must be above 0")
    return period
