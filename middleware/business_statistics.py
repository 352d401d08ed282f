"""業務統計 (business statistics): queries made and provisions given, counted by month,
procedure, counterpart, information name and outcome, from a summary kept current.

What is counted is an *item* of one party's provision records: a query the party made (its
``query`` and ``result`` records, the side ``query``) or a provision request it answered (its
``provision`` records, the side ``provision``); at the hub, a query it received (permitted or
refused, side ``query``) and the answer it relayed (side ``provision``). An item is counted
once, in the month (Japan time) of its first record, under its current outcome: the status of
its latest record. It stays open while that outcome is ``accepted`` (asked, no answer yet) or
``held`` (waiting for a staff decision): the next record of its side and 処理通番 moves it to
the record's status (held, then provided: one provision, provided, in the month it was
asked). A record that finds no open item begins an item of its own: a provision request
refused (a replayed permit, say) even on the 処理通番 of one answered before, and every
record without a 処理通番 (a request refused before its permit could be read). Deleting a
result (``result_deleted``) is no item.

`Tally` is that definition, walking records in ``seq`` order. A party's `Summary` holds its
counts in two tables (middleware/tables.py): the cells by every key, and the totals without
the institutions. `count_appended` moves both in the transaction that appends records
(`middleware.records.append_records`), from the earlier records of the same 処理通番 and the
new ones; `rebuild` counts every record again (the migration that made the tables, and a
check). `figures` answers the console's question from the summary alone, never from the
records: from the totals, but for a grouping by institution.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from codes import errors

__all__ = [
    "COLUMNS",
    "DECISIONS",
    "GROUPS",
    "JAPAN",
    "OPEN",
    "PROVISION",
    "QUERY",
    "SIDES",
    "Figure",
    "Key",
    "Summary",
    "Tally",
    "Total",
    "as_summary",
    "count_appended",
    "figures",
    "month_of",
    "rebuild",
    "recount",
    "summary_counts",
    "summary_of",
]

JAPAN = ZoneInfo("Asia/Tokyo")

QUERY = "query"
PROVISION = "provision"
SIDES = (QUERY, PROVISION)
_SIDE_OF_EVENT = {"query": QUERY, "result": QUERY, "provision": PROVISION}

OPEN = frozenset({"accepted", "held"})
"""Outcomes an item moves on from: asked and not answered yet, or held for a decision."""

DECISIONS = frozenset(
    {errors.PROVISION_REFUSED.code, errors.HOLD_EXPIRED.code, errors.HELD_PERMIT_EXPIRED.code}
)
"""The codes of a held provision refused by a decision (staff, or the hold's end): such a
refusal ends the held item; any other refusal is a request refused, an item of its own."""

COLUMNS = (
    "seq",
    "recorded_at",
    "event",
    "status",
    "transaction_number",
    "requester",
    "provider",
    "procedure",
    "information_name",
    "error_code",
)
"""The record columns an item is made of (present in every schema revision since 0001)."""

GROUPS = (
    "month",
    "procedure",
    "counterpart",
    "information_name",
    "outcome",
    "requester",
    "provider",
)
"""What `figures` groups by; ``counterpart`` is the provider of a query and the requester of a
provision (at a node: the other institution)."""


def month_of(moment: datetime) -> str:
    """The month (``YYYY-MM``, Japan time) of an aware time."""
    local = moment.astimezone(JAPAN)
    return f"{local.year:04d}-{local.month:02d}"


class Key(NamedTuple):
    """One cell of the summary: where an item is counted (``''`` for an unknown value); a
    named tuple, hashed and compared in C, as a walk over millions of records needs."""

    month: str
    side: str
    requester: str
    provider: str
    procedure: str
    information_name: str
    outcome: str


class Total(NamedTuple):
    """One cell of the totals: a `Key` without its institutions."""

    month: str
    side: str
    procedure: str
    information_name: str
    outcome: str


def _total(key: Key) -> Total:
    return Total(key.month, key.side, key.procedure, key.information_name, key.outcome)


class Summary(NamedTuple):
    """A party's 業務統計 tables: its cells by every `Key`, and its `Total` cells."""

    cells: Table
    totals: Table


def summary_of(records: Table) -> Summary:
    """The summary kept beside a party's provision records ``records`` (in the same schema:
    the node's or the hub's, middleware/tables.py)."""
    tables = records.metadata.tables
    return Summary(tables["provision_record_summary"], tables["provision_record_totals"])


class Tally:
    """Items counted from records given in ``seq`` order (see the module's docstring).

    Only the open items are remembered between records, so a walk over a whole table needs
    memory for the queries and held provisions still waiting, not for every 処理通番.
    """

    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()
        self._open: dict[tuple[str, str], Key] = {}

    def add(self, record: Mapping[Any, Any]) -> None:
        """Count one record: a new item, or the next outcome of its side's open item."""
        side = _SIDE_OF_EVENT.get(record["event"])
        if side is None:
            return
        status: str = record["status"]
        number = record["transaction_number"]
        item = self._open.get((number, side)) if number is not None else None
        if item is not None and _continues(side, record):
            del self._open[(number, side)]
            self.counts[item] -= 1
            item = item._replace(outcome=status)
        else:
            item = Key(
                month=month_of(record["recorded_at"]),
                side=side,
                requester=record["requester"] or "",
                provider=record["provider"] or "",
                procedure=record["procedure"] or "",
                information_name=record["information_name"] or "",
                outcome=status,
            )
        self.counts[item] += 1
        if number is not None and status in OPEN:
            self._open[(number, side)] = item

    def add_all(self, records: Iterable[Mapping[Any, Any]]) -> Tally:
        """Count ``records`` one after the other; the tally itself."""
        for record in records:
            self.add(record)
        return self


def _continues(side: str, record: Mapping[Any, Any]) -> bool:
    """Whether a record moves its side's open item on (else it begins an item of its own)."""
    refused = record["status"] == "refused" and record["error_code"] not in DECISIONS
    return not (side == PROVISION and refused)


def _selected(records: Table) -> Any:
    return select(*(records.c[name] for name in COLUMNS))


def recount(connection: Connection, records: Table) -> Counter[Key]:
    """Every item of a party's records, counted by walking them all in ``seq`` order."""
    tally = Tally()
    rows = connection.execute(
        _selected(records).order_by(records.c.seq).execution_options(yield_per=20_000)
    )
    for row in rows:
        tally.add(row._mapping)
    return +tally.counts


def as_summary(counted: Counter[Key]) -> tuple[Counter[Key], Counter[Total]]:
    """What a summary of items ``counted`` holds: the cells, and their totals."""
    totals: Counter[Total] = Counter()
    for key, count in counted.items():
        totals[_total(key)] += count
    return +counted, +totals


def summary_counts(connection: Connection, summary: Summary) -> tuple[Counter[Key], Counter[Total]]:
    """What the summary holds: its cells and its totals that are not zero."""
    cells: Counter[Key] = Counter()
    for row in connection.execute(select(summary.cells)):
        if row.tally:
            cells[Key(**{name: row._mapping[name] for name in Key._fields})] = row.tally
    totals: Counter[Total] = Counter()
    for row in connection.execute(select(summary.totals)):
        if row.tally:
            totals[Total(**{name: row._mapping[name] for name in Total._fields})] = row.tally
    return cells, totals


def rebuild(connection: Connection, records: Table, summary: Summary) -> int:
    """Count every record again into an emptied summary; how many items."""
    counted = recount(connection, records)
    connection.execute(summary.cells.delete())
    connection.execute(summary.totals.delete())
    _move(connection, summary, counted)
    return sum(counted.values())


# SQLite takes at most 32,766 parameters in a statement, PostgreSQL 65,535.
_IN_LIST = 500


def count_appended(
    connection: Connection,
    records: Table,
    summary: Summary,
    first_seq: int,
    recorded_at: datetime,
    rows: Sequence[Mapping[Any, Any]],
) -> None:
    """Move the summary by the records just appended (``rows``, numbered from ``first_seq``,
    each with its entry's fields), inside the appending transaction: each of their 処理通番's
    items counted before and after them, from its earlier records and theirs."""
    new = [
        {**row, "seq": first_seq + offset, "recorded_at": recorded_at}
        for offset, row in enumerate(rows)
        if row["event"] in _SIDE_OF_EVENT
    ]
    if not new:
        return
    numbers = sorted({row["transaction_number"] for row in new} - {None})
    earlier: list[Mapping[Any, Any]] = []
    for start in range(0, len(numbers), _IN_LIST):
        earlier += [
            row._mapping
            for row in connection.execute(
                _earlier_records(records),
                {"numbers": numbers[start : start + _IN_LIST], "first_seq": first_seq},
            )
        ]
    earlier.sort(key=lambda row: int(row["seq"]))
    tally = Tally().add_all(earlier)
    before = Counter(tally.counts)
    tally.add_all(new)
    change = Counter(tally.counts)
    change.subtract(before)
    _move(connection, summary, change)


def _move(connection: Connection, summary: Summary, change: Mapping[Key, int]) -> None:
    """Add ``change`` (counts, negative ones included) to the summary's cells and totals."""
    totals: Counter[Total] = Counter()
    for key, by in change.items():
        totals[_total(key)] += by
    for table, moved in ((summary.cells, change), (summary.totals, totals)):
        values = [{**key._asdict(), "tally": by} for key, by in moved.items() if by]
        if values:
            connection.execute(_upsert(table, connection.dialect.name), values)


# Each append runs these statements: built once per table (and dialect), so that an append
# pays for executing them, not for building them again.


@functools.cache
def _earlier_records(records: Table) -> Any:
    """The records of some 処理通番 (``numbers``) before ``first_seq``."""
    return _selected(records).where(
        records.c.transaction_number.in_(bindparam("numbers", expanding=True)),
        records.c.seq < bindparam("first_seq"),
    )


@functools.cache
def _upsert(table: Table, dialect: str) -> Any:
    """Add each row's ``tally`` to its cell, creating the cell if it is missing."""
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return insert.on_conflict_do_update(
        index_elements=[column.name for column in table.primary_key],
        set_={"tally": table.c.tally + insert.excluded.tally},
    )


@dataclass(frozen=True)
class Figure:
    """How many items of a side, with a group's value and an outcome, in a period."""

    side: str
    value: str
    outcome: str
    count: int


_BY_INSTITUTION = ("counterpart", "requester", "provider")


def figures(
    connection: Connection, summary: Summary, since: str, until: str, group: str
) -> list[Figure]:
    """The items of the months ``since`` to ``until`` (``YYYY-MM``, both included) by side,
    ``group`` (one of `GROUPS`) and outcome, from the summary alone: its totals, or its cells
    for a grouping by institution."""
    if group not in GROUPS:
        raise ValueError(f"no such grouping: {group}")
    table = summary.cells if group in _BY_INSTITUTION else summary.totals
    # A counterpart is the provider or the requester depending on the side: grouped by both
    # here (a CASE in GROUP BY is not portable with bound parameters) and merged below.
    columns = ["requester", "provider"] if group == "counterpart" else [group]
    if group == "outcome":
        columns = []
    grouped = [table.c[name] for name in columns]
    rows = connection.execute(
        select(table.c.side, table.c.outcome, *grouped, func.sum(table.c.tally))
        .where(table.c.month >= since, table.c.month <= until)
        .group_by(table.c.side, table.c.outcome, *grouped)
    )
    merged: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        side, outcome, *values, count = row
        if group == "counterpart":
            value = values[1] if side == QUERY else values[0]
        elif group == "outcome":
            value = outcome
        else:
            value = values[0]
        merged[(side, value, outcome)] += int(count)
    return [
        Figure(side, value, outcome, count)
        for (side, value, outcome), count in sorted(merged.items())
        if count
    ]
