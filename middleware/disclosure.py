"""情報提供等記録の開示: a party's provision records of one person, as the person is shown them.

番号法 第23条 has every party record each query and provision, and the records are disclosed
to the person (through マイナポータル), except those marked 不開示: by the requester for its
query (照会側不開示) or by the provider for what it provides (提供側不開示). A transaction is
withheld whole: when any of a party's records of it is marked, none of them is shown
(`withhold_non_disclosed`, pure). `records_of_persons` reads a party's records of a person
(the hub knows them by the 符号 each requester used, a node by its integrated address
number) and of the transactions they are in, withheld ones left out, newest
`MAX_DISCLOSED` at most; what is shown never names the person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, select

from middleware.messages import NetworkRecord

__all__ = ["MAX_DISCLOSED", "disclosed_record", "records_of_persons", "withhold_non_disclosed"]

MAX_DISCLOSED = 1000
_SLICE = 500  # below SQLite's default limit of bound parameters


def withhold_non_disclosed(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows a person may be shown: every row of a transaction with a row marked
    ``non_disclosure`` left out (a row of no transaction, when it is marked itself)."""
    listed = list(rows)
    withheld = {
        row["transaction_number"]
        for row in listed
        if row["non_disclosure"] and row["transaction_number"] is not None
    }
    return [
        row
        for row in listed
        if not row["non_disclosure"] and row["transaction_number"] not in withheld
    ]


def disclosed_record(row: Mapping[str, Any]) -> NetworkRecord:
    """A record row as the person is shown it (nothing of who the person is)."""
    return NetworkRecord(
        seq=row["seq"],
        recorded_at=row["recorded_at"],
        event=row["event"],
        status=row["status"],
        transaction_number=row["transaction_number"],
        requester=row["requester"],
        provider=row["provider"],
        affair=row["affair"],
        procedure=row["procedure"],
        information_name=row["information_name"],
        error_code=row["error_code"],
        delegating_requester=row["delegating_requester"],
        delegating_provider=row["delegating_provider"],
    )


def _slices(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _SLICE):
        yield values[start : start + _SLICE]


def records_of_persons(
    connection: Connection, records: Table, persons: Sequence[str], limit: int = MAX_DISCLOSED
) -> tuple[list[NetworkRecord], bool]:
    """A party's records (``records``, its provision_record table) of the person known there
    by any of ``persons``, with every record of the transactions they are in, oldest first,
    without the withheld ones; at most the newest ``limit``, and whether more were left out."""
    t = records.c
    numbers: set[str] = set()
    rows: dict[int, Any] = {}
    for chunk in _slices(persons):
        for row in connection.execute(select(records).where(t.person.in_(chunk))):
            rows[row.seq] = row._mapping
            if row.transaction_number is not None:
                numbers.add(row.transaction_number)
    for chunk in _slices(sorted(numbers)):
        for row in connection.execute(select(records).where(t.transaction_number.in_(chunk))):
            rows[row.seq] = row._mapping
    shown = withhold_non_disclosed(rows[seq] for seq in sorted(rows))
    return [disclosed_record(row) for row in shown[-limit:]], len(shown) > limit
