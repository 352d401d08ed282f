"""情報提供等記録 (provision records): append-only and hash-chained, at every party.

Each record's hash covers its content and the previous record's hash, so an edited or
removed record breaks the chain from that point on. Appends are serialized through the
single head row (a row lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which keeps
``seq`` gap-free and the chain linear even with several writer processes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, select

from middleware.clock import iso

GENESIS = "0" * 64


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


# Fields added after records were first kept: left out of the hash when empty, so that the
# records written before them still verify.
_ADDED_LATER = ("delegating_requester", "delegating_provider")


def chain_hash(prev_hash: str, seq: int, recorded_at: datetime, entry: RecordEntry) -> str:
    """The hash of one record given the previous record's hash."""
    fields = asdict(entry)
    for name in _ADDED_LATER:
        if fields[name] is None:
            del fields[name]
    content = json.dumps(
        {"seq": seq, "recorded_at": iso(recorded_at), **fields},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def append_records(
    connection: Connection,
    records: Table,
    head: Table,
    recorded_at: datetime,
    entries: list[RecordEntry],
) -> None:
    """Append ``entries`` to the chain inside the caller's transaction."""
    if not entries:
        return
    row = connection.execute(
        select(head.c.seq, head.c.hash).where(head.c.id == 1).with_for_update()
    ).first()
    if row is None:
        seq, prev_hash = 0, GENESIS
        connection.execute(head.insert().values(id=1, seq=0, hash=GENESIS))
    else:
        seq, prev_hash = row.seq, row.hash
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        digest = chain_hash(prev_hash, seq, recorded_at, entry)
        rows.append(
            {
                "seq": seq,
                "recorded_at": recorded_at,
                "prev_hash": prev_hash,
                "hash": digest,
                **asdict(entry),
            }
        )
        prev_hash = digest
    connection.execute(records.insert(), rows)
    connection.execute(head.update().where(head.c.id == 1).values(seq=seq, hash=prev_hash))


def verify_chain(connection: Connection, records: Table, head: Table) -> int | None:
    """The ``seq`` of the first record that breaks the chain, or None when it is whole."""
    prev_hash = GENESIS
    expected_seq = 0
    fields = [
        c.name for c in records.columns if c.name not in ("seq", "recorded_at", "prev_hash", "hash")
    ]
    for row in connection.execute(select(records).order_by(records.c.seq)):
        expected_seq += 1
        entry = RecordEntry(**{name: getattr(row, name) for name in fields})
        if (
            row.seq != expected_seq
            or row.prev_hash != prev_hash
            or row.hash != chain_hash(prev_hash, row.seq, row.recorded_at, entry)
        ):
            return expected_seq
        prev_hash = row.hash
    head_row = connection.execute(select(head.c.seq, head.c.hash)).first()
    if head_row is not None and (head_row.seq != expected_seq or head_row.hash != prev_hash):
        return expected_seq + 1
    return None


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
