"""Unit tests for middleware.jobs: the scheduler of a party's periodic jobs and their runs.

The jobs run on a ``twisted.internet.task.Clock`` moved by the tests; their runs are recorded
in a real (SQLite) node database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_twisted
from sqlalchemy import func, select
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from middleware.jobs import (
    FAILED,
    PRUNE_EVERY,
    SUCCEEDED,
    Backoff,
    Scheduler,
    job_history,
    prune_runs,
    record_run,
)
from middleware.node import MIGRATIONS
from middleware.storage import Database
from middleware.tables import node_job_run

T0 = datetime(2026, 12, 1, 18, 5, tzinfo=UTC)


@pytest_twisted.async_yield_fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated node database."""
    from twisted.internet import reactor

    made = Database(reactor, f"sqlite:///{tmp_path / 'node.sqlite'}")
    made.start()
    await made.migrate(MIGRATIONS)
    try:
        yield made
    finally:
        made.stop()


def clock_at(moment: datetime = T0) -> Clock:
    clock = Clock()
    clock.advance(moment.timestamp())
    return clock


def history(database: Database, job: str, failures: int = 10) -> Any:
    (found,) = database.run_blocking(job_history, node_job_run, [job], failures)
    return found


def rows(database: Database, job: str, outcome: str) -> int:
    return int(
        database.run_blocking(
            lambda connection: connection.execute(
                select(func.count())
                .select_from(node_job_run)
                .where(node_job_run.c.job == job, node_job_run.c.outcome == outcome)
            ).scalar_one()
        )
    )


class Slow:
    """A job's work that waits until the test lets it end (a run waiting on the network)."""

    def __init__(self) -> None:
        self.started: list[Deferred[None]] = []

    def __call__(self) -> Deferred[None]:
        self.started.append(Deferred())
        return self.started[-1]


def slow_job(database: Database, name: str, interval: float) -> tuple[Scheduler, Clock, Slow]:
    """A started scheduler whose one job ``name`` has started a run that waits."""
    clock = clock_at()
    slow = Slow()
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add(name, interval, slow)
    jobs.start()
    clock.advance(0)
    return jobs, clock, slow


def test_the_backoff_doubles_from_its_first_delay_up_to_its_maximum() -> None:
    """1, 2, 4, 8 ... seconds after 1, 2, 3, 4 failures in a row, never above the maximum."""
    backoff = Backoff(initial=1.0, maximum=60.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 6, 7, 20)] == [1, 2, 4, 8, 32, 60, 60]


@pytest_twisted.ensureDeferred
async def test_a_job_runs_at_start_then_every_interval_of_the_party_clock(
    database: Database,
) -> None:
    """A job added with ``now`` runs when the scheduler starts, then each time the clock
    passes its interval; its next run is known in advance; nothing runs while time stands."""
    clock = clock_at()
    runs: list[datetime] = []
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("retention", 60, lambda: runs.append(datetime.fromtimestamp(clock.seconds(), UTC)))
    jobs.start()
    clock.advance(0)
    try:
        assert jobs.state("retention").condition == "running"
        await jobs.run("retention")  # the run started at once, waited for
        assert runs == [T0]
        assert jobs.state("retention").next_run_at == T0 + timedelta(seconds=60)
        clock.advance(59)
        assert len(runs) == 1
        clock.advance(1)
        await jobs.run("retention")  # the run the clock started
        assert runs == [T0, T0 + timedelta(seconds=60)]
        state = jobs.state("retention")
        assert (state.condition, state.failures, state.last_success_at) == (
            "ok",
            0,
            T0 + timedelta(seconds=60),
        )
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_job_added_without_now_waits_one_interval(database: Database) -> None:
    """A job added with ``now=False`` first runs one interval after the scheduler started."""
    clock = clock_at()
    runs: list[float] = []
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("list_sync", 300, lambda: runs.append(clock.seconds()), now=False)
    jobs.start()
    try:
        assert jobs.state("list_sync").condition == "waiting"
        assert jobs.state("list_sync").next_run_at == T0 + timedelta(seconds=300)
        clock.advance(300)
        await jobs.run("list_sync")
        assert runs == [T0.timestamp() + 300]
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_job_is_retried_with_backoff_and_never_stops(database: Database) -> None:
    """A run that raises is recorded as failed with its error; the job runs again 1, 2, 4 s
    later while it keeps failing, then at its interval once a run succeeds."""
    clock = clock_at()
    outcomes = [RuntimeError("disk full")] * 3 + [None]

    def flaky() -> dict[str, int]:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return {"results_deleted": 3}

    jobs = Scheduler(database, node_job_run, clock, Backoff(initial=1.0, maximum=60.0))
    jobs.add("retention", 600, flaky)
    jobs.start()
    try:
        await jobs.run("retention")
        for failures, delay in ((1, 1), (2, 2), (3, 4)):
            state = jobs.state("retention")
            assert (state.condition, state.failures) == ("failing", failures)
            assert state.last_run is not None and state.last_run.error == "RuntimeError: disk full"
            assert isinstance(state.last_failure, RuntimeError)
            assert state.next_run_at == datetime.fromtimestamp(clock.seconds() + delay, UTC)
            clock.advance(delay)
            await jobs.run("retention")
        state = jobs.state("retention")
        assert (state.condition, state.failures, state.failures_total) == ("ok", 0, 3)
        assert state.next_run_at == datetime.fromtimestamp(clock.seconds() + 600, UTC)
        found = history(database, "retention")
        assert found.last_run.outcome == SUCCEEDED
        assert found.last_run.counts == {"results_deleted": 3}
        assert found.failures_kept == 3
        assert [run.error for run in found.recent_failures] == ["RuntimeError: disk full"] * 3
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_job_still_running_is_not_started_twice(database: Database) -> None:
    """While a run waits (on the network, say), neither its interval passing nor asking
    for a run starts another: both wait for the run in flight."""
    jobs, clock, slow = slow_job(database, "list_sync", 10)
    started = slow.started
    try:
        assert len(started) == 1 and jobs.state("list_sync").condition == "running"
        clock.advance(100)
        waiting = jobs.run("list_sync")
        assert len(started) == 1 and not waiting.called
        started[0].callback(None)
        run = await waiting
        assert run is not None and run.outcome == SUCCEEDED
        assert len(started) == 1
        assert rows(database, "list_sync", SUCCEEDED) == 1
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_stopping_cancels_a_run_in_flight_and_nothing_runs_after(
    database: Database,
) -> None:
    """Stopping the scheduler cancels a run that waits (it is not recorded) and no run
    starts afterwards, however far the clock moves."""
    jobs, clock, slow = slow_job(database, "outbox", 1)
    started = slow.started
    await jobs.stop()
    assert started[0].called  # cancelled
    clock.advance(3600)
    assert len(started) == 1
    assert rows(database, "outbox", SUCCEEDED) + rows(database, "outbox", FAILED) == 0
    assert jobs.state("outbox").next_run_at is None


@pytest_twisted.ensureDeferred
async def test_a_job_reporting_anything_but_counts_fails(database: Database) -> None:
    """What a run reports must be counts by name; anything else fails the run, saying so."""
    clock = clock_at()
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("held_expiry", 60, lambda: 3)
    jobs.start()
    try:
        run = await jobs.run("held_expiry")
        assert run is not None and run.outcome == FAILED
        assert run.error is not None and run.error.startswith("TypeError: job held_expiry")
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_observers_see_every_run_with_the_state_after_it(database: Database) -> None:
    """An observer is told of each run and the job's state after it (the metrics and the
    health follow the jobs this way)."""
    clock = clock_at()
    seen: list[tuple[str, str, int]] = []
    jobs = Scheduler(database, node_job_run, clock)
    jobs.watch(lambda state, run: seen.append((state.name, run.outcome, state.failures)))
    jobs.add("outbox", 1, lambda: {"claimed": 0})
    jobs.start()
    try:
        await jobs.run("outbox")
        assert seen == [("outbox", SUCCEEDED, 0)]
    finally:
        await jobs.stop()


def test_old_runs_are_pruned_per_job_and_outcome(database: Database) -> None:
    """Pruning keeps the newest runs of one job and outcome and touches no other."""
    from middleware.jobs import JobRun

    for minute in range(5):
        for job, outcome in (("outbox", SUCCEEDED), ("outbox", FAILED), ("retention", SUCCEEDED)):
            at = T0 + timedelta(minutes=minute)
            run = JobRun(job, at, at, outcome, {"claimed": minute}, None)
            database.run_blocking(record_run, node_job_run, run, None)
    deleted = database.run_blocking(prune_runs, node_job_run, "outbox", SUCCEEDED, 2)
    assert deleted == 3
    assert rows(database, "outbox", SUCCEEDED) == 2
    assert rows(database, "outbox", FAILED) == 5
    assert rows(database, "retention", SUCCEEDED) == 5
    assert history(database, "outbox").last_run.counts == {"claimed": 4}


@pytest_twisted.ensureDeferred
async def test_the_scheduler_keeps_the_runs_of_a_job_bounded(database: Database) -> None:
    """However many times a job runs, at most ``keep`` of its successful runs (plus those
    recorded since the last pruning) stay in the database, and its failures are kept apart."""
    clock = clock_at()
    jobs = Scheduler(database, node_job_run, clock, keep=3)
    fail = [True]

    def work() -> None:
        if fail[0]:
            raise RuntimeError("once")

    jobs.add("outbox", 1, work)
    jobs.start()
    try:
        await jobs.run("outbox")
        fail[0] = False
        for _ in range(PRUNE_EVERY):
            await jobs.run("outbox")
        assert rows(database, "outbox", SUCCEEDED) == 3
        assert rows(database, "outbox", FAILED) == 1
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_quiet_job_records_a_success_a_minute_with_the_counts_since(
    database: Database,
) -> None:
    """A poll run every 0.2 s as a quiet job: its first run is recorded, the next ones only
    once a minute has passed, their counts summed; a failure is recorded at once."""
    clock = clock_at()
    failing = [False]
    polls = [0]

    def poll() -> dict[str, int]:
        if failing[0]:
            raise RuntimeError("database is locked")
        polls[0] += 1
        return {"claimed": 2}

    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("outbox", 0.2, poll, quiet=60)
    jobs.start()
    try:
        for _ in range(301):  # 60.2 s of polls after the first
            clock.advance(0.2)
            await jobs.run("outbox")
        assert rows(database, "outbox", SUCCEEDED) == 2
        newest = history(database, "outbox").last_run
        # The runs after the first, summed.
        assert newest is not None and newest.counts == {"claimed": 2 * (polls[0] - 1)}
        failing[0] = True
        clock.advance(1)
        await jobs.run("outbox")
        assert rows(database, "outbox", FAILED) == 1
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_job_paced_by_its_work_runs_when_it_says_or_is_woken_not_every_interval(
    database: Database,
) -> None:
    """A job with ``next_run``: when it says None the job does not run again at its
    interval, only once woken, after the delay the wake asks; a wake never runs it sooner
    than an interval after its last run started; when ``next_run`` says 30 s, it runs 30 s
    after its run."""
    clock = clock_at()
    runs: list[float] = []
    pace: list[float | None] = [None]
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add(
        "outbox",
        10,
        lambda: runs.append(clock.seconds() - T0.timestamp()),
        next_run=lambda: pace[0],
    )
    jobs.start()
    clock.advance(0)
    try:
        await jobs.run("outbox")  # the run at start
        assert runs == [0]
        assert jobs.state("outbox").next_run_at is None
        for _ in range(360):
            clock.advance(10)
        assert runs == [0]
        jobs.wake("outbox", 5)
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=3605)
        clock.advance(4)
        assert runs == [0]
        clock.advance(1)
        await jobs.run("outbox")  # the run the wake started
        assert runs == [0, 3605]
        jobs.wake("outbox")  # at once, but not within its interval of the last run
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=3615)
        pace[0] = 30.0
        clock.advance(10)
        await jobs.run("outbox")
        assert runs == [0, 3605, 3615]
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=3645)
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_clock_put_back_does_not_push_a_paced_job_away(database: Database) -> None:
    """A clock put back (as a scenario puts the network's clock back to real time) after a
    run: a wake runs the job after its interval counted from now, not from a last start that
    now lies two hours ahead."""
    clock = clock_at()
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("outbox", 10, lambda: None, next_run=lambda: None)
    jobs.start()
    clock.advance(0)
    try:
        await jobs.run("outbox")  # the run at start
        clock.advance(7200)  # the clock two hours ahead ...
        jobs.wake("outbox")
        clock.advance(0)
        await jobs.run("outbox")  # ... where the job runs
        clock.advance(-7200)  # ... then put back
        jobs.wake("outbox", 5)
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=10)
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_wake_while_a_paced_job_runs_is_its_next_run(database: Database) -> None:
    """Something falling due while the job runs: its next run is due then (its interval
    after the run's start at the soonest), although ``next_run`` says nothing is."""
    clock = clock_at()
    slow = Slow()
    jobs = Scheduler(database, node_job_run, clock)
    jobs.add("outbox", 10, slow, next_run=lambda: None)
    jobs.start()
    clock.advance(0)
    try:
        assert jobs.state("outbox").condition == "running"
        jobs.wake("outbox", 25)
        ended = jobs.run("outbox")  # waits for the run in flight
        slow.started[0].callback(None)
        await ended
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=25)
    finally:
        await jobs.stop()


@pytest_twisted.ensureDeferred
async def test_a_wake_leaves_a_failing_job_to_its_backoff(database: Database) -> None:
    """A failing job runs again after its backoff, however often it is woken meanwhile."""
    clock = clock_at()

    def failing() -> None:
        raise RuntimeError("database is locked")

    jobs = Scheduler(database, node_job_run, clock, Backoff(initial=4.0, maximum=60.0))
    jobs.add("outbox", 1, failing, next_run=lambda: None)
    jobs.start()
    clock.advance(0)
    try:
        await jobs.run("outbox")
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=4)
        jobs.wake("outbox")
        assert jobs.state("outbox").next_run_at == T0 + timedelta(seconds=4)
    finally:
        await jobs.stop()
