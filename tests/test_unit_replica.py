"""Unit tests for middleware.replica: validating and storing 副本 records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.interfaces import IReactorThreads

from codes.catalogue import Catalogue, default_catalogue
from codes.errors import RenkeiError
from middleware.replica import (
    MAX_RECORD_BYTES,
    RecordKey,
    ReplicaRecord,
    delete,
    delete_batch,
    records_of,
    store,
    store_batch,
    today_in_japan,
    validate,
)
from middleware.storage import Database, migrate
from tests.network import register

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


def test_record_larger_than_the_limit_is_refused(catalogue: Catalogue) -> None:
    """Items over MAX_RECORD_BYTES give ReplicaRecordTooLarge before any catalogue check."""
    record = replace(RECORD, items={"TK00000401019999": "x" * MAX_RECORD_BYTES})
    refusal = _invalid(record, catalogue)
    assert refusal.code == "ReplicaRecordTooLarge"
    assert refusal.status == 413


def test_publication_window_ending_before_it_starts_is_refused(catalogue: Catalogue) -> None:
    """A PublishedEndDate before the PublicationDate gives ReplicaDatesInvalid."""
    record = replace(
        RECORD, publication_date=date(2026, 4, 1), published_end_date=date(2026, 3, 31)
    )
    refusal = _invalid(record, catalogue)
    assert refusal.code == "ReplicaDatesInvalid"
    assert "R0001" in refusal.message_en


def test_one_day_publication_window_passes_validation(catalogue: Catalogue) -> None:
    """A window that starts and ends on the same day is valid (both days are included)."""
    validate(
        replace(RECORD, publication_date=date(2026, 4, 1), published_end_date=date(2026, 4, 1)),
        catalogue,
        PROVIDES,
    )


def test_file_fields_are_stored_and_read_back(node_db: Database) -> None:
    """The 副本 file's extra fields (keys, version, publication window) come back as stored."""
    record = replace(
        RECORD,
        data_set_record_key="K-1",
        parent_record_key="P-1",
        major_version="2",
        publication_date=date(2026, 1, 1),
        published_end_date=date(2026, 12, 31),
    )
    node_db.run_blocking(store, record, NOW)
    assert node_db.run_blocking(records_of, ALICE, CARE) == [record]


def test_records_outside_their_publication_window_are_not_provided(node_db: Database) -> None:
    """With today given, records_of leaves out records not yet published or no longer."""
    window = [
        replace(RECORD, record_id="OPEN"),
        replace(RECORD, record_id="FUTURE", publication_date=date(2026, 4, 2)),
        replace(RECORD, record_id="ENDED", published_end_date=date(2026, 3, 31)),
        replace(RECORD, record_id="STARTS", publication_date=date(2026, 4, 1)),
        replace(RECORD, record_id="ENDS", published_end_date=date(2026, 4, 1)),
        replace(
            RECORD,
            record_id="INSIDE",
            publication_date=date(2026, 1, 1),
            published_end_date=date(2026, 12, 31),
        ),
    ]
    for record in window:
        node_db.run_blocking(store, record, NOW)
    today = date(2026, 4, 1)
    found = node_db.run_blocking(records_of, ALICE, CARE, today)
    assert sorted(r.record_id for r in found) == ["ENDS", "INSIDE", "OPEN", "STARTS"]
    assert len(node_db.run_blocking(records_of, ALICE, CARE)) == len(window)


def test_today_is_the_day_in_japan() -> None:
    """15:00 UTC is already the next day in Japan (UTC+9)."""
    assert today_in_japan(datetime(2026, 3, 31, 15, 0, tzinfo=UTC)) == date(2026, 4, 1)
    assert today_in_japan(datetime(2026, 3, 31, 14, 59, tzinfo=UTC)) == date(2026, 3, 31)


def test_store_batch_refuses_unknown_persons_and_duplicates_and_stores_the_rest(
    node_db: Database,
) -> None:
    """One batch: unknown person, id already stored, id claimed before, id twice in the batch."""
    node_db.run_blocking(store, replace(RECORD, record_id="OLD"), NOW)
    batch = [
        replace(RECORD, record_id="A"),
        replace(RECORD, record_id="B", integrated_address_number=BOB),
        replace(RECORD, record_id="OLD"),
        replace(RECORD, record_id="CLAIMED"),
        replace(RECORD, record_id="A", data_set="0102", items={}),
        replace(RECORD, record_id="C", data_set="0102", items={}),
    ]
    outcomes = node_db.run_blocking(store_batch, batch, NOW, {"CLAIMED"})
    codes = [None if o is None else o.code for o in outcomes]
    assert codes == [
        None,
        "UnknownPerson",
        "RecordIdExists",
        "RecordIdExists",
        "RecordIdExists",
        None,
    ]
    stored = node_db.run_blocking(records_of, ALICE, CARE)
    assert sorted(r.record_id for r in stored) == ["A", "C", "OLD"]


def test_store_batch_without_writing_changes_nothing(node_db: Database) -> None:
    """write=False gives the same outcomes and stores nothing (a file's test mode)."""
    outcomes = node_db.run_blocking(store_batch, [RECORD, RECORD], NOW, write=False)
    assert [None if o is None else o.code for o in outcomes] == [None, "RecordIdExists"]
    assert node_db.run_blocking(records_of, ALICE, CARE) == []


def test_delete_batch_deletes_only_records_matching_their_key(node_db: Database) -> None:
    """A key must name an existing record of that person, information name and data set."""
    node_db.run_blocking(register, BOB, NOW)
    for record_id in ("D1", "D2", "D3"):
        node_db.run_blocking(store, replace(RECORD, record_id=record_id), NOW)
    key = RecordKey("D1", ALICE, CARE, "0101")
    keys = [
        key,
        replace(key, record_id="D2", integrated_address_number=BOB),
        replace(key, record_id="D3", data_set="0102"),
        replace(key, record_id="NONE"),
        key,
    ]
    outcomes = node_db.run_blocking(delete_batch, keys)
    codes = [None if o is None else o.code for o in outcomes]
    assert codes == [None, "UnknownRecord", "UnknownRecord", "UnknownRecord", "UnknownRecord"]
    left = node_db.run_blocking(records_of, ALICE, CARE)
    assert sorted(r.record_id for r in left) == ["D2", "D3"]


def test_many_records_are_checked_and_stored_in_one_batch(node_db: Database) -> None:
    """A batch larger than one IN list (900 ids) is checked and stored whole."""
    batch = [replace(RECORD, record_id=f"M{n:05d}") for n in range(2000)]
    outcomes = node_db.run_blocking(store_batch, batch, NOW)
    assert outcomes == [None] * 2000
    again = node_db.run_blocking(store_batch, batch[-5:], NOW)
    assert [o.code for o in again if o is not None] == ["RecordIdExists"] * 5
    assert len(node_db.run_blocking(records_of, ALICE, CARE)) == 2000
