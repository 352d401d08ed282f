"""The durable outbox: at-least-once delivery with retries and backoff.

A message is written to the outbox in the same transaction as the decision that produced it,
so a crash can never lose it. Right after the commit the writer tries to send it at once
(``send_now``); it owns the message for a lease, after which the poll (a job of the party's,
``outbox``, every ``poll_interval`` seconds: middleware/jobs.py) claims anything still
pending (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
several processes can share one outbox and a restarted node picks up what it left. Receivers
are idempotent on message ids, which turns at-least-once into exactly-once.

Each running outbox is an *owner* with an id of its own, which it writes with a heartbeat
into the owners table at every poll (every `HEARTBEAT` seconds at most) and removes when it
stops. A message leased by an owner that stopped, or whose heartbeat is older than `STALE`
seconds (its process died), may be claimed at once, without waiting out the lease: a
restarted party resumes its predecessor's deliveries within seconds.

On a database no other process shares (SQLite: one process per party), the outbox knows
everything that can fall due, so its poll is paced by what it knows instead of running every
``poll_interval``: each poll reads when the next pending message may be claimed (`next_due`:
a lease or a retry ending, a dead predecessor's heartbeat going stale), every message enqueued
brings the poll forward to the end of its lease and every failed attempt to its retry, and
an outbox with nothing pending does not poll at all (it never polls more often than every
``poll_interval``). On a shared database (PostgreSQL) another process may enqueue or die at
any time: the poll runs every ``poll_interval``, as it always did.

What the sender has to write once a message is delivered (the state the answer brings) it
returns as `AfterDelivery`: the outbox does that work in the transaction that marks the
message delivered, so that both are written or neither (then the message is delivered again,
and the receiver's idempotence gives the same answer), in one transaction instead of two.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Table, Update, bindparam, delete, func, select
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from middleware.clock import ReactorTime, utc_now
from middleware.deferred import deferred
from middleware.network import DeliveryRefused
from middleware.storage import Database

__all__ = [
    "DELIVERED",
    "FAILED",
    "HEARTBEAT",
    "PENDING",
    "STALE",
    "AfterDelivery",
    "Outbox",
    "OutgoingMessage",
    "RetryPolicy",
    "Sender",
    "backlog",
    "claim_due",
    "enqueue",
    "finish",
    "heartbeat",
    "next_due",
    "oldest_pending",
    "outbox_figures",
    "reschedule",
    "retire",
]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

HEARTBEAT = 2.0  # seconds between two heartbeats of a running outbox, at most
STALE = 10.0  # seconds without a heartbeat after which an owner counts as dead


@dataclass(frozen=True)
class OutgoingMessage:
    """One message waiting to be delivered to ``destination`` (an institution code or 'hub').

    ``reference`` names what the message is about (a query id or a 処理通番), so the sender
    can act on the answer without parsing its own message again.
    """

    message_id: str
    kind: str
    destination: str
    reference: str
    body: bytes


@dataclass(frozen=True)
class AfterDelivery:
    """What a sender returns to have ``work(connection)`` done in the transaction that marks
    its message delivered (runs on a database thread)."""

    work: Callable[[Connection], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between ``initial`` and ``maximum`` seconds; ``lease`` is how long
    an attempt owns a message before anyone else may try it."""

    initial: float = 0.5
    maximum: float = 60.0
    lease: float = 30.0

    def delay(self, attempts: int) -> float:
        return float(min(self.initial * 2 ** max(attempts - 1, 0), self.maximum))


def enqueue(
    connection: Connection,
    table: Table,
    now: datetime,
    message: OutgoingMessage,
    policy: RetryPolicy,
    owner: str | None = None,
) -> None:
    """Store ``message``; the caller's immediate attempt (of ``owner``) holds it for one
    lease."""
    connection.execute(
        _insert(table),
        {
            "message_id": message.message_id,
            "kind": message.kind,
            "destination": message.destination,
            "reference": message.reference,
            "body": message.body,
            "state": PENDING,
            "attempts": 1,
            "created_at": now,
            "next_attempt_at": now + timedelta(seconds=policy.lease),
            "leased_by": owner,
        },
    )


# The statements of every message (its insert, its delivered mark) are built once per table:
# building one again costs several times executing it (SQLAlchemy's cache key included).


@functools.cache
def _insert(table: Table) -> Insert:
    return table.insert()


@functools.cache
def _finish(table: Table) -> Update:
    """Sets the columns given at execution on the pending message ``finished_id``."""
    return table.update().where(
        table.c.message_id == bindparam("finished_id"), table.c.state == PENDING
    )


def claim_due(
    connection: Connection,
    table: Table,
    now: datetime,
    limit: int,
    policy: RetryPolicy,
    owner: str | None = None,
    owners: Table | None = None,
) -> list[OutgoingMessage]:
    """Claim up to ``limit`` pending messages whose time has come, for one lease (of
    ``owner``): those whose next attempt is due and, given the ``owners`` table, those leased
    by an owner that is gone (stopped, or no heartbeat for `STALE` seconds)."""
    due = table.c.next_attempt_at <= now
    if owners is not None:
        alive = select(owners.c.owner).where(
            owners.c.owner == table.c.leased_by,
            owners.c.heartbeat_at >= now - timedelta(seconds=STALE),
        )
        orphaned = table.c.leased_by.is_not(None) & ~alive.exists()
        if owner is not None:
            orphaned = orphaned & (table.c.leased_by != owner)
        due = due | orphaned
    rows = connection.execute(
        select(
            table.c.id,
            table.c.message_id,
            table.c.kind,
            table.c.destination,
            table.c.reference,
            table.c.body,
        )
        .where(table.c.state == PENDING, due)
        .order_by(table.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        connection.execute(
            table.update()
            .where(table.c.id.in_([row.id for row in rows]))
            .values(
                attempts=table.c.attempts + 1,
                next_attempt_at=now + timedelta(seconds=policy.lease),
                leased_by=owner,
            )
        )
    return [
        OutgoingMessage(row.message_id, row.kind, row.destination, row.reference, row.body)
        for row in rows
    ]


def finish(
    connection: Connection,
    table: Table,
    message_id: str,
    now: datetime,
    state: str,
    error: str | None = None,
) -> None:
    """Mark a message delivered or failed for good."""
    connection.execute(
        _finish(table),
        {
            "finished_id": message_id,
            "state": state,
            "finished_at": now,
            "last_error": error,
            "leased_by": None,
        },
    )


def reschedule(
    connection: Connection,
    table: Table,
    message_id: str,
    now: datetime,
    policy: RetryPolicy,
    error: str,
) -> datetime:
    """Put a message back for a later attempt after a transient failure; when it is due."""
    attempts = connection.execute(
        select(table.c.attempts).where(table.c.message_id == message_id)
    ).scalar_one()
    due = now + timedelta(seconds=policy.delay(attempts))
    connection.execute(
        table.update()
        .where(table.c.message_id == message_id, table.c.state == PENDING)
        .values(next_attempt_at=due, last_error=error[:500], leased_by=None)
    )
    return due


def next_due(
    connection: Connection,
    table: Table,
    owner: str | None = None,
    owners: Table | None = None,
) -> datetime | None:
    """When `claim_due` may next claim a pending message (None: nothing is pending): the
    earliest next attempt and, given the ``owners`` table, the earliest time a heartbeat of
    another owner that leases a pending message goes stale."""
    due: datetime | None = connection.execute(
        select(func.min(table.c.next_attempt_at)).where(table.c.state == PENDING)
    ).scalar_one()
    if owners is None:
        return due
    leasing = select(table.c.id).where(
        table.c.state == PENDING, table.c.leased_by == owners.c.owner
    )
    if owner is not None:
        leasing = leasing.where(table.c.leased_by != owner)
    beaten: datetime | None = connection.execute(
        select(func.min(owners.c.heartbeat_at)).where(leasing.exists())
    ).scalar_one()
    if beaten is None:
        return due
    # `claim_due` takes the message once the heartbeat is older than STALE seconds.
    stale = beaten + timedelta(seconds=STALE, microseconds=1)
    return stale if due is None else min(due, stale)


def heartbeat(connection: Connection, owners: Table, owner: str, now: datetime) -> None:
    """Say that ``owner`` is alive at ``now``."""
    updated = connection.execute(
        owners.update().where(owners.c.owner == owner).values(heartbeat_at=now)
    )
    if not updated.rowcount:
        connection.execute(owners.insert().values(owner=owner, started_at=now, heartbeat_at=now))


def retire(connection: Connection, owners: Table, owner: str) -> None:
    """``owner`` stopped: what it leased may be claimed at once."""
    connection.execute(delete(owners).where(owners.c.owner == owner))


def backlog(connection: Connection, table: Table) -> int:
    """How many messages are waiting to be delivered."""
    return int(
        connection.execute(
            select(func.count()).select_from(table).where(table.c.state == PENDING)
        ).scalar_one()
    )


def oldest_pending(connection: Connection, table: Table) -> datetime | None:
    """When the oldest message still waiting to be delivered was queued (None: none waits)."""
    oldest: datetime | None = connection.execute(
        select(func.min(table.c.created_at)).where(table.c.state == PENDING)
    ).scalar_one()
    return oldest


def outbox_figures(connection: Connection, table: Table) -> tuple[int, datetime | None]:
    """How many messages wait, and since when the oldest of them does (one look)."""
    row = connection.execute(
        select(func.count(), func.min(table.c.created_at)).where(table.c.state == PENDING)
    ).one()
    oldest: datetime | None = row[1]
    return int(row[0]), oldest


# Posts a message and handles the answer; may return `AfterDelivery` (else anything).
Sender = Callable[[OutgoingMessage], "Deferred[Any]"]


class Outbox:
    """Delivers one database's outbox through ``sender``.

    ``sender`` posts the message and handles the answer; it fails with ``DeliveryRefused``
    when the receiver refused it for good and with anything else for a transient failure.
    """

    log = Logger()

    def __init__(
        self,
        database: Database,
        table: Table,
        clock: ReactorTime,
        sender: Sender,
        policy: RetryPolicy,
        batch: int = 64,
        owners: Table | None = None,
        *,
        alone: bool = False,
        wake: Callable[[float], None] | None = None,
    ) -> None:
        """``alone``: no other process uses this outbox (its database is SQLite), so its poll
        is paced by `next_poll`; ``wake(seconds)`` is called when something falls due
        sooner than the poll knew (the party's scheduler brings the ``outbox`` job
        forward)."""
        self._database = database
        self._table = table
        # This outbox as an owner of leases (with ``owners``, the table of living owners).
        self.owner = uuid.uuid4().hex
        self._owners = owners
        self._beaten_at: float | None = None
        self._clock = clock
        self._sender = sender
        self.policy = policy
        self._batch = batch
        self._in_flight: set[Deferred[None]] = set()
        self._alone = alone
        self._wake = wake
        # What falls due, in seconds of the clock: by the last poll's look (None: nothing
        # pending then), and what became due since that poll began (enqueued, rescheduled).
        self._polled_due: float | None = None
        self._noted_due: float | None = None
        self._full = False  # the last poll claimed a whole batch: more may be due now

    @property
    def table(self) -> Table:
        """The outbox table this outbox delivers (read-only)."""
        return self._table

    @deferred
    async def stop(self) -> None:
        """Cancel attempts in flight (the party has stopped its poll); their messages stay
        pending, so the next start (or another process) delivers them, at once: this owner
        retires."""
        attempts = list(self._in_flight)
        for attempt in attempts:
            attempt.cancel()
        await DeferredList(attempts, consumeErrors=True)
        if self._owners is not None and self._beaten_at is not None:
            self._beaten_at = None
            try:
                await self._database.run(retire, self._owners, self.owner)
            except Exception:
                self.log.failure("the outbox's owner {owner} not retired", owner=self.owner)

    def settled(self) -> Deferred[None]:
        """Fires once every attempt in flight now has settled (none is cancelled)."""
        attempts: Deferred[Any] = DeferredList(list(self._in_flight), consumeErrors=True)
        return attempts.addCallback(lambda _: None)

    def enqueue(self, connection: Connection, message: OutgoingMessage) -> None:
        """Store ``message`` inside the caller's transaction (runs on a database thread);
        a paced poll is brought forward to the end of its lease (should no attempt settle
        it)."""
        now = utc_now(self._clock)
        enqueue(connection, self._table, now, message, self.policy, self.owner)
        if self._alone:
            lease_end = now + timedelta(seconds=self.policy.lease)
            self._database.call_from_thread(self._expect, lease_end)

    def next_poll(self) -> float | None:
        """Seconds until the poll should run again (the ``outbox`` job's ``next_run``): at
        once (within ``poll_interval``) on a shared database or after a full batch, else
        when the earliest message it knows of falls due; None when nothing is pending."""
        if not self._alone or self._full:
            return 0.0
        due = _earliest(self._polled_due, self._noted_due)
        return None if due is None else max(0.0, due - self._clock.seconds())

    def _expect(self, due: datetime) -> None:
        """A message falls due at ``due``: the poll runs then (on the reactor)."""
        at = _claimable(due)
        before = _earliest(self._polled_due, self._noted_due)
        self._noted_due = _earliest(self._noted_due, at)
        if self._wake is not None and (before is None or at < before):
            self._wake(max(0.0, at - self._clock.seconds()))

    def send_now(self, message: OutgoingMessage) -> None:
        """Attempt delivery right away; the message was enqueued in a committed transaction."""
        attempt = self._attempt(message)
        self._in_flight.add(attempt)
        attempt.addBoth(lambda _: self._in_flight.discard(attempt))

    @deferred
    async def poll(self) -> dict[str, int]:
        """Claim due messages and attempt each (the party's ``outbox`` job); with an owners
        table, the heartbeat goes in the same transaction. Reports how many were claimed."""
        now = utc_now(self._clock)
        beat = self._owners is not None and (
            self._beaten_at is None or self._clock.seconds() - self._beaten_at >= HEARTBEAT
        )
        self._noted_due = None  # what is noted from now on, this poll may not see
        due, later = await self._database.run(self._claim, now, beat)
        if beat:
            self._beaten_at = self._clock.seconds()
        self._full = len(due) >= self._batch
        self._polled_due = None if later is None else _claimable(later)
        for message in due:
            self.send_now(message)
        return {"claimed": len(due)}

    def _claim(
        self, connection: Connection, now: datetime, beat: bool
    ) -> tuple[list[OutgoingMessage], datetime | None]:
        """Claim what is due (the heartbeat first, when it is time) and, alone on the
        database, say when the next message falls due."""
        if beat and self._owners is not None:
            heartbeat(connection, self._owners, self.owner, now)
        due = claim_due(
            connection, self._table, now, self._batch, self.policy, self.owner, self._owners
        )
        if not self._alone:
            return due, None
        return due, next_due(connection, self._table, self.owner, self._owners)

    @deferred
    async def _attempt(self, message: OutgoingMessage) -> None:
        try:
            answer = await self._sender(message)
        except DeliveryRefused as refusal:
            self.log.info(
                "{kind} {message_id} refused by {destination}: {code}",
                kind=message.kind,
                message_id=message.message_id,
                destination=message.destination,
                code=refusal.code,
            )
            await self._settle(finish, message.message_id, FAILED, refusal.code)
        except Exception as failure:
            retry = await self._settle(reschedule, message.message_id, self.policy, repr(failure))
            if self._alone and retry is not None:
                self._expect(retry)
        else:
            after = answer.work if isinstance(answer, AfterDelivery) else None
            await self._settle(_delivered, message.message_id, after)

    async def _settle(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run ``work`` on the message in a transaction of its own; what it returns (None
        when it failed: the message stays pending, under its lease)."""
        try:
            return await self._database.run(_settle_with_now, work, self._table, self._clock, *args)
        except Exception:
            self.log.failure("could not settle an outbox message")
            return None


def _claimable(due: datetime) -> float:
    """The clock's second from which a poll claims a message due at ``due`` (a poll's time is
    in whole seconds, `utc_now`)."""
    return float(math.ceil(due.timestamp()))


def _earliest(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    return first if second is None else min(first, second)


def _delivered(
    connection: Connection,
    table: Table,
    message_id: str,
    now: datetime,
    after: Callable[[Connection], None] | None,
) -> None:
    if after is not None:
        after(connection)
    finish(connection, table, message_id, now, DELIVERED)


def _settle_with_now(
    connection: Connection,
    work: Callable[..., Any],
    table: Table,
    clock: ReactorTime,
    message_id: str,
    *rest: Any,
) -> Any:
    return work(connection, table, message_id, utc_now(clock), *rest)
