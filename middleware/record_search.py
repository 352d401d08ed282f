"""Searching a node's provision records (情報提供等記録): what the console shows and exports.

A search is a `RecordFilter`; its conditions become one or two *branches* (`record_branches`):
a record matches when it meets every condition of some branch. A counterpart search has two
branches, one per direction, so each is one seek on the (requester, provider, seq) index
instead of a scan testing an OR; each branch is read newest first and limited on its own, then
merged. Pages are keyset pages (below a ``seq``). ``bench/records.py`` measures these very
statements over a million records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, func, select, true, union_all

from middleware.audit import append_audit
from middleware.records import records_of_transaction
from middleware.tables import node_records, provision, query

__all__ = [
    "EXPORT_COLUMNS",
    "RecordFilter",
    "TransactionDetail",
    "export_records",
    "export_statement",
    "page_statement",
    "record_branches",
    "search_records",
    "transaction_detail",
]

SEQ_BEYOND = 2**62  # a seq no record reaches: an empty range

EXPORT_COLUMNS = [c.name for c in node_records.columns if c.name not in ("prev_hash", "hash")]
"""The columns of an export: every column but the chain's hashes."""


@dataclass(frozen=True)
class RecordFilter:
    """What a search asks for; every field left ``None`` matches everything."""

    since: datetime | None = None  # recorded at or after (aware)
    until: datetime | None = None  # recorded before (aware)
    event: str | None = None
    direction: str | None = None  # "outgoing" (we asked) or "incoming" (we were asked)
    counterpart: str | None = None  # the other institution's code
    procedure: str | None = None
    information_name: str | None = None
    status: str | None = None
    transaction_number: str | None = None
    person: str | None = None  # 統合宛名番号
    errors_only: bool = False  # only records with an error code


@dataclass(frozen=True)
class TransactionDetail:
    """One transaction as this node knows it: its records and its query or provision row."""

    records: list[dict[str, Any]]
    query: dict[str, Any] | None  # when this node asked
    provision: dict[str, Any] | None  # when this node was asked


def record_branches(search: RecordFilter, code: str) -> list[list[Any]]:
    """The WHERE conditions of ``search`` at the node ``code``, one list per branch."""
    table = node_records
    common: list[Any] = [true()]
    # Records are appended in time order, so a date range is a seq range: each bound is one
    # index seek on recorded_at, and the search then walks the primary key newest first
    # instead of sorting every record of the range.
    if search.since is not None:
        first = (
            select(table.c.seq)
            .where(table.c.recorded_at >= search.since)
            .order_by(table.c.recorded_at)
            .limit(1)
            .scalar_subquery()
        )
        common.append(table.c.seq >= func.coalesce(first, SEQ_BEYOND))
    if search.until is not None:
        last = (
            select(table.c.seq)
            .where(table.c.recorded_at < search.until)
            .order_by(table.c.recorded_at.desc())
            .limit(1)
            .scalar_subquery()
        )
        common.append(table.c.seq <= func.coalesce(last, 0))
    for name in (
        "event",
        "procedure",
        "information_name",
        "status",
        "transaction_number",
        "person",
    ):
        value = getattr(search, name)
        if value:
            common.append(table.c[name] == value)
    if search.errors_only:
        common.append(table.c.error_code.is_not(None))
    outgoing = [table.c.requester == code]
    incoming = [table.c.provider == code]
    if search.counterpart:
        outgoing.append(table.c.provider == search.counterpart)
        incoming.append(table.c.requester == search.counterpart)
    if search.direction == "outgoing":
        return [common + outgoing]
    if search.direction == "incoming":
        return [common + incoming]
    if search.counterpart:
        return [common + outgoing, common + incoming]
    return [common]


def _newest_first(branches: list[list[Any]], columns: list[Any], limit: int) -> Select[Any]:
    """``columns`` of the newest ``limit`` records matching any of ``branches``: each branch
    newest first and limited on its own, then merged (no branch is read further than
    ``limit`` rows)."""
    seq = node_records.c.seq
    parts = [
        select(*columns).where(and_(*conditions)).order_by(seq.desc()).limit(limit)
        for conditions in branches
    ]
    if len(parts) == 1:
        return parts[0]
    merged = union_all(*[select(part.subquery()) for part in parts]).subquery()
    return select(merged).order_by(merged.c.seq.desc()).limit(limit)


def page_statement(branches: list[list[Any]], size: int, before: int | None = None) -> Select[Any]:
    """One page of a search, newest first: ``size`` rows, below ``seq`` ``before`` when given
    (keyset paging)."""
    if before is not None:
        branches = [[*conditions, node_records.c.seq < before] for conditions in branches]
    return _newest_first(branches, list(node_records.columns), size)


def export_statement(branches: list[list[Any]], limit: int) -> Select[Any]:
    """An export's rows (``EXPORT_COLUMNS``), newest first, at most ``limit``."""
    columns = [node_records.c[name] for name in EXPORT_COLUMNS]
    return _newest_first(branches, columns, limit)


def search_records(
    connection: Connection, search: RecordFilter, code: str, size: int, before: int | None
) -> list[dict[str, Any]]:
    """One page of ``search``: at most ``size`` records, newest first, below ``before``."""
    statement = page_statement(record_branches(search, code), size, before)
    return [dict(row._mapping) for row in connection.execute(statement)]


def export_records(
    connection: Connection,
    search: RecordFilter,
    code: str,
    limit: int,
    *,
    now: datetime,
    actor: str,
    described: dict[str, str],
) -> list[Row[Any]]:
    """The records of ``search`` for an export (``EXPORT_COLUMNS``), audited as an export by
    ``actor`` with the filters as the person gave them (``described``)."""
    rows = list(connection.execute(export_statement(record_branches(search, code), limit)))
    append_audit(
        connection,
        now,
        actor,
        "export",
        "provision_records",
        {"filters": described, "rows": len(rows)},
    )
    return rows


def transaction_detail(connection: Connection, number: str) -> TransactionDetail:
    """The records of the transaction ``number`` and this node's query or provision of it."""
    asked = connection.execute(
        select(
            query.c.query_id,
            query.c.state,
            query.c.provider,
            query.c.submitted_at,
            query.c.completed_at,
            query.c.error_code,
        ).where(query.c.transaction_number == number)
    ).first()
    answered = connection.execute(
        select(
            provision.c.requester,
            provision.c.status,
            provision.c.error_code,
            provision.c.received_at,
        ).where(provision.c.transaction_number == number)
    ).first()
    return TransactionDetail(
        records=records_of_transaction(connection, node_records, number),
        query=dict(asked._mapping) if asked is not None else None,
        provision=dict(answered._mapping) if answered is not None else None,
    )
