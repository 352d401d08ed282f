"""副本 files: parsing, per-entry checks, batches, the back-office API, the watched folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import pytest_twisted
from lxml import etree
from sqlalchemy import select
from twisted.web.http_headers import Headers

from adapters.care_insurance import replica_file
from adapters.care_insurance.replica_file import (
    RESULT_SCHEMA,
    ReplicaInbox,
    build_replica_file,
    check_registration,
    import_replica_file,
    read_replica_file,
    refused_codes,
)
from codes.catalogue import Catalogue, default_catalogue
from codes.errors import RenkeiError
from middleware.config import BackOfficeSystem
from middleware.replica import MAX_RECORD_BYTES, ReplicaRecord
from middleware.storage import Database, migrate
from middleware.store import NodeStore
from middleware.tables import replica_record
from tests.network import CARE_INSURANCE, HANAKO_MEGURO, ICHIRO_MEGURO, MEGURO, register

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"
NOW = datetime(2026, 4, 1, 1, 0, 0, tzinfo=UTC)
CARE = "TM00000000000004"
LOCAL_TAX = "TM00000000000002"
UNKNOWN_PERSON = "000000000099999"
# A value that must never appear in a result file (items are personal information).
SECRET = "0009876543"
GOOD_ITEMS = {"TK00000401010001": SECRET, "TK00000401010003": "2024-04-01"}
# Meguro's demo record (simulators/data/demo.json).
DEMO_RECORD = "MEG-KAIGO-0101-0001"

_RESULT_SCHEMA = etree.XMLSchema(etree.parse(str(RESULT_SCHEMA)))


# -- building files ----------------------------------------------------------------------


def entry(
    record_id: str,
    person: str = HANAKO_MEGURO,
    information_name: str = CARE,
    data_set: str = "0101",
    items: dict[str, str] | None = None,
    publication_date: str = "",
    published_end_date: str = "",
    extra: str = "",
) -> str:
    """One InformationOfSPIRegistrationDelete element."""
    item_xml = "".join(
        f"<Item code={quoteattr(code)}>{escape(value)}</Item>"
        for code, value in (GOOD_ITEMS if items is None else items).items()
    )
    return (
        "<InformationOfSPIRegistrationDelete>"
        f"<RecordIdentificationNumber>{record_id}</RecordIdentificationNumber>"
        f"<IntegratedAddressNumber>{person}</IntegratedAddressNumber>"
        f"<SpecificPersonalInformationCode>{information_name}</SpecificPersonalInformationCode>"
        f"<DataSetIdentificationItemCode>{data_set}</DataSetIdentificationItemCode>"
        f"{extra}"
        "<DataSetRecordKey>KEY-1</DataSetRecordKey>"
        "<SPIMajorVersion>1</SPIMajorVersion>"
        "<ParentDataSetRecordKey/>"
        f"<PublicationDate>{escape(publication_date)}</PublicationDate>"
        f"<PublishedEndDate>{escape(published_end_date)}</PublishedEndDate>"
        "<AdministrativeRegionCode>105</AdministrativeRegionCode>"
        f"<DuplicateCopyData>{item_xml}</DuplicateCopyData>"
        "</InformationOfSPIRegistrationDelete>"
    )


def replica_document(
    *entries: str,
    segment: str = "1",
    mode: str = "0",
    destination: str = MEGURO,
    reception: str = "RCPT-0001",
    result: str = "",
) -> bytes:
    """A whole 副本 file around ``entries``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<SPIRegistrationDeleteList>"
        "<MessageHeader>"
        "<MSGID>MSG-1</MSGID>"
        "<MSGTypeID>IF_DBM_20113_R01</MSGTypeID>"
        f"<MSGMode>{mode}</MSGMode>"
        f"<SourceSystemID>{CARE_INSURANCE}</SourceSystemID>"
        f"<DestinationSystemID>{destination}</DestinationSystemID>"
        f"<ReceptionNumber>{reception}</ReceptionNumber>"
        f"<MSGResult>{result}</MSGResult>"
        "</MessageHeader>"
        f"<SegmentOfRegistrationDelete>{segment}</SegmentOfRegistrationDelete>"
        + "".join(entries)
        + "</SPIRegistrationDeleteList>\n"
    ).encode()


@dataclass
class Result:
    """A result file, read back after checking it against its schema."""

    header: dict[str, str]
    file_error: str | None
    summary: tuple[int, int, int]
    entries: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    text: str = ""

    def codes(self) -> dict[str, str | None]:
        """Record id → error code (None when applied); the last entry of an id wins."""
        return {record_id: code for _, record_id, _, code in self.entries}

    def statuses(self) -> list[str]:
        return [status for _, _, status, _ in self.entries]


def _child(element: etree._Element, path: str) -> etree._Element:
    found = element.find(path)
    assert found is not None, path
    return found


def _text_of(element: etree._Element, path: str) -> str:
    return _child(element, path).text or ""


def read_result(document: bytes) -> Result:
    root = etree.fromstring(document)
    assert _RESULT_SCHEMA.validate(root), _RESULT_SCHEMA.error_log
    header = {str(child.tag): child.text or "" for child in _child(root, "MessageHeader")}
    error = root.find("FileError/ErrorCode")
    summary = _child(root, "Summary")
    result = Result(
        header=header,
        file_error=None if error is None else error.text,
        summary=(
            int(_text_of(summary, "Entries")),
            int(_text_of(summary, "Applied")),
            int(_text_of(summary, "Refused")),
        ),
        text=document.decode(),
    )
    for element in root.iterfind("ResultOfSPIRegistrationDelete"):
        code = element.find("ErrorCode")
        result.entries.append(
            (
                int(_text_of(element, "EntryNumber")),
                _text_of(element, "RecordIdentificationNumber"),
                _text_of(element, "Status"),
                None if code is None else code.text,
            )
        )
    return result


def stored_rows(database: Database) -> dict[str, Any]:
    """Every stored replica record by record id."""
    rows = database.run_blocking(
        lambda connection: connection.execute(select(replica_record)).all()
    )
    return {row.record_id: row for row in rows}


# -- a node without a network: the catalogue, a real database, a fixed clock ------------


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    """The packaged data standard layout."""
    return default_catalogue()


def fake_node(url: str, catalogue: Catalogue) -> Any:
    """Meguro's node as import_replica_file sees it, on a migrated database at ``url``."""
    from twisted.internet import reactor

    migrate(url, NODE_MIGRATIONS)
    database = Database(reactor, url)
    database.start()
    for person in (HANAKO_MEGURO, ICHIRO_MEGURO):
        database.run_blocking(register, person, NOW)
    systems = {CARE_INSURANCE: BackOfficeSystem(CARE_INSURANCE, (), (CARE,))}
    return SimpleNamespace(
        code=MEGURO,
        catalogue=catalogue,
        institution=SimpleNamespace(code=MEGURO, provides=(CARE,), system=systems.get),
        database=database,
        store=NodeStore(database, MEGURO),
        now=lambda: NOW,
        clock=reactor,
    )


@pytest.fixture
def node(tmp_path: Path, catalogue: Catalogue) -> Iterator[Any]:
    """Meguro's node without a network (SQLite), with Hanako and Ichiro registered."""
    made = fake_node(f"sqlite:///{tmp_path / 'meguro.sqlite'}", catalogue)
    yield made
    made.database.stop()


async def run(node: Any, document: bytes) -> Result:
    return read_result(await import_replica_file(node, document))


def refused_file(document: bytes, code: str) -> None:
    """Reading ``document`` refuses the whole file with ``code``."""
    with pytest.raises(RenkeiError) as caught:
        read_replica_file(document, MEGURO)
    assert caught.value.code == code


# -- the whole file ----------------------------------------------------------------------


def test_valid_file_is_read_with_its_header_and_entries() -> None:
    """A valid file gives its header, its operation and its entries with empty fields as None."""
    read = read_replica_file(
        replica_document(entry("R1", publication_date="2024-04-01"), entry("R2", items={})),
        MEGURO,
    )
    assert read.header.reception_number == "RCPT-0001"
    assert read.header.source_system_id == CARE_INSURANCE
    assert read.segment == "1"
    first, second = read.entries
    assert (first.number, first.record_id, first.data_set) == (1, "R1", "0101")
    assert first.items == GOOD_ITEMS
    assert first.publication_date == "2024-04-01"
    assert first.published_end_date is None
    assert first.parent_record_key is None
    assert first.data_set_record_key == "KEY-1"
    assert (second.number, second.items) == (2, {})


def test_entity_expansion_refuses_the_whole_file() -> None:
    """A billion-laughs DOCTYPE is refused by the hardened parser (XmlDoctypeForbidden)."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<SPIRegistrationDeleteList>&lol2;</SPIRegistrationDeleteList>"
    )
    refused_file(bomb, "XmlDoctypeForbidden")


def test_external_entity_refuses_the_whole_file() -> None:
    """An external entity (XXE) is refused before anything is read (XmlDoctypeForbidden)."""
    xxe = replica_document(entry("R1")).replace(
        b"<SPIRegistrationDeleteList>",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><SPIRegistrationDeleteList>',
        1,
    )
    refused_file(xxe, "XmlDoctypeForbidden")


def test_malformed_xml_refuses_the_whole_file() -> None:
    """A file that is not well-formed XML is refused (XmlMalformed)."""
    refused_file(replica_document(entry("R1"))[:-40], "XmlMalformed")


def test_another_root_element_refuses_the_whole_file() -> None:
    """A well-formed document that is not a SPIRegistrationDeleteList is ReplicaFileInvalid."""
    refused_file(b"<RecordList/>", "ReplicaFileInvalid")


@pytest.mark.parametrize(
    ("why", "document"),
    [
        ("no entry", replica_document()),
        ("operation 3", replica_document(entry("R1"), segment="3")),
        ("mode 2", replica_document(entry("R1"), mode="2")),
        ("MSGResult filled in", replica_document(entry("R1"), result="0")),
        ("record id too long", replica_document(entry("R" * 33))),
        ("information name malformed", replica_document(entry("R1", information_name="TM4"))),
        ("data set malformed", replica_document(entry("R1", data_set="01"))),
        ("item code malformed", replica_document(entry("R1", items={"KAIGO": "1"}))),
        ("individual number", replica_document(entry("R1", extra="<KojinNo>1</KojinNo>"))),
        (
            "item twice",
            replica_document(
                entry("R1").replace(
                    "</DuplicateCopyData>",
                    '<Item code="TK00000401010001">1</Item></DuplicateCopyData>',
                )
            ),
        ),
    ],
)
def test_file_not_conforming_to_the_schema_is_refused_whole(why: str, document: bytes) -> None:
    """A file that breaks the schema is refused as a whole with ReplicaFileInvalid."""
    refused_file(document, "ReplicaFileInvalid")


def test_schema_refusal_does_not_repeat_the_offending_value() -> None:
    """The schema error names the element and the rule but never the value it refused."""
    with pytest.raises(RenkeiError) as caught:
        read_replica_file(replica_document(entry("R1", person="12345X789")), MEGURO)
    assert "IntegratedAddressNumber" in caught.value.message_en
    assert "12345X789" not in caught.value.message_en


def test_file_addressed_to_another_institution_is_refused_whole() -> None:
    """DestinationSystemID must be this institution's code (ReplicaFileInvalid)."""
    with pytest.raises(RenkeiError) as caught:
        read_replica_file(replica_document(entry("R1"), destination="1131121000000000"), MEGURO)
    assert caught.value.code == "ReplicaFileInvalid"
    assert "1131121000000000" in caught.value.message_en


def test_file_without_a_destination_is_taken_by_the_node_that_receives_it() -> None:
    """An empty DestinationSystemID is accepted: the file is for whichever node gets it."""
    read = read_replica_file(replica_document(entry("R1"), destination=""), MEGURO)
    assert read.header.destination_system_id == ""


def test_file_larger_than_the_limit_is_refused_before_parsing() -> None:
    """A file over MAX_FILE_BYTES is refused with XmlTooLarge."""
    refused_file(b" " * (replica_file.MAX_FILE_BYTES + 1), "XmlTooLarge")


# -- each entry (pure) -------------------------------------------------------------------


def _entry_refusal(catalogue: Catalogue, xml: str) -> str:
    (read,) = read_replica_file(replica_document(xml), MEGURO).entries
    with pytest.raises(RenkeiError) as caught:
        check_registration(read, catalogue, (CARE,))
    assert SECRET not in caught.value.message_en + caught.value.message_ja
    return caught.value.code


@pytest.mark.parametrize(
    ("why", "xml", "code"),
    [
        (
            "unknown information name",
            entry("R1", information_name="TM00000000999999"),
            "UnknownInformationName",
        ),
        (
            "not provided here",
            entry("R1", information_name=LOCAL_TAX, items={"TK00000201010001": "2026"}),
            "NotAProviderOf",
        ),
        ("data set not of the information name", entry("R1", data_set="0999"), "UnknownDataSet"),
        ("unknown item", entry("R1", items={"TK00000401019999": SECRET}), "UnknownItem"),
        (
            "item of another data set",
            entry("R1", items={"TK00000401020002": "施設"}),
            "UnknownItem",
        ),
        ("bad item value", entry("R1", items={"TK00000401010003": SECRET}), "InvalidItemValue"),
        ("not a date", entry("R1", publication_date="2024/04/01"), "ReplicaDatesInvalid"),
        ("no such day", entry("R1", published_end_date="2024-02-30"), "ReplicaDatesInvalid"),
        (
            "end before start",
            entry("R1", publication_date="2024-04-02", published_end_date="2024-04-01"),
            "ReplicaDatesInvalid",
        ),
        (
            "oversize",
            entry("R1", items={"TK00000401010001": SECRET * (MAX_RECORD_BYTES // 10 + 1)}),
            "ReplicaRecordTooLarge",
        ),
    ],
)
def test_bad_entry_is_refused_with_its_code(
    catalogue: Catalogue, why: str, xml: str, code: str
) -> None:
    """Each catalogue, date or size problem of an entry gives its own code, never the values."""
    assert _entry_refusal(catalogue, xml) == code


def test_good_entry_becomes_a_record_with_the_file_fields(catalogue: Catalogue) -> None:
    """A valid entry gives a record carrying its keys, version and publication window."""
    xml = entry("R1", publication_date="2024-04-01", published_end_date="2025-03-31")
    (read,) = read_replica_file(replica_document(xml), MEGURO).entries
    record = check_registration(read, catalogue, (CARE,))
    assert record.items == GOOD_ITEMS
    assert (record.data_set_record_key, record.major_version) == ("KEY-1", "1")
    assert record.parent_record_key is None
    assert (record.publication_date, record.published_end_date) == (
        date(2024, 4, 1),
        date(2025, 3, 31),
    )


# -- importing into a node's database ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mixed_file_stores_the_good_entries_and_refuses_the_bad_with_codes(
    node: Any,
) -> None:
    """Good entries are stored; each bad one is refused with its code; MSGResult is 1."""
    document = replica_document(
        entry("GOOD-1", publication_date="2024-04-01"),
        entry("BAD-NAME", information_name="TM00000000999999"),
        entry("BAD-ITEM", items={"TK00000401019999": SECRET}),
        entry("BAD-SET", data_set="0999"),
        entry("BAD-TAX", information_name=LOCAL_TAX, items={"TK00000201010001": "2026"}),
        entry("BAD-VALUE", items={"TK00000401010003": SECRET}),
        entry("BAD-DATE", publication_date="1 April 2024"),
        entry("BAD-END", publication_date="2024-04-02", published_end_date="2024-04-01"),
        entry("BAD-SIZE", items={"TK00000401010001": "x" * (MAX_RECORD_BYTES + 1)}),
        entry("BAD-PERSON", person=UNKNOWN_PERSON),
        entry("GOOD-2", person=ICHIRO_MEGURO, data_set="0102", items={}),
        entry("GOOD-1", data_set="0201", items={}),
    )
    result = await run(node, document)

    assert result.header["MSGResult"] == "1"
    assert result.header["ReceptionNumber"] == "RCPT-0001"
    assert result.header["SourceSystemID"] == MEGURO
    assert result.header["DestinationSystemID"] == CARE_INSURANCE
    assert result.file_error is None
    assert result.summary == (12, 2, 10)
    assert [number for number, *_ in result.entries] == list(range(1, 13))
    assert result.entries[-1] == (12, "GOOD-1", "refused", "RecordIdExists")
    assert result.codes() | {"GOOD-1": None} == {
        "GOOD-1": None,
        "BAD-NAME": "UnknownInformationName",
        "BAD-ITEM": "UnknownItem",
        "BAD-SET": "UnknownDataSet",
        "BAD-TAX": "NotAProviderOf",
        "BAD-VALUE": "InvalidItemValue",
        "BAD-DATE": "ReplicaDatesInvalid",
        "BAD-END": "ReplicaDatesInvalid",
        "BAD-SIZE": "ReplicaRecordTooLarge",
        "BAD-PERSON": "UnknownPerson",
        "GOOD-2": None,
    }
    assert SECRET not in result.text
    assert "「レコード識別番号」GOOD-1が既に存在します" in result.text
    rows = stored_rows(node.database)
    assert sorted(rows) == ["GOOD-1", "GOOD-2"]
    good = rows["GOOD-1"]
    assert json.loads(good.items) == GOOD_ITEMS
    assert good.data_set == "0101"
    assert (good.data_set_record_key, good.major_version) == ("KEY-1", "1")
    assert good.parent_record_key is None
    assert (good.publication_date, good.published_end_date) == (date(2024, 4, 1), None)


@pytest_twisted.ensureDeferred
async def test_file_of_good_entries_is_all_stored(node: Any) -> None:
    """A file whose every entry is good has MSGResult 0 and every entry stored."""
    result = await run(node, replica_document(entry("A1"), entry("A2", data_set="0102", items={})))
    assert result.header["MSGResult"] == "0"
    assert result.statuses() == ["stored", "stored"]
    assert sorted(stored_rows(node.database)) == ["A1", "A2"]


@pytest_twisted.ensureDeferred
async def test_record_id_stored_before_is_refused_as_existing(node: Any) -> None:
    """An entry whose record id is already stored gives RecordIdExists; the rest is stored."""
    await run(node, replica_document(entry("R1")))
    result = await run(node, replica_document(entry("R1", data_set="0102", items={}), entry("R2")))
    assert [(status, code) for _, _, status, code in result.entries] == [
        ("refused", "RecordIdExists"),
        ("stored", None),
    ]
    assert stored_rows(node.database)["R1"].data_set == "0101"


@pytest_twisted.ensureDeferred
async def test_record_id_twice_in_one_file_is_refused_the_second_time_across_batches(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first entry of an id is stored; a later one, even in another batch, is refused."""
    monkeypatch.setattr(replica_file, "BATCH", 2)
    result = await run(
        node,
        replica_document(entry("R1"), entry("R2"), entry("R3"), entry("R1"), entry("R3")),
    )
    assert [(rid, code) for _, rid, _, code in result.entries] == [
        ("R1", None),
        ("R2", None),
        ("R3", None),
        ("R1", "RecordIdExists"),
        ("R3", "RecordIdExists"),
    ]
    assert sorted(stored_rows(node.database)) == ["R1", "R2", "R3"]


@pytest_twisted.ensureDeferred
async def test_record_id_of_a_refused_entry_can_be_used_by_a_later_one(node: Any) -> None:
    """Only a stored entry takes its record id: a later entry may use a refused one's id."""
    result = await run(node, replica_document(entry("R1", person=UNKNOWN_PERSON), entry("R1")))
    assert [code for *_, code in result.entries] == ["UnknownPerson", None]


@pytest_twisted.ensureDeferred
async def test_deletion_file_deletes_records_and_refuses_unknown_ones(node: Any) -> None:
    """A deletion file deletes the records it names; unknown, mismatched or repeated are refused."""
    stored = replica_document(entry("R1"), entry("R2"), entry("R3", data_set="0102", items={}))
    assert (await run(node, stored)).header["MSGResult"] == "0"
    result = await run(
        node,
        replica_document(
            entry("R1"),
            entry("R2", person=ICHIRO_MEGURO),
            entry("R3", data_set="0101"),
            entry("NEVER"),
            entry("R1"),
            segment="2",
        ),
    )
    assert [(rid, status, code) for _, rid, status, code in result.entries] == [
        ("R1", "deleted", None),
        ("R2", "refused", "UnknownRecord"),
        ("R3", "refused", "UnknownRecord"),
        ("NEVER", "refused", "UnknownRecord"),
        ("R1", "refused", "UnknownRecord"),
    ]
    assert result.header["MSGResult"] == "1"
    assert sorted(stored_rows(node.database)) == ["R2", "R3"]


@pytest_twisted.ensureDeferred
async def test_test_mode_checks_every_entry_and_changes_nothing(node: Any) -> None:
    """MSGMode 1 gives the same refusals, 'checked' for the others, and stores nothing."""
    result = await run(
        node,
        replica_document(entry("R1"), entry("R1"), entry("R2", person=UNKNOWN_PERSON), mode="1"),
    )
    assert [(status, code) for _, _, status, code in result.entries] == [
        ("checked", None),
        ("refused", "RecordIdExists"),
        ("refused", "UnknownPerson"),
    ]
    assert result.header["MSGMode"] == "1"
    assert stored_rows(node.database) == {}


@pytest_twisted.ensureDeferred
async def test_import_and_deletion_work_on_postgresql(
    postgresql_database: Any, catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL too, batches store, refuse duplicates and unknown persons, and delete."""
    monkeypatch.setattr(replica_file, "BATCH", 2)
    made = fake_node(postgresql_database(), catalogue)
    try:
        result = await run(
            made,
            replica_document(
                entry("P1", publication_date="2026-04-01", published_end_date="2027-03-31"),
                entry("P2", person=UNKNOWN_PERSON),
                entry("P3"),
                entry("P1"),
            ),
        )
        assert [code for *_, code in result.entries] == [
            None,
            "UnknownPerson",
            None,
            "RecordIdExists",
        ]
        rows = stored_rows(made.database)
        assert sorted(rows) == ["P1", "P3"]
        assert rows["P1"].published_end_date == date(2027, 3, 31)
        deleted = await run(made, replica_document(entry("P1"), entry("P9"), segment="2"))
        assert [code for *_, code in deleted.entries] == [None, "UnknownRecord"]
        assert sorted(stored_rows(made.database)) == ["P3"]
    finally:
        made.database.stop()


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (b'<!DOCTYPE a [<!ENTITY b "c">]><SPIRegistrationDeleteList/>', "XmlDoctypeForbidden"),
        (b"<SPIRegistrationDeleteList>", "XmlMalformed"),
        (replica_document(entry("R1"), entry("R" * 40)), "ReplicaFileInvalid"),
        (replica_document(entry("R1"), destination="1131121000000000"), "ReplicaFileInvalid"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refused_file_stores_nothing_and_answers_msgresult_9(
    node: Any, document: bytes, code: str
) -> None:
    """A file refused as a whole stores no entry and its result carries MSGResult 9 and the code."""
    result = await run(node, document)
    assert result.header["MSGResult"] == "9"
    assert result.file_error == code
    assert result.entries == []
    assert stored_rows(node.database) == {}


@pytest_twisted.ensureDeferred
async def test_result_of_a_schema_invalid_file_echoes_only_well_formed_header_fields(
    node: Any,
) -> None:
    """A schema-invalid file's result echoes its ReceptionNumber but not a malformed field."""
    document = replica_document(entry("R1"), mode="7", reception="RCPT-9").replace(
        b"<MSGID>MSG-1</MSGID>", b"<MSGID>123456789018 Hanako</MSGID>"
    )
    result = await run(node, document)
    assert result.file_error == "ReplicaFileInvalid"
    assert result.header["ReceptionNumber"] == "RCPT-9"
    assert (result.header["MSGMode"], result.header["MSGID"]) == ("", "")
    assert "Hanako" not in result.text


BUILT = (
    ReplicaRecord(
        record_id="B1",
        integrated_address_number=HANAKO_MEGURO,
        information_name=CARE,
        data_set="0101",
        items=GOOD_ITEMS,
        suppressed=True,
        data_set_record_key="K1",
        major_version="2",
        parent_record_key="P1",
        publication_date=date(2026, 4, 1),
        published_end_date=date(2027, 3, 31),
    ),
    ReplicaRecord(
        record_id="B2",
        integrated_address_number=ICHIRO_MEGURO,
        information_name=CARE,
        data_set="0102",
        items={"TK00000401020002": '施設 <&> "名"'},
    ),
)


def test_built_file_reads_back_as_the_same_records(catalogue: Catalogue) -> None:
    """build_replica_file writes every field, suppression included, and reads back unchanged."""
    document = build_replica_file(BUILT, "meguro-000001", destination=MEGURO)
    read = read_replica_file(document, MEGURO)
    assert read.header.reception_number == "meguro-000001"
    assert [check_registration(e, catalogue, (CARE,)) for e in read.entries] == list(BUILT)


@pytest_twisted.ensureDeferred
async def test_built_files_register_then_delete_and_refused_codes_reads_the_results(
    node: Any,
) -> None:
    """Files built for registration and deletion are applied; refused_codes lists refusals."""
    registered = await import_replica_file(node, build_replica_file(BUILT, "R-1"))
    assert refused_codes(registered) == []
    rows = stored_rows(node.database)
    assert rows["B1"].suppressed and not rows["B2"].suppressed
    again = await import_replica_file(node, build_replica_file(BUILT, "R-2"))
    assert refused_codes(again) == ["RecordIdExists", "RecordIdExists"]
    deleted = await import_replica_file(node, build_replica_file(BUILT, "R-3", deletion=True))
    assert read_result(deleted).statuses() == ["deleted", "deleted"]
    assert stored_rows(node.database) == {}
    assert refused_codes(await import_replica_file(node, b"<x/>")) == ["ReplicaFileInvalid"]


def test_entries_are_written_as_a_file_carries_them_a_day_that_does_not_exist_too() -> None:
    """build_replica_file writes an Entry's values unchecked: a publication date that is no
    day reads back as written, and its registration is then refused ReplicaDatesInvalid."""
    written = replica_file.Entry(
        number=1,
        record_id="E1",
        integrated_address_number=HANAKO_MEGURO,
        information_name=CARE,
        data_set="0101",
        data_set_record_key=None,
        major_version=None,
        parent_record_key=None,
        publication_date="2026-02-30",
        published_end_date=None,
        suppressed=True,
        items={"TK00000401010001": "0001310501"},
    )
    (read,) = read_replica_file(build_replica_file([written], "R-E"), MEGURO).entries
    assert read == written
    with pytest.raises(RenkeiError) as refused:
        check_registration(read, default_catalogue(), (CARE,))
    assert refused.value.code == "ReplicaDatesInvalid"


@pytest_twisted.ensureDeferred
async def test_result_file_is_read_entry_by_entry_and_a_nonconforming_one_is_refused(
    node: Any,
) -> None:
    """read_result_file gives MSGResult and each entry's number, id, status and code, or the
    whole file's code; a document that is not a result file is refused ReplicaFileInvalid."""
    document = build_replica_file([BUILT[0], BUILT[0]], "R-4")
    result = replica_file.read_result_file(await import_replica_file(node, document))
    assert result.message_result == "1" and result.file_error is None
    assert result.entries == (
        (1, "B1", "stored", None),
        (2, "B1", "refused", "RecordIdExists"),
    )
    refused = replica_file.read_result_file(await import_replica_file(node, b"<x/>"))
    assert (refused.message_result, refused.file_error, refused.entries) == (
        "9",
        "ReplicaFileInvalid",
        (),
    )
    with pytest.raises(RenkeiError) as not_a_result:
        replica_file.read_result_file(document)
    assert not_a_result.value.code == "ReplicaFileInvalid"


# -- the watched folder (without a network) ----------------------------------------------


async def wait_for(path: Path, timeout: float = 20.0) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    waited = 0.0
    while not path.exists():
        assert waited < timeout, f"{path} never appeared"
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_file_left_in_the_folder_is_imported_again_after_a_restart(
    node: Any, tmp_path: Path
) -> None:
    """A file processed again (as after a crash) shows its stored records as RecordIdExists."""
    from twisted.internet import reactor

    inbox = ReplicaInbox(node, tmp_path / "inbox", reactor, interval=0.05)
    inbox.startService()
    try:
        (tmp_path / "inbox" / "a.xml").write_bytes(replica_document(entry("R1")))
        await wait_for(tmp_path / "inbox" / "done" / "a.xml")
        # The same file again under the same name: a numbered result, duplicates refused.
        (tmp_path / "inbox" / "a.xml").write_bytes(replica_document(entry("R1")))
        await wait_for(tmp_path / "inbox" / "done" / "a.2.xml")
    finally:
        await inbox.stopService()
    first = read_result((tmp_path / "inbox" / "results" / "a.result.xml").read_bytes())
    again = read_result((tmp_path / "inbox" / "results" / "a.2.result.xml").read_bytes())
    assert first.statuses() == ["stored"]
    assert [code for *_, code in again.entries] == ["RecordIdExists"]


@pytest_twisted.ensureDeferred
async def test_stopping_the_folder_waits_for_the_file_being_imported(
    node: Any, tmp_path: Path
) -> None:
    """stopService fires only once the file in progress has its result and has moved."""
    from twisted.internet import reactor

    inbox = ReplicaInbox(node, tmp_path / "inbox", reactor, interval=30)
    (tmp_path / "inbox").mkdir()
    many = [entry(f"R{n:05d}") for n in range(3000)]
    (tmp_path / "inbox" / "big.xml").write_bytes(replica_document(*many))
    inbox.startService()  # scans at once
    await inbox.stopService()
    assert (tmp_path / "inbox" / "results" / "big.result.xml").exists()
    assert (tmp_path / "inbox" / "done" / "big.xml").exists()
    assert len(stored_rows(node.database)) == 3000


# -- over the network: the back-office API and a running box -----------------------------


async def post_file(box: Any, document: bytes) -> tuple[int, bytes, list[bytes]]:
    """POST /replica-files as Meguro's care-insurance system (its own mTLS client)."""
    from twisted.internet import reactor

    from adapters.network_link import host_and_port
    from crypto.pki import PkiLayout, load_certificate, server_name_of_institution
    from crypto.tls import ClientTLSPolicy, make_http_client

    institution = box.config.institution("meguro")
    layout = PkiLayout(box.config.pki)
    policy = ClientTLSPolicy(
        [load_certificate(layout.ca().certificate)],
        layout.back_office_client(institution.code, CARE_INSURANCE).load(),
    )
    host, port = host_and_port(institution.back_office_address)
    policy.expect(host, port, server_name_of_institution(institution.code))
    http = make_http_client(reactor, policy)
    try:
        response = await http.request(
            "POST",
            institution.back_office_address + "/replica-files",
            data=document,
            headers=Headers({b"Content-Type": [b"application/xml"]}),
        )
        body = await response.content()
        return response.code, body, response.headers.getRawHeaders(b"content-type") or []
    finally:
        await http.close()


@pytest_twisted.ensureDeferred
async def test_posted_file_is_imported_and_answered_with_its_result_file(box: Any) -> None:
    """POST /replica-files stores the good entries and answers 200 with the XML result file."""
    document = replica_document(
        entry("HTTP-1"),
        entry("HTTP-2", person=UNKNOWN_PERSON),
        entry("HTTP-3", items={"TK00000401019999": "1"}),
        entry(DEMO_RECORD),
    )
    status, body, content_type = await post_file(box, document)
    assert status == 200
    assert content_type == [b"application/xml; charset=utf-8"]
    result = read_result(body)
    assert result.header["MSGResult"] == "1"
    assert result.codes() == {
        "HTTP-1": None,
        "HTTP-2": "UnknownPerson",
        "HTTP-3": "UnknownItem",
        DEMO_RECORD: "RecordIdExists",
    }
    rows = stored_rows(box.nodes["meguro"].database)
    assert "HTTP-1" in rows and "HTTP-2" not in rows and "HTTP-3" not in rows


@pytest_twisted.ensureDeferred
async def test_posted_hostile_file_is_refused_whole_and_stores_nothing(box: Any) -> None:
    """An entity-expansion file posted is answered 400 with its result file, MSGResult 9
    XmlDoctypeForbidden; a schema-invalid one 400 ReplicaFileInvalid."""
    bomb = replica_document(entry("HOSTILE-1")).replace(
        b"<SPIRegistrationDeleteList>",
        b'<!DOCTYPE l [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b"<SPIRegistrationDeleteList>",
        1,
    )
    status, body, _ = await post_file(box, bomb)
    result = read_result(body)
    assert (status, result.header["MSGResult"], result.file_error) == (
        400,
        "9",
        "XmlDoctypeForbidden",
    )
    status, body, _ = await post_file(box, replica_document(entry("HOSTILE-2", data_set="X")))
    assert (status, read_result(body).file_error) == (400, "ReplicaFileInvalid")
    rows = stored_rows(box.nodes["meguro"].database)
    assert "HOSTILE-1" not in rows and "HOSTILE-2" not in rows


@pytest_twisted.ensureDeferred
async def test_posted_deletion_file_deletes_a_stored_record(box: Any) -> None:
    """A deletion file naming the demo record deletes it; naming it again is UnknownRecord."""
    deletion = replica_document(entry(DEMO_RECORD), segment="2")
    _, body, _ = await post_file(box, deletion)
    assert read_result(body).statuses() == ["deleted"]
    assert DEMO_RECORD not in stored_rows(box.nodes["meguro"].database)
    _, body, _ = await post_file(box, deletion)
    assert read_result(body).codes() == {DEMO_RECORD: "UnknownRecord"}


@pytest_twisted.ensureDeferred
async def test_watched_folder_imports_a_dropped_file_writes_its_result_and_moves_it(
    box: Any, tmp_path: Path
) -> None:
    """A complete file dropped in the folder is imported, answered in results/, moved to done/;
    a file refused whole goes to failed/ and a file still being written is left alone."""
    from twisted.internet import reactor

    folder = tmp_path / "replica-inbox"
    inbox = ReplicaInbox(box.nodes["meguro"], folder, reactor, interval=0.05)
    inbox.startService()
    try:
        for name in ("results", "done", "failed"):
            assert (folder / name).is_dir()
        (folder / "late.xml.part").write_bytes(replica_document(entry("INBOX-LATE")))
        (folder / ".hidden.xml").write_bytes(replica_document(entry("INBOX-HIDDEN")))
        part = folder / "batch-1.xml.part"
        part.write_bytes(replica_document(entry("INBOX-1"), entry("INBOX-2", data_set="0999")))
        part.rename(folder / "batch-1.xml")
        (folder / "broken.xml").write_bytes(b"<SPIRegistrationDeleteList>")
        await wait_for(folder / "done" / "batch-1.xml")
        await wait_for(folder / "failed" / "broken.xml")
    finally:
        await inbox.stopService()

    result = read_result((folder / "results" / "batch-1.result.xml").read_bytes())
    assert result.codes() == {"INBOX-1": None, "INBOX-2": "UnknownDataSet"}
    broken = read_result((folder / "results" / "broken.result.xml").read_bytes())
    assert (broken.header["MSGResult"], broken.file_error) == ("9", "XmlMalformed")
    assert not (folder / "batch-1.xml").exists()
    assert (folder / "late.xml.part").exists() and (folder / ".hidden.xml").exists()
    assert not list((folder / "results").glob(".*"))  # no temporary file left behind
    rows = stored_rows(box.nodes["meguro"].database)
    assert "INBOX-1" in rows
    assert "INBOX-LATE" not in rows and "INBOX-HIDDEN" not in rows
