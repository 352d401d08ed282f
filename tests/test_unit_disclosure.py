"""Which records a person is shown (middleware/disclosure.py): a transaction marked 不開示 at
any of a party's records is withheld whole, and the records shown name nobody."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from middleware.disclosure import records_of_persons, withhold_non_disclosed
from middleware.records import RecordEntry, append_records
from middleware.tables import node_metadata, node_record_head, node_records

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def _row(number: str | None, hidden: bool, seq: int = 1) -> dict[str, Any]:
    return {"seq": seq, "transaction_number": number, "non_disclosure": hidden}


def test_a_transaction_with_one_marked_record_is_withheld_whole() -> None:
    """Both records of a transaction go when one is marked; other transactions stay."""
    rows = [_row("T1", False, 1), _row("T1", True, 2), _row("T2", False, 3)]
    assert [row["seq"] for row in withhold_non_disclosed(rows)] == [3]


def test_a_record_of_no_transaction_goes_only_when_marked_itself() -> None:
    """Records without a 処理通番 are judged one by one."""
    rows = [_row(None, True, 1), _row(None, False, 2)]
    assert [row["seq"] for row in withhold_non_disclosed(rows)] == [2]


def _entry(number: str, person: str | None, hidden: bool = False) -> RecordEntry:
    return RecordEntry(
        event="provision" if person is None else "query",
        status="provided",
        transaction_number=number,
        requester="1131130000000000",
        provider="1131105000000000",
        information_name="TM00000000000004",
        person=person,
        non_disclosure=hidden,
    )


def test_a_persons_records_come_with_their_transactions_without_their_name(
    tmp_path: Path,
) -> None:
    """The records of the person's transactions are found through the records naming the
    person (a provision record of the same transaction without a person comes too), another
    person's are not, a marked transaction is left out, and only the newest are given with
    ``truncated`` when there are more than the limit."""
    engine = create_engine(f"sqlite:///{tmp_path / 'records.sqlite'}")
    node_metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(node_record_head.insert().values(id=1, seq=0, hash="0" * 64))
        append_records(
            connection,
            node_records,
            node_record_head,
            NOW,
            [
                _entry("20261207000000000001", "000000000010001"),
                _entry("20261207000000000001", None),
                _entry("20261207000000000002", "000000000010002"),
                _entry("20261207000000000003", "000000000010001", hidden=True),
                _entry("20261207000000000004", "000000000010001"),
            ],
        )
        shown, truncated = records_of_persons(connection, node_records, ["000000000010001"])
        assert [(r.seq, r.transaction_number) for r in shown] == [
            (1, "20261207000000000001"),
            (2, "20261207000000000001"),
            (5, "20261207000000000004"),
        ]
        assert not truncated
        assert all(not hasattr(record, "person") for record in shown)
        newest, truncated = records_of_persons(
            connection, node_records, ["000000000010001"], limit=2
        )
        assert [r.seq for r in newest] == [2, 5] and truncated
    engine.dispose()
