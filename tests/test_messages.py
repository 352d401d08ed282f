"""Protocol messages: encoding, validated decoding, signed parts and refusals."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from lxml import etree

from codes.errors import XML_MALFORMED, XML_TOO_DEEP, RenkeiError
from middleware import messages
from middleware.hardened_xml import serialize
from middleware.messages import (
    DSIG_NS,
    NS,
    BundleAnswerLine,
    ErrorMessage,
    FugoRequest,
    FugoResponse,
    InstitutionEntry,
    PayloadRecord,
    Permit,
    PermitBundle,
    PermitBundleLine,
    PermittedListDocument,
    PermittedRow,
    Provision,
    ProvisionAck,
    ProvisionBundle,
    ProvisionBundleAnswer,
    ProvisionPayload,
    ProvisionRequest,
    ProvisionRequestAck,
    ProvisionRequestBundle,
    ProvisionRequestBundleAnswer,
    QueryAccepted,
    QueryBundle,
    QueryBundleAnswer,
    QueryBundleAnswerLine,
    QueryBundleLine,
    QueryConditions,
    QueryRequest,
    Route,
    decode,
    decode_signed,
    encode,
    error_message,
    from_element,
    to_element,
)

MESSAGE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
TRANSACTION = "20260101000000000001"
REQUESTER = "1310000000000001"
PROVIDER = "2710000000000002"
FUGO = "0123456789ABCDEF0123456789ABCDEF"
AFFAIR = "JM00000000000001"
PROCEDURE = "JT00000000000002"
INFORMATION_NAME = "TM00000000000003"
ISSUED = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=UTC)
LINE_IDS = ("6c3a1f0e-8b1d-4d2e-9f43-1a2b3c4d5e60", "6c3a1f0e-8b1d-4d2e-9f43-1a2b3c4d5e61")
CONDITIONS = QueryConditions(
    fiscal_year=2025, period_start=date(2025, 4, 1), period_end=date(2026, 3, 31)
)


def sample_permit(**changes: Any) -> Permit:
    """A complete Permit, with optional changes."""
    permit = Permit(
        transaction_number=TRANSACTION,
        requester=REQUESTER,
        provider=PROVIDER,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider_fugo=FUGO,
        conditions=CONDITIONS,
        issued_at=ISSUED,
        expires_at=EXPIRES,
    )
    return replace(permit, **changes)


def sample_permit_bundle() -> PermitBundle:
    """A PermitBundle of two lines, with every optional field."""
    return PermitBundle(
        requester=REQUESTER,
        provider=PROVIDER,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        conditions=CONDITIONS,
        delegating_provider=PROVIDER,
        non_disclosure=True,
        issued_at=ISSUED,
        expires_at=EXPIRES,
        lines=(
            PermitBundleLine(transaction_number=TRANSACTION, provider_fugo=FUGO),
            PermitBundleLine(transaction_number="20260101000000000002", provider_fugo=FUGO[::-1]),
        ),
    )


def sample_permitted_list() -> PermittedListDocument:
    """A permitted-query list with two institutions and one row."""
    return PermittedListDocument(
        version=7,
        issued_at=ISSUED,
        expires_at=EXPIRES,
        institutions=(
            InstitutionEntry(code=REQUESTER, name="千代田区", kind="municipality"),
            InstitutionEntry(code=PROVIDER, name="Osaka Pension Office", kind="pension"),
        ),
        rows=(
            PermittedRow(
                requester_kind="municipality",
                affair=AFFAIR,
                procedure=PROCEDURE,
                provider_kind="pension",
                information_name=INFORMATION_NAME,
                legal_basis="番号法第19条第8号 別表第二 項番1",
            ),
        ),
    )


def sample_payload() -> ProvisionPayload:
    """A payload with Japanese values, markup-like text and an empty value."""
    return ProvisionPayload(
        transaction_number=TRANSACTION,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        requester=REQUESTER,
        created_at=ISSUED,
        records=(
            PayloadRecord(
                data_set="0001",
                record_id="R-0001",
                items=(
                    ("TK00000000000001", "山田 太郎"),
                    ("TK00000000000002", "東京都千代田区霞が関１－２－３"),
                    ("TK00000000000003", "  spaces kept  "),
                    ("TK00000000000004", '<!DOCTYPE x> & "quotes" <tag/>'),
                    ("TK00000000000005", ""),
                ),
            ),
            PayloadRecord(data_set="0002", record_id="R-0002"),
        ),
    )


UNSIGNED_SAMPLES: dict[str, messages.Message] = {
    "FugoRequest": FugoRequest(message_id=MESSAGE_ID, individual_number="123456789012"),
    "FugoResponse": FugoResponse(message_id=MESSAGE_ID, fugo=FUGO),
    "QueryRequest": QueryRequest(
        message_id=MESSAGE_ID,
        requester_fugo=FUGO,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        conditions=CONDITIONS,
    ),
    "QueryRequestWithoutConditions": QueryRequest(
        message_id=MESSAGE_ID,
        requester_fugo=FUGO,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
    ),
    "QueryRequestWithFiscalYearOnly": QueryRequest(
        message_id=MESSAGE_ID,
        requester_fugo=FUGO,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        conditions=QueryConditions(fiscal_year=2024),
    ),
    "QueryRequestWithEmptyConditions": QueryRequest(
        message_id=MESSAGE_ID,
        requester_fugo=FUGO,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        conditions=QueryConditions(),
    ),
    "QueryAccepted": QueryAccepted(message_id=MESSAGE_ID, transaction_number=TRANSACTION),
    "QueryBundle": QueryBundle(
        message_id=MESSAGE_ID,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        conditions=CONDITIONS,
        delegating_requester=REQUESTER,
        non_disclosure=True,
        lines=(
            QueryBundleLine(message_id=LINE_IDS[0], requester_fugo=FUGO),
            QueryBundleLine(message_id=LINE_IDS[1], requester_fugo=FUGO[::-1]),
        ),
    ),
    "QueryBundleAnswer": QueryBundleAnswer(
        message_id=MESSAGE_ID,
        lines=(
            QueryBundleAnswerLine(message_id=LINE_IDS[0], transaction_number=TRANSACTION),
            QueryBundleAnswerLine(
                message_id=LINE_IDS[1],
                transaction_number="20260101000000000002",
                code="FugoNotAcquired",
                message_en="The person's fugo has not been acquired.",
                message_ja="符号が未取得です。",
            ),
        ),
    ),
    "ProvisionRequestAck": ProvisionRequestAck(
        message_id=MESSAGE_ID, transaction_number=TRANSACTION
    ),
    "ProvisionBundle": ProvisionBundle(
        message_id=MESSAGE_ID,
        provisions=(
            Provision(
                message_id=LINE_IDS[0],
                transaction_number=TRANSACTION,
                status="provided",
                query_message_id=LINE_IDS[1],
                encrypted_payload=bytes(range(256)),
            ),
            Provision(
                message_id=LINE_IDS[1],
                transaction_number="20260101000000000002",
                status="held",
                non_disclosure=True,
            ),
        ),
    ),
    "ProvisionBundleAnswer": ProvisionBundleAnswer(
        message_id=MESSAGE_ID,
        lines=(
            BundleAnswerLine(transaction_number=TRANSACTION),
            BundleAnswerLine(
                transaction_number="20260101000000000002",
                code="UnknownTransaction",
                message_en="Unknown transaction.",
                message_ja="処理通番が不明です。",
            ),
        ),
    ),
    "ProvisionRequestBundleAnswer": ProvisionRequestBundleAnswer(
        message_id=MESSAGE_ID,
        lines=(
            BundleAnswerLine(transaction_number=TRANSACTION),
            BundleAnswerLine(
                transaction_number="20260101000000000002",
                code="PermitReplayed",
                message_en="This permit was used before.",
                message_ja="この許可証は使用済みです。",
            ),
        ),
    ),
    "ProvisionProvided": Provision(
        message_id=MESSAGE_ID,
        transaction_number=TRANSACTION,
        status="provided",
        encrypted_payload=bytes(range(256)) * 3,
    ),
    "ProvisionRefused": Provision(
        message_id=MESSAGE_ID,
        transaction_number=TRANSACTION,
        status="refused",
        error_code="FugoUnknown",
        reason_en="No person is linked to the code.",
        reason_ja="許可証の符号に紐付く者が当機関に存在しません。",
    ),
    "ProvisionAck": ProvisionAck(message_id=MESSAGE_ID, transaction_number=TRANSACTION),
    "ProvisionHeldNotDisclosed": Provision(
        message_id=MESSAGE_ID, transaction_number=TRANSACTION, status="held", non_disclosure=True
    ),
    "RecordDisclosureRequest": messages.RecordDisclosureRequest(
        message_id=MESSAGE_ID, person_fugo=FUGO
    ),
    "RecordDisclosureRequestOfAnInstitution": messages.RecordDisclosureRequest(
        message_id=MESSAGE_ID, person_fugo=FUGO, institution=PROVIDER
    ),
    "DisclosedRecords": messages.DisclosedRecords(
        message_id=MESSAGE_ID,
        party=PROVIDER,
        truncated=True,
        records=(
            messages.NetworkRecord(
                seq=7,
                recorded_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
                event="provision",
                status="provided",
                transaction_number=TRANSACTION,
                requester=REQUESTER,
                provider=PROVIDER,
                affair=AFFAIR,
                procedure=PROCEDURE,
                information_name=INFORMATION_NAME,
            ),
            messages.NetworkRecord(
                seq=8,
                recorded_at=datetime(2026, 11, 26, 10, 0, 1, tzinfo=UTC),
                event="provision",
                status="refused",
                error_code="PermitExpired",
            ),
        ),
    ),
    "NoticeFromAnInstitution": messages.Notice(
        message_id=MESSAGE_ID,
        person_fugo=FUGO,
        title="介護保険料額決定のお知らせ",
        body="保険料の額が決まりました。\n<詳しくは> & 添付をご覧ください。",
        attachments=(
            messages.Attachment(name="通知書.pdf", media_type="application/pdf", content=b"%PDF"),
        ),
    ),
    "NoticeRelayedToThePortal": messages.Notice(
        message_id=MESSAGE_ID,
        person_fugo=FUGO,
        title="お知らせ",
        body="本文",
        notice_number=TRANSACTION,
        sender=PROVIDER,
    ),
    "NoticeAck": messages.NoticeAck(message_id=MESSAGE_ID, notice_number=TRANSACTION),
    "NoticeRead": messages.NoticeRead(
        message_id=MESSAGE_ID,
        notice_number=TRANSACTION,
        read_at=datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC),
    ),
    "NoticeStatusRequest": messages.NoticeStatusRequest(
        message_id=MESSAGE_ID, notice_numbers=(TRANSACTION, "20261207000000000002")
    ),
    "NoticeStatusList": messages.NoticeStatusList(
        message_id=MESSAGE_ID,
        notices=(
            messages.NoticeState(
                notice_number=TRANSACTION,
                status="read",
                changed_at=datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC),
            ),
            messages.NoticeState(
                notice_number="20261207000000000002",
                status="undeliverable",
                changed_at=datetime(2026, 12, 7, 1, 2, 4, tzinfo=UTC),
                error_code="NoPortalAccount",
            ),
        ),
    ),
    "SelfInformationQuery": messages.SelfInformationQuery(
        message_id=MESSAGE_ID,
        person_fugo=FUGO,
        provider=PROVIDER,
        information_name=INFORMATION_NAME,
    ),
    "Error": ErrorMessage(code="NotPermitted", message_en="Not permitted.", message_ja="不許可"),
    "RecordList": messages.RecordList(
        transaction_number=TRANSACTION,
        records=(
            messages.NetworkRecord(
                seq=1,
                recorded_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
                event="query",
                status="permitted",
                requester="1131105000000000",
                provider="1131121000000000",
                information_name="TM00000000000002",
            ),
            messages.NetworkRecord(
                seq=2,
                recorded_at=datetime(2026, 11, 26, 10, 0, 1, tzinfo=UTC),
                event="provision",
                status="error",
                error_code="FugoUnknown",
            ),
        ),
    ),
}

SIGNED_SAMPLES: dict[str, messages.Message] = {
    "PermittedList": sample_permitted_list(),
    "Permit": sample_permit(),
    "PermitWithoutConditions": sample_permit(conditions=None),
    "PermitBundle": sample_permit_bundle(),
    "ProvisionPayload": sample_payload(),
    "ProvisionPayloadWithAttachments": replace(
        sample_payload(),
        attachments=(
            messages.Attachment(
                name="保険料額決定通知書.pdf", media_type="application/pdf", content=b"%PDF-1.7\n"
            ),
            messages.Attachment(
                name="note.txt", media_type="text/plain", content=bytes(range(256))
            ),
        ),
    ),
}


def dummy_signed(message: messages.Message) -> etree._Element:
    """The message's unsigned element with a placeholder ds:Signature appended."""
    element = to_element(message)
    etree.SubElement(element, f"{{{DSIG_NS}}}Signature", nsmap={"ds": DSIG_NS})
    return element


def sample_provision_request() -> ProvisionRequest:
    """A ProvisionRequest carrying a (dummy-)signed permit."""
    return ProvisionRequest(
        message_id=MESSAGE_ID,
        permit_element=dummy_signed(sample_permit()),
        route=Route(requester=REQUESTER, encryption_certificate=b"\x30\x82\x01\x0a" + b"\xff" * 64),
    )


def schema_refusal(data: bytes, expected: type) -> RenkeiError:
    """Decode data expecting a refusal, and return it."""
    with pytest.raises(RenkeiError) as info:
        if expected in (PermittedListDocument, Permit, PermitBundle, ProvisionPayload):
            decode_signed(data, expected)
        else:
            decode(data, expected)
    return info.value


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("name", sorted(UNSIGNED_SAMPLES))
def test_unsigned_message_round_trips(name: str) -> None:
    """Every unsigned message type decodes back to an equal dataclass."""
    message = UNSIGNED_SAMPLES[name]
    assert decode(encode(message), type(message)) == message


@pytest.mark.parametrize("name", sorted(SIGNED_SAMPLES))
def test_signed_part_round_trips_through_decode_signed_and_from_element(name: str) -> None:
    """A signed part, once signed, validates and is rebuilt by from_element after verification."""
    message = SIGNED_SAMPLES[name]
    element = decode_signed(serialize(dummy_signed(message)), type(message))
    assert element.tag == f"{{{NS}}}{messages.root_name(type(message))}"
    assert from_element(element, type(message)) == message


@pytest.mark.parametrize("name", sorted(SIGNED_SAMPLES))
def test_from_element_accepts_verified_output_without_signature(name: str) -> None:
    """The verifier's output (signature removed by the enveloped transform) is accepted."""
    message = SIGNED_SAMPLES[name]
    assert from_element(to_element(message), type(message)) == message


def test_provision_request_round_trips_with_detached_unverified_permit() -> None:
    """ProvisionRequest decodes to the raw signed permit (detached) and the route."""
    request = sample_provision_request()
    decoded = decode(encode(request), ProvisionRequest)
    assert decoded.message_id == request.message_id
    assert decoded.route == request.route
    assert decoded.permit_element.getparent() is None
    assert serialize(decoded.permit_element) == serialize(request.permit_element)
    assert from_element(decoded.permit_element, Permit) == sample_permit()


def test_provision_request_bundle_round_trips_with_detached_unverified_permit_bundle() -> None:
    """A ProvisionRequestBundle decodes to its raw signed permit bundle (detached) and its
    route; each line of the bundle is the Permit it stands for."""
    request = ProvisionRequestBundle(
        message_id=MESSAGE_ID,
        permit_element=dummy_signed(sample_permit_bundle()),
        route=Route(requester=REQUESTER, encryption_certificate=b"\x30\x82" + b"\xff" * 64),
    )
    decoded = decode(encode(request), ProvisionRequestBundle)
    assert (decoded.message_id, decoded.route) == (request.message_id, request.route)
    assert decoded.permit_element.getparent() is None
    assert serialize(decoded.permit_element) == serialize(request.permit_element)
    bundle = from_element(decoded.permit_element, PermitBundle)
    assert bundle == sample_permit_bundle()
    assert bundle.permit_of(bundle.lines[1]) == sample_permit(
        transaction_number="20260101000000000002",
        provider_fugo=FUGO[::-1],
        delegating_provider=PROVIDER,
        non_disclosure=True,
    )


def test_a_permit_bundle_naming_a_transaction_twice_is_refused() -> None:
    """Two lines with one 処理通番 (one permit given twice) are refused by the schema."""
    bundle = sample_permit_bundle()
    twice = replace(bundle, lines=(bundle.lines[0], bundle.lines[0]))
    data = serialize(dummy_signed(twice))
    assert schema_refusal(data, PermitBundle).code == "XmlSchemaInvalid"


def test_self_information_request_round_trips_as_a_provision_request_does() -> None:
    """SelfInformationRequest has ProvisionRequest's shape under its own root: the permit
    comes back detached and unverified, the route as sent; one root is not the other."""
    request = sample_provision_request()
    asked = messages.SelfInformationRequest(
        message_id=request.message_id,
        permit_element=request.permit_element,
        route=request.route,
    )
    decoded = decode(encode(asked), messages.SelfInformationRequest)
    assert decoded.route == request.route
    assert decoded.permit_element.getparent() is None
    assert from_element(decoded.permit_element, Permit) == sample_permit()
    with pytest.raises(RenkeiError) as info:
        decode(encode(asked), ProvisionRequest)
    assert info.value.code == "UnexpectedMessage"


def test_a_payload_with_a_fourth_attachment_is_refused() -> None:
    """A payload carries at most three attachments (the schema says so)."""
    file = messages.Attachment(name="a.txt", media_type="text/plain", content=b"a")
    payload = replace(sample_payload(), attachments=(file,) * 4)
    error = schema_refusal(serialize(dummy_signed(payload)), ProvisionPayload)
    assert error.code == "XmlSchemaInvalid"


def test_embedded_permit_serializes_as_when_signed() -> None:
    """The permit inside a ProvisionRequest carries no namespace beyond what it was signed with."""
    request = sample_provision_request()
    embedded = to_element(request)[0]
    assert etree.tostring(embedded) == etree.tostring(request.permit_element)


def test_provision_request_requires_a_signed_permit() -> None:
    """A ProvisionRequest whose permit lacks a signature is refused by the schema."""
    request = replace(sample_provision_request(), permit_element=to_element(sample_permit()))
    error = schema_refusal(encode(request), ProvisionRequest)
    assert error.code == "XmlSchemaInvalid"


@pytest.mark.parametrize("expected", [PermittedListDocument, Permit, ProvisionPayload])
def test_signed_document_without_signature_is_refused(expected: type) -> None:
    """decode_signed refuses a signed document type that carries no ds:Signature."""
    message = next(m for m in SIGNED_SAMPLES.values() if type(m) is expected)
    error = schema_refusal(encode(message), expected)
    assert error.code == "XmlSchemaInvalid"
    assert error.params["message_type"] == messages.root_name(expected)


def test_payload_with_japanese_values_round_trips_byte_exact() -> None:
    """Japanese, markup-like, padded and empty item values survive encode and decode."""
    payload = sample_payload()
    data = serialize(dummy_signed(payload))
    assert "山田 太郎".encode() in data
    rebuilt = from_element(decode_signed(data, ProvisionPayload), ProvisionPayload)
    assert rebuilt == payload
    assert rebuilt.records[0].items[1] == ("TK00000000000002", "東京都千代田区霞が関１－２－３")


def test_item_value_longer_than_1000_characters_is_refused() -> None:
    """An item value of 1001 characters does not conform to the payload schema."""
    payload = replace(
        sample_payload(),
        records=(
            PayloadRecord(data_set="0001", record_id="R1", items=(("TK" + "0" * 14, "あ" * 1001),)),
        ),
    )
    error = schema_refusal(serialize(dummy_signed(payload)), ProvisionPayload)
    assert error.code == "XmlSchemaInvalid"


def test_times_are_written_in_utc_with_z_and_read_back_aware() -> None:
    """A non-UTC aware time is written as UTC with Z and read back as the same instant in UTC."""
    jst = timezone(timedelta(hours=9))
    permit = sample_permit(issued_at=datetime(2026, 1, 1, 18, 0, tzinfo=jst))
    element = to_element(permit)
    assert element.findtext(f"{{{NS}}}IssuedAt") == "2026-01-01T09:00:00Z"
    assert element.findtext(f"{{{NS}}}ExpiresAt") == "2026-01-01T09:30:15.123456Z"
    rebuilt = from_element(element, Permit)
    assert rebuilt.issued_at == permit.issued_at
    assert rebuilt.issued_at.tzinfo is UTC


def test_naive_time_is_a_programming_error() -> None:
    """Encoding a naive datetime raises ValueError instead of guessing its zone."""
    with pytest.raises(ValueError):
        encode(sample_permit(issued_at=datetime(2026, 1, 1)))


def test_provision_reason_needs_both_languages() -> None:
    """A Provision reason in only one language raises ValueError when encoded."""
    with pytest.raises(ValueError):
        encode(
            Provision(
                message_id=MESSAGE_ID,
                transaction_number=TRANSACTION,
                status="error",
                reason_en="only English",
            )
        )


def test_text_split_by_a_comment_is_read_whole() -> None:
    """A value split by a comment is read whole, exactly as the schema validated it."""
    data = encode(UNSIGNED_SAMPLES["FugoRequest"]).replace(
        b"123456789012", b"123456<!-- c -->789012"
    )
    assert decode(data, FugoRequest).individual_number == "123456789012"


# ---------------------------------------------------------------------------------------------
# Schema refusals


BAD_CODES: list[tuple[str, type, bytes, bytes, bytes]] = [
    ("fugo_request_11_digits", FugoRequest, b"", b"123456789012", b"12345678901"),
    (
        "fugo_request_fullwidth",
        FugoRequest,
        b"",
        b"123456789012",
        "１２３４５６７８９０１２".encode(),
    ),
    ("fugo_response_lowercase", FugoResponse, b"", FUGO.encode(), FUGO.lower().encode()),
    ("message_id_not_uuid", FugoResponse, b"", MESSAGE_ID.encode(), b"not-a-uuid"),
    ("query_affair_prefix", QueryRequest, b"", AFFAIR.encode(), b"JX00000000000001"),
    ("query_provider_15_digits", QueryRequest, b"", PROVIDER.encode(), PROVIDER[:15].encode()),
    ("query_fiscal_year", QueryRequest, b"<FiscalYear>", b"<FiscalYear>2025", b"<FiscalYear>25"),
    ("accepted_transaction", QueryAccepted, b"", TRANSACTION.encode(), TRANSACTION[1:].encode()),
    ("request_ack_transaction", ProvisionRequestAck, b"", TRANSACTION.encode(), b"x" * 20),
    ("provision_status", Provision, b"provided", b'status="provided"', b'status="done"'),
    ("provision_ack_transaction", ProvisionAck, b"", TRANSACTION.encode(), b"2026"),
    ("error_code_with_space", ErrorMessage, b"", b'code="NotPermitted"', b'code="Not Permitted"'),
    ("error_lang", ErrorMessage, b"", b'lang="ja"', b'lang="fr"'),
    ("error_duplicate_lang", ErrorMessage, b"", b'lang="ja"', b'lang="en"'),
    (
        "route_certificate",
        ProvisionRequest,
        b"",
        b"<EncryptionCertificate>",
        b"<EncryptionCertificate>*",
    ),
    (
        "permit_15_digit_requester",
        ProvisionRequest,
        b"",
        REQUESTER.encode(),
        REQUESTER[:15].encode(),
    ),
    (
        "list_institution_15_digits",
        PermittedListDocument,
        b"",
        PROVIDER.encode(),
        PROVIDER[:15].encode(),
    ),
    ("list_kind", PermittedListDocument, b"", b'kind="pension"', b'kind="city"'),
    (
        "list_duplicate_institution",
        PermittedListDocument,
        b"",
        PROVIDER.encode(),
        REQUESTER.encode(),
    ),
    ("list_version_zero", PermittedListDocument, b"", b'version="7"', b'version="0"'),
    ("list_time_without_z", PermittedListDocument, b"", b'09:00:00Z"', b'09:00:00"'),
    ("permit_lowercase_fugo", Permit, b"", FUGO.encode(), FUGO.lower().encode()),
    ("permit_procedure", Permit, b"", PROCEDURE.encode(), b"JT0000000000002"),
    ("payload_item_code", ProvisionPayload, b"", b'code="TK00000000000001"', b'code="TK123"'),
    ("payload_data_set", ProvisionPayload, b"", b'dataSet="0001"', b'dataSet="00001"'),
    (
        "payload_information_name",
        ProvisionPayload,
        b"",
        INFORMATION_NAME.encode(),
        b"TM0000000000000X",
    ),
]


def encoded_sample(expected: type, variant: bytes) -> bytes:
    """The encoded (and, for signed parts, dummy-signed) sample of a message type."""
    if expected is ProvisionRequest:
        return encode(sample_provision_request())
    if expected in (PermittedListDocument, Permit, PermitBundle, ProvisionPayload):
        message = next(m for m in SIGNED_SAMPLES.values() if type(m) is expected)
        return serialize(dummy_signed(message))
    candidates = [m for m in UNSIGNED_SAMPLES.values() if type(m) is expected]
    if variant:
        candidates = [m for m in candidates if variant in encode(m)]
    return encode(candidates[0])


@pytest.mark.parametrize(
    ("expected", "variant", "good", "bad"),
    [case[1:] for case in BAD_CODES],
    ids=[case[0] for case in BAD_CODES],
)
def test_schema_refuses_bad_code_format(
    expected: type, variant: bytes, good: bytes, bad: bytes
) -> None:
    """Each schema refuses a malformed code with XmlSchemaInvalid naming the message type."""
    data = encoded_sample(expected, variant)
    assert good in data
    error = schema_refusal(data.replace(good, bad, 1), expected)
    assert error.code == "XmlSchemaInvalid"
    assert error.params["message_type"] == messages.root_name(expected)
    assert error.params["detail"]


def test_every_message_type_has_a_compiled_schema() -> None:
    """Every message type's schema was compiled at import."""
    assert set(messages.COMPILED_SCHEMAS) == {
        "FugoRequest",
        "FugoResponse",
        "PermittedList",
        "QueryRequest",
        "QueryAccepted",
        "QueryBundle",
        "QueryBundleAnswer",
        "Permit",
        "PermitBundle",
        "ProvisionRequest",
        "ProvisionRequestAck",
        "ProvisionRequestBundle",
        "ProvisionRequestBundleAnswer",
        "Provision",
        "ProvisionAck",
        "ProvisionBundle",
        "ProvisionBundleAnswer",
        "ProvisionPayload",
        "Error",
        "RecordList",
        "SelfInformationQuery",
        "SelfInformationRequest",
        "RecordDisclosureRequest",
        "DisclosedRecords",
        "Notice",
        "NoticeAck",
        "NoticeRead",
        "NoticeStatusRequest",
        "NoticeStatusList",
        "Batch",
        "BatchAnswer",
    }


# ---------------------------------------------------------------------------------------------
# Wrong messages and hostile input


def test_a_query_bundle_line_is_the_query_request_it_stands_for() -> None:
    """Every line of a bundle is handled as a QueryRequest with the bundle's shape."""
    bundle = UNSIGNED_SAMPLES["QueryBundle"]
    assert isinstance(bundle, QueryBundle)
    assert bundle.query_of(bundle.lines[1]) == QueryRequest(
        message_id=LINE_IDS[1],
        requester_fugo=FUGO[::-1],
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        conditions=CONDITIONS,
        delegating_requester=REQUESTER,
        non_disclosure=True,
    )


def bundle_of(lines: int) -> QueryBundle:
    return QueryBundle(
        message_id=MESSAGE_ID,
        affair=AFFAIR,
        procedure=PROCEDURE,
        information_name=INFORMATION_NAME,
        provider=PROVIDER,
        lines=tuple(
            QueryBundleLine(message_id=f"6c3a1f0e-8b1d-4d2e-9f43-{n:012d}", requester_fugo=FUGO)
            for n in range(lines)
        ),
    )


def test_a_query_bundle_holds_one_to_500_lines() -> None:
    """A bundle of 500 lines is taken; one of 501 lines or of none is refused by the schema."""
    assert len(decode(encode(bundle_of(500)), QueryBundle).lines) == 500
    for lines in (0, 501):
        assert schema_refusal(encode(bundle_of(lines)), QueryBundle).code == "XmlSchemaInvalid"


def test_a_query_bundle_naming_a_line_twice_is_refused() -> None:
    """Two lines with the same messageId (one query asked twice) are refused whole."""
    bundle = bundle_of(2)
    twice = replace(bundle, lines=(bundle.lines[0], bundle.lines[0]))
    assert schema_refusal(encode(twice), QueryBundle).code == "XmlSchemaInvalid"


def test_a_refused_answer_line_needs_its_reason_in_both_languages() -> None:
    """A line with a code carries the reason in English and Japanese; one language alone is
    refused."""
    data = encode(UNSIGNED_SAMPLES["QueryBundleAnswer"])
    one_language = data.replace('<Message lang="ja">符号が未取得です。</Message>'.encode(), b"")
    assert one_language != data
    assert schema_refusal(one_language, QueryBundleAnswer).code == "XmlSchemaInvalid"


def test_provision_bundles_stay_under_their_size_and_line_caps() -> None:
    """Provisions are grouped in order into bundles of at most 500 lines and about 512 KiB of
    payloads; a provision larger than that alone goes in a bundle of its own."""
    from middleware.network import MAX_BUNDLE_BYTES, bundles_of

    def provision(n: int, payload: int) -> Provision:
        number = f"{n:020d}"
        return Provision(
            message_id=MESSAGE_ID,
            transaction_number=number,
            status="provided",
            encrypted_payload=b"x" * payload,
        )

    small = [provision(n, 100) for n in range(1_200)]
    assert [len(group) for group in bundles_of(small)] == [500, 500, 200]
    large = [provision(n, 100_000) for n in range(12)]
    groups = bundles_of(large)
    assert [p for group in groups for p in group] == large
    assert all(len(g) * (256 + 4 * 100_000 // 3) <= MAX_BUNDLE_BYTES for g in groups)
    assert [len(group) for group in bundles_of([provision(0, 600_000), *large[:1]])] == [1, 1]
    for group in groups:  # each bundle is a message a receiver takes
        data = encode(ProvisionBundle(message_id=MESSAGE_ID, provisions=group))
        assert len(data) < 1_048_576
        assert decode(data, ProvisionBundle).provisions == group


def test_wrong_root_is_an_unexpected_message() -> None:
    """Decoding a FugoRequest as a FugoResponse is refused with both local names."""
    with pytest.raises(RenkeiError) as info:
        decode(encode(UNSIGNED_SAMPLES["FugoRequest"]), FugoResponse)
    assert info.value.code == "UnexpectedMessage"
    assert info.value.params == {"expected": "FugoResponse", "received": "FugoRequest"}


def test_error_reply_is_an_unexpected_message_then_decodes_as_error() -> None:
    """An Error received instead of the expected reply is refused, then decodes as ErrorMessage."""
    data = encode(UNSIGNED_SAMPLES["Error"])
    with pytest.raises(RenkeiError) as info:
        decode(data, QueryAccepted)
    assert info.value.params["received"] == "Error"
    assert decode(data, ErrorMessage) == UNSIGNED_SAMPLES["Error"]


def test_right_name_in_wrong_namespace_is_an_unexpected_message() -> None:
    """A root with the right local name in another namespace is refused and says so."""
    data = encode(UNSIGNED_SAMPLES["FugoRequest"]).replace(NS.encode(), b"urn:other")
    with pytest.raises(RenkeiError) as info:
        decode(data, FugoRequest)
    assert info.value.code == "UnexpectedMessage"
    assert "urn:other" in info.value.params["received"]


def test_from_element_checks_the_root() -> None:
    """from_element refuses an element of another type."""
    with pytest.raises(RenkeiError) as info:
        from_element(to_element(sample_permit()), ProvisionPayload)
    assert info.value.code == "UnexpectedMessage"


def test_from_element_validates_verified_content() -> None:
    """from_element refuses a verified element whose content does not conform."""
    element = to_element(sample_permit())
    element.find(f"{{{NS}}}Requester").text = "123"  # type: ignore[union-attr]
    with pytest.raises(RenkeiError) as info:
        from_element(element, Permit)
    assert info.value.code == "XmlSchemaInvalid"


def test_decode_refuses_signed_types() -> None:
    """decode will not build a signed part: that would trust unverified fields."""
    data = serialize(dummy_signed(sample_permit()))
    with pytest.raises(TypeError):
        decode(data, Permit)


def test_decode_signed_refuses_unsigned_types() -> None:
    """decode_signed is only for signed document types."""
    with pytest.raises(TypeError):
        decode_signed(encode(UNSIGNED_SAMPLES["QueryAccepted"]), QueryAccepted)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (
            b'<!DOCTYPE FugoRequest [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b"<FugoRequest>&b;</FugoRequest>",
            "XmlDoctypeForbidden",
        ),
        (
            b'<!DOCTYPE FugoRequest [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<FugoRequest xmlns="urn:renkei:linkage:1">&x;</FugoRequest>',
            "XmlDoctypeForbidden",
        ),
        (b"<FugoRequest>" * 10_000, "XmlTooDeep"),
        (b'<FugoRequest xmlns="urn:renkei:linkage:1"><?php x?></FugoRequest>', "XmlMalformed"),
        (b"<FugoRequest" + b" " * 1_048_576 + b"/>", "XmlTooLarge"),
    ],
    ids=["entities", "external_entity", "deep", "processing_instruction", "oversized"],
)
def test_decode_uses_the_hardened_parser(data: bytes, code: str) -> None:
    """Hostile documents are refused by decode before any root or schema check."""
    with pytest.raises(RenkeiError) as info:
        decode(data, FugoRequest)
    assert info.value.code == code


def test_error_message_carries_code_and_both_languages() -> None:
    """error_message renders a RenkeiError as an Error message that round-trips."""
    err = RenkeiError(XML_TOO_DEEP, limit=32)
    message = error_message(err)
    assert message == ErrorMessage(
        code="XmlTooDeep", message_en=err.message_en, message_ja=err.message_ja
    )
    assert decode(encode(message), ErrorMessage) == message


def test_error_message_fits_hostile_details_into_the_schema() -> None:
    """Control characters are replaced and over-long details truncated so the Error validates."""
    err = RenkeiError(XML_MALFORMED, detail="bad\x00\x01byte " + "x" * 5000)
    message = error_message(err)
    assert "\x00" not in message.message_en
    assert len(message.message_en) == 2000
    assert decode(encode(message), ErrorMessage) == message


def test_encoded_permit_is_a_copy_independent_of_the_caller() -> None:
    """Encoding a ProvisionRequest leaves the caller's permit element untouched."""
    request = sample_provision_request()
    before = copy.deepcopy(request.permit_element)
    to_element(request)
    assert request.permit_element.getparent() is None
    assert etree.tostring(request.permit_element) == etree.tostring(before)
