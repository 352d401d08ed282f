"""The one clock: wall time and timers, injected, so that a whole network can be moved in time.

Every party takes an ``IReactorTime`` (``seconds``, ``callLater``) and asks it for the time
through `utc_now`: its permits, lists, held items, retention sweeps, outbox retries and
periodic jobs all follow that one clock. The network in a box gives every party the same
`VirtualClock`: real time by default, which a test (or, later, a tester through the control
API) can freeze, advance or set; timers scheduled on it fire when *its* time reaches them, in
order, whether time flows or is moved. ``twisted.internet.task.Clock`` does the same for unit
tests that need no reactor at all.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Clock", "ClockState", "ReactorTime", "VirtualClock", "iso", "periodic", "utc_now"]

_log = Logger(namespace=__name__)


class Clock(Protocol):
    """Anything that tells the time like a reactor (``IReactorTime.seconds``)."""

    def seconds(self) -> float: ...


class ReactorTime(Clock, Protocol):
    """Time and timers like a reactor's (``IReactorTime``): what a party is given."""

    def callLater(
        self, delay: float, call: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any: ...


# The last whole second `utc_now` turned into a datetime, and that datetime: a party asks
# for the time many times a second (several times per message), always in the same second.
_last_second: tuple[int, datetime] = (0, datetime.fromtimestamp(0, UTC))


def utc_now(clock: Clock) -> datetime:
    """The current time of ``clock`` as an aware UTC datetime (microseconds dropped)."""
    global _last_second
    second = math.floor(clock.seconds())
    last = _last_second  # one read: another thread may replace it meanwhile
    if last[0] != second:
        last = _last_second = (second, datetime.fromtimestamp(second, UTC))
    return last[1]


def periodic(work: Callable[[], Any], clock: ReactorTime) -> LoopingCall:
    """A ``LoopingCall`` of ``work`` whose time and timers are ``clock``'s."""
    loop = LoopingCall(work)
    loop.clock = cast(IReactorTime, clock)
    return loop


def iso(moment: datetime) -> str:
    """A UTC time as ISO 8601 with a trailing Z, the one textual form used everywhere."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ClockState:
    """Where a `VirtualClock` stands, in a form another process can adopt: its offset from
    real (POSIX) time, or the moment it is frozen at. Processes of one machine share real
    time, so every one of them that adopts a state tells the same network time."""

    offset: float = 0.0
    frozen_at: float | None = None

    def seconds(self, real: float) -> float:
        """The network time this state gives when the real time is ``real``."""
        return self.frozen_at if self.frozen_at is not None else real + self.offset


class _Timer:
    """One call scheduled on a `VirtualClock` (an ``IDelayedCall``)."""

    def __init__(
        self,
        clock: VirtualClock,
        due: float,
        order: int,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._clock = clock
        self.due = due
        self.order = order
        self.call = call
        self.args = args
        self.kwargs = kwargs
        self.cancelled = False
        self.called = False

    def __lt__(self, other: _Timer) -> bool:
        return (self.due, self.order) < (other.due, other.order)

    def getTime(self) -> float:
        return self.due

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def _refuse_if_done(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()

    def cancel(self) -> None:
        self._refuse_if_done()
        self.cancelled = True
        self._clock._forget(self)

    def delay(self, seconds: float) -> None:
        self.reset(self.due + seconds - self._clock.seconds())

    def reset(self, seconds: float) -> None:
        self._refuse_if_done()
        self._clock._forget(self)
        self.due = self._clock.seconds() + seconds
        self._clock._schedule(self)


class VirtualClock:
    """A clock that follows the reactor's time, shifted, and can be frozen, advanced or set.

    Its time is the reactor's plus an offset, or a fixed time while frozen. ``callLater``
    schedules on this time: a timer fires when the clock reaches its time, as real time
    flows (one reactor timer waits for the earliest) or at once when the clock is advanced
    past it; due timers fire in time order (then in the order they were scheduled). Set
    back, the clock keeps each timer's remaining delay: every timer of a party is a periodic
    job or a retry (a deadline is checked against the clock when the job runs), which would
    otherwise stall for as long as the clock went back.
    """

    def __init__(self, reactor: ReactorTime) -> None:
        self._reactor = reactor
        self._offset = 0.0
        self._frozen_at: float | None = None
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._wakeup: Any = None

    # -- IReactorTime ---------------------------------------------------------------------

    def seconds(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return float(self._reactor.seconds()) + self._offset

    def callLater(
        self, delay: float, call: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        timer = _Timer(
            self, self.seconds() + max(0.0, delay), next(self._order), call, args, kwargs
        )
        self._schedule(timer)
        return timer

    def getDelayedCalls(self) -> list[Any]:
        return [timer for timer in self._timers if timer.active()]

    # -- moving time ----------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still."""
        return self._frozen_at is not None

    @property
    def offset(self) -> float:
        """How far this clock is ahead of the reactor's (negative: behind)."""
        return self.seconds() - float(self._reactor.seconds())

    def freeze(self) -> None:
        """Stop the clock where it is: timers fire only when it is advanced or set."""
        if self._frozen_at is None:
            self._frozen_at = self.seconds()
            self._rearm()

    def resume(self) -> None:
        """Let the clock run again with the reactor, from where it stood."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at - float(self._reactor.seconds())
            self._frozen_at = None
            self._rearm()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` and fire the timers now due, in order."""
        if seconds < 0:
            raise ValueError("a clock is advanced forward only; use set() to go back")
        self.set(self.seconds() + seconds)

    def set(self, moment: float) -> None:
        """Put the clock at ``moment`` (POSIX seconds) and fire the timers now due (put
        back, each timer keeps its remaining delay)."""
        before = self.seconds()
        if self._frozen_at is not None:
            self._frozen_at = moment
        else:
            self._offset = moment - float(self._reactor.seconds())
        self._moved(before)

    def state(self) -> ClockState:
        """Where this clock stands (to be adopted by the clocks of other processes)."""
        if self._frozen_at is not None:
            return ClockState(offset=self.offset, frozen_at=self._frozen_at)
        return ClockState(offset=self._offset)

    def adopt(self, state: ClockState) -> None:
        """Stand where ``state`` says (frozen or running at its offset) and fire the timers
        now due; time may go back, as with `set`."""
        before = self.seconds()
        self._frozen_at = state.frozen_at
        self._offset = state.offset
        self._moved(before)

    def _moved(self, before: float) -> None:
        """The clock was moved from ``before``: back, its timers keep their remaining
        delays; forward, those now due fire."""
        back = before - self.seconds()
        if back > 0:
            for timer in self._timers:  # one shift for all: their order stands
                timer.due -= back
        self._fire_due()

    # -- timers ---------------------------------------------------------------------------

    def _schedule(self, timer: _Timer) -> None:
        heapq.heappush(self._timers, timer)
        if self._timers[0] is timer:
            self._rearm()

    def _forget(self, timer: _Timer) -> None:
        if timer in self._timers:
            self._timers.remove(timer)
            heapq.heapify(self._timers)
            self._rearm()

    def _rearm(self) -> None:
        """Have the reactor wake this clock when its earliest timer is due (not while frozen)."""
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        if self._timers and self._frozen_at is None:
            wait = max(0.0, self._timers[0].due - self.seconds())
            self._wakeup = self._reactor.callLater(wait, self._fire_due)

    def _fire_due(self) -> None:
        self._wakeup = None
        while self._timers and self._timers[0].due <= self.seconds():
            timer = heapq.heappop(self._timers)
            if not timer.active():
                continue
            timer.called = True
            try:
                timer.call(*timer.args, **timer.kwargs)
            except Exception:
                _log.failure("a timer of the virtual clock failed")
        self._rearm()
