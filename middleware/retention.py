"""Retention of query results: a result is kept ``result_retention`` seconds after its query
ended, then deleted (the query, its state and its records stay), each deletion recorded."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select
from twisted.internet.defer import Deferred

from middleware.party import Party
from middleware.queries import FINISHED
from middleware.requester import query_record
from middleware.tables import query

__all__ = ["BATCH", "Retention"]

BATCH = 1000  # results deleted at most per sweep (the next sweep goes on)


class Retention:
    """The result retention of one intermediate server."""

    def __init__(self, party: Party, code: str, result_retention: float) -> None:
        self._party = party
        self._code = code
        self._retention = timedelta(seconds=result_retention)

    def sweep(self) -> Deferred[int]:
        """Delete query results whose retention has ended; how many were deleted."""
        now = self._party.now()
        return self._party.database.run(self._delete, now - self._retention, now)

    def _delete(self, connection: Connection, cutoff: datetime, now: datetime) -> int:
        rows = connection.execute(
            select(query)
            .where(
                query.c.state.in_(FINISHED),
                query.c.completed_at <= cutoff,
                query.c.result_deleted_at.is_(None),
            )
            .limit(BATCH)
        ).all()
        if not rows:
            return 0
        connection.execute(
            query.update()
            .where(query.c.query_id.in_([row.query_id for row in rows]))
            .values(result=None, result_deleted_at=now)
        )
        self._party.record(
            connection,
            now,
            [query_record(self._code, row, "result_deleted", row.state) for row in rows],
        )
        return len(rows)
