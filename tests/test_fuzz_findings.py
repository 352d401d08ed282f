"""What fuzzing found (docs/reliability.md, "Fuzzing"), kept as regression tests.

Each test feeds the target the input that showed the problem (found by a harness of fuzz/, or
by a probe written while building one) and asserts what the target promises: a coded error
with the right code, or the behaviour the harness checks.
"""

from __future__ import annotations

import pytest

from adapters.care_insurance.bulk_query import parse_bulk_query_file
from adapters.care_insurance.replica_file import read_replica_file
from codes.catalogue import default_catalogue
from codes.errors import RenkeiError
from middleware import messages
from middleware.hardened_xml import iter_children, parse_xml

MEGURO = "1131105000000000"
# A valid 副本 file of one entry, as build_replica_file writes it (the XML declaration aside).
HEADER = (
    b"<SPIRegistrationDeleteList><MessageHeader><MSGID></MSGID>"
    b"<MSGTypeID>IF_DBM_20113_R01</MSGTypeID><MSGMode>0</MSGMode>"
    b"<SourceSystemID>care-insurance</SourceSystemID><DestinationSystemID></DestinationSystemID>"
    b"<ReceptionNumber>R1</ReceptionNumber><MSGResult></MSGResult></MessageHeader>"
    b"<SegmentOfRegistrationDelete>1</SegmentOfRegistrationDelete>"
)
ENTRY = (
    b"<InformationOfSPIRegistrationDelete>"
    b"<RecordIdentificationNumber>R1</RecordIdentificationNumber>"
    b"<IntegratedAddressNumber>1</IntegratedAddressNumber>"
    b"<SpecificPersonalInformationCode>TM00000000000004</SpecificPersonalInformationCode>"
    b"<DataSetIdentificationItemCode>0101</DataSetIdentificationItemCode>"
    b'<DuplicateCopyData><Item code="TK00000401010001">0009876543</Item></DuplicateCopyData>'
    b"</InformationOfSPIRegistrationDelete>"
)
END = b"</SPIRegistrationDeleteList>"


def refusal(read: object, *args: object) -> RenkeiError:
    """Call ``read(*args)`` expecting a coded refusal (any other exception fails the test)."""
    with pytest.raises(RenkeiError) as info:
        read(*args)  # type: ignore[operator]
    return info.value


def test_file_is_valid_without_the_problems_below() -> None:
    """The file the tests below spoil is accepted as it is (so each refusal is its problem's)."""
    assert len(read_replica_file(HEADER + ENTRY + END, MEGURO).entries) == 1


# F1 (fuzz/replica_file.py): ValueError from etree.QName in replica_file.header_of.
def test_undeclared_prefix_in_a_replica_file_header_is_refused_as_malformed() -> None:
    """A 副本 file whose header holds an element with an undeclared prefix is refused as
    malformed, not with lxml's ValueError (the streamed header is read before libxml2 reports
    the namespace error)."""
    document = b"<SPIRegistrationDeleteList><MessageHeader><a:b/></MessageHeader>"
    assert refusal(read_replica_file, document, MEGURO).code == "XmlMalformed"


# F2 (probe for fuzz/hardened_xml.py): the stream had no post-parse check of the document type.
UTF7_DOCTYPE = (
    b'<?xml version="1.0" encoding="UTF-7"?>'
    b"+ADw-!DOCTYPE SPIRegistrationDeleteList +AFs-+ADw-!ENTITY e +ACI-x+ACI-+AD4-+AF0-+AD4-"
)


@pytest.mark.parametrize(
    "entry",
    [ENTRY, ENTRY.replace(b">0009876543<", b">&e;<")],
    ids=["doctype-only", "entity-reference"],
)
def test_doctype_hidden_from_the_byte_scan_by_utf7_is_refused_in_a_replica_file(
    entry: bytes,
) -> None:
    """A 副本 file in UTF-7, whose DOCTYPE and ENTITY the raw-byte pre-scan cannot see, is
    refused as parse_xml refuses it (XmlDoctypeForbidden): not read as if it had none, nor
    failing schema validation with lxml's XMLSchemaValidateError on its entity reference."""
    document = UTF7_DOCTYPE + HEADER + entry + END
    assert refusal(parse_xml, document).code == "XmlDoctypeForbidden"
    assert refusal(read_replica_file, document, MEGURO).code == "XmlDoctypeForbidden"


# F3 (fuzz/hardened_xml.py): the events libxml2 delivers at close() were never read.
def test_stream_of_a_four_byte_document_has_its_root() -> None:
    """iter_children hands over the root of the smallest document (``<r/>``, whose events
    libxml2 delivers only when the parser is closed)."""
    stream = iter_children(b"<r/>", max_bytes=64, max_depth=8, max_child_elements=8)
    assert list(stream.children()) == []
    assert stream.root is not None and stream.root.tag == "r"


# F4 (probe for fuzz/replica_file.py): the stream's blank test was str.strip, not XML's.
@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u2028"])
def test_non_xml_white_space_between_the_parts_of_a_file_is_refused(space: str) -> None:
    """A character that is white space to Python but not to XML (no-break space, ideographic
    space, line separator) between the parts of a 副本 file is text the schema refuses."""
    document = HEADER + space.encode() + ENTRY + END
    assert refusal(read_replica_file, document, MEGURO).code == "ReplicaFileInvalid"


# F5 (fuzz/replica_file.py, in chunks of 64 bytes; here at the real chunk boundary): a part's
# tail was checked before the next chunk was read.
@pytest.mark.parametrize("before_boundary", [0, 1, 3])
def test_text_after_the_last_entry_at_a_chunk_boundary_is_refused(before_boundary: int) -> None:
    """Text after the last entry of a large 副本 file is refused wherever the streaming
    parser's 64 KiB chunks end (here just after the entry's end tag)."""
    boundary = 2 * 65_536  # the streaming parser reads 64 KiB at a time (hardened_xml.CHUNK_SIZE)
    head = HEADER + ENTRY * ((boundary - len(HEADER)) // len(ENTRY) - 2)
    pad = boundary - before_boundary - len(head) - len(ENTRY)
    document = head + b" " * pad + ENTRY + b"not allowed" + END
    assert document.index(b"not allowed") == boundary - before_boundary
    assert refusal(read_replica_file, document, MEGURO).code == "ReplicaFileInvalid"


# F6 (fuzz/messages.py, fuzz/hardened_xml.py): namespace errors that a later warning hides.
@pytest.mark.parametrize(
    "document",
    [
        b'<a:b:c xmlns="x"/>',
        b'<r a:="1" xmlns="x"/>',
        b'<r><a:b/><e xmlns="rel"/></r>',
        b'<r p:q="1"><e xml:space="bogus"/></r>',
    ],
    ids=["two-colons", "empty-local-name", "undeclared-prefix", "undeclared-attribute-prefix"],
)
def test_document_that_is_not_namespace_well_formed_is_refused_as_malformed(
    document: bytes,
) -> None:
    """parse_xml refuses a document with a malformed qualified name or an undeclared prefix
    even when libxml2 reports a warning after that error (a relative namespace URI, a bad
    xml:space), which lxml then overlooks."""
    assert refusal(parse_xml, document).code == "XmlMalformed"


@pytest.mark.parametrize(
    "document", [b'<a:b:c xmlns="x"/>', b'<a:b><e xmlns="rel"/></a:b>'], ids=["colons", "prefix"]
)
def test_message_whose_root_is_not_a_qualified_name_is_a_coded_refusal(document: bytes) -> None:
    """A message whose root name is not a qualified name is refused with a code, not with the
    ValueError etree.QName raises while naming the unexpected root."""
    assert refusal(messages.decode, document, messages.ProvisionAck).code in (
        "XmlMalformed",
        "UnexpectedMessage",
    )


# F7 (fuzz/bulk_query.py): RuntimeError (StopIteration out of a generator) in _submission.
BULK_LINE = (
    b"01,000000000000101,000000000010001,20260401093000123,KAIGO01,user01,1131105000000000,0,"
    b"JM90000000001000,JT90010000000001,,,1131121000000000,TM00000000000002,,,,"
)


@pytest.mark.parametrize(
    "ending", [b"\r\r\n", b"\r\r", b" \r\r\n"], ids=["crcrlf", "crcr", "space"]
)
def test_bulk_query_line_ending_in_two_carriage_returns_is_a_refused_line(ending: bytes) -> None:
    """A bulk-query line ending in CR CR LF (a file converted to CRLF twice) keeps a control
    character: the line is refused (BulkQueryLineInvalid) and the file read, instead of
    RuntimeError escaping parse_bulk_query_file."""
    parsed = parse_bulk_query_file(BULK_LINE + ending, MEGURO, default_catalogue())
    (line,) = parsed.lines
    assert line.submission is None and line.refusal is not None
    assert line.refusal.error(line.number).code == "BulkQueryLineInvalid"
