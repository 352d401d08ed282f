"""副本 registration and deletion files: XML posted to the node or dropped in a watched folder.

An EMULATION of the file a care-insurance back office sends to its intermediate server: the
element names follow public vendor code (SOURCES.md), the rules are ours, and it is not a
confirmed J-LIS format. docs/replica-files.md describes the format, every check and its code,
the result file and the watched folder.

A file goes through three stages:

1. the whole file (`read_replica_file`), streamed: the hardened parser (``Xml*`` codes), the
   root element, the schema ``schemas/SPIRegistrationDeleteList.xsd`` (each part of the file
   validated as it is read, their order checked in Python) and the destination
   (``ReplicaFileInvalid``). A failure here refuses the whole file and nothing is stored. The
   file is never held as one tree: memory holds the entries read;
2. each entry on its own, in Python (`check_registration`): dates, size and the catalogue;
3. each entry against the database, by batches of `BATCH` entries (one transaction and one
   ``executemany`` each, see `middleware.replica.store_batch`): persons, record ids.

A refused entry is reported with its code while the good ones are applied. Parsing and
checking run on the reactor's thread pool, the batches on the node's database pool, so that
a large file never blocks the reactor.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar, cast

from lxml import etree
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from middleware import replica
from middleware.clock import periodic
from middleware.config import BackOfficeSystem, InstitutionConfig
from middleware.deferred import deferred
from middleware.hardened_xml import MAX_TREE_BYTES, iter_children, parse_xml, serialize
from middleware.node import IntermediateServer
from middleware.process_memory import release_free_memory

__all__ = [
    "ALL_APPLIED",
    "BATCH",
    "CHECKED",
    "DELETED",
    "DELETION",
    "ENTRY",
    "FILE_REFUSED",
    "MAX_DEPTH",
    "MAX_ENTRY_ELEMENTS",
    "MAX_FILE_BYTES",
    "PRODUCTION",
    "REFUSED",
    "REGISTRATION",
    "RESULT_SCHEMA",
    "ROOT",
    "SCHEMA",
    "SOME_REFUSED",
    "STORED",
    "TEST",
    "Entry",
    "EntryResult",
    "Header",
    "ImportResult",
    "ReplicaFile",
    "ReplicaInbox",
    "ResultFile",
    "build_replica_file",
    "check_registration",
    "entry_of",
    "header_of",
    "import_replica_file",
    "read_replica_file",
    "read_result_file",
    "refused_codes",
    "render_result",
    "run_import",
    "text_of",
]

_log = Logger(namespace=__name__)
T = TypeVar("T")

ROOT = "SPIRegistrationDeleteList"
ENTRY = "InformationOfSPIRegistrationDelete"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "SPIRegistrationDeleteList.xsd"
RESULT_SCHEMA = SCHEMA.with_name("SPIRegistrationDeleteResult.xsd")

# The largest file accepted, posted or dropped (the back-office API's own body limit).
MAX_FILE_BYTES = 64 * 1_048_576
# Root 1, entry 2, DuplicateCopyData 3, Item 4: a little room, no more.
MAX_DEPTH = 8
# Elements inside one entry (or the header): twelve fields and the items of one data set
# (at most nine in the catalogue), with room to spare; a file is never held as one tree.
MAX_ENTRY_ELEMENTS = 256
# Entries per database transaction.
BATCH = 5_000

# SegmentOfRegistrationDelete (登録削除区分)
REGISTRATION = "1"
DELETION = "2"
# MSGMode (電文実行モード)
PRODUCTION = "0"
TEST = "1"
# MSGResult
ALL_APPLIED = "0"
SOME_REFUSED = "1"
FILE_REFUSED = "9"
# Entry statuses
STORED = "stored"
DELETED = "deleted"
REFUSED = "refused"
CHECKED = "checked"  # test mode: would be stored or deleted

# A header value copied from a refused file into its result only if it has the form the
# schema gives it (so that nothing else, personal data included, is ever echoed).
_WORD = re.compile(r"[0-9A-Za-z._\-]{1,64}")
_SAFE_HEADER_VALUES = {
    "MSGID": re.compile(r"[0-9A-Za-z._\-]{0,64}"),
    "MSGTypeID": _WORD,
    "MSGMode": re.compile(r"[01]"),
    "SourceSystemID": _WORD,
    "DestinationSystemID": re.compile(r"([0-9]{16})?"),
    "ReceptionNumber": re.compile(r"[0-9A-Za-z._\-]{1,32}"),
}
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Schema messages quote the offending value: never repeat it (it may be personal data).
_QUOTED_VALUE = re.compile(r"The value '.*' is not (accepted by|an element of)", re.DOTALL)


def _load_schema(path: Path) -> etree.XMLSchema:
    """Compile a trusted local schema shipped with the code."""
    return etree.XMLSchema(etree.parse(str(path), etree.XMLParser()))


_SCHEMA = _load_schema(SCHEMA)
# One validation at a time: a compiled schema keeps a single error log.
_SCHEMA_LOCK = threading.Lock()


# -- the file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The file's MessageHeader (MSGResult aside); empty strings where unknown."""

    msg_id: str = ""
    msg_type_id: str = ""
    msg_mode: str = ""
    source_system_id: str = ""
    destination_system_id: str = ""
    reception_number: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One InformationOfSPIRegistrationDelete, as read (values not yet checked).

    Optional fields left out or empty are None; ``number`` counts entries from 1.
    """

    number: int
    record_id: str
    integrated_address_number: str
    information_name: str
    data_set: str
    data_set_record_key: str | None
    major_version: str | None
    parent_record_key: str | None
    publication_date: str | None
    published_end_date: str | None
    suppressed: bool
    items: dict[str, str]


@dataclass(frozen=True)
class ReplicaFile:
    """A schema-valid 副本 file addressed to this institution."""

    header: Header
    segment: str
    entries: tuple[Entry, ...]


def text_of(element: etree._Element) -> str:
    """The text of an element of simple content (a comment inside does not split it)."""
    # A comment inside splits the text, so join it back in that rare case.
    if len(element):
        return str(element.xpath("string()"))
    return element.text or ""


def _scrub(message: str) -> str:
    return _QUOTED_VALUE.sub(r"The value is not \1", message)


def _schema_detail(element: etree._Element) -> str | None:
    """None when ``element`` (a file, or one part of a file) is valid, else the first
    validation error without quoted values."""
    with _SCHEMA_LOCK:
        if _SCHEMA.validate(element):
            return None
        log: list[Any] = list(cast(Any, _SCHEMA.error_log))
    if not log:
        return "the file does not conform to its schema"
    return f"line {log[0].line}: {_scrub(str(log[0].message))}"


def header_of(element: etree._Element | None, *, safe_only: bool) -> Header:
    """The ``MessageHeader`` of a file (empty if absent); with ``safe_only``, only the values
    of the expected form (what a refusal of a file not yet validated may echo)."""
    if element is None:
        return Header()
    values: dict[str, str] = {}
    for child in element.iterchildren(tag=etree.Element):
        # The header has no namespace: compare tags as they are (a tag lxml cannot make a
        # QName of, with an undeclared prefix say, is simply not one of these).
        name = child.tag
        if isinstance(name, str) and name in _SAFE_HEADER_VALUES and name not in values:
            value = text_of(child)
            if not safe_only or _SAFE_HEADER_VALUES[name].fullmatch(value):
                values[name] = value
    return Header(
        msg_id=values.get("MSGID", ""),
        msg_type_id=values.get("MSGTypeID", ""),
        msg_mode=values.get("MSGMode", ""),
        source_system_id=values.get("SourceSystemID", ""),
        destination_system_id=values.get("DestinationSystemID", ""),
        reception_number=values.get("ReceptionNumber", ""),
    )


def entry_of(number: int, element: etree._Element) -> Entry:
    """Entry ``number`` (from 1) of a file, read from its schema-valid element."""
    fields: dict[str, str] = {}
    items: dict[str, str] = {}
    # Plain iteration (comments have a non-string tag): the hottest loop of a large file.
    for child in element:
        tag = child.tag
        if tag == "DuplicateCopyData":
            for item in child:
                if item.tag == "Item":
                    items[item.get("code", "")] = text_of(item) if len(item) else item.text or ""
        elif isinstance(tag, str):
            fields[tag] = text_of(child) if len(child) else child.text or ""
    return Entry(
        number=number,
        record_id=fields["RecordIdentificationNumber"],
        integrated_address_number=fields["IntegratedAddressNumber"],
        information_name=fields["SpecificPersonalInformationCode"],
        data_set=fields["DataSetIdentificationItemCode"],
        data_set_record_key=fields.get("DataSetRecordKey") or None,
        major_version=fields.get("SPIMajorVersion") or None,
        parent_record_key=fields.get("ParentDataSetRecordKey") or None,
        publication_date=fields.get("PublicationDate") or None,
        published_end_date=fields.get("PublishedEndDate") or None,
        suppressed=fields.get("AutoResponseSuppressionFlag") == "1",
        items=items,
    )


class _FileRefused(Exception):
    """A file refused whole, with what could safely be read of its header."""

    def __init__(self, error: RenkeiError, header: Header) -> None:
        super().__init__(error.code)
        self.error = error
        self.header = header


def _not_expected(element: etree._Element, expected: str) -> RenkeiError:
    name = element.tag if isinstance(element.tag, str) else "not an element"
    return RenkeiError(
        errors.REPLICA_FILE_INVALID,
        detail=(
            f"line {element.sourceline}: Element '{name}': This element is not expected."
            f" Expected is ( {expected} )."
        ),
    )


def _stream(document: bytes, institution_code: str) -> ReplicaFile:
    """Stage 1 of a file, streamed: each part checked against the schema as it is read.

    The file is never held as one tree: the root's children (header, segment, entries) are
    read one at a time, each validated on its own against its global element in the schema,
    their order checked here (the root's content model), then converted and dropped.
    """
    stream = iter_children(
        document,
        max_bytes=MAX_FILE_BYTES,
        max_depth=MAX_DEPTH,
        max_child_elements=MAX_ENTRY_ELEMENTS,
        refuse_text=lambda line: RenkeiError(
            errors.REPLICA_FILE_INVALID,
            detail=f"line {line}: Element '{ROOT}': text is not allowed here.",
        ),
    )
    header: Header | None = None
    safe_header = Header()
    segment: str | None = None
    entries: list[Entry] = []
    try:
        for child in stream.children():
            root = stream.root
            assert root is not None
            if root.tag != ROOT:
                name = root.tag if isinstance(root.tag, str) else "not an element"
                raise RenkeiError(
                    errors.REPLICA_FILE_INVALID, detail=f"the root element is {name}, not {ROOT}"
                )
            if root.attrib:
                raise RenkeiError(
                    errors.REPLICA_FILE_INVALID,
                    detail=f"line {root.sourceline}: Element '{ROOT}': no attribute is allowed.",
                )
            if header is None:
                if child.tag != "MessageHeader":
                    raise _not_expected(child, "MessageHeader")
                safe_header = header_of(child, safe_only=True)
                detail = _schema_detail(child)
                if detail is not None:
                    raise RenkeiError(errors.REPLICA_FILE_INVALID, detail=detail)
                header = header_of(child, safe_only=False)
            elif segment is None:
                if child.tag != "SegmentOfRegistrationDelete":
                    raise _not_expected(child, "SegmentOfRegistrationDelete")
                detail = _schema_detail(child)
                if detail is not None:
                    raise RenkeiError(errors.REPLICA_FILE_INVALID, detail=detail)
                segment = text_of(child)
            else:
                if child.tag != ENTRY:
                    raise _not_expected(child, ENTRY)
                detail = _schema_detail(child)
                if detail is not None:
                    raise RenkeiError(errors.REPLICA_FILE_INVALID, detail=detail)
                entries.append(entry_of(len(entries) + 1, child))
        root = stream.root
        if root is not None and root.tag != ROOT:
            name = root.tag if isinstance(root.tag, str) else "not an element"
            raise RenkeiError(
                errors.REPLICA_FILE_INVALID, detail=f"the root element is {name}, not {ROOT}"
            )
        if header is None or segment is None or not entries:
            missing = (
                "MessageHeader"
                if header is None
                else "SegmentOfRegistrationDelete"
                if segment is None
                else ENTRY
            )
            raise RenkeiError(
                errors.REPLICA_FILE_INVALID,
                detail=f"Element '{ROOT}': Missing child element(s). Expected is ( {missing} ).",
            )
    except RenkeiError as refusal:
        raise _FileRefused(refusal, safe_header) from None
    if header.destination_system_id not in ("", institution_code):
        raise _FileRefused(
            RenkeiError(
                errors.REPLICA_FILE_INVALID,
                detail=(
                    f"DestinationSystemID {header.destination_system_id} is not this"
                    f" institution ({institution_code})"
                ),
            ),
            safe_header,
        )
    return ReplicaFile(header=header, segment=segment, entries=tuple(entries))


def read_replica_file(document: bytes, institution_code: str) -> ReplicaFile:
    """Parse and validate a whole 副本 file addressed to ``institution_code``, streamed.

    Raises RenkeiError: the hardened parser's ``Xml*`` codes (at most `MAX_FILE_BYTES`,
    `MAX_DEPTH` levels and `MAX_ENTRY_ELEMENTS` elements in one entry), or
    ``ReplicaFileInvalid`` for a wrong root element, a file that does not conform to the
    schema (the first error, without the values it quotes) or a file addressed to another
    institution. Memory holds the entries read, never the file's tree.
    """
    try:
        return _stream(document, institution_code)
    except _FileRefused as refused:
        raise refused.error from None


# -- each entry --------------------------------------------------------------------------


def _date(entry: Entry, field: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if _ISO_DATE.fullmatch(value) is None:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise RenkeiError(
            errors.REPLICA_DATES_INVALID,
            record_id=entry.record_id,
            detail=f"{field} is not a date written YYYY-MM-DD",
        ) from None


def check_registration(
    entry: Entry, catalogue: Catalogue, provides: tuple[str, ...]
) -> replica.ReplicaRecord:
    """The record an entry registers, or RenkeiError for the first problem found.

    Dates that are not YYYY-MM-DD days (ReplicaDatesInvalid), then everything
    `middleware.replica.validate` checks: size, information name, provider, data set,
    items and values, and the publication window's order.
    """
    record = replica.ReplicaRecord(
        record_id=entry.record_id,
        integrated_address_number=entry.integrated_address_number,
        information_name=entry.information_name,
        data_set=entry.data_set,
        items=entry.items,
        suppressed=entry.suppressed,
        data_set_record_key=entry.data_set_record_key,
        parent_record_key=entry.parent_record_key,
        major_version=entry.major_version,
        publication_date=_date(entry, "PublicationDate", entry.publication_date),
        published_end_date=_date(entry, "PublishedEndDate", entry.published_end_date),
    )
    replica.validate(record, catalogue, provides)
    return record


# -- the result --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What became of one entry; ``error`` only for a refused one."""

    number: int
    record_id: str
    status: str
    error: RenkeiError | None = None


@dataclass(frozen=True)
class ImportResult:
    """What became of a whole file; ``file_error`` when it was refused as a whole."""

    header: Header
    segment: str | None
    entries: Sequence[EntryResult]
    file_error: RenkeiError | None = None

    @property
    def refused(self) -> int:
        return sum(1 for result in self.entries if result.status == REFUSED)

    @property
    def applied(self) -> int:
        return len(self.entries) - self.refused

    @property
    def message_result(self) -> str:
        """MSGResult: 9 the file refused, 1 some entries refused, 0 none."""
        if self.file_error is not None:
            return FILE_REFUSED
        return SOME_REFUSED if self.refused else ALL_APPLIED


def _xml_safe(text: str) -> str:
    # Error details may quote libxml2, which may quote anything: keep what XML can carry.
    return "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) != "Cc")


def _refusal(parent: etree._Element, error: RenkeiError) -> None:
    etree.SubElement(parent, "ErrorCode").text = error.code
    etree.SubElement(parent, "MessageEn").text = _xml_safe(error.message_en)
    etree.SubElement(parent, "MessageJa").text = _xml_safe(error.message_ja)


def render_result(result: ImportResult) -> bytes:
    """The result file (``schemas/SPIRegistrationDeleteResult.xsd``), UTF-8, indented.

    The header is the file's with MSGResult filled and source and destination swapped.
    """
    sub = etree.SubElement
    root = etree.Element(ROOT)
    header = sub(root, "MessageHeader")
    h = result.header
    for tag, value in (
        ("MSGID", h.msg_id),
        ("MSGTypeID", h.msg_type_id),
        ("MSGMode", h.msg_mode),
        ("SourceSystemID", h.destination_system_id),
        ("DestinationSystemID", h.source_system_id),
        ("ReceptionNumber", h.reception_number),
        ("MSGResult", result.message_result),
    ):
        sub(header, tag).text = value
    if result.segment is not None:
        sub(root, "SegmentOfRegistrationDelete").text = result.segment
    if result.file_error is not None:
        _refusal(sub(root, "FileError"), result.file_error)
    summary = sub(root, "Summary")
    sub(summary, "Entries").text = str(len(result.entries))
    sub(summary, "Applied").text = str(result.applied)
    sub(summary, "Refused").text = str(result.refused)
    for entry in result.entries:
        element = sub(root, "ResultOfSPIRegistrationDelete")
        sub(element, "EntryNumber").text = str(entry.number)
        sub(element, "RecordIdentificationNumber").text = entry.record_id
        sub(element, "Status").text = entry.status
        if entry.error is not None:
            _refusal(element, entry.error)
    etree.indent(root)
    return serialize(root) + b"\n"


# -- writing files and reading results (for back offices: simulators, benchmarks, tests) ----


def _entry_element(
    parent: etree._Element, record_id: str, fields: Sequence[tuple[str, str]]
) -> etree._Element:
    element = etree.SubElement(parent, ENTRY)
    etree.SubElement(element, "RecordIdentificationNumber").text = record_id
    for tag, value in fields:
        etree.SubElement(element, tag).text = value
    return element


def build_replica_file(
    records: Sequence[replica.ReplicaRecord | Entry],
    reception_number: str,
    *,
    deletion: bool = False,
    test_mode: bool = False,
    destination: str = "",
    source_system: str = "care-insurance",
    message_id: str = "",
    message_type: str = "IF_DBM_20113_R01",
) -> bytes:
    """The 副本 file a back office sends to register (or delete) ``records``: records as
    stored (`ReplicaRecord`), or entries as a file carries them (`Entry`: their values are
    written unchecked, a day that does not exist too).

    ``destination`` is the receiving institution's code, or empty for whichever node
    receives the file. A deletion file names each record by its key only.
    """
    root = etree.Element(ROOT)
    header = etree.SubElement(root, "MessageHeader")
    for tag, value in (
        ("MSGID", message_id),
        ("MSGTypeID", message_type),
        ("MSGMode", TEST if test_mode else PRODUCTION),
        ("SourceSystemID", source_system),
        ("DestinationSystemID", destination),
        ("ReceptionNumber", reception_number),
        ("MSGResult", ""),
    ):
        etree.SubElement(header, tag).text = value
    etree.SubElement(root, "SegmentOfRegistrationDelete").text = (
        DELETION if deletion else REGISTRATION
    )
    for record in records:
        key = (
            ("IntegratedAddressNumber", record.integrated_address_number),
            ("SpecificPersonalInformationCode", record.information_name),
            ("DataSetIdentificationItemCode", record.data_set),
        )
        if deletion:
            _entry_element(root, record.record_id, key)
            continue
        optional: tuple[tuple[str, str | None], ...] = (
            ("DataSetRecordKey", record.data_set_record_key),
            ("SPIMajorVersion", record.major_version),
            ("ParentDataSetRecordKey", record.parent_record_key),
            ("PublicationDate", _day(record.publication_date)),
            ("PublishedEndDate", _day(record.published_end_date)),
            ("AutoResponseSuppressionFlag", "1" if record.suppressed else None),
        )
        element = _entry_element(
            root, record.record_id, key + tuple((t, v) for t, v in optional if v is not None)
        )
        data = etree.SubElement(element, "DuplicateCopyData")
        for code, value in record.items.items():
            etree.SubElement(data, "Item", code=code).text = value
    return serialize(root)


def _day(day: date | str | None) -> str | None:
    return day.isoformat() if isinstance(day, date) else day


@dataclass(frozen=True)
class ResultFile:
    """A result file as a back office reads it: ``MSGResult``, the code of the whole file's
    refusal (or None) and, per entry in file order, its number, record id, status and the
    code of its refusal (or None)."""

    message_result: str
    file_error: str | None
    entries: tuple[tuple[int, str, str, str | None], ...]


_RESULT_SCHEMA = _load_schema(RESULT_SCHEMA)


def read_result_file(result_file: bytes) -> ResultFile:
    """Read a result file of up to 16 MiB (of about 50,000 entries: the files a test writes),
    which must conform to ``SPIRegistrationDeleteResult.xsd`` (RenkeiError
    ReplicaFileInvalid otherwise)."""
    root = parse_xml(result_file, max_bytes=MAX_TREE_BYTES, max_depth=MAX_DEPTH)
    with _SCHEMA_LOCK:
        if not _RESULT_SCHEMA.validate(root):
            error: Any = next(iter(cast(Any, _RESULT_SCHEMA.error_log)))
            raise RenkeiError(
                errors.REPLICA_FILE_INVALID,
                detail=f"the result file does not conform: line {error.line}: {error.message}",
            )
    file_error = root.findtext("FileError/ErrorCode")
    return ResultFile(
        message_result=root.findtext("MessageHeader/MSGResult") or "",
        file_error=file_error,
        entries=tuple(
            (
                int(element.findtext("EntryNumber") or 0),
                element.findtext("RecordIdentificationNumber") or "",
                element.findtext("Status") or "",
                element.findtext("ErrorCode"),
            )
            for element in root.iterfind("ResultOfSPIRegistrationDelete")
        ),
    )


def refused_codes(result_file: bytes) -> list[str]:
    """The error codes of a result file: its FileError's alone when the whole file was
    refused, else one per refused entry in file order (empty when everything was applied)."""
    stream = iter_children(
        result_file,
        max_bytes=4 * MAX_FILE_BYTES,
        max_depth=MAX_DEPTH,
        max_child_elements=MAX_ENTRY_ELEMENTS,
    )
    codes: list[str] = []
    for child in stream.children():
        if child.tag == "FileError":
            return [child.findtext("ErrorCode") or ""]
        if child.tag == "ResultOfSPIRegistrationDelete" and child.findtext("Status") == REFUSED:
            codes.append(child.findtext("ErrorCode") or "")
    return codes


# -- the import --------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A file after stages 1 and 2: what is decided so far, and what the database decides."""

    header: Header
    segment: str | None
    file_error: RenkeiError | None
    entries: list[tuple[int, str]]  # (number, record id) of every entry, in file order
    results: list[EntryResult | None]  # None: left for the database
    pending: list[tuple[int, replica.ReplicaRecord | replica.RecordKey]]  # (index, what)

    def result(self) -> ImportResult:
        return ImportResult(
            self.header, self.segment, cast(list[EntryResult], self.results), self.file_error
        )


def _refused_file(header: Header, refusal: RenkeiError) -> _Prepared:
    return _Prepared(header, None, refusal, [], [], [])


def _prepare(
    document: bytes, institution: InstitutionConfig, catalogue: Catalogue, system: str | None
) -> _Prepared:
    """Stages 1 and 2 (runs on a worker thread), for back-office ``system`` (None: the
    file's SourceSystemID names it, as for the watched folder)."""
    try:
        replica_file = _stream(document, institution.code)
    except _FileRefused as refused:
        return _refused_file(refused.header, refused.error)
    name = system if system is not None else replica_file.header.source_system_id
    authorized = institution.system(name)
    if authorized is None:
        return _refused_file(
            replica_file.header,
            RenkeiError(
                errors.REPLICA_FILE_INVALID,
                detail=f"SourceSystemID {name} is not a back-office system of this institution",
            ),
        )
    prepared = _Prepared(replica_file.header, replica_file.segment, None, [], [], [])
    deleting = replica_file.segment == DELETION
    for index, entry in enumerate(replica_file.entries):
        prepared.entries.append((entry.number, entry.record_id))
        what: replica.ReplicaRecord | replica.RecordKey
        try:
            if deleting:
                what = replica.RecordKey(
                    entry.record_id,
                    entry.integrated_address_number,
                    entry.information_name,
                    entry.data_set,
                )
            else:
                what = check_registration(entry, catalogue, institution.provides)
            # A valid entry of an information name another system of this institution keeps.
            _check_authorized(authorized, entry.information_name)
        except RenkeiError as refusal:
            prepared.results.append(EntryResult(entry.number, entry.record_id, REFUSED, refusal))
            continue
        prepared.pending.append((index, what))
        prepared.results.append(None)
    return prepared


def _check_authorized(system: BackOfficeSystem, information_name: str) -> None:
    if information_name not in system.information_names:
        raise RenkeiError(
            errors.SYSTEM_NOT_AUTHORIZED,
            system=system.name,
            what=f"the replica of information name {information_name}",
            what_ja=f"特定個人情報名{information_name}の副本",
        )


def _in_thread(reactor: Any, work: Callable[..., T], *args: Any) -> Deferred[T]:
    return deferToThreadPool(reactor, reactor.getThreadPool(), work, *args)


async def _apply(node: IntermediateServer, prepared: _Prepared) -> None:
    """Stage 3: the pending entries against the database, `BATCH` at a time."""
    write = prepared.header.msg_mode == PRODUCTION
    deleting = prepared.segment == DELETION
    applied = (DELETED if deleting else STORED) if write else CHECKED
    now = node.now()
    claimed: set[str] = set()  # ids stored (or deleted) by the batches before
    for start in range(0, len(prepared.pending), BATCH):
        batch = prepared.pending[start : start + BATCH]
        subjects = [what for _, what in batch]
        # A segment is all deletions (record keys) or all registrations (records).
        if deleting:
            keys = [what for what in subjects if isinstance(what, replica.RecordKey)]
            assert len(keys) == len(subjects)
            outcomes = await node.store.replica.delete_batch(keys, claimed, write=write)
        else:
            records = [what for what in subjects if isinstance(what, replica.ReplicaRecord)]
            assert len(records) == len(subjects)
            outcomes = await node.store.replica.store_batch(records, now, claimed, write=write)
        for (index, what), refusal in zip(batch, outcomes, strict=True):
            number, record_id = prepared.entries[index]
            if refusal is None:
                claimed.add(what.record_id)
                prepared.results[index] = EntryResult(number, record_id, applied)
            else:
                prepared.results[index] = EntryResult(number, record_id, REFUSED, refusal)


@deferred
async def run_import(
    node: IntermediateServer, document: bytes, reactor: Any = None, system: str | None = None
) -> tuple[ImportResult, bytes]:
    """Import one 副本 file for back-office ``system``: what became of it and its result file.

    ``system`` is the system that posted the file; None takes the file's SourceSystemID
    (the watched folder), which must name one of the institution's systems. Entries of an
    information name the system does not keep are refused (SystemNotAuthorized). A refused
    file is an outcome, not an error. Errors are raised only for the unexpected (the
    database failing): batches before the failure stay applied.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    prepared = await _in_thread(
        reactor, _prepare, document, node.institution, node.catalogue, system
    )
    if prepared.file_error is None:
        await _apply(node, prepared)
    result = prepared.result()
    document_out = await _in_thread(reactor, render_result, result)
    _log.info(
        "副本 file {reception} from {source}: {entries} entries, {applied} applied,"
        " {refused} refused (MSGResult {outcome}{error})",
        reception=result.header.reception_number or "(unknown)",
        source=result.header.source_system_id or "(unknown)",
        entries=len(result.entries),
        applied=result.applied,
        refused=result.refused,
        outcome=result.message_result,
        error="" if result.file_error is None else f", {result.file_error.code}",
    )
    return result, document_out


def import_replica_file(
    node: IntermediateServer, document: bytes, reactor: Any = None, system: str | None = None
) -> Deferred[bytes]:
    """Import one 副本 file (for ``system``, see `run_import`); fires with the result file
    (XML, UTF-8).

    Never fails for what the file contains: a refused file gives a result file with
    MSGResult 9 and its error code. ``reactor`` runs the parsing on its thread pool (the
    global reactor when None).
    """
    finished: Deferred[bytes] = run_import(node, document, reactor, system).addCallback(
        lambda outcome: outcome[1]
    )
    return finished


# -- the watched folder ------------------------------------------------------------------


class ReplicaInbox(Service):
    """Watches a folder for 副本 files and imports each complete one, oldest first.

    ``directory`` gets three subfolders: ``results`` (``<name>.result.xml``), ``done`` (the
    files imported) and ``failed`` (the files refused as a whole, or that met an internal
    error). Writers write ``<name>.xml.part`` (or any name not ending in ``.xml``, or
    starting with ``.``) and rename it to ``<name>.xml`` when complete: only ``*.xml`` files
    not starting with ``.`` are picked up. A file still in place after a restart is imported
    again (its records already stored then show as RecordIdExists).
    """

    log = Logger()

    def __init__(
        self, node: IntermediateServer, directory: Path, reactor: Any, interval: float = 1.0
    ) -> None:
        self.node = node
        self.directory = directory
        self.reactor = reactor
        self.interval = interval
        self.results = directory / "results"
        self.done = directory / "done"
        self.failed = directory / "failed"
        self._loop: LoopingCall | None = None
        self._stopped: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        for folder in (self.directory, self.results, self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self._loop = periodic(self._scan, self.node.clock)
        self._stopped = self._loop.start(self.interval, now=True).addErrback(
            lambda failure: self.log.failure("副本 inbox stopped", failure)
        )

    def stopService(self) -> Deferred[Any]:
        """Stop watching; fires once the file being imported (if any) is finished."""
        super().stopService()
        loop, stopped = self._loop, self._stopped
        self._loop = self._stopped = None
        if loop is not None and loop.running:
            loop.stop()  # ``stopped`` fires when the scan in progress ends
        return stopped if stopped is not None else succeed(None)

    def ready_files(self) -> list[Path]:
        """The complete files waiting, oldest (then by name) first."""
        found = []
        for path in self.directory.iterdir():
            if path.suffix == ".xml" and not path.name.startswith(".") and path.is_file():
                found.append((path.stat().st_mtime, path.name, path))
        return [path for _, _, path in sorted(found)]

    @deferred
    async def _scan(self) -> None:
        try:
            files = self.ready_files()
        except OSError as failure:
            self.log.warn(
                "副本 inbox {directory} unreadable: {failure}",
                directory=self.directory,
                failure=failure,
            )
            return
        for path in files:
            if not self.running:
                break
            try:
                await self.process(path)
            except Exception:
                self.log.failure("副本 file {name} not processed", name=path.name)

    @deferred
    async def process(self, path: Path) -> Path:
        """Import one file, write its result file and move it away; the result's path."""
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            result = ImportResult(
                Header(),
                None,
                (),
                RenkeiError(errors.XML_TOO_LARGE, size=size, limit=MAX_FILE_BYTES),
            )
            document = await _in_thread(self.reactor, render_result, result)
        else:
            data = await _in_thread(self.reactor, path.read_bytes)
            try:
                result, document = await run_import(self.node, data, self.reactor)
            except Exception:
                self.log.failure("副本 file {name} met an internal error", name=path.name)
                result = ImportResult(Header(), None, (), RenkeiError(errors.INTERNAL))
                document = render_result(result)
            del data
            await _in_thread(self.reactor, release_free_memory)
        stem = self._free_stem(path.stem)
        written = self.results / f"{stem}.result.xml"
        await _in_thread(self.reactor, _write_atomically, written, document)
        folder = self.done if result.file_error is None else self.failed
        os.replace(path, folder / f"{stem}.xml")
        return written

    def _free_stem(self, stem: str) -> str:
        """``stem``, or ``stem.2``, ``stem.3``…: a name no earlier file of that name used."""
        candidate, number = stem, 1
        while (
            (self.results / f"{candidate}.result.xml").exists()
            or (self.done / f"{candidate}.xml").exists()
            or (self.failed / f"{candidate}.xml").exists()
        ):
            number += 1
            candidate = f"{stem}.{number}"
        return candidate


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
