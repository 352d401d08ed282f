"""Unit tests for middleware.outbox: the durable outbox's database functions and its poller."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from sqlalchemy import Connection, select
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock

from middleware.jobs import Scheduler
from middleware.network import DeliveryRefused
from middleware.outbox import (
    DELIVERED,
    FAILED,
    PENDING,
    STALE,
    AfterDelivery,
    Outbox,
    OutgoingMessage,
    RetryPolicy,
    backlog,
    claim_due,
    enqueue,
    finish,
    heartbeat,
    next_due,
    reschedule,
    retire,
)
from middleware.storage import Database, migrate
from middleware.tables import node_job_run, node_outbox, node_outbox_owner

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

POLICY = RetryPolicy(initial=0.5, maximum=4.0, lease=30.0)
T0 = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)
START_SECONDS = T0.timestamp()


def _message(number: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=f"00000000-0000-4000-8000-{number:012d}",
        kind="ProvisionRequest",
        destination="1131121000000000",
        reference=f"2026010100000000000{number}",
        body=b"<message/>",
    )


MESSAGE = _message()


def _url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    return url


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database in a SQLite file, used through run_blocking only."""
    database = Database(cast(IReactorThreads, object()), _url(tmp_path))
    yield database
    database.stop()


def _row(connection: Connection, message_id: str) -> Any:
    return connection.execute(
        select(node_outbox).where(node_outbox.c.message_id == message_id)
    ).one()


def _enqueue(database: Database, now: datetime, message: OutgoingMessage = MESSAGE) -> None:
    database.run_blocking(enqueue, node_outbox, now, message, POLICY)


def _claim(database: Database, now: datetime, limit: int = 10) -> list[OutgoingMessage]:
    return database.run_blocking(claim_due, node_outbox, now, limit, POLICY)


# -- RetryPolicy ---------------------------------------------------------------------------


def test_retry_delay_doubles_from_initial_up_to_maximum() -> None:
    """The default backoff is 0.5, 1, 2, 4, ... seconds, capped at 60."""
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]


def test_retry_delay_of_zero_attempts_is_the_initial_delay() -> None:
    """No attempt yet still waits the initial delay, never less."""
    assert RetryPolicy().delay(0) == 0.5


def test_retry_delay_respects_a_small_maximum() -> None:
    """A configured cap applies as soon as the doubling reaches it."""
    assert [POLICY.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]


# -- database functions ----------------------------------------------------------------------


def test_enqueue_leases_the_message_to_the_immediate_attempt(node_db: Database) -> None:
    """A new message is pending, counts one attempt and is next due one lease later."""
    _enqueue(node_db, T0)
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert row.state == PENDING
    assert row.attempts == 1
    assert row.created_at == T0
    assert row.next_attempt_at == T0 + timedelta(seconds=POLICY.lease)
    assert row.finished_at is None
    assert (row.kind, row.destination, row.reference, row.body) == (
        MESSAGE.kind,
        MESSAGE.destination,
        MESSAGE.reference,
        MESSAGE.body,
    )


def test_claim_due_returns_nothing_before_the_lease_expires(node_db: Database) -> None:
    """While the immediate attempt owns the message the poller cannot claim it."""
    _enqueue(node_db, T0)
    assert _claim(node_db, T0) == []
    assert _claim(node_db, T0 + timedelta(seconds=29)) == []


def test_claim_due_returns_the_message_once_the_lease_expires(node_db: Database) -> None:
    """At the end of the lease the message is claimed, whole."""
    _enqueue(node_db, T0)
    assert _claim(node_db, T0 + timedelta(seconds=30)) == [MESSAGE]


def test_claim_due_counts_an_attempt_and_takes_a_new_lease(node_db: Database) -> None:
    """Claiming increments attempts and pushes next_attempt_at a lease ahead."""
    _enqueue(node_db, T0)
    claimed_at = T0 + timedelta(seconds=45)
    _claim(node_db, claimed_at)
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert row.attempts == 2
    assert row.next_attempt_at == claimed_at + timedelta(seconds=POLICY.lease)
    assert _claim(node_db, claimed_at) == []
    assert _claim(node_db, claimed_at + timedelta(seconds=30)) == [MESSAGE]


def test_claim_due_honours_the_limit_and_oldest_due_first(node_db: Database) -> None:
    """At most ``limit`` messages are claimed, the one due first coming first."""
    _enqueue(node_db, T0 + timedelta(seconds=2), _message(1))
    _enqueue(node_db, T0, _message(2))
    _enqueue(node_db, T0 + timedelta(seconds=1), _message(3))
    later = T0 + timedelta(minutes=5)
    assert _claim(node_db, later, limit=2) == [_message(2), _message(3)]
    assert _claim(node_db, later, limit=2) == [_message(1)]


def test_finish_delivered_removes_the_message_from_claims(node_db: Database) -> None:
    """A delivered message is never claimed again and no longer counts as backlog."""
    _enqueue(node_db, T0)
    node_db.run_blocking(finish, node_outbox, MESSAGE.message_id, T0, DELIVERED)
    assert _claim(node_db, T0 + timedelta(days=1)) == []
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert row.state == DELIVERED
    assert row.finished_at == T0
    assert row.last_error is None
    assert node_db.run_blocking(backlog, node_outbox) == 0


def test_finish_failed_keeps_the_error_and_stops_retries(node_db: Database) -> None:
    """A message failed for good records the refusal code and is never claimed again."""
    _enqueue(node_db, T0)
    node_db.run_blocking(finish, node_outbox, MESSAGE.message_id, T0, FAILED, "NotPermitted")
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert (row.state, row.last_error) == (FAILED, "NotPermitted")
    assert _claim(node_db, T0 + timedelta(days=1)) == []


def test_finish_does_not_overwrite_a_finished_message(node_db: Database) -> None:
    """A late second outcome leaves the first one in place."""
    _enqueue(node_db, T0)
    node_db.run_blocking(finish, node_outbox, MESSAGE.message_id, T0, DELIVERED)
    node_db.run_blocking(
        finish, node_outbox, MESSAGE.message_id, T0 + timedelta(seconds=1), FAILED, "late"
    )
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert (row.state, row.finished_at, row.last_error) == (DELIVERED, T0, None)


def test_reschedule_backs_off_exponentially(node_db: Database) -> None:
    """Successive transient failures wait 0.5, 1, 2, 4 and then 4 seconds (the cap)."""
    _enqueue(node_db, T0)
    now = T0
    delays = []
    for _ in range(5):
        node_db.run_blocking(reschedule, node_outbox, MESSAGE.message_id, now, POLICY, "down")
        row = node_db.run_blocking(_row, MESSAGE.message_id)
        delay = (row.next_attempt_at - now).total_seconds()
        delays.append(delay)
        assert row.state == PENDING
        assert row.last_error == "down"
        now = row.next_attempt_at
        assert _claim(node_db, now - timedelta(seconds=0.25)) == []
        assert _claim(node_db, now) == [MESSAGE]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_reschedule_truncates_a_long_error(node_db: Database) -> None:
    """The stored error text is cut to 500 characters."""
    _enqueue(node_db, T0)
    node_db.run_blocking(reschedule, node_outbox, MESSAGE.message_id, T0, POLICY, "x" * 2000)
    assert node_db.run_blocking(_row, MESSAGE.message_id).last_error == "x" * 500


def test_reschedule_leaves_a_finished_message_alone(node_db: Database) -> None:
    """A transient failure reported after delivery does not make the message pending again."""
    _enqueue(node_db, T0)
    node_db.run_blocking(finish, node_outbox, MESSAGE.message_id, T0, DELIVERED)
    node_db.run_blocking(reschedule, node_outbox, MESSAGE.message_id, T0, POLICY, "late")
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert (row.state, row.last_error) == (DELIVERED, None)


def test_backlog_counts_pending_messages_only(node_db: Database) -> None:
    """Delivered and failed messages leave the backlog; pending ones, due or not, stay."""
    for number in range(1, 5):
        _enqueue(node_db, T0, _message(number))
    assert node_db.run_blocking(backlog, node_outbox) == 4
    node_db.run_blocking(finish, node_outbox, _message(1).message_id, T0, DELIVERED)
    node_db.run_blocking(finish, node_outbox, _message(2).message_id, T0, FAILED, "Refused")
    assert node_db.run_blocking(backlog, node_outbox) == 2


# -- the Outbox class on a Clock ----------------------------------------------------------------


class FakeSender:
    """A sender answering with scripted outcomes (an exception fails, anything else succeeds)."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def __call__(self, message: OutgoingMessage) -> defer.Deferred[Any]:
        self.sent.append(message.message_id)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            return defer.fail(outcome)
        return defer.succeed(None)


def _clock() -> Clock:
    clock = Clock()
    clock.advance(START_SECONDS)
    return clock


@pytest_twisted.inlineCallbacks
def test_outbox_retries_a_transient_failure_after_the_backoff(tmp_path: Path) -> Any:
    """A failed immediate attempt is rescheduled and re-sent by poll() once the backoff passed."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        clock = _clock()
        sender = FakeSender(ConnectionRefusedError("provider down"))
        outbox = Outbox(database, node_outbox, clock, sender, POLICY)
        yield database.run(outbox.enqueue, MESSAGE)
        outbox.send_now(MESSAGE)
        yield outbox.stop()
        row = yield database.run(_row, MESSAGE.message_id)
        assert row.state == PENDING
        assert row.next_attempt_at == T0 + timedelta(seconds=0.5)
        assert "provider down" in row.last_error

        yield outbox.poll()
        yield outbox.stop()
        assert sender.sent == [MESSAGE.message_id]

        clock.advance(1)
        yield outbox.poll()
        yield outbox.stop()
        assert sender.sent == [MESSAGE.message_id, MESSAGE.message_id]
        row = yield database.run(_row, MESSAGE.message_id)
        assert (row.state, row.attempts) == (DELIVERED, 2)
        assert row.finished_at == T0 + timedelta(seconds=1)
    finally:
        database.stop()


@pytest_twisted.inlineCallbacks
def test_outbox_marks_a_refused_message_failed_and_never_retries(tmp_path: Path) -> Any:
    """A DeliveryRefused answer fails the message for good with its code; polls skip it."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        clock = _clock()
        sender = FakeSender(DeliveryRefused("NotPermitted", "no rule"))
        outbox = Outbox(database, node_outbox, clock, sender, POLICY)
        yield database.run(outbox.enqueue, MESSAGE)
        outbox.send_now(MESSAGE)
        yield outbox.stop()
        row = yield database.run(_row, MESSAGE.message_id)
        assert (row.state, row.last_error) == (FAILED, "NotPermitted")

        clock.advance(3600)
        yield outbox.poll()
        yield outbox.stop()
        assert sender.sent == [MESSAGE.message_id]
        pending = yield database.run(backlog, node_outbox)
        assert pending == 0
    finally:
        database.stop()


@pytest_twisted.inlineCallbacks
def test_outbox_marks_a_successful_send_delivered(tmp_path: Path) -> Any:
    """A send that succeeds marks the message delivered at the clock's time."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        clock = _clock()
        sender = FakeSender()
        outbox = Outbox(database, node_outbox, clock, sender, POLICY)
        yield database.run(outbox.enqueue, MESSAGE)
        outbox.send_now(MESSAGE)
        yield outbox.stop()
        row = yield database.run(_row, MESSAGE.message_id)
        assert (row.state, row.attempts, row.finished_at) == (DELIVERED, 1, T0)
        assert sender.sent == [MESSAGE.message_id]
    finally:
        database.stop()


def _answering(after: AfterDelivery) -> Any:
    def send(message: OutgoingMessage) -> defer.Deferred[Any]:
        return defer.succeed(after)

    return send


@pytest_twisted.inlineCallbacks
def test_what_a_sender_writes_after_delivery_commits_with_the_delivered_mark(
    tmp_path: Path,
) -> Any:
    """`AfterDelivery` work is done in the transaction that marks the message delivered."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        second = _message(2)
        after = AfterDelivery(
            lambda connection: enqueue(connection, node_outbox, T0, second, POLICY)
        )
        outbox = Outbox(database, node_outbox, _clock(), _answering(after), POLICY)
        yield database.run(outbox.enqueue, MESSAGE)
        outbox.send_now(MESSAGE)
        yield outbox.stop()
        row = yield database.run(_row, MESSAGE.message_id)
        written = yield database.run(_row, second.message_id)
        assert (row.state, row.finished_at) == (DELIVERED, T0)
        assert written.state == PENDING
    finally:
        database.stop()


@pytest_twisted.inlineCallbacks
def test_when_the_work_after_delivery_fails_neither_it_nor_the_mark_is_written(
    tmp_path: Path,
) -> Any:
    """A failing `AfterDelivery` rolls its writes back with the delivered mark: the message
    stays pending under its lease, to be delivered (and the work done) again."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    second = _message(2)
    ran: list[str] = []

    def fail_halfway(connection: Connection) -> None:
        enqueue(connection, node_outbox, T0, second, POLICY)
        ran.append(second.message_id)
        raise RuntimeError("the database went away")

    try:
        outbox = Outbox(
            database, node_outbox, _clock(), _answering(AfterDelivery(fail_halfway)), POLICY
        )
        yield database.run(outbox.enqueue, MESSAGE)
        outbox.send_now(MESSAGE)
        yield outbox.stop()
        row = yield database.run(_row, MESSAGE.message_id)
        assert ran == [second.message_id]
        assert (row.state, row.finished_at) == (PENDING, None)
        pending = yield database.run(backlog, node_outbox)
        assert pending == 1
    finally:
        database.stop()


@pytest_twisted.inlineCallbacks
def test_outbox_poll_picks_up_a_message_left_by_a_crash_after_the_lease(tmp_path: Path) -> Any:
    """A message enqueued but never sent is delivered by poll() only once its lease expired."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        clock = _clock()
        sender = FakeSender()
        outbox = Outbox(database, node_outbox, clock, sender, POLICY)
        yield database.run(outbox.enqueue, MESSAGE)
        yield outbox.poll()
        yield outbox.stop()
        assert sender.sent == []

        clock.advance(POLICY.lease)
        yield outbox.poll()
        yield outbox.stop()
        assert sender.sent == [MESSAGE.message_id]
        row = yield database.run(_row, MESSAGE.message_id)
        assert (row.state, row.attempts) == (DELIVERED, 2)
    finally:
        database.stop()


# -- lease owners ---------------------------------------------------------------------------------


def _claim_as(database: Database, owner: str, now: datetime) -> list[OutgoingMessage]:
    return database.run_blocking(claim_due, node_outbox, now, 10, POLICY, owner, node_outbox_owner)


def test_a_message_leased_by_a_dead_owner_is_claimed_once_its_heartbeat_is_stale(
    node_db: Database,
) -> None:
    """While its owner's heartbeat is fresh a leased message waits; once the heartbeat is
    older than STALE seconds another owner claims it, long before the lease ends."""
    node_db.run_blocking(enqueue, node_outbox, T0, MESSAGE, POLICY, "dead")
    node_db.run_blocking(heartbeat, node_outbox_owner, "dead", T0)
    assert _claim_as(node_db, "alive", T0 + timedelta(seconds=1)) == []
    later = T0 + timedelta(seconds=STALE + 1)
    assert POLICY.lease > STALE + 1
    assert _claim_as(node_db, "alive", later) == [MESSAGE]
    row = node_db.run_blocking(_row, MESSAGE.message_id)
    assert (row.leased_by, row.attempts) == ("alive", 2)
    node_db.run_blocking(heartbeat, node_outbox_owner, "alive", later)
    assert _claim_as(node_db, "third", later) == []  # "alive" holds it now


def test_a_message_leased_by_an_owner_that_retired_is_claimed_at_once(
    node_db: Database,
) -> None:
    """An owner that stopped retired (no owner row): what it leased is claimed at once."""
    node_db.run_blocking(enqueue, node_outbox, T0, MESSAGE, POLICY, "stopped")
    node_db.run_blocking(heartbeat, node_outbox_owner, "stopped", T0)
    node_db.run_blocking(retire, node_outbox_owner, "stopped")
    assert _claim_as(node_db, "next", T0) == [MESSAGE]


def test_an_owner_waits_out_its_own_leases(node_db: Database) -> None:
    """An owner never takes its own lease early (its attempt may still be running)."""
    node_db.run_blocking(enqueue, node_outbox, T0, MESSAGE, POLICY, "me")
    assert _claim_as(node_db, "me", T0 + timedelta(seconds=STALE + 1)) == []
    assert _claim_as(node_db, "me", T0 + timedelta(seconds=POLICY.lease)) == [MESSAGE]


def test_settling_a_message_ends_its_lease(node_db: Database) -> None:
    """A rescheduled or finished message is leased by nobody."""
    node_db.run_blocking(enqueue, node_outbox, T0, MESSAGE, POLICY, "me")
    node_db.run_blocking(reschedule, node_outbox, MESSAGE.message_id, T0, POLICY, "timeout")
    assert node_db.run_blocking(_row, MESSAGE.message_id).leased_by is None


@pytest_twisted.ensureDeferred
async def test_the_next_outbox_resumes_what_a_crashed_one_held_within_seconds(
    tmp_path: Path,
) -> None:
    """A process that dies during an attempt leaves its message leased; the outbox of the
    restarted process delivers it once the dead owner's heartbeat is STALE seconds old, long
    before the lease would have ended."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    hanging: list[defer.Deferred[None]] = []
    try:
        clock = _clock()

        def never_answers(message: OutgoingMessage) -> defer.Deferred[None]:
            hanging.append(defer.Deferred())
            return hanging[-1]

        crashed = Outbox(
            database, node_outbox, clock, never_answers, POLICY, owners=node_outbox_owner
        )
        await crashed.poll()  # its heartbeat
        await database.run(crashed.enqueue, MESSAGE)
        crashed.send_now(MESSAGE)  # …and the process dies: no settle, no retirement
        sender = FakeSender()
        restarted = Outbox(database, node_outbox, clock, sender, POLICY, owners=node_outbox_owner)
        await restarted.poll()
        assert sender.sent == []  # the dead owner's heartbeat is still fresh
        clock.advance(STALE + 1)
        assert POLICY.lease > STALE + 1
        await restarted.poll()
        await restarted.stop()
        assert sender.sent == [MESSAGE.message_id]
        row = await database.run(_row, MESSAGE.message_id)
        assert (row.state, row.leased_by) == (DELIVERED, None)
    finally:
        for attempt in hanging:
            attempt.cancel()
        database.stop()


# -- an outbox alone on its database: the poll paced by what falls due ----------------------------


def test_next_due_is_the_earliest_next_attempt_of_a_pending_message(node_db: Database) -> None:
    """Nothing pending: None; else the earliest next attempt (a lease's end, a retry)."""
    assert node_db.run_blocking(next_due, node_outbox) is None
    _enqueue(node_db, T0)
    _enqueue(node_db, T0 + timedelta(seconds=5), _message(2))
    assert node_db.run_blocking(next_due, node_outbox) == T0 + timedelta(seconds=POLICY.lease)
    node_db.run_blocking(reschedule, node_outbox, _message(2).message_id, T0, POLICY, "down")
    assert node_db.run_blocking(next_due, node_outbox) == T0 + timedelta(seconds=0.5)
    node_db.run_blocking(finish, node_outbox, _message(2).message_id, T0, DELIVERED)
    node_db.run_blocking(finish, node_outbox, MESSAGE.message_id, T0, DELIVERED)
    assert node_db.run_blocking(next_due, node_outbox) is None


def test_next_due_counts_when_another_owner_s_heartbeat_goes_stale(node_db: Database) -> None:
    """A message leased by another owner may be claimed once that owner's heartbeat is STALE
    seconds old, before its lease ends; the owner's own lease is waited out."""
    node_db.run_blocking(enqueue, node_outbox, T0, MESSAGE, POLICY, "dead")
    node_db.run_blocking(heartbeat, node_outbox_owner, "dead", T0)
    stale = T0 + timedelta(seconds=STALE, microseconds=1)  # older than STALE seconds
    assert node_db.run_blocking(next_due, node_outbox, "next", node_outbox_owner) == stale
    lease_end = T0 + timedelta(seconds=POLICY.lease)
    assert node_db.run_blocking(next_due, node_outbox, "dead", node_outbox_owner) == lease_end


class Paced:
    """An outbox alone on its database (``alone``) with its poll as a job of a scheduler, the
    way a party runs it, on a clock the test moves; ``polls`` are the times it polled."""

    def __init__(self, database: Database, sender: Any, interval: float = 1.0) -> None:
        self.database = database
        self.clock = _clock()
        self.polls: list[float] = []
        self.jobs = Scheduler(database, node_job_run, self.clock)
        self.outbox = Outbox(
            database,
            node_outbox,
            self.clock,
            sender,
            POLICY,
            owners=node_outbox_owner,
            alone=True,
            wake=lambda delay: self.jobs.wake("outbox", delay),
        )
        self.jobs.add("outbox", interval, self.poll, quiet=60, next_run=self.outbox.next_poll)

    def poll(self) -> defer.Deferred[dict[str, int]]:
        self.polls.append(self.clock.seconds() - START_SECONDS)
        return self.outbox.poll()

    async def start(self) -> None:
        self.jobs.start()
        self.clock.advance(0)
        await self.jobs.run("outbox")  # the poll at start

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Move the clock ``seconds`` forward, ``step`` at a time, each poll it started
        waited for."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            if self.jobs.state("outbox").condition == "running":
                await self.jobs.run("outbox")

    async def send_after(self, seconds: float) -> None:
        """Start, let ``seconds`` pass, then enqueue `MESSAGE` and send it at once, as a
        party does, and wait for that attempt to settle."""
        await self.start()
        await self.advance(seconds)
        await self.database.run(self.outbox.enqueue, MESSAGE)
        self.outbox.send_now(MESSAGE)
        await self.outbox.settled()

    async def settle_after(self, seconds: float, step: float = 1.0) -> None:
        """`advance`, then wait for the attempts the polls started to settle."""
        await self.advance(seconds, step)
        await self.outbox.settled()

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.outbox.stop()


@pytest_twisted.async_yield_fixture
async def started(tmp_path: Path) -> Any:
    """A migrated node database in a SQLite file, started on the reactor's threads."""
    from twisted.internet import reactor

    database = Database(reactor, _url(tmp_path))
    database.start()
    try:
        yield database
    finally:
        database.stop()


@pytest_twisted.ensureDeferred
async def test_an_idle_outbox_alone_on_its_database_does_not_poll(started: Database) -> None:
    """With nothing pending, the poll at start is the only one: an hour of its 1 s interval
    passes without a poll (no transaction), and the job says no next run."""
    paced = Paced(started, FakeSender())
    await paced.start()
    await paced.advance(3600)
    assert paced.polls == [0]
    assert paced.jobs.state("outbox").next_run_at is None
    await paced.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_sent_now_is_delivered_without_a_poll(started: Database) -> None:
    """A message enqueued and sent at once is delivered by its own attempt, no poll waited
    for; the poll runs once, when its lease would have ended, and finds nothing."""
    sender = FakeSender()
    paced = Paced(started, sender)
    await paced.send_after(100)
    assert sender.sent == [MESSAGE.message_id]
    row = await started.run(_row, MESSAGE.message_id)
    assert (row.state, row.finished_at) == (DELIVERED, T0 + timedelta(seconds=100))
    await paced.advance(3600)
    assert paced.polls == [0, 100 + POLICY.lease]
    await paced.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_delivery_is_retried_at_its_backoff_time(started: Database) -> None:
    """An attempt that fails brings the poll forward to the retry (0.5 s of backoff: the
    poll's next whole second), which delivers the message; no poll runs before."""
    sender = FakeSender(ConnectionRefusedError("provider down"))
    paced = Paced(started, sender)
    await paced.send_after(100)
    assert paced.jobs.state("outbox").next_run_at == T0 + timedelta(seconds=101)
    await paced.settle_after(1, step=0.5)
    assert paced.polls == [0, 101]
    assert sender.sent == [MESSAGE.message_id, MESSAGE.message_id]
    row = await started.run(_row, MESSAGE.message_id)
    assert (row.state, row.attempts) == (DELIVERED, 2)
    await paced.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_enqueued_but_never_sent_is_claimed_when_its_lease_ends(
    started: Database,
) -> None:
    """A message whose immediate attempt never started (its writer failed after the commit)
    is claimed by the poll the enqueue brought forward to the end of its lease."""
    sender = FakeSender()
    paced = Paced(started, sender)
    await paced.start()
    await started.run(paced.outbox.enqueue, MESSAGE)
    lease_end = T0 + timedelta(seconds=POLICY.lease)
    assert paced.jobs.state("outbox").next_run_at == lease_end
    await paced.settle_after(POLICY.lease)
    assert (paced.polls, sender.sent) == ([0, POLICY.lease], [MESSAGE.message_id])
    await paced.stop()


@pytest_twisted.ensureDeferred
async def test_a_restarted_outbox_polls_when_its_dead_predecessor_s_lease_goes_stale(
    started: Database,
) -> None:
    """The outbox of a restarted process finds at its first poll a message its killed
    predecessor leased: it polls again once the predecessor's heartbeat is older than STALE
    seconds (the poll's next whole second), and delivers it, without polling in between."""
    await started.run(heartbeat, node_outbox_owner, "killed", T0)
    await started.run(enqueue, node_outbox, T0, MESSAGE, POLICY, "killed")
    sender = FakeSender()
    paced = Paced(started, sender)
    await paced.start()
    assert paced.jobs.state("outbox").next_run_at == T0 + timedelta(seconds=STALE + 1)
    await paced.settle_after(STALE + 1)
    assert (paced.polls, sender.sent) == ([0, STALE + 1], [MESSAGE.message_id])
    await paced.stop()


@pytest_twisted.ensureDeferred
async def test_an_outbox_on_a_shared_database_polls_every_interval(started: Database) -> None:
    """Another process may enqueue into a shared database (PostgreSQL) at any time: its
    outbox polls every interval, pending or not."""
    clock = _clock()
    outbox = Outbox(started, node_outbox, clock, FakeSender(), POLICY, alone=False)
    assert outbox.next_poll() == 0.0  # as soon as its interval allows
    jobs = Scheduler(started, node_job_run, clock)
    polls: list[float] = []

    def poll() -> defer.Deferred[dict[str, int]]:
        polls.append(clock.seconds() - START_SECONDS)
        return outbox.poll()

    jobs.add("outbox", 1.0, poll, next_run=outbox.next_poll)
    jobs.start()
    for _ in range(4):
        clock.advance(0 if not polls else 1)
        await jobs.run("outbox")
    assert polls == [0, 1, 2, 3]
    await jobs.stop()
