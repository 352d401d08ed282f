"""Unit tests for middleware.replica: validating and storing 副本 records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.interfaces import IReactorThreads

from codes.catalogue import Catalogue, default_catalogue
from codes.errors import RenkeiError
from codes.fugo_store import register
from middleware.replica import ReplicaRecord, delete, records_of, store, validate
from middleware.storage import Database, migrate

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

NOW = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)
CARE = "TM00000000000004"
LOCAL_TAX = "TM00000000000002"
PROVIDES = (CARE,)
ALICE = "000000000000001"
BOB = "000000000000002"

RECORD = ReplicaRecord(
    record_id="R0001",
    integrated_address_number=ALICE,
    information_name=CARE,
    data_set="0101",
    items={
        "TK00000401010001": "0000012345",
        "TK00000401010002": "131105",
        "TK00000401010003": "2020-04-01",
    },
)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    """The packaged data standard layout."""
    return default_catalogue()


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database with Alice registered, used through run_blocking only."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    database = Database(cast(IReactorThreads, object()), url)
    database.run_blocking(register, ALICE, NOW)
    yield database
    database.stop()


def _invalid(record: ReplicaRecord, catalogue: Catalogue) -> RenkeiError:
    with pytest.raises(RenkeiError) as caught:
        validate(record, catalogue, PROVIDES)
    return caught.value


def _refusal(database: Database, work: Any, *args: Any) -> RenkeiError:
    with pytest.raises(RenkeiError) as caught:
        database.run_blocking(work, *args)
    return caught.value


def test_valid_record_passes_validation(catalogue: Catalogue) -> None:
    """A record of a provided information name with catalogue items and good values passes."""
    validate(RECORD, catalogue, PROVIDES)


def test_record_with_no_items_passes_validation(catalogue: Catalogue) -> None:
    """No item is required: a record may leave every item out."""
    validate(replace(RECORD, items={}), catalogue, PROVIDES)


def test_unknown_information_name_is_refused(catalogue: Catalogue) -> None:
    """An information name absent from the catalogue gives UnknownInformationName."""
    refusal = _invalid(replace(RECORD, information_name="TM00000000999999"), catalogue)
    assert refusal.code == "UnknownInformationName"
    assert "TM00000000999999" in refusal.message_ja


def test_information_name_not_provided_is_refused(catalogue: Catalogue) -> None:
    """A catalogue information name this institution does not provide gives NotAProviderOf."""
    record = replace(RECORD, information_name=LOCAL_TAX, items={"TK00000201010001": "2025"})
    refusal = _invalid(record, catalogue)
    assert refusal.code == "NotAProviderOf"
    assert LOCAL_TAX in refusal.message_en


def test_unknown_data_set_is_refused(catalogue: Catalogue) -> None:
    """A data set not part of the information name gives UnknownDataSet."""
    refusal = _invalid(replace(RECORD, data_set="0999"), catalogue)
    assert refusal.code == "UnknownDataSet"
    assert "0999" in refusal.message_en


def test_item_of_another_data_set_is_refused(catalogue: Catalogue) -> None:
    """An item code of data set 0102 in a record of data set 0101 gives UnknownItem."""
    refusal = _invalid(replace(RECORD, items={"TK00000401020002": "施設"}), catalogue)
    assert refusal.code == "UnknownItem"
    assert "TK00000401020002" in refusal.message_en


def test_unknown_item_is_refused(catalogue: Catalogue) -> None:
    """An item code the catalogue does not know gives UnknownItem."""
    refusal = _invalid(replace(RECORD, items={"TK00000401019999": "1"}), catalogue)
    assert refusal.code == "UnknownItem"


@pytest.mark.parametrize("value", ["2020-02-30", "2020/04/01", "20200401", "not a date"])
def test_bad_date_value_is_refused(catalogue: Catalogue, value: str) -> None:
    """A date item holding anything but a real YYYY-MM-DD date gives InvalidItemValue."""
    refusal = _invalid(replace(RECORD, items={"TK00000401010003": value}), catalogue)
    assert refusal.code == "InvalidItemValue"
    assert "TK00000401010003" in refusal.message_en
    assert value not in refusal.message_en


def test_too_long_code_value_is_refused(catalogue: Catalogue) -> None:
    """A code longer than its item's maximum length gives InvalidItemValue."""
    refusal = _invalid(replace(RECORD, items={"TK00000401010002": "1311050"}), catalogue)
    assert refusal.code == "InvalidItemValue"


@pytest.mark.parametrize("record_id", ["", "R" * 33])
def test_empty_or_too_long_record_id_is_refused(catalogue: Catalogue, record_id: str) -> None:
    """A record identification number must have 1 to 32 characters (InvalidCode)."""
    assert _invalid(replace(RECORD, record_id=record_id), catalogue).code == "InvalidCode"


def test_stored_record_is_read_back(node_db: Database) -> None:
    """A stored record comes back from records_of with the same items."""
    node_db.run_blocking(store, RECORD, NOW)
    assert node_db.run_blocking(records_of, ALICE, CARE) == [RECORD]


def test_duplicate_record_id_is_refused(node_db: Database) -> None:
    """Storing a second record under an existing record id gives RecordIdExists."""
    node_db.run_blocking(store, RECORD, NOW)
    refusal = _refusal(node_db, store, replace(RECORD, data_set="0102", items={}), NOW)
    assert refusal.code == "RecordIdExists"
    assert refusal.status == 409
    assert "「レコード識別番号」" in refusal.message_ja
    assert "R0001" in refusal.message_ja
    assert node_db.run_blocking(records_of, ALICE, CARE) == [RECORD]


def test_duplicate_record_id_of_another_person_is_refused(node_db: Database) -> None:
    """Record ids are unique across persons, not per person."""
    node_db.run_blocking(register, BOB, NOW)
    node_db.run_blocking(store, RECORD, NOW)
    refusal = _refusal(node_db, store, replace(RECORD, integrated_address_number=BOB), NOW)
    assert refusal.code == "RecordIdExists"


def test_record_of_an_unknown_person_is_refused(node_db: Database) -> None:
    """A record for a person never registered gives UnknownPerson naming the number."""
    refusal = _refusal(node_db, store, replace(RECORD, integrated_address_number=BOB), NOW)
    assert refusal.code == "UnknownPerson"
    assert BOB in refusal.message_ja
    assert node_db.run_blocking(records_of, BOB, CARE) == []


def test_delete_of_an_unknown_record_is_refused(node_db: Database) -> None:
    """Deleting a record id that does not exist gives UnknownRecord."""
    refusal = _refusal(node_db, delete, "R9999")
    assert refusal.code == "UnknownRecord"
    assert "R9999" in refusal.message_en


def test_deleted_record_is_gone_and_cannot_be_deleted_twice(node_db: Database) -> None:
    """After deletion the record is no longer read back and a second delete is refused."""
    node_db.run_blocking(store, RECORD, NOW)
    node_db.run_blocking(delete, RECORD.record_id)
    assert node_db.run_blocking(records_of, ALICE, CARE) == []
    assert _refusal(node_db, delete, RECORD.record_id).code == "UnknownRecord"


def test_records_of_orders_by_data_set_then_record_id(node_db: Database) -> None:
    """A person's records come back in data set order, then record id order."""
    node_db.run_blocking(register, BOB, NOW)
    stored = [
        replace(RECORD, record_id="R3", data_set="0201", items={"TK00000402010007": "-12"}),
        replace(RECORD, record_id="R2", data_set="0101"),
        replace(RECORD, record_id="R1", data_set="0102", items={"TK00000401020002": "目黒"}),
        replace(RECORD, record_id="R0", data_set="0101", items={}),
        replace(RECORD, record_id="B1", integrated_address_number=BOB),
    ]
    for record in stored:
        node_db.run_blocking(store, record, NOW)
    found = node_db.run_blocking(records_of, ALICE, CARE)
    assert [(r.data_set, r.record_id) for r in found] == [
        ("0101", "R0"),
        ("0101", "R2"),
        ("0102", "R1"),
        ("0201", "R3"),
    ]
    assert found[2].items == {"TK00000401020002": "目黒"}
    assert node_db.run_blocking(records_of, ALICE, LOCAL_TAX) == []
