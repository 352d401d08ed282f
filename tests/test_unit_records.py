"""Unit tests for middleware.records: the append-only, hash-chained provision records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, delete, select, text, update
from twisted.internet.interfaces import IReactorThreads

from middleware.records import (
    GENESIS,
    RecordEntry,
    append_records,
    chain_hash,
    count_records,
    records_of_transaction,
    verify_chain,
)
from middleware.storage import Database, migrate
from middleware.tables import node_record_head, node_records

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
START = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)


def _entry(number: int, transaction: str = "20260101000000000001", **changes: Any) -> RecordEntry:
    fields: dict[str, Any] = {
        "event": "query",
        "status": "accepted",
        "transaction_number": transaction,
        "requester": MEGURO,
        "provider": SETAGAYA,
        "affair": "JM90000000001000",
        "procedure": "JT90010000000001",
        "information_name": "TM00000000000002",
        "person": f"{number:015d}",
    }
    fields.update(changes)
    return RecordEntry(**fields)


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database in a SQLite file, used through run_blocking only."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    database = Database(cast(IReactorThreads, object()), url)
    yield database
    database.stop()


def _append(database: Database, recorded_at: datetime, entries: list[RecordEntry]) -> None:
    database.run_blocking(append_records, node_records, node_record_head, recorded_at, entries)


def _verify(database: Database) -> int | None:
    return database.run_blocking(verify_chain, node_records, node_record_head)


def _execute(database: Database, statement: Any) -> None:
    def work(connection: Connection) -> None:
        connection.execute(statement)

    database.run_blocking(work)


def _seqs(database: Database) -> list[int]:
    def work(connection: Connection) -> list[int]:
        return list(
            connection.execute(select(node_records.c.seq).order_by(node_records.c.seq)).scalars()
        )

    return database.run_blocking(work)


@pytest.fixture
def four_records(node_db: Database) -> Database:
    """A chain of four records written by three appends."""
    _append(node_db, START, [_entry(1)])
    _append(node_db, START + timedelta(seconds=1), [_entry(2), _entry(3)])
    _append(node_db, START + timedelta(seconds=2), [_entry(4, non_disclosure=True)])
    return node_db


def test_empty_chain_verifies(node_db: Database) -> None:
    """A party with no records has a whole (empty) chain."""
    assert _verify(node_db) is None
    assert node_db.run_blocking(count_records, node_records) == 0


def test_appended_records_verify(four_records: Database) -> None:
    """Records written by several appends form a whole chain."""
    assert _verify(four_records) is None


def test_appending_nothing_writes_nothing(node_db: Database) -> None:
    """An empty append neither writes a record nor creates the head row."""
    _append(node_db, START, [])

    def head_rows(connection: Connection) -> int:
        return len(connection.execute(select(node_record_head)).all())

    assert node_db.run_blocking(head_rows) == 0
    assert _verify(node_db) is None


def test_seq_is_gap_free_across_appends(four_records: Database) -> None:
    """Sequence numbers run 1, 2, 3, ... across separate appends."""
    _append(four_records, START + timedelta(seconds=3), [_entry(5), _entry(6), _entry(7)])
    assert _seqs(four_records) == [1, 2, 3, 4, 5, 6, 7]
    assert _verify(four_records) is None


def test_records_link_to_their_predecessor(four_records: Database) -> None:
    """The first record links to the genesis hash, each other one to its predecessor's hash."""

    def rows(connection: Connection) -> list[Any]:
        return list(connection.execute(select(node_records).order_by(node_records.c.seq)))

    chain = four_records.run_blocking(rows)
    assert chain[0].prev_hash == GENESIS
    for previous, current in pairwise(chain):
        assert current.prev_hash == previous.hash
    first = chain[0]
    assert first.hash == chain_hash(GENESIS, 1, START, _entry(1))

    def head(connection: Connection) -> tuple[int, str]:
        row = connection.execute(select(node_record_head.c.seq, node_record_head.c.hash)).one()
        return row.seq, row.hash

    assert four_records.run_blocking(head) == (4, chain[-1].hash)


def test_editing_a_field_breaks_the_chain_at_that_record(four_records: Database) -> None:
    """Changing one field of record 2 makes verification fail at seq 2."""
    _execute(
        four_records,
        update(node_records).where(node_records.c.seq == 2).values(status="refused"),
    )
    assert _verify(four_records) == 2


def test_editing_a_field_with_raw_sql_is_detected(four_records: Database) -> None:
    """A raw SQL UPDATE of the person of record 3 is detected at seq 3."""
    _execute(
        four_records,
        text("UPDATE provision_record SET person = '999999999999999' WHERE seq = 3"),
    )
    assert _verify(four_records) == 3


def test_clearing_the_non_disclosure_flag_is_detected(four_records: Database) -> None:
    """Turning off the 不開示 flag of record 4 breaks the chain at seq 4."""
    _execute(
        four_records,
        update(node_records).where(node_records.c.seq == 4).values(non_disclosure=False),
    )
    assert _verify(four_records) == 4


def test_changing_the_recorded_time_is_detected(four_records: Database) -> None:
    """Moving record 1's time by a second breaks the chain at seq 1."""
    _execute(
        four_records,
        update(node_records)
        .where(node_records.c.seq == 1)
        .values(recorded_at=START + timedelta(seconds=1)),
    )
    assert _verify(four_records) == 1


def test_deleting_a_middle_record_breaks_the_chain_there(four_records: Database) -> None:
    """Removing record 2 makes verification fail at seq 2."""
    _execute(four_records, delete(node_records).where(node_records.c.seq == 2))
    assert _verify(four_records) == 2


def test_deleting_the_last_record_is_caught_by_the_head_row(four_records: Database) -> None:
    """Removing the newest record leaves the head row pointing past the end: seq 4 breaks."""
    _execute(four_records, delete(node_records).where(node_records.c.seq == 4))
    assert _verify(four_records) == 4


def test_deleting_every_record_is_caught_by_the_head_row(four_records: Database) -> None:
    """An emptied table with a head row left behind breaks at seq 1."""
    _execute(four_records, delete(node_records))
    assert _verify(four_records) == 1


def test_changing_a_hash_breaks_the_chain_at_that_record(four_records: Database) -> None:
    """Overwriting record 3's hash makes verification fail at seq 3."""
    _execute(
        four_records,
        update(node_records).where(node_records.c.seq == 3).values(hash="f" * 64),
    )
    assert _verify(four_records) == 3


def test_rewriting_a_record_and_its_hash_breaks_at_the_next_one(four_records: Database) -> None:
    """A record re-hashed after an edit no longer matches its successor's prev_hash."""

    def rewrite(connection: Connection) -> None:
        row = connection.execute(select(node_records).where(node_records.c.seq == 2)).one()
        forged = _entry(2, status="refused")
        connection.execute(
            update(node_records)
            .where(node_records.c.seq == 2)
            .values(status="refused", hash=chain_hash(row.prev_hash, 2, row.recorded_at, forged))
        )

    four_records.run_blocking(rewrite)
    assert _verify(four_records) == 3


def test_changing_the_head_row_is_detected(four_records: Database) -> None:
    """A head row whose hash is not the last record's hash is reported after the last seq."""
    _execute(four_records, update(node_record_head).values(hash="0" * 64))
    assert _verify(four_records) == 5


def test_count_records_counts_every_record(four_records: Database) -> None:
    """count_records gives the number of records held."""
    assert four_records.run_blocking(count_records, node_records) == 4


def test_records_of_transaction_returns_only_that_transaction_in_order(node_db: Database) -> None:
    """Only the records of one 処理通番 come back, oldest first, as plain dictionaries."""
    first, second = "20260101000000000001", "20260101000000000002"
    _append(node_db, START, [_entry(1, first, event="query")])
    _append(node_db, START, [_entry(2, second)])
    _append(
        node_db,
        START + timedelta(seconds=5),
        [_entry(1, first, event="provision", status="provided", non_disclosure=True)],
    )
    records = node_db.run_blocking(records_of_transaction, node_records, first)
    assert [(r["seq"], r["event"], r["status"]) for r in records] == [
        (1, "query", "accepted"),
        (3, "provision", "provided"),
    ]
    assert all(isinstance(r, dict) for r in records)
    assert records[1]["recorded_at"] == START + timedelta(seconds=5)
    assert records[1]["non_disclosure"] is True
    assert records[0]["requester"] == MEGURO
    assert node_db.run_blocking(records_of_transaction, node_records, "nope") == []
