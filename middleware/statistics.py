"""Figures of a node's activity, read in one transaction: the console's dashboard and the
metrics' gauges (業務統計情報 as far as they go today)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from middleware.outbox import backlog, oldest_pending
from middleware.tables import held_provision, node_outbox, node_records, provision, query

__all__ = ["dashboard_figures", "gauge_figures"]


def _count(connection: Connection, statement: Any) -> int:
    return int(connection.execute(statement).scalar_one())


def _held_waiting(connection: Connection) -> int:
    return _count(
        connection,
        select(func.count()).select_from(held_provision).where(held_provision.c.state == "held"),
    )


def dashboard_figures(connection: Connection, since: datetime) -> dict[str, int]:
    """Queries, provisions and errors since ``since``; held provisions waiting; the outbox."""
    return {
        "queries_today": _count(
            connection,
            select(func.count()).select_from(query).where(query.c.submitted_at >= since),
        ),
        "provisions_today": _count(
            connection,
            select(func.count()).select_from(provision).where(provision.c.received_at >= since),
        ),
        "held_waiting": _held_waiting(connection),
        "errors_today": _count(
            connection,
            select(func.count())
            .select_from(node_records)
            .where(node_records.c.recorded_at >= since, node_records.c.error_code.is_not(None)),
        ),
        "outbox_backlog": backlog(connection, node_outbox),
    }


def gauge_figures(connection: Connection) -> dict[str, Any]:
    """Queries by state, provisions by status, held provisions waiting, the outbox backlog
    and when its oldest pending message was written (None when none is pending)."""
    return {
        "queries": dict(
            connection.execute(select(query.c.state, func.count()).group_by(query.c.state)).all()
        ),
        "provisions": dict(
            connection.execute(
                select(provision.c.status, func.count()).group_by(provision.c.status)
            ).all()
        ),
        "held": _held_waiting(connection),
        "backlog": backlog(connection, node_outbox),
        "oldest_pending": oldest_pending(connection, node_outbox),
    }
