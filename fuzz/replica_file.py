"""Fuzz the 副本 file reader of `adapters.care_insurance.replica_file`.

Input layout: byte 0 chooses the streaming parser's chunk size (0: the module's own, 64 KiB;
n: n bytes, so that the chunk boundaries of a large file fall inside these small ones), the
rest is a 副本 registration or deletion file sent to Meguro (1131105000000000), which provides
TM00000000000004 and TM00000000000002.

The file goes through what a node does with a posted file before the database:
``read_replica_file`` (stage 1, streamed), then, for a registration file, ``check_registration``
on every entry against the packaged catalogue (stage 2), then ``render_result`` of what was
decided (the whole file refused, or each entry refused or checked), whose output must conform
to the result file's schema. The streamed reader is also checked against a reference that holds the
whole tree: `parse_xml` (same depth limit), the root element, the whole file validated against
``SPIRegistrationDeleteList.xsd``, the destination and the element limit per part. Both must
accept the same files, with the same header, segment and entries.

Every input must give a file or a `RenkeiError` with a parser code or ``ReplicaFileInvalid``,
and each entry a record or a `RenkeiError` with one of the entry codes below; anything else is
a finding. Outcomes libxml2 reaches (parser error numbers, schema errors) and the entries'
refusals are fed back to libFuzzer as extra coverage (`fuzz_feedback`).

A campaign (docs/reliability.md, "Fuzzing")::

    nice -n 10 .venv/bin/python fuzz/replica_file.py -runs=1000000 -timeout=10 \\
        -dict=fuzz/xml.dict -artifact_prefix=/tmp/fuzz-artifacts/replica_file/ \\
        /tmp/fuzz-corpus/replica_file fuzz/corpus/replica_file
"""

from __future__ import annotations

import sys

import atheris
from fuzz_feedback import Features, schema_names
from lxml import etree

# Imported by replica_file but not on the path under test: left uninstrumented.
NOT_UNDER_TEST = [
    "adapters.network_link",
    "middleware.persons",
    "middleware.audit",
    "middleware.clock",
    "middleware.conditions",
    "middleware.config",
    "middleware.held_queue",
    "middleware.messages",
    "middleware.node",
    "middleware.outbox",
    "middleware.permit",
    "middleware.permitted_list",
    "middleware.process_memory",
    "middleware.records",
    "middleware.storage",
    "middleware.tables",
]

with atheris.instrument_imports(
    include=["middleware", "adapters", "codes"], exclude=NOT_UNDER_TEST
):
    from adapters.care_insurance import replica_file
    from codes.catalogue import load_catalogue
    from codes.errors import RenkeiError
    from middleware import hardened_xml
    from middleware.hardened_xml import parse_xml

INSTITUTION = "1131105000000000"
PROVIDES = ("TM00000000000004", "TM00000000000002")
CATALOGUE = load_catalogue()
DEFAULT_CHUNK = hardened_xml.CHUNK_SIZE
FILE_CODES = frozenset(
    {
        "XmlTooLarge",
        "XmlDoctypeForbidden",
        "XmlMalformed",
        "XmlTooDeep",
        "XmlTooManyElements",
        "ReplicaFileInvalid",
    }
)
ENTRY_CODES = frozenset(
    {
        "InvalidCode",
        "ReplicaRecordTooLarge",
        "UnknownInformationName",
        "NotAProviderOf",
        "UnknownDataSet",
        "UnknownItem",
        "InvalidItemValue",
        "ReplicaDatesInvalid",
    }
)
# The harness's own compiled schemas: the reference, and the result file's.
SCHEMA = etree.XMLSchema(etree.parse(str(replica_file.SCHEMA)))
RESULT_SCHEMA = etree.XMLSchema(etree.parse(str(replica_file.RESULT_SCHEMA)))
FEATURES = Features(names=schema_names(replica_file.SCHEMA))


def reference(document: bytes) -> replica_file.ReplicaFile | None:
    """The file as a reader holding the whole tree reads it, or None if it refuses it."""
    try:
        root = parse_xml(document, max_depth=replica_file.MAX_DEPTH)
    except RenkeiError as refusal:
        FEATURES.refusal(refusal)  # straight from the parser: libxml2's error number
        return None
    if root.tag != replica_file.ROOT:
        return None
    if FEATURES.schema(SCHEMA, root, "file"):
        return None
    for part in root.iterchildren(tag=etree.Element):
        if (
            sum(1 for _ in part.iterdescendants(tag=etree.Element))
            > replica_file.MAX_ENTRY_ELEMENTS
        ):
            return None
    header = replica_file.header_of(root.find("MessageHeader"), safe_only=False)
    if header.destination_system_id not in ("", INSTITUTION):
        return None
    segment_element = root.find("SegmentOfRegistrationDelete")
    assert segment_element is not None  # the schema requires it
    segment = replica_file.text_of(segment_element)
    entries = tuple(
        replica_file.entry_of(number, element)
        for number, element in enumerate(root.iterchildren(replica_file.ENTRY), start=1)
    )
    return replica_file.ReplicaFile(header=header, segment=segment, entries=entries)


def check_result(result: replica_file.ImportResult) -> None:
    """The result file of ``result`` must be a valid result file."""
    written = replica_file.render_result(result)
    root = etree.fromstring(written, etree.XMLParser(resolve_entities=False, no_network=True))
    assert RESULT_SCHEMA.validate(root), f"invalid result file: {RESULT_SCHEMA.error_log}"


def entry_fields(entry: replica_file.Entry) -> tuple[object, ...]:
    return (
        entry.data_set_record_key,
        entry.major_version,
        entry.parent_record_key,
        entry.publication_date,
        entry.published_end_date,
        entry.items or None,
    )


def read(document: bytes) -> replica_file.ReplicaFile | None:
    """Stages 1 and 2 through the public functions, and their result file; None if the file
    is refused whole."""
    try:
        read = replica_file.read_replica_file(document, INSTITUTION)
    except RenkeiError as refusal:
        assert refusal.code in FILE_CODES, f"unexpected code {refusal.code}"
        FEATURES.refusal(refusal, "file")
        check_result(replica_file.ImportResult(replica_file.Header(), None, (), refusal))
        return None
    FEATURES.hit("file", read.segment, read.header.msg_mode, len(read.entries) > 1)
    results = []
    for entry in read.entries:
        FEATURES.hit("entry", read.segment, *(value is None for value in entry_fields(entry)))
        status, error = replica_file.CHECKED, None
        if read.segment != replica_file.DELETION:
            try:
                replica_file.check_registration(entry, CATALOGUE, PROVIDES)
            except RenkeiError as refusal:
                assert refusal.code in ENTRY_CODES, f"unexpected code {refusal.code}"
                FEATURES.refusal(refusal, "entry")
                status, error = replica_file.REFUSED, refusal
        results.append(replica_file.EntryResult(entry.number, entry.record_id, status, error))
    check_result(replica_file.ImportResult(read.header, read.segment, results))
    return read


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    document = data[1:]
    hardened_xml.CHUNK_SIZE = data[0] or DEFAULT_CHUNK
    try:
        streamed = read(document)
    finally:
        hardened_xml.CHUNK_SIZE = DEFAULT_CHUNK
    expected = reference(document)
    if streamed is None:
        assert expected is None, "the reader refused a file the whole-tree reference accepts"
    else:
        assert expected is not None, "the reader accepted a file the whole-tree reference refuses"
        assert streamed == expected, "the reader and the whole-tree reference read different files"


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
