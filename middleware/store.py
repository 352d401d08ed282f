"""A node's database as adapters see it: one connector with a component per domain.

In the manner of Buildbot's ``master.db`` connector components: an adapter (the console, the
metrics, the back-office formats) asks ``node.store.records.search(...)`` and receives a
Deferred of plain values; it imports no table and writes no SQL. Each component runs the SQL
of its domain's module (``middleware.record_search``, ``staff``, ``audit``, ``replica``,
``statistics``, ``business_statistics``, ``bulk_queries``, ``jobs``) on the database's
threads, one transaction per call; what only reads goes through ``Database.read`` (on
SQLite, WAL readers that never wait behind the node's writes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from codes.errors import RenkeiError
from middleware import (
    audit,
    bulk_queries,
    business_statistics,
    record_search,
    replica,
    staff,
    statistics,
)
from middleware.bulk_queries import ClaimedLine, NewLine, Outcome
from middleware.checkpoint import ChainTrust
from middleware.deferred import deferred
from middleware.jobs import JobHistory, job_history
from middleware.record_search import RecordFilter, TransactionDetail
from middleware.storage import Database
from middleware.tables import node_job_run, node_records

__all__ = [
    "AuditStore",
    "BulkQueryStore",
    "BusinessStatisticsStore",
    "JobStore",
    "NodeStore",
    "PersonStore",
    "RecordStore",
    "ReplicaStore",
    "StaffStore",
    "StatisticsStore",
]


# Runs of a 副本 batch that a concurrent insert of the same record id rolled back.
BATCH_ATTEMPTS = 3


class RecordStore:
    """The node's provision records (情報提供等記録), searched and exported."""

    def __init__(self, database: Database, code: str) -> None:
        self._database = database
        self._code = code

    def search(
        self, search: RecordFilter, size: int, before: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """One page of at most ``size`` records, newest first, below ``seq`` ``before``."""
        return self._database.read(record_search.search_records, search, self._code, size, before)

    def export(
        self,
        search: RecordFilter,
        limit: int,
        *,
        now: datetime,
        actor: str,
        described: dict[str, str],
    ) -> Deferred[list[Row[Any]]]:
        """At most ``limit`` records for an export, audited as ``actor``'s export."""
        return self._database.run(
            record_search.export_records,
            search,
            self._code,
            limit,
            now=now,
            actor=actor,
            described=described,
        )

    def transaction(self, number: str) -> Deferred[TransactionDetail]:
        """The transaction ``number``: its records and this node's query or provision."""
        return self._database.read(record_search.transaction_detail, number)


class StaffStore:
    """Staff users and their sessions (every change audited by `middleware.staff`)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def authenticate(
        self, now: datetime, name: str, password: str, totp: str | None
    ) -> Deferred[staff.Session]:
        return self._database.run(staff.authenticate, now, name, password, totp)

    def resume(
        self, now: datetime, token: str | None, idle_timeout: timedelta
    ) -> Deferred[staff.Session]:
        return self._database.run(staff.resume_session, now, token, idle_timeout)

    def logout(self, now: datetime, token: str | None) -> Deferred[None]:
        return self._database.run(staff.logout, now, token)

    def users(self) -> Deferred[list[dict[str, Any]]]:
        return self._database.read(staff.list_users)

    def add_user(
        self,
        now: datetime,
        name: str,
        display_name: str,
        password: str,
        roles: Iterable[str],
        *,
        actor: str,
        with_totp: bool,
    ) -> Deferred[str | None]:
        return self._database.run(
            staff.add_user,
            now,
            name,
            display_name,
            password,
            roles,
            actor=actor,
            with_totp=with_totp,
        )

    def disable_user(self, now: datetime, name: str, *, actor: str) -> Deferred[None]:
        return self._database.run(staff.disable_user, now, name, actor=actor)

    def reset_password(
        self, now: datetime, name: str, password: str, *, actor: str
    ) -> Deferred[None]:
        return self._database.run(staff.reset_password, now, name, password, actor=actor)

    def set_roles(
        self, now: datetime, name: str, roles: Iterable[str], *, actor: str
    ) -> Deferred[str | None]:
        return self._database.run(staff.set_roles, now, name, roles, actor=actor)

    def reset_totp(self, now: datetime, name: str, *, actor: str) -> Deferred[str]:
        return self._database.run(staff.reset_totp, now, name, actor=actor)


class AuditStore:
    """The audit log of staff operations and reads of personal data; its chain verified from
    its checkpoint (checked with ``trust``) once purged."""

    def __init__(self, database: Database, trust: ChainTrust | None = None) -> None:
        self._database = database
        self._trust = trust

    def page(
        self, *, limit: int, offset: int, actor: str | None, action: str | None
    ) -> Deferred[audit.AuditPage]:
        return self._database.read(
            audit.audit_page,
            limit=limit,
            offset=offset,
            actor=actor,
            action=action,
            trust=self._trust,
        )

    def latest(self, action: str, targets: Sequence[str]) -> Deferred[dict[str, dict[str, Any]]]:
        """`audit.latest_entries`: why a 副本 record was flagged 自動応答不可 (its newest
        ``flag_change``)."""
        return self._database.read(audit.latest_entries, action, targets)


class ReplicaStore:
    """副本 records written by the thousand (副本 files), one transaction per batch."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @deferred
    async def store_batch(
        self,
        records: Sequence[replica.ReplicaRecord],
        now: datetime,
        claimed: Collection[str],
        *,
        write: bool,
    ) -> list[RenkeiError | None]:
        """`replica.store_batch`, run again when a concurrent insert of one of its record ids
        (another file, the JSON API) rolled it back: the id then shows as existing."""
        for attempt in range(BATCH_ATTEMPTS):
            try:
                return await self._database.run(
                    replica.store_batch, records, now, claimed, write=write
                )
            except IntegrityError:
                if attempt == BATCH_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def delete_batch(
        self, keys: Sequence[replica.RecordKey], claimed: Collection[str], *, write: bool
    ) -> Deferred[list[RenkeiError | None]]:
        """`replica.delete_batch` in one transaction."""
        return self._database.run(replica.delete_batch, keys, claimed, write=write)

    def file_answer(
        self, system: str, idempotency_key: str, request_hash: str
    ) -> Deferred[tuple[int, bytes] | None]:
        """The answer kept for a 副本 file posted under a key (`replica.file_answer`)."""
        return self._database.read(replica.file_answer, system, idempotency_key, request_hash)

    def keep_file_answer(
        self,
        system: str,
        idempotency_key: str,
        request_hash: str,
        answer: tuple[int, bytes],
        now: datetime,
    ) -> Deferred[None]:
        return self._database.run(
            replica.keep_file_answer, system, idempotency_key, request_hash, answer, now
        )


class PersonStore:
    """Persons and their 副本 as staff see them."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def holdings(self, integrated_address_number: str) -> Deferred[replica.PersonHoldings | None]:
        return self._database.read(replica.holdings_of, integrated_address_number)

    def view(
        self, integrated_address_number: str, actor: str, now: datetime
    ) -> Deferred[replica.PersonHoldings | None]:
        """`holdings` as a staff member opens a person's page: the read is audited
        (``view_person``), found or not."""
        return self._database.run(_viewed, integrated_address_number, actor, now)


def _viewed(
    connection: Connection, integrated_address_number: str, actor: str, now: datetime
) -> replica.PersonHoldings | None:
    found = replica.holdings_of(connection, integrated_address_number)
    audit.append_audit(connection, now, actor, "view_person", integrated_address_number)
    return found


class StatisticsStore:
    """Figures of the node's activity."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def dashboard(self, since: datetime) -> Deferred[dict[str, int]]:
        return self._database.read(statistics.dashboard_figures, since)

    def gauges(self) -> Deferred[dict[str, Any]]:
        return self._database.read(statistics.gauge_figures)


class BusinessStatisticsStore:
    """業務統計: the node's queries made and provisions given, counted from the summary kept
    beside its provision records (never by reading the records)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._summary = business_statistics.summary_of(node_records)

    def figures(
        self, since: str, until: str, group: str
    ) -> Deferred[list[business_statistics.Figure]]:
        """The counts of the months ``since`` to ``until`` (``YYYY-MM``, Japan time) by side,
        ``group`` and outcome (`middleware.business_statistics.figures`)."""
        return self._database.read(business_statistics.figures, self._summary, since, until, group)


class BulkQueryStore:
    """Bulk queries (一括照会): their lines, the driver's ticks, progress and results."""

    def __init__(self, database: Database) -> None:
        self._database = database

    @deferred
    async def store(
        self,
        bulk_query_id: str,
        system: str,
        encoding: str,
        lines: Sequence[NewLine],
        now: datetime,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> dict[str, Any] | None:
        """Store a bulk query with every line, in one transaction; None once stored, or the
        bulk query stored meanwhile under the same Idempotency-Key (posted twice at once)."""
        try:
            await self._database.run(
                bulk_queries.store_bulk_query,
                bulk_query_id,
                system,
                encoding,
                lines,
                now,
                idempotency_key,
                request_hash,
            )
        except IntegrityError:
            if idempotency_key is None or request_hash is None:
                raise
            earlier = await self.posted_under(system, idempotency_key, request_hash)
            if earlier is None:
                raise
            return earlier
        return None

    def posted_under(
        self, system: str, idempotency_key: str, request_hash: str
    ) -> Deferred[dict[str, Any] | None]:
        """The bulk query posted under the key (see `middleware.bulk_queries.posted_under`)."""
        return self._database.read(bulk_queries.posted_under, system, idempotency_key, request_hash)

    def recover(self, owner: str, now: datetime) -> Deferred[tuple[int, int]]:
        """Re-link or release the lines left ``submitting`` by a process that is gone
        (see `middleware.bulk_queries.recover`): (re-linked, released)."""
        return self._database.run(bulk_queries.recover, owner, now)

    def drive(
        self,
        outcomes: Sequence[Outcome],
        claim_limit: int,
        window: int,
        now: datetime,
        owner: str,
    ) -> Deferred[list[ClaimedLine]]:
        """One tick of the driver (see `middleware.bulk_queries.drive`)."""
        return self._database.run(bulk_queries.drive, outcomes, claim_limit, window, now, owner)

    def finish(self, outcomes: Sequence[Outcome], now: datetime) -> Deferred[None]:
        """Record the driver's last outcomes when it stops."""
        return self._database.run(bulk_queries.finish_outcomes, outcomes, now)

    def progress(self, bulk_query_id: str) -> Deferred[dict[str, Any]]:
        return self._database.read(bulk_queries.progress_of, bulk_query_id)

    def result_encoding(self, bulk_query_id: str) -> Deferred[str]:
        return self._database.read(bulk_queries.result_encoding, bulk_query_id)

    def result_page(
        self, bulk_query_id: str, after: int, size: int
    ) -> Deferred[list[dict[str, Any]]]:
        return self._database.read(bulk_queries.result_page, bulk_query_id, after, size)


class JobStore:
    """The recorded runs of the node's periodic jobs (ジョブ状況)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def history(self, jobs: Sequence[str], failures: int) -> Deferred[list[JobHistory]]:
        """Each job's last recorded run, last success and ``failures`` newest failed runs
        (by any process of the institution)."""
        return self._database.read(job_history, node_job_run, jobs, failures)


class NodeStore:
    """The connector: one component per domain over the node's database."""

    def __init__(self, database: Database, code: str, trust: ChainTrust | None = None) -> None:
        self.records = RecordStore(database, code)
        self.staff = StaffStore(database)
        self.audit = AuditStore(database, trust)
        self.persons = PersonStore(database)
        self.replica = ReplicaStore(database)
        self.statistics = StatisticsStore(database)
        self.business_statistics = BusinessStatisticsStore(database)
        self.bulk_queries = BulkQueryStore(database)
        self.jobs = JobStore(database)
