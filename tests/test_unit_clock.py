"""The virtual clock: reactor time shifted, frozen, advanced or set, timers fired in order."""

from __future__ import annotations

import pytest
from twisted.internet.error import AlreadyCancelled
from twisted.internet.task import Clock

from middleware.clock import ClockState, VirtualClock, periodic, utc_now


def clocks(start: float = 1_000_000.0) -> tuple[Clock, VirtualClock]:
    """A deterministic reactor time and a virtual clock following it."""
    reactor = Clock()
    reactor.advance(start)
    return reactor, VirtualClock(reactor)


def test_follows_the_reactor_until_moved() -> None:
    """Unmoved, the clock tells the reactor's time; advanced, it stays that far ahead."""
    reactor, clock = clocks()
    assert clock.seconds() == reactor.seconds()
    clock.advance(3600)
    reactor.advance(10)
    assert clock.seconds() == reactor.seconds() + 3600
    assert clock.offset == 3600


def test_timers_fire_as_real_time_reaches_them() -> None:
    """A timer fires when the reactor's time brings the clock to it, not before."""
    reactor, clock = clocks()
    fired: list[str] = []
    clock.callLater(5, fired.append, "five")
    reactor.advance(4.9)
    assert fired == []
    reactor.advance(0.2)
    assert fired == ["five"]


def test_advancing_fires_every_due_timer_in_time_order() -> None:
    """Moving eight days ahead fires the timers now due at once, earliest first, then those
    scheduled at the same time in the order they were scheduled."""
    _, clock = clocks()
    fired: list[str] = []
    clock.callLater(7 * 86400, fired.append, "week")
    clock.callLater(60, fired.append, "minute")
    clock.callLater(60, fired.append, "minute again")
    clock.callLater(9 * 86400, fired.append, "later")
    clock.advance(8 * 86400)
    assert fired == ["minute", "minute again", "week"]


def test_a_frozen_clock_stands_still_until_advanced_or_resumed() -> None:
    """Frozen, the clock ignores the reactor and fires nothing; advanced, it fires what is
    due; resumed, it runs on from where it stood."""
    reactor, clock = clocks()
    fired: list[str] = []
    clock.callLater(10, fired.append, "ten")
    clock.freeze()
    stood = clock.seconds()
    reactor.advance(100)
    assert clock.seconds() == stood and fired == [] and clock.frozen
    clock.advance(10)
    assert fired == ["ten"]
    clock.resume()
    reactor.advance(5)
    assert clock.seconds() == stood + 15 and not clock.frozen


def test_setting_the_clock_back_fires_nothing_and_keeps_the_timers_delays() -> None:
    """Put back in time, the clock fires nothing and each timer fires after the delay it
    had left (a periodic job does not stall for as long as the clock went back)."""
    reactor, clock = clocks()
    fired: list[str] = []
    clock.callLater(10, fired.append, "ten")
    clock.advance(3)
    clock.set(clock.seconds() - 3600)
    reactor.advance(6.9)
    assert fired == []
    reactor.advance(0.2)
    assert fired == ["ten"]


def test_a_periodic_job_goes_on_after_the_clock_is_put_back() -> None:
    """A job every minute, the clock moved eight days ahead and then put back (as a
    scenario's end puts a tester's network back): the job runs again a minute later."""
    reactor, clock = clocks()
    runs: list[float] = []
    periodic(lambda: runs.append(clock.seconds()), clock).start(60, now=False)
    clock.advance(8 * 86400)
    ran = len(runs)
    clock.adopt(ClockState(offset=0.0))
    reactor.advance(60)
    assert len(runs) == ran + 1


def test_timers_can_be_cancelled_delayed_and_reset() -> None:
    """A cancelled timer never fires (cancelling twice is refused); delay and reset move it."""
    reactor, clock = clocks()
    fired: list[str] = []
    cancelled = clock.callLater(1, fired.append, "cancelled")
    cancelled.cancel()
    with pytest.raises(AlreadyCancelled):
        cancelled.cancel()
    delayed = clock.callLater(1, fired.append, "delayed")
    delayed.delay(4)
    reset = clock.callLater(1, fired.append, "reset")
    reset.reset(2)
    reactor.advance(2)
    assert fired == ["reset"]
    reactor.advance(3)
    assert fired == ["reset", "delayed"]
    assert clock.getDelayedCalls() == []


def test_a_looping_call_runs_on_the_clock() -> None:
    """Periodic work driven by the clock runs once per period of the clock's time, also when
    the clock jumps."""
    _, clock = clocks()
    ticks: list[float] = []
    loop = periodic(lambda: ticks.append(clock.seconds()), clock)
    loop.start(60, now=False)
    clock.advance(60)
    clock.advance(60)
    assert len(ticks) == 2
    loop.stop()


def test_utc_now_reads_the_clock() -> None:
    """Wall time of a party comes from its clock, moved or not."""
    _, clock = clocks(start=1_767_225_600.0)  # 2026-01-01T00:00:00Z
    clock.advance(86400)
    assert utc_now(clock).isoformat() == "2026-01-02T00:00:00+00:00"


def test_utc_now_of_clocks_at_different_times_gives_each_its_own() -> None:
    """Two clocks read in turn, within a second and across seconds (and one put back), each
    give their own whole second, never the other's."""
    _, early = clocks(start=1_767_225_600.25)  # 2026-01-01T00:00:00.25Z
    _, late = clocks(start=1_767_225_600.0 + 86400.5)
    for _ in range(2):
        assert utc_now(early).isoformat() == "2026-01-01T00:00:00+00:00"
        assert utc_now(late).isoformat() == "2026-01-02T00:00:00+00:00"
    early.advance(0.74)
    assert utc_now(early).isoformat() == "2026-01-01T00:00:00+00:00"
    early.advance(0.02)
    assert utc_now(early).isoformat() == "2026-01-01T00:00:01+00:00"
    early.set(1_767_225_599.9)
    assert utc_now(early).isoformat() == "2025-12-31T23:59:59+00:00"


def test_a_clock_adopts_the_state_of_another() -> None:
    """A clock of another process that adopts this one's state tells the same time, frozen
    or running, and fires the timers the new time has reached."""
    reactor, leader = clocks()
    follower = VirtualClock(reactor)
    fired: list[str] = []
    follower.callLater(3600, fired.append, "an hour")
    leader.advance(7200)
    follower.adopt(leader.state())
    assert follower.seconds() == leader.seconds()
    assert fired == ["an hour"]
    leader.freeze()
    reactor.advance(30)
    follower.adopt(leader.state())
    assert follower.frozen
    reactor.advance(30)
    assert follower.seconds() == leader.seconds()
    leader.resume()
    follower.adopt(leader.state())
    assert not follower.frozen
    reactor.advance(5)
    assert follower.seconds() == leader.seconds()
