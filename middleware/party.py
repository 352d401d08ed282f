"""A party of the network: what the hub and every intermediate server are built on.

A party has one clock (wall time and timers), one database (migrated when it starts), one
durable outbox that delivers through its transport, one chain of provision records and its
periodic jobs. Starting opens the database, migrates it and starts the outbox; stopping stops
the jobs, then the outbox (waiting for deliveries in flight), closes the transport and closes
the database last, whatever failed before. The hub (`simulators.network.hub.Hub`) and the
intermediate server (`middleware.node.IntermediateServer`) add what they do on top.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from middleware.chain import Chain
from middleware.clock import ReactorTime, periodic, utc_now
from middleware.config import Config
from middleware.deferred import deferred
from middleware.network import Transport
from middleware.outbox import Outbox, OutgoingMessage
from middleware.records import RecordEntry, append_records, record_chain
from middleware.storage import Database, DatabaseStopped

__all__ = ["Party"]


class Party(Service):
    """The common life of a network party; subclasses say how a message is delivered."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        database: str,
        migrations: Path,
        outbox: tuple[Table, Table],
        records: tuple[Table, Table],
        transport: Transport,
        clock: ReactorTime | None = None,
    ) -> None:
        self.config = config
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
            config.poll_interval,
            owners=owners,
        )
        self.transport = transport
        self.records: Chain = record_chain(*records)
        self._migrations = migrations
        self._loops: list[LoopingCall] = []

    def now(self) -> datetime:
        """The party's wall time (aware, UTC)."""
        return utc_now(self.clock)

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        """Deliver one message of the outbox (its answer, or a failure the outbox retries)."""
        raise NotImplementedError

    def record(
        self, connection: Connection, recorded_at: datetime, entries: list[RecordEntry]
    ) -> None:
        """Append provision records inside the caller's transaction."""
        append_records(connection, self.records.links, self.records.head, recorded_at, entries)

    def every(self, interval: float, work: Callable[[], Any], *, now: bool = True) -> None:
        """Run ``work`` every ``interval`` seconds of the party's clock while it runs; a run
        that fails is logged and the next one runs as planned."""

        async def guarded() -> None:
            try:
                await maybeDeferred(work)
            except DatabaseStopped:
                pass  # the party is stopping
            except Exception:
                self.log.failure(
                    "periodic {work} failed; it runs again in {interval} s",
                    work=getattr(work, "__qualname__", repr(work)),
                    interval=interval,
                )

        loop = periodic(lambda: Deferred.fromCoroutine(guarded()), self.clock)
        loop.start(interval, now=now).addErrback(
            lambda failure: self.log.failure("periodic task stopped", failure)
        )
        self._loops.append(loop)

    @deferred
    async def startService(self) -> None:
        super().startService()
        self.database.start()
        await self.database.migrate(self._migrations)
        self.outbox.start()

    @deferred
    async def stopService(self) -> None:
        super().stopService()
        try:
            for loop in self._loops:
                if loop.running:
                    loop.stop()
            self._loops.clear()
            await self.outbox.stop()
            await self.transport.close()
        finally:
            self.database.stop()
