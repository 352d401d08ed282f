"""The jobs of a party (バッチ): one scheduler for every periodic job, each run recorded.

A party's periodic work is a job of its `Scheduler` (``party.jobs``), registered by name in
one line: ``party.jobs.add("retention", interval, work)``, where ``work`` returns (or fires
with) the counts it reports, such as ``{"results_deleted": 3}``, or None. A job runs on the
party's clock (the network's one clock: moving it moves the jobs) and never twice at once: a
run that is due while the last one still runs waits for it. A run that fails is logged (a
coded refusal or an unreachable peer in one line, anything else with its traceback the first
time in a row) and the job runs again after a backoff that doubles from ``[jobs]
retry_initial`` up to ``retry_maximum``, then at its interval again once a run succeeds: a
job never stops for good.

Every run is written to the party's database (``job_run``: the job, when it started and
ended, its outcome, its counts and its error); the newest ``keep_runs`` of each job and
outcome are kept, so the failures stay visible behind thousands of quiet successful runs. A
job that runs several times a second (the outbox's poll) is ``quiet``: it records a
successful run at most once a minute, with the counts of the runs since.

A job may be paced by its work instead of its interval (``next_run``): after a successful
run it runs again when ``next_run()`` says (None: not until it is woken, `Scheduler.wake`),
and never sooner than one interval after its last run started. The outbox's poll of a
database no other process shares is such a job: it runs when a lease or a retry falls due,
not every interval, so an idle party's jobs cost nothing between their runs.
The console's ジョブ状況 page, the metrics and the health read the scheduler's state and
these rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from codes.errors import RenkeiError
from middleware.clock import ReactorTime, utc_now
from middleware.network import DeliveryRefused, TransientFailure
from middleware.storage import Database

__all__ = [
    "EXPECTED",
    "FAILED",
    "KEEP",
    "PRUNE_EVERY",
    "SUCCEEDED",
    "Backoff",
    "JobHistory",
    "JobRun",
    "JobState",
    "Scheduler",
    "job_history",
    "prune_runs",
    "record_run",
]

SUCCEEDED = "succeeded"
FAILED = "failed"

KEEP = 100  # runs kept per job and outcome (``[jobs] keep_runs``)
PRUNE_EVERY = 50  # recorded runs of a job between two prunings of its old rows

# Failures that say what went wrong themselves (a coded refusal, a peer that did not answer):
# logged in one line, without a traceback.
EXPECTED = (RenkeiError, DeliveryRefused, TransientFailure)

Counts = Mapping[str, int]
Observer = Callable[["JobState", "JobRun"], None]


@dataclass(frozen=True)
class Backoff:
    """How long a job waits after failing: ``initial`` seconds after its first failure in a
    row, doubling with each further one up to ``maximum``."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds before the next run after ``failures`` failed runs in a row."""
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.maximum))


@dataclass(frozen=True)
class JobRun:
    """One run of a job: when it started and ended (the party's clock), its outcome, what
    it reported, its error (a failed run's) and how long it took (real seconds)."""

    job: str
    started_at: datetime
    ended_at: datetime
    outcome: str
    counts: Mapping[str, int]
    error: str | None = None
    duration: float | None = None


@dataclass(frozen=True)
class JobState:
    """What the scheduler knows of one job now (in this process)."""

    name: str
    interval: float
    running: bool
    # When the next run is due (None while one runs or once the scheduler stopped).
    next_run_at: datetime | None
    # Failed runs in a row (0: the last run succeeded, or none has run yet).
    failures: int
    # Failed runs since the party started.
    failures_total: int
    last_run: JobRun | None
    last_success_at: datetime | None
    # The exception of the last run when it failed (the health tells an unreachable hub).
    last_failure: BaseException | None

    @property
    def condition(self) -> str:
        """``running``, ``failing`` (the last run failed), ``ok`` or ``waiting`` (no run
        yet)."""
        if self.running:
            return "running"
        if self.failures:
            return "failing"
        return "ok" if self.last_run is not None else "waiting"


@dataclass
class _Job:
    """A registered job and what the scheduler keeps of it."""

    name: str
    interval: float
    work: Callable[[], Any]
    now: bool
    retry: Callable[[int], float] | None
    state: JobState
    timer: Any = None
    due_at: float | None = None
    running: bool = False
    # The run in flight (to cancel it when the job is halted).
    active: Deferred[None] | None = None
    halted: bool = False
    waiters: list[Deferred[JobRun | None]] = field(default_factory=list)
    recorded: int = 0
    unrecorded: bool = False  # the last run could not be recorded (logged once)
    # A quiet job (run every few tenths of a second, like the outbox's poll) records a
    # successful run at most every ``quiet`` seconds, with the counts of the runs since the
    # last one it recorded; its failures are always recorded.
    quiet: float | None = None
    last_recorded_at: float | None = None
    unrecorded_counts: dict[str, int] = field(default_factory=dict)
    # A job paced by its work: seconds until its next run after a successful one (None: not
    # until woken), never sooner than an interval after the last run started.
    next_run: Callable[[], float | None] | None = None
    last_started: float | None = None
    # When a wake during a run asked for the next one (at the latest).
    woken_at: float | None = None

    def snapshot(self) -> JobState:
        """The job's state as others see it."""
        next_run_at = None
        if not self.running and self.due_at is not None:
            next_run_at = datetime.fromtimestamp(self.due_at, UTC).replace(microsecond=0)
        return replace(self.state, running=self.running, next_run_at=next_run_at)


class Scheduler:
    """The periodic jobs of one party, run on its clock and recorded in its database."""

    log = Logger()

    def __init__(
        self,
        database: Database,
        table: Table,
        clock: ReactorTime,
        backoff: Backoff | None = None,
        keep: int = KEEP,
    ) -> None:
        self._database = database
        self._table = table
        self._clock = clock
        self.backoff = Backoff() if backoff is None else backoff
        self._keep = keep
        self._jobs: dict[str, _Job] = {}
        self._observers: list[Observer] = []
        self._started = False

    # -- registering ------------------------------------------------------------------

    def add(
        self,
        name: str,
        interval: float,
        work: Callable[[], Any],
        *,
        now: bool = True,
        retry: Callable[[int], float] | None = None,
        quiet: float | None = None,
        next_run: Callable[[], float | None] | None = None,
    ) -> None:
        """Run ``work`` every ``interval`` seconds as the job ``name`` (at once when the
        scheduler runs and ``now``, else after one interval); ``retry`` gives the seconds
        before the next run after n failures in a row (default: the scheduler's backoff).
        A ``quiet`` job records a successful run at most every ``quiet`` seconds, its counts
        summed over the runs since the last recorded (a poll that runs several times a
        second would otherwise write a row each time); every failure is recorded. With
        ``next_run``, the job runs again ``next_run()`` seconds after a successful run
        (None: once woken, `wake`) instead of every interval, but never sooner than
        ``interval`` after its last run started."""
        if name in self._jobs:
            raise ValueError(f"a job {name!r} is registered already")
        if interval <= 0:
            raise ValueError(f"the job {name!r} needs an interval above 0 s")
        state = JobState(name, interval, False, None, 0, 0, None, None, None)
        job = _Job(name, interval, work, now, retry, state, quiet=quiet, next_run=next_run)
        self._jobs[name] = job
        if self._started:
            self._schedule(job, 0.0 if now else interval)

    @property
    def names(self) -> list[str]:
        """The registered jobs, in the order they were added."""
        return list(self._jobs)

    def watch(self, observer: Observer) -> None:
        """Call ``observer(state, run)`` after every run of every job."""
        self._observers.append(observer)

    def unwatch(self, observer: Observer) -> None:
        """Stop calling ``observer``."""
        if observer in self._observers:
            self._observers.remove(observer)

    # -- what it knows ------------------------------------------------------------------

    def state(self, name: str) -> JobState:
        """The state of the job ``name`` (KeyError when there is none)."""
        return self._jobs[name].snapshot()

    def states(self) -> list[JobState]:
        """The state of every job, in the order they were added."""
        return [job.snapshot() for job in self._jobs.values()]

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule every job added so far (and those added later, as they are)."""
        if self._started:
            return
        self._started = True
        for job in self._jobs.values():
            job.halted = False
            self._schedule(job, 0.0 if job.now else job.interval)

    def run(self, name: str) -> Deferred[JobRun | None]:
        """Run the job ``name`` now (or, when it is running, wait for that run); fires with
        the run once it is recorded (None when the job was halted meanwhile). Its next run
        is due an interval after this one started."""
        job = self._jobs[name]
        waiter: Deferred[JobRun | None] = Deferred()
        job.waiters.append(waiter)
        if not job.running:
            self._cancel_timer(job)
            self._launch(job)
        return waiter

    def wake(self, name: str, delay: float = 0.0) -> None:
        """Run the job ``name`` within ``delay`` seconds, or as soon after as its interval
        allows (something it handles falls due then): a run due sooner stays due sooner, a
        failing job keeps its backoff, and a job running now runs again then at the
        latest. Nothing happens before the scheduler starts (it runs every job then)."""
        job = self._jobs.get(name)
        if job is None or job.halted or not self._started:
            return
        now = self._clock.seconds()
        at = now + max(0.0, delay)
        if job.running:
            job.woken_at = at if job.woken_at is None else min(job.woken_at, at)
            return
        if job.state.failures:
            return  # its retry is due after the backoff, whatever falls due
        if job.last_started is not None:
            # A clock put back (a scenario's, a corrected one) does not push the run away.
            at = max(at, min(job.last_started, now) + job.interval)
        if job.due_at is not None and job.due_at <= at:
            return
        self._cancel_timer(job)
        self._schedule(job, at - self._clock.seconds())

    def remove(self, name: str) -> Deferred[None]:
        """Take the job ``name`` off the scheduler, cancelling its run in flight."""
        job = self._jobs.pop(name, None)
        return succeed(None) if job is None else self._halt([job])

    def stop(self) -> Deferred[None]:
        """Stop every job: no further run starts, runs in flight are cancelled (their
        database work, already on a thread, ends as it would)."""
        self._started = False
        return self._halt(list(self._jobs.values()))

    def _halt(self, jobs: Iterable[_Job]) -> Deferred[None]:
        actives = []
        for job in jobs:
            job.halted = True
            self._cancel_timer(job)
            job.due_at = None
            if job.active is not None:
                actives.append(job.active)
                job.active.cancel()
        done: Deferred[Any] = DeferredList(actives, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def _cancel_timer(self, job: _Job) -> None:
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        job.timer = None

    def _schedule(self, job: _Job, delay: float) -> None:
        job.due_at = self._clock.seconds() + delay
        job.timer = self._clock.callLater(delay, self._due, job)

    def _due(self, job: _Job) -> None:
        job.timer = None
        if not job.running and not job.halted:
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        job.due_at = None
        job.running = True
        job.woken_at = None
        job.last_started = self._clock.seconds()
        active = Deferred.fromCoroutine(self._run(job))
        if job.running:  # still in flight (not ended at once)
            job.active = active

    async def _run(self, job: _Job) -> None:
        started = utc_now(self._clock)
        started_seconds = self._clock.seconds()
        began = time.perf_counter()  # a duration is real time, whatever the clock does
        run: JobRun | None = None
        try:
            failure: BaseException | None = None
            try:
                counts = _counts(job.name, await maybeDeferred(job.work))
            except CancelledError as cancelled:
                if job.halted:
                    raise
                failure, counts = cancelled, {}  # the work's own timeout, say
            except Exception as error:
                failure, counts = error, {}
            run = JobRun(
                job=job.name,
                started_at=started,
                ended_at=utc_now(self._clock),
                outcome=SUCCEEDED if failure is None else FAILED,
                counts=counts,
                error=None if failure is None else _describe(failure),
                duration=time.perf_counter() - began,
            )
            state = self._after(job, run, failure)
            for observer in list(self._observers):
                try:
                    observer(state, run)
                except Exception:
                    self.log.failure("an observer of job {job} failed", job=job.name)
            await self._record(job, run)
            if not job.halted:
                if failure is None:
                    self._schedule_after(job, started_seconds)
                else:
                    self._schedule(job, self._retry_delay(job, state.failures))
        except CancelledError:
            run = None  # halted: neither recorded nor scheduled again
        finally:
            job.running = False
            job.active = None
            waiters, job.waiters = job.waiters, []
            for waiter in waiters:
                waiter.callback(run)

    def _schedule_after(self, job: _Job, started: float) -> None:
        """Schedule the run after a successful one that started at ``started``: an
        interval after it, or for a job paced by its work when ``next_run`` (or a wake
        meanwhile) says, but not sooner than an interval after it; not at all when neither
        says when."""
        now = self._clock.seconds()
        earliest = min(started, now) + job.interval  # a clock put back: from now
        at: float | None = earliest
        if job.next_run is not None:
            try:
                wanted = job.next_run()
            except Exception:
                self.log.failure("job {job} did not say when it runs next", job=job.name)
                wanted = job.interval
            at = None if wanted is None else max(earliest, now + max(0.0, wanted))
        if job.woken_at is not None:
            woken = max(earliest, job.woken_at)
            at = woken if at is None else min(at, woken)
            job.woken_at = None
        if at is None:
            job.due_at = None  # until woken (or run)
            return
        delay = max(0.0, at - now)
        self._schedule(job, delay if job.next_run is not None else min(job.interval, delay))

    def _retry_delay(self, job: _Job, failures: int) -> float:
        return (job.retry or self.backoff.delay)(failures)

    def _after(self, job: _Job, run: JobRun, failure: BaseException | None) -> JobState:
        """The job's state after ``run``; a failure logged, with its traceback the first
        time in a row."""
        before = job.state
        if failure is None:
            if before.failures:
                self.log.info(
                    "job {job} succeeded again after {failures} failed runs",
                    job=job.name,
                    failures=before.failures,
                )
            job.state = replace(
                before, failures=0, last_run=run, last_success_at=run.ended_at, last_failure=None
            )
            return job.snapshot()
        failures = before.failures + 1
        delay = self._retry_delay(job, failures)
        if failures == 1 and not isinstance(failure, EXPECTED):
            self.log.failure(
                "job {job} failed; it runs again in {delay:.0f} s",
                Failure(failure),
                job=job.name,
                delay=delay,
            )
        else:
            self.log.warn(
                "job {job} failed ({failures} in a row): {error}; it runs again in {delay:.0f} s",
                job=job.name,
                failures=failures,
                error=run.error,
                delay=delay,
            )
        job.state = replace(
            before,
            failures=failures,
            failures_total=before.failures_total + 1,
            last_run=run,
            last_failure=failure,
        )
        return job.snapshot()

    async def _record(self, job: _Job, run: JobRun) -> None:
        """Write ``run`` to the database (and prune the job's old rows now and then); a
        failure to write is logged once, not raised: the next run tries again. A quiet job's
        successful run waits (its counts added up) until ``quiet`` seconds have passed since
        it last recorded one."""
        if job.quiet is not None:
            now = self._clock.seconds()
            if run.outcome == SUCCEEDED:
                summed = dict(job.unrecorded_counts)
                for name, count in run.counts.items():
                    summed[name] = summed.get(name, 0) + count
                if job.last_recorded_at is not None and now - job.last_recorded_at < job.quiet:
                    job.unrecorded_counts = summed
                    return
                run = replace(run, counts=summed)
                job.unrecorded_counts = {}
            job.last_recorded_at = now
        prune = job.recorded % PRUNE_EVERY == 0
        try:
            await self._database.run(record_run, self._table, run, self._keep if prune else None)
        except CancelledError:
            raise
        except Exception as failure:
            if not job.unrecorded:
                self.log.warn(
                    "runs of job {job} not recorded: {error}", job=job.name, error=failure
                )
            job.unrecorded = True
            return
        job.unrecorded = False
        job.recorded += 1


def _counts(job: str, result: Any) -> dict[str, int]:
    """What a run reports, checked: counts by name (a job's work returning anything else
    is a mistake in the job)."""
    if result is None:
        return {}
    if not isinstance(result, Mapping) or not all(
        isinstance(key, str) and isinstance(value, int) for key, value in result.items()
    ):
        raise TypeError(f"job {job} reported {result!r}, not counts by name")
    return dict(result)


def _describe(failure: BaseException) -> str:
    return f"{type(failure).__name__}: {failure}"[:500]


# -- the recorded runs ----------------------------------------------------------------------


def record_run(connection: Connection, table: Table, run: JobRun, keep: int | None) -> None:
    """Write one run; with ``keep``, delete the job's rows of the same outcome older than
    its ``keep`` newest."""
    connection.execute(
        table.insert().values(
            job=run.job,
            started_at=run.started_at,
            ended_at=run.ended_at,
            outcome=run.outcome,
            counts=json.dumps(dict(run.counts), sort_keys=True),
            error=run.error,
        )
    )
    if keep is not None:
        prune_runs(connection, table, run.job, run.outcome, keep)


def prune_runs(connection: Connection, table: Table, job: str, outcome: str, keep: int) -> int:
    """Delete the runs of ``job`` with ``outcome`` but the newest ``keep``; how many."""
    oldest_kept = (
        select(table.c.id)
        .where(table.c.job == job, table.c.outcome == outcome)
        .order_by(table.c.id.desc())
        .offset(max(keep - 1, 0))
        .limit(1)
        .scalar_subquery()
    )
    deleted = connection.execute(
        delete(table).where(
            table.c.job == job, table.c.outcome == outcome, table.c.id < oldest_kept
        )
    )
    return int(deleted.rowcount)


@dataclass(frozen=True)
class JobHistory:
    """What the database says of one job: its last recorded run (by any process of the
    party), when it last succeeded, how many failed runs are kept and the newest of them."""

    job: str
    last_run: JobRun | None
    last_success_at: datetime | None
    failures_kept: int
    recent_failures: tuple[JobRun, ...]


def _run_of(row: Any) -> JobRun:
    return JobRun(
        job=row.job,
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=row.outcome,
        counts=json.loads(row.counts),
        error=row.error,
    )


def job_history(
    connection: Connection, table: Table, jobs: Iterable[str], failures: int
) -> list[JobHistory]:
    """The history of each of ``jobs``, with its ``failures`` newest failed runs."""
    columns = (
        table.c.job,
        table.c.started_at,
        table.c.ended_at,
        table.c.outcome,
        table.c.counts,
        table.c.error,
    )
    histories = []
    for job in jobs:
        last = connection.execute(
            select(*columns).where(table.c.job == job).order_by(table.c.id.desc()).limit(1)
        ).first()
        success = connection.execute(
            select(func.max(table.c.ended_at)).where(
                table.c.job == job, table.c.outcome == SUCCEEDED
            )
        ).scalar_one()
        kept = connection.execute(
            select(func.count())
            .select_from(table)
            .where(table.c.job == job, table.c.outcome == FAILED)
        ).scalar_one()
        failed = connection.execute(
            select(*columns)
            .where(table.c.job == job, table.c.outcome == FAILED)
            .order_by(table.c.id.desc())
            .limit(failures)
        ).all()
        histories.append(
            JobHistory(
                job=job,
                last_run=_run_of(last) if last is not None else None,
                last_success_at=success,
                failures_kept=int(kept),
                recent_failures=tuple(_run_of(row) for row in failed),
            )
        )
    return histories
