"""Regenerate the seed corpora of the fuzzing harnesses (``fuzz/corpus/<harness>/``).

Every seed is a real input: messages made by ``messages.encode`` (signed parts with a
placeholder ``ds:Signature``, as the tests sign them), 副本 files made by
``replica_file.build_replica_file``, bulk-query lines in the 18-field format of
docs/bulk-query.md, and a few hand-written documents for the parser's refusals. Each seed
starts with the selector bytes its harness expects (see each harness's docstring). Run::

    .venv/bin/python fuzz/make_corpus.py

The corpus directories are emptied and written again; the output is deterministic.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.care_insurance import replica_file  # noqa: E402
from middleware import messages  # noqa: E402
from middleware.replica import ReplicaRecord  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
MESSAGE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
TRANSACTION = "20260401000000000001"
FUGO = "0123456789ABCDEF0123456789ABCDEF"
AFFAIR = "JM90000000001000"
PROCEDURE = "JT90010000000001"
CARE = "TM00000000000004"
LOCAL_TAX = "TM00000000000002"
ISSUED = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 4, 1, 9, 30, 15, 123456, tzinfo=UTC)
CONDITIONS = messages.QueryConditions(
    fiscal_year=2025, period_start=date(2025, 4, 1), period_end=date(2026, 3, 31)
)

# The message types in the order of fuzz/messages.py: sorted by root element name.
TYPES = sorted(messages.MESSAGE_TYPES, key=lambda message_type: messages.root_name(message_type))

PERMIT = messages.Permit(
    transaction_number=TRANSACTION,
    requester=MEGURO,
    provider=SETAGAYA,
    affair=AFFAIR,
    procedure=PROCEDURE,
    information_name=LOCAL_TAX,
    provider_fugo=FUGO,
    conditions=CONDITIONS,
    issued_at=ISSUED,
    expires_at=EXPIRES,
)


def signed(message: messages.Message) -> etree._Element:
    """The message's element with a placeholder ds:Signature, as tests/test_messages.py."""
    element = messages.to_element(message)
    etree.SubElement(element, f"{{{messages.DSIG_NS}}}Signature", nsmap={"ds": messages.DSIG_NS})
    return element


def sample_messages() -> list[tuple[str, messages.Message]]:
    """One or more real messages of every type."""
    return [
        ("fugo-request", messages.FugoRequest(message_id=MESSAGE_ID, individual_number="1" * 12)),
        ("fugo-response", messages.FugoResponse(message_id=MESSAGE_ID, fugo=FUGO)),
        (
            "permitted-list",
            messages.PermittedListDocument(
                version=3,
                issued_at=ISSUED,
                expires_at=EXPIRES,
                institutions=(
                    messages.InstitutionEntry(code=MEGURO, name="目黒区", kind="municipality"),
                    messages.InstitutionEntry(code=SETAGAYA, name="世田谷区", kind="municipality"),
                ),
                rows=(
                    messages.PermittedRow(
                        requester_kind="municipality",
                        affair=AFFAIR,
                        procedure=PROCEDURE,
                        provider_kind="municipality",
                        information_name=LOCAL_TAX,
                        legal_basis="番号法第19条第8号 別表 項番94",
                    ),
                ),
            ),
        ),
        (
            "query-request",
            messages.QueryRequest(
                message_id=MESSAGE_ID,
                requester_fugo=FUGO,
                affair=AFFAIR,
                procedure=PROCEDURE,
                information_name=LOCAL_TAX,
                provider=SETAGAYA,
                conditions=CONDITIONS,
            ),
        ),
        (
            "query-request-plain",
            messages.QueryRequest(
                message_id=MESSAGE_ID,
                requester_fugo=FUGO,
                affair=AFFAIR,
                procedure=PROCEDURE,
                information_name=CARE,
                provider=SETAGAYA,
            ),
        ),
        (
            "query-accepted",
            messages.QueryAccepted(message_id=MESSAGE_ID, transaction_number=TRANSACTION),
        ),
        ("permit", PERMIT),
        ("permit-plain", replace(PERMIT, conditions=messages.QueryConditions(fiscal_year=2024))),
        (
            "provision-request",
            messages.ProvisionRequest(
                message_id=MESSAGE_ID,
                permit_element=signed(PERMIT),
                route=messages.Route(requester=MEGURO, encryption_certificate=b"0\x82\x01\n" * 8),
            ),
        ),
        (
            "provision-request-ack",
            messages.ProvisionRequestAck(message_id=MESSAGE_ID, transaction_number=TRANSACTION),
        ),
        (
            "provision-provided",
            messages.Provision(
                message_id=MESSAGE_ID,
                transaction_number=TRANSACTION,
                status="provided",
                query_message_id=MESSAGE_ID,
                encrypted_payload=bytes(range(64)),
            ),
        ),
        (
            "provision-refused",
            messages.Provision(
                message_id=MESSAGE_ID,
                transaction_number=TRANSACTION,
                status="refused",
                error_code="FugoUnknown",
                reason_en="No person is linked to the code.",
                reason_ja="許可証の符号に紐付く者が当機関に存在しません。",
            ),
        ),
        (
            "provision-ack",
            messages.ProvisionAck(message_id=MESSAGE_ID, transaction_number=TRANSACTION),
        ),
        (
            "provision-payload",
            messages.ProvisionPayload(
                transaction_number=TRANSACTION,
                information_name=LOCAL_TAX,
                provider=SETAGAYA,
                requester=MEGURO,
                created_at=ISSUED,
                records=(
                    messages.PayloadRecord(
                        data_set="0101",
                        record_id="SET-TAX-0101-0001",
                        items=(("TK00000201010001", "2025"), ("TK00000201010003", "3200000")),
                    ),
                    messages.PayloadRecord(data_set="0101", record_id="R-2"),
                ),
            ),
        ),
        (
            "error",
            messages.ErrorMessage(
                code="NotPermitted", message_en="Not permitted.", message_ja="照会は許可されて"
            ),
        ),
        (
            "record-list",
            messages.RecordList(
                transaction_number=TRANSACTION,
                records=(
                    messages.NetworkRecord(
                        seq=1,
                        recorded_at=ISSUED,
                        event="query",
                        status="permitted",
                        requester=MEGURO,
                        provider=SETAGAYA,
                        information_name=LOCAL_TAX,
                    ),
                    messages.NetworkRecord(
                        seq=2, recorded_at=EXPIRES, event="provision", status="error"
                    ),
                ),
            ),
        ),
    ]


def message_document(message: messages.Message) -> bytes:
    """The document a peer sends: signed parts carry their (placeholder) signature."""
    if messages.is_signed(type(message)):
        return messages.serialize(signed(message))
    return messages.encode(message)


def records() -> list[ReplicaRecord]:
    return [
        ReplicaRecord(
            record_id="MEG-KAIGO-0101-0001",
            integrated_address_number="000000000010001",
            information_name=CARE,
            data_set="0101",
            items={"TK00000401010001": "0009876543", "TK00000401010003": "2024-04-01"},
            data_set_record_key="KEY-1",
            major_version="1",
            publication_date=date(2024, 4, 1),
            published_end_date=date(2027, 3, 31),
        ),
        ReplicaRecord(
            record_id="MEG-KAIGO-0102-0001",
            integrated_address_number="000000000010002",
            information_name=CARE,
            data_set="0102",
            items={
                "TK00000401020002": "東京都目黒区上目黒二丁目",
                "TK00000401020004": "2025-10-01",
            },
            suppressed=True,
            parent_record_key="KEY-1",
        ),
        ReplicaRecord(
            record_id="MEG-TAX-0101-0001",
            integrated_address_number="10003",
            information_name=LOCAL_TAX,
            data_set="0101",
            items={"TK00000201010001": "2025", "TK00000201010007": "-120"},
        ),
    ]


def replica_files() -> list[tuple[str, bytes]]:
    good = records()
    bad = ReplicaRecord(
        record_id="BAD-1",
        integrated_address_number="000000000010004",
        information_name=CARE,
        data_set="0101",
        items={"TK00000401010003": "2024-02-30"},
        publication_date=date(2026, 1, 2),
        published_end_date=date(2026, 1, 1),
    )
    refused = [
        replace(bad, items={}),
        replace(bad, record_id="BAD-2", items={"TK00000401019999": "x"}),
        replace(bad, record_id="BAD-3", publication_date=None),
        replace(bad, record_id="BAD-4", data_set="0999"),
        replace(bad, record_id="BAD-5", information_name="TM00000000900001"),
        good[2],
    ]
    files = [
        ("registration", replica_file.build_replica_file(good, "RCPT-0001", message_id="M1")),
        (
            "registration-to-meguro",
            replica_file.build_replica_file(good[:1], "R2", destination=MEGURO),
        ),
        ("test-mode", replica_file.build_replica_file(good[1:], "R3", test_mode=True)),
        ("deletion", replica_file.build_replica_file(good, "RCPT-0004", deletion=True)),
        (
            "refused-entries",
            replica_file.build_replica_file(refused, "R5").replace(
                b"<PublishedEndDate>2026-01-01<", b"<PublishedEndDate>2026/01/01<", 1
            ),
        ),
        (
            "other-destination",
            replica_file.build_replica_file(good[:1], "R6", destination=SETAGAYA),
        ),
    ]
    # Comments split a text (the reader joins it back), an empty optional field, CRLF.
    commented = (
        replica_file.build_replica_file(good[:1], "R7")
        .replace(b"<MSGMode>0", b"<MSGMode><!-- mode -->0")
        .replace(b">0009876543<", b">000987<!-- c -->6543<")
        .replace(b"<SPIMajorVersion>1</SPIMajorVersion>", b"<SPIMajorVersion/>\r\n")
    )
    files.append(("comments", commented))
    return files


FIELDS_OF_LINE = (
    "番号体系",
    "宛名番号",
    "統合宛名番号",
    "照会依頼日時",
    "情報照会者部署コード",
    "情報照会者ユーザーID",
    "情報照会者機関コード",
    "照会側不開示コード",
    "事務コード",
    "事務手続コード",
    "照会者機関コード(委任元)",
    "提供者機関コード(委任元)",
    "情報提供者機関コード又は転入元",
    "特定個人情報名コード",
    "照会条件区分",
    "照会年度区分",
    "照会開始日付",
    "照会終了日付",
)
HEADER = ",".join(FIELDS_OF_LINE)


def line(**changes: str) -> str:
    """A valid line: Meguro asks Setagaya for a person's local tax information."""
    values = dict.fromkeys(FIELDS_OF_LINE, "")
    values.update(
        {
            "番号体系": "01",
            "宛名番号": "000000000000101",
            "統合宛名番号": "000000000010001",
            "照会依頼日時": "20260401093000123",
            "情報照会者部署コード": "KAIGO01",
            "情報照会者ユーザーID": "user01",
            "情報照会者機関コード": MEGURO,
            "照会側不開示コード": "0",
            "事務コード": AFFAIR,
            "事務手続コード": PROCEDURE,
            "情報提供者機関コード又は転入元": SETAGAYA,
            "特定個人情報名コード": LOCAL_TAX,
        }
    )
    values.update(changes)
    return ",".join(values[name] for name in FIELDS_OF_LINE)


def bulk_files() -> list[tuple[str, bytes]]:
    by_year = line(照会条件区分="1", 照会年度区分="2025")
    by_period = line(照会条件区分="2", 照会開始日付="20250401", 照会終了日付="20260331")
    both = line(
        照会条件区分="3", 照会年度区分="2025", 照会開始日付="20250401", 照会終了日付="20250930"
    )
    moved_in = line(情報提供者機関コード又は転入元="131121")
    quoted = '"01",  000000000000102 ,"000000000010002",' + ",".join(line().split(",")[3:])
    invalid = "\n".join(
        [
            line(照会依頼日時="20260230093000123"),
            line(事務コード="JM90000000002000", 特定個人情報名コード=CARE),
            ",".join(line().split(",")[:17]),
            line(情報提供者機関コード又は転入元="131122"),
            line(照会条件区分="2", 照会開始日付="20260101", 照会終了日付="20251231"),
        ]
    )
    return [
        ("one-line", (line() + "\n").encode()),
        ("header-crlf", "\r\n".join([HEADER, line(), by_year, by_period, ""]).encode()),
        ("bom", b"\xef\xbb\xbf" + "\n".join([HEADER, both, moved_in]).encode()),
        (
            "shift-jis",
            "\r\n".join([HEADER, line(情報照会者部署コード="介護保険課"), ""]).encode("cp932"),
        ),
        ("quoted-blank-lines", ("\n\n" + quoted + "\n \n" + line() + "\n").encode()),
        ("invalid-lines", (invalid + "\n").encode()),
    ]


def parser_documents() -> list[tuple[str, bytes]]:
    """Documents for the parser alone: what it accepts and each of its refusals."""
    nested = b"<a>" * 33 + b"</a>" * 33
    return [
        ("declaration", b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<r a="1"/>'),
        (
            "mixed",
            b'<r xmlns="urn:x" xmlns:p="urn:p"><!-- c --><p:a p:b="&amp;&#x3042;">t<![CDATA[<x>]]>'
            b'</p:a>\r\n<e xml:space="preserve"> </e></r>',
        ),
        ("utf-16", '<?xml version="1.0" encoding="UTF-16"?><r>日本</r>'.encode("utf-16")),
        ("latin-1", '<?xml version="1.0" encoding="ISO-8859-1"?><r>é</r>'.encode("latin-1")),
        ("bom", b"\xef\xbb\xbf<r/>"),
        ("too-deep", nested),
        ("doctype", b'<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>'),
        ("undeclared-entity", b"<r>&e;</r>"),
        ("processing-instruction", b"<?pi x?><r/>"),
        ("malformed", b"<r><a></r>"),
    ]


def write(name: str, seeds: list[tuple[str, bytes]]) -> None:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for label, data in seeds:
        digest = hashlib.sha1(data).hexdigest()[:8]
        (folder / f"{label}-{digest}").write_bytes(data)


def main() -> None:
    samples = sample_messages()
    message_seeds: list[tuple[str, bytes]] = []
    for label, message in samples:
        message_type: Any = type(message)
        index = TYPES.index(message_type)
        document = message_document(message)
        message_seeds.append((label, bytes([index]) + document))
        if messages.is_signed(message_type):
            message_seeds.append((label + "-verified", bytes([index + len(TYPES)]) + document))

    files = replica_files()
    documents = [(label, message_document(m)) for label, m in samples[::3]]
    documents += [("replica-" + label, data) for label, data in files[:2]]
    documents += parser_documents()
    # Selector bytes (fuzz/hardened_xml.py): default limits streamed in one chunk, then in
    # chunks of 7 bytes; 4 levels, not streamed; 256 bytes and 2 levels, streamed byte by byte.
    parser_seeds = [(label, b"\x00\x00\xff" + data) for label, data in documents]
    parser_seeds += [(label + "-chunked", b"\x00\x00\x07" + data) for label, data in documents[-8:]]
    parser_seeds += [(label + "-depth-4", b"\x02\x03\x00" + data) for label, data in documents[:4]]
    parser_seeds += [(label + "-small", b"\x07\x20\x01" + data) for label, data in documents[-6:]]

    write("hardened_xml", parser_seeds)
    write("messages", message_seeds)
    # Selector byte (fuzz/replica_file.py): the module's chunk size, then chunks of 64 bytes.
    replica_seeds = [(label, b"\x00" + data) for label, data in files]
    replica_seeds += [(label + "-chunked", b"\x40" + data) for label, data in files[:3]]
    write("replica_file", replica_seeds)
    write("bulk_query", bulk_files())
    for folder in sorted(CORPUS.iterdir()):
        sizes = [path.stat().st_size for path in folder.iterdir()]
        print(f"{folder.name}: {len(sizes)} seeds, {sum(sizes)} bytes")


if __name__ == "__main__":
    main()
