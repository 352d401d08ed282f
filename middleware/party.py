"""A party of the network: what the hub and every intermediate server are built on.

A party has one clock (wall time and timers), one database (migrated when it starts), one
durable outbox that delivers through its transport (its poll paced by what falls due when
no other process shares the database), one chain of provision records, one
scheduler of its periodic jobs (`middleware.jobs.Scheduler`, ``party.jobs``: the outbox's
poll is its first job; with ``[backup]``, the backup of its database is another,
`add_backup`) and one log of its business events (`middleware.events.BusinessLog`,
``party.events``). Starting opens the database, migrates it and starts the jobs;
stopping stops the jobs (cancelling runs in flight), then the outbox (waiting for deliveries
in flight), closes the transport and closes the database last, whatever failed before. The
hub (`simulators.network.hub.Hub`) and the intermediate server
(`middleware.node.IntermediateServer`) add what they do on top.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from middleware.backup import PartyDatabase, ScheduledBackup
from middleware.chain import Chain
from middleware.clock import ReactorTime, utc_now
from middleware.config import Config
from middleware.deferred import deferred
from middleware.events import BusinessLog
from middleware.jobs import Backoff, Scheduler
from middleware.network import Transport
from middleware.outbox import Outbox, OutgoingMessage
from middleware.records import RecordEntry, append_records, record_chain
from middleware.storage import Database

__all__ = ["QUIET_RECORDS", "Party"]

# Seconds between two recorded successful runs of the outbox's poll (a quiet job: it runs
# every ``poll_interval``, a fraction of a second; its failures are all recorded).
QUIET_RECORDS = 60.0


_PENDING_RECORDS = "renkei.pending_records"  # in Connection.info: `Party.records_together`


class Party(Service):
    """The common life of a network party; subclasses say how a message is delivered."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        name: str,
        database: str,
        migrations: Path,
        outbox: tuple[Table, Table],
        records: tuple[Table, Table],
        job_runs: Table,
        transport: Transport,
        clock: ReactorTime | None = None,
    ) -> None:
        self.config = config
        self._reactor = reactor
        # Wall time and the timers of every job (outbox retries and the party's own jobs):
        # the network's one clock in a box, else the reactor.
        self.clock: ReactorTime = reactor if clock is None else clock
        self.database = Database(reactor, database)
        messages, owners = outbox
        self.outbox = Outbox(
            self.database,
            messages,
            self.clock,
            self.deliver,
            config.retry,
            owners=owners,
            alone=not self.database.shared,
            wake=self._outbox_due,
        )
        self.transport = transport
        # One line per business event, under the party's name (``hub``, ``meguro``).
        self.events = BusinessLog(name, ((m.code, m.display_name) for m in config.members))
        self.records: Chain = record_chain(*records)
        self._migrations = migrations
        # Every periodic job of the party, run on its clock, each run recorded.
        self.jobs = Scheduler(
            self.database,
            job_runs,
            self.clock,
            Backoff(config.jobs.retry_initial, config.jobs.retry_maximum),
            keep=config.jobs.keep_runs,
        )
        # Paced by what falls due (at most every poll_interval; on a shared database every
        # poll_interval): an idle party's outbox does not poll (middleware/outbox.py).
        self.jobs.add(
            "outbox",
            config.poll_interval,
            self.outbox.poll,
            quiet=QUIET_RECORDS,
            next_run=self.outbox.next_poll,
        )

    def _outbox_due(self, delay: float) -> None:
        """Something in the outbox falls due in ``delay`` seconds: its poll runs then."""
        self.jobs.wake("outbox", delay)

    def add_backup(self, database: PartyDatabase) -> None:
        """Back up the party's database (``database`` says what it is) as its ``backup`` job
        every ``[backup] interval`` seconds, when ``[backup]`` names a directory."""
        if self.config.backup is None:
            return
        self.backups = ScheduledBackup(database, self.config.backup, self.clock, self._reactor)
        self.jobs.add("backup", self.config.backup.interval, self.backups.run, now=False)

    def now(self) -> datetime:
        """The party's wall time (aware, UTC)."""
        return utc_now(self.clock)

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        """Deliver one message of the outbox (its answer, or a failure the outbox retries)."""
        raise NotImplementedError

    def record(
        self, connection: Connection, recorded_at: datetime, entries: list[RecordEntry]
    ) -> None:
        """Append provision records inside the caller's transaction (at the end of
        `records_together`, when inside it)."""
        pending = connection.info.get(_PENDING_RECORDS)
        if pending is not None:
            pending.append((recorded_at, entries))
            return
        append_records(connection, self.records.links, self.records.head, recorded_at, entries)

    @contextmanager
    def records_together(self, connection: Connection) -> Iterator[None]:
        """The provision records `record` appends inside are written when it ends, in their
        order, by one append per recording time: the lines of a bundle cost one extension of
        the hash chain and one count of 業務統計, not one each. Nothing inside may read them."""
        if _PENDING_RECORDS in connection.info:
            yield  # already inside
            return
        pending: list[tuple[datetime, list[RecordEntry]]] = []
        connection.info[_PENDING_RECORDS] = pending
        try:
            yield
        finally:
            del connection.info[_PENDING_RECORDS]
        for recorded_at, group in groupby(pending, key=lambda item: item[0]):
            entries = [entry for _, some in group for entry in some]
            append_records(connection, self.records.links, self.records.head, recorded_at, entries)

    @deferred
    async def startService(self) -> None:
        super().startService()
        self.database.start()
        await self.database.migrate(self._migrations)
        self.jobs.start()

    @deferred
    async def stopService(self) -> None:
        super().stopService()
        try:
            await self.jobs.stop()
            await self.outbox.stop()
            await self.transport.close()
        finally:
            self.database.stop()
