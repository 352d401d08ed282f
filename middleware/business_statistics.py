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

`Tally` is that definition, walking records in ``seq`` order. The summary table
(``provision_record_summary``, middleware/tables.py) holds its counts: `count_appended` moves
them in the transaction that appends records (`middleware.records.append_records`), from the
earlier records of the same 処理通番 and the new ones; `rebuild` counts every record again (the
migration that made the table, and a check). `figures` answers the console's question from
the summary alone, never from the records.
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
    "Tally",
    "count_appended",
    "figures",
    "month_of",
    "rebuild",
    "recount",
    "summary_counts",
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


_KEY_COLUMNS = Key._fields


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


def summary_counts(connection: Connection, summary: Table) -> Counter[Key]:
    """What the summary holds (its cells that are not zero)."""
    counted: Counter[Key] = Counter()
    for row in connection.execute(select(summary)):
        if row.tally:
            counted[Key(**{name: row._mapping[name] for name in _KEY_COLUMNS})] = row.tally
    return counted


def rebuild(connection: Connection, records: Table, summary: Table) -> int:
    """Count every record again into an emptied summary; how many items."""
    counted = recount(connection, records)
    connection.execute(summary.delete())
    _move(connection, summary, counted)
    return sum(counted.values())


# SQLite takes at most 32,766 parameters in a statement, PostgreSQL 65,535.
_IN_LIST = 500


def count_appended(
    connection: Connection,
    records: Table,
    summary: Table,
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


def _move(connection: Connection, summary: Table, change: Mapping[Key, int]) -> None:
    """Add ``change`` (counts, negative ones included) to the summary's cells."""
    values = [{**key._asdict(), "tally": by} for key, by in change.items() if by]
    if not values:
        return
    connection.execute(_upsert(summary, connection.dialect.name), values)


# Each append runs these two statements: built once per table (and dialect), so that an
# append pays for executing them, not for building them again.


@functools.cache
def _earlier_records(records: Table) -> Any:
    """The records of some 処理通番 (``numbers``) before ``first_seq``."""
    return _selected(records).where(
        records.c.transaction_number.in_(bindparam("numbers", expanding=True)),
        records.c.seq < bindparam("first_seq"),
    )


@functools.cache
def _upsert(summary: Table, dialect: str) -> Any:
    """Add each row's ``tally`` to its cell, creating the cell if it is missing."""
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(summary)
    return insert.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS),
        set_={"tally": summary.c.tally + insert.excluded.tally},
    )


@dataclass(frozen=True)
class Figure:
    """How many items of a side, with a group's value and an outcome, in a period."""

    side: str
    value: str
    outcome: str
    count: int


def figures(
    connection: Connection, summary: Table, since: str, until: str, group: str
) -> list[Figure]:
    """The items of the months ``since`` to ``until`` (``YYYY-MM``, both included) by side,
    ``group`` (one of `GROUPS`) and outcome, from the summary alone."""
    if group not in GROUPS:
        raise ValueError(f"no such grouping: {group}")
    # A counterpart is the provider or the requester depending on the side: grouped by both
    # here (a CASE in GROUP BY is not portable with bound parameters) and merged below.
    columns = ["requester", "provider"] if group == "counterpart" else [group]
    if group == "outcome":
        columns = []
    grouped = [summary.c[name] for name in columns]
    rows = connection.execute(
        select(summary.c.side, summary.c.outcome, *grouped, func.sum(summary.c.tally))
        .where(summary.c.month >= since, summary.c.month <= until)
        .group_by(summary.c.side, summary.c.outcome, *grouped)
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
