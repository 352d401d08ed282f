"""情報提供等記録 (provision records): append-only and hash-chained, at every party.

A `middleware.chain.Chain`: each record's hash covers its content and the previous record's
hash, so an edited or removed record breaks the chain from that point on, and appends are
serialized through the single head row, which keeps ``seq`` gap-free and the chain linear
even with several writer processes. Each append also moves the party's 業務統計 summary in the
same transaction (`middleware.business_statistics`), so the statistics never read the records
(and a purge of the records leaves them). Records past their retention are purged, oldest
first and whole transactions at a time (middleware/retention.py); the chain is then verified
from the signed checkpoint the purge left (`verify_records`, middleware/checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, select

from middleware.business_statistics import count_appended, summary_of
from middleware.chain import GENESIS, Chain, link_hash
from middleware.checkpoint import RECORDS, ChainTrust, ChainVerification, verify_from_checkpoint
from middleware.clock import iso

__all__ = [
    "GENESIS",
    "RecordEntry",
    "append_records",
    "chain_hash",
    "count_records",
    "record_chain",
    "record_content",
    "records_of_transaction",
    "verify_chain",
    "verify_records",
]


@dataclass(frozen=True)
class RecordEntry:
    """What one party records about one step of a query or provision."""

    event: str
    status: str
    transaction_number: str | None = None
    requester: str | None = None
    provider: str | None = None
    affair: str | None = None
    procedure: str | None = None
    information_name: str | None = None
    person: str | None = None
    error_code: str | None = None
    non_disclosure: bool = False  # 不開示: hidden from the person's disclosure
    delegating_requester: str | None = None  # 照会者機関コード(委任元)
    delegating_provider: str | None = None  # 提供者機関コード(委任元)

    def as_row(self) -> dict[str, Any]:
        """Its fields as a record row's columns (not `dataclasses.asdict`, which copies each
        value deeply: several times slower, on every record appended)."""
        return {name: getattr(self, name) for name in _ENTRY_FIELDS}


# Fields added after records were first kept: left out of the hash when empty, so that the
# records written before them still verify.
_ADDED_LATER = ("delegating_requester", "delegating_provider")
_ENTRY_FIELDS = tuple(field.name for field in fields(RecordEntry))


def record_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a record's hash covers: its ``seq``, its time and its entry's fields."""
    content = {"seq": row["seq"], "recorded_at": iso(row["recorded_at"])}
    for name in _ENTRY_FIELDS:
        if row[name] is not None or name not in _ADDED_LATER:
            content[name] = row[name]
    return content


def chain_hash(prev_hash: str, seq: int, recorded_at: datetime, entry: RecordEntry) -> str:
    """The hash of one record given the previous record's hash."""
    return link_hash(
        prev_hash, record_content({"seq": seq, "recorded_at": recorded_at, **asdict(entry)})
    )


def record_chain(records: Table, head: Table) -> Chain:
    """The chain of a party's provision records (``records``) and its ``head``."""
    return Chain(records, head, record_content)


def append_records(
    connection: Connection,
    records: Table,
    head: Table,
    recorded_at: datetime,
    entries: list[RecordEntry],
) -> None:
    """Append ``entries`` to the chain inside the caller's transaction, and count them in
    the party's 業務統計 summary in the same transaction (`middleware.business_statistics`)."""
    if entries:
        rows = [{"recorded_at": recorded_at, **entry.as_row()} for entry in entries]
        last = record_chain(records, head).append(connection, rows)
        count_appended(
            connection, records, summary_of(records), last - len(rows) + 1, recorded_at, rows
        )


def verify_chain(connection: Connection, records: Table, head: Table) -> int | None:
    """The ``seq`` of the first record that breaks the chain from its genesis, or None when
    it is whole (a chain cut by a purge breaks at its first record left: `verify_records`
    verifies it from its checkpoint)."""
    return record_chain(records, head).verify(connection)


def verify_records(
    connection: Connection,
    records: Table,
    head: Table,
    checkpoints: Table,
    trust: ChainTrust | None,
) -> ChainVerification:
    """The party's chain of records verified from its newest checkpoint (checked with
    ``trust``: the network CA and the party), or from its genesis when never purged."""
    return verify_from_checkpoint(
        connection, record_chain(records, head), checkpoints, RECORDS, trust
    )


def count_records(connection: Connection, records: Table) -> int:
    """How many records a party holds."""
    return int(connection.execute(select(func.count()).select_from(records)).scalar_one())


def records_of_transaction(
    connection: Connection, records: Table, transaction_number: str
) -> list[dict[str, Any]]:
    """Every record of one 処理通番, oldest first, as plain dictionaries."""
    rows = connection.execute(
        select(records)
        .where(records.c.transaction_number == transaction_number)
        .order_by(records.c.seq)
    )
    return [dict(row._mapping) for row in rows]
