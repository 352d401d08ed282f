"""The one clock: wall time read from the reactor, so tests and scenarios can move it.

Every component takes an ``IReactorTime`` and asks it for the time through ``utc_now``;
``twisted.internet.task.Clock`` then moves time in tests without sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the time like a reactor (``IReactorTime.seconds``)."""

    def seconds(self) -> float: ...


def utc_now(clock: Clock) -> datetime:
    """The current time of ``clock`` as an aware UTC datetime (microseconds dropped)."""
    return datetime.fromtimestamp(clock.seconds(), UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """A UTC time as ISO 8601 with a trailing Z, the one textual form used everywhere."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
