"""The messages of the linkage protocol: dataclasses, XML encoding and validated decoding.

Every message is an XML document in the namespace `NS` whose root element names its type; its
schema is ``middleware/schemas/<Root>.xsd``. Receiving always goes through the hardened parser
(`middleware.hardened_xml.parse_xml`), a root-element check (``UnexpectedMessage``) and XSD
validation (``XmlSchemaInvalid``) before any dataclass is built.

Signed parts — `PermittedListDocument`, `Permit`, `PermitBundle`, `ProvisionPayload` — end
with an enveloped XML-DSig ``ds:Signature``; the crypto code elsewhere signs and verifies
them. NEVER TRUST THE FIELDS OF A SIGNED PART BEFORE ITS SIGNATURE IS VERIFIED. Hence:

* sending: `to_element` returns the UNSIGNED element; the caller signs it (enveloped signature
  appended as last child) and serializes the signed element with `serialize`;
* receiving a whole signed document (PermittedList, ProvisionPayload, Permit): `decode_signed`
  parses, checks the root and validates, and returns the element still to be verified; `decode`
  refuses signed types. After verification, `from_element` builds the dataclass from the
  verified element (what a ``crypto.xmlsig`` verifier returns, no longer with the signature);
* a `ProvisionRequest` (and a `SelfInformationRequest`, of the same shape) carries a signed
  Permit, a `ProvisionRequestBundle` a signed PermitBundle in the same way: `decode` returns
  it with ``permit_element``, the raw, UNVERIFIED Permit element
  detached as its own document; the caller verifies it and then calls
  ``from_element(verified, Permit)``. When sending, ``permit_element`` must be the signed
  Permit; it is copied into the request, whose root declares only the default namespace so
  that the Permit canonicalizes exactly as it did when signed.

Times are timezone-aware `datetime` objects, written in UTC as ``YYYY-MM-DDThh:mm:ss[.ffffff]Z``
and read back as aware UTC datetimes. Base64 fields are `bytes`. Codes are plain `str`, checked
by the schemas on receipt (encoding does not validate).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from lxml import etree

from codes.errors import UNEXPECTED_MESSAGE, XML_SCHEMA_INVALID, RenkeiError
from middleware.hardened_xml import parse_xml, serialize

__all__ = [
    "COMPILED_SCHEMAS",
    "DSIG_NS",
    "MESSAGE_TYPES",
    "NS",
    "SCHEMA_DIR",
    "Attachment",
    "Batch",
    "BatchAnswer",
    "BatchAnswerItem",
    "BatchItem",
    "BundleAnswerLine",
    "DelegationEntry",
    "DisclosedRecords",
    "ErrorMessage",
    "FugoRequest",
    "FugoResponse",
    "InstitutionEntry",
    "Message",
    "NetworkRecord",
    "Notice",
    "NoticeAck",
    "NoticeRead",
    "NoticeState",
    "NoticeStatusList",
    "NoticeStatusRequest",
    "PayloadRecord",
    "Permit",
    "PermitBundle",
    "PermitBundleLine",
    "PermittedListDocument",
    "PermittedRow",
    "Provision",
    "ProvisionAck",
    "ProvisionBundle",
    "ProvisionBundleAnswer",
    "ProvisionPayload",
    "ProvisionRequest",
    "ProvisionRequestAck",
    "ProvisionRequestBundle",
    "ProvisionRequestBundleAnswer",
    "QueryAccepted",
    "QueryBundle",
    "QueryBundleAnswer",
    "QueryBundleAnswerLine",
    "QueryBundleLine",
    "QueryConditions",
    "QueryRequest",
    "RecordDisclosureRequest",
    "RecordList",
    "Route",
    "SelfInformationQuery",
    "SelfInformationRequest",
    "check_document",
    "decode",
    "decode_signed",
    "encode",
    "error_message",
    "from_element",
    "is_signed",
    "root_name",
    "serialize",
    "to_element",
]

NS = "urn:renkei:linkage:1"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SCHEMA_DIR = Path(__file__).resolve().with_name("schemas")

_MESSAGE_TEXT_MAX = 2000  # MessageText in common.xsd
_TRANSACTION = re.compile(r"[0-9]{20}")  # TransactionNumber in common.xsd


# ---------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True, kw_only=True, slots=True)
class FugoRequest:
    """Institution → network: acquire the fugo of the person with this individual number."""

    message_id: str
    individual_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class FugoResponse:
    """Network → institution: the fugo issued to the requesting institution."""

    message_id: str
    fugo: str


@dataclass(frozen=True, kw_only=True, slots=True)
class InstitutionEntry:
    """An institution registered on the network, as listed in the permitted-query list."""

    code: str
    name: str
    kind: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PermittedRow:
    """One permitted (requester kind, affair, procedure, provider kind, information name)."""

    requester_kind: str
    affair: str
    procedure: str
    provider_kind: str
    information_name: str
    legal_basis: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DelegationEntry:
    """委任: institution ``delegate`` may query or answer in the name of ``delegator``."""

    delegator: str
    delegate: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PermittedListDocument:
    """The permitted-query list (signed by the network; root element ``PermittedList``)."""

    version: int
    issued_at: datetime
    expires_at: datetime
    institutions: tuple[InstitutionEntry, ...] = ()
    rows: tuple[PermittedRow, ...] = ()
    delegations: tuple[DelegationEntry, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryConditions:
    """Optional conditions narrowing a query."""

    fiscal_year: int | None = None
    period_start: date | None = None
    period_end: date | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryRequest:
    """Requester → network: query an information name about the person behind a fugo."""

    message_id: str
    requester_fugo: str
    affair: str
    procedure: str
    information_name: str
    provider: str
    conditions: QueryConditions | None = None
    delegating_requester: str | None = None  # 照会者機関コード(委任元)
    delegating_provider: str | None = None  # 提供者機関コード(委任元)
    non_disclosure: bool = False  # 照会側不開示


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryAccepted:
    """Network → requester: the query is permitted and has this transaction number."""

    message_id: str
    transaction_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryBundleLine:
    """One query of a `QueryBundle`: the messageId its QueryRequest would have, its person."""

    message_id: str
    requester_fugo: str


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryBundle:
    """Requester → network: queries of one shape about several persons in one message (a bulk
    query's lines); each line is handled as the `QueryRequest` of `query_of`."""

    message_id: str
    affair: str
    procedure: str
    information_name: str
    provider: str
    conditions: QueryConditions | None = None
    delegating_requester: str | None = None  # 照会者機関コード(委任元)
    delegating_provider: str | None = None  # 提供者機関コード(委任元)
    non_disclosure: bool = False  # 照会側不開示
    lines: tuple[QueryBundleLine, ...]

    def query_of(self, line: QueryBundleLine) -> QueryRequest:
        """The QueryRequest a line stands for."""
        return QueryRequest(
            message_id=line.message_id,
            requester_fugo=line.requester_fugo,
            affair=self.affair,
            procedure=self.procedure,
            information_name=self.information_name,
            provider=self.provider,
            conditions=self.conditions,
            delegating_requester=self.delegating_requester,
            delegating_provider=self.delegating_provider,
            non_disclosure=self.non_disclosure,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryBundleAnswerLine:
    """The network's answer to one line: its 処理通番, and the refusal's code and messages
    when it refused the line (all three or none)."""

    message_id: str
    transaction_number: str
    code: str | None = None
    message_en: str | None = None
    message_ja: str | None = None

    @classmethod
    def refusing(
        cls, message_id: str, transaction_number: str, refusal: RenkeiError
    ) -> QueryBundleAnswerLine:
        """The answer to a line refused with ``refusal``: its code and both messages."""
        return cls(
            message_id=message_id,
            transaction_number=transaction_number,
            code=refusal.code,
            message_en=refusal.message_en,
            message_ja=refusal.message_ja,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class QueryBundleAnswer:
    """Network → requester: the answer to a `QueryBundle`, a line per line, in order."""

    message_id: str
    lines: tuple[QueryBundleAnswerLine, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Permit:
    """The information-provision permit (signed by the network)."""

    transaction_number: str
    requester: str
    provider: str
    affair: str
    procedure: str
    information_name: str
    provider_fugo: str
    conditions: QueryConditions | None = None
    delegating_requester: str | None = None
    delegating_provider: str | None = None
    non_disclosure: bool = False
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class PermitBundleLine:
    """One permit of a `PermitBundle`: its 処理通番 and the person's 符号 at the provider."""

    transaction_number: str
    provider_fugo: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PermitBundle:
    """The permits of a query bundle's permitted lines, signed once by the network; each line
    is the `Permit` of `permit_of`."""

    requester: str
    provider: str
    affair: str
    procedure: str
    information_name: str
    conditions: QueryConditions | None = None
    delegating_requester: str | None = None
    delegating_provider: str | None = None
    non_disclosure: bool = False
    issued_at: datetime
    expires_at: datetime
    lines: tuple[PermitBundleLine, ...]

    def permit_of(self, line: PermitBundleLine) -> Permit:
        """The Permit a line stands for."""
        return Permit(
            transaction_number=line.transaction_number,
            requester=self.requester,
            provider=self.provider,
            affair=self.affair,
            procedure=self.procedure,
            information_name=self.information_name,
            provider_fugo=line.provider_fugo,
            conditions=self.conditions,
            delegating_requester=self.delegating_requester,
            delegating_provider=self.delegating_provider,
            non_disclosure=self.non_disclosure,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """Where the provision goes: the requester and the certificate (DER) to encrypt it to."""

    requester: str
    encryption_certificate: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionRequest:
    """Network → provider: provide under this permit.

    ``permit_element`` is the signed ``Permit`` element. After `decode` it is UNVERIFIED (a
    detached copy, its own document root): verify it, then ``from_element(verified, Permit)``.
    """

    message_id: str
    permit_element: etree._Element
    route: Route


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionRequestBundle:
    """Network → provider: provide under each permit of a signed `PermitBundle`.

    ``permit_element`` is the signed ``PermitBundle`` element, UNVERIFIED after `decode` (as a
    `ProvisionRequest`'s permit): verify it, then ``from_element(verified, PermitBundle)``.
    """

    message_id: str
    permit_element: etree._Element
    route: Route


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleAnswerLine:
    """The receiver's answer to one line of a bundle (a permit, a provision): its 処理通番,
    and the refusal's code and messages when it refused that line (all three or none)."""

    transaction_number: str
    code: str | None = None
    message_en: str | None = None
    message_ja: str | None = None

    @classmethod
    def refusing(cls, transaction_number: str, refusal: RenkeiError) -> BundleAnswerLine:
        """The answer to a line refused with ``refusal``: its code and both messages."""
        return cls(
            transaction_number=transaction_number,
            code=refusal.code,
            message_en=refusal.message_en,
            message_ja=refusal.message_ja,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionRequestBundleAnswer:
    """Provider → network: the answer to a `ProvisionRequestBundle`, a line per permit."""

    message_id: str
    lines: tuple[BundleAnswerLine, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class SelfInformationQuery:
    """マイナポータル → network: the person behind ``person_fugo`` (the portal's 符号) asks
    ``provider`` for their own information of ``information_name`` (自己情報提供)."""

    message_id: str
    person_fugo: str
    provider: str
    information_name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SelfInformationRequest:
    """Network → provider: provide a person's own information to マイナポータル under this
    permit (its procedure 自己情報提供). ``permit_element`` as in `ProvisionRequest`."""

    message_id: str
    permit_element: etree._Element
    route: Route


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionRequestAck:
    """Provider → network: the provision request was received."""

    message_id: str
    transaction_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Provision:
    """The outcome of a provision; ``reason_en`` and ``reason_ja`` go together or not at all.

    ``query_message_id`` is set by the network on the hop to the requester: the messageId of
    the requester's QueryRequest.
    """

    message_id: str
    transaction_number: str
    status: str
    error_code: str | None = None
    query_message_id: str | None = None
    encrypted_payload: bytes | None = None
    reason_en: str | None = None
    reason_ja: str | None = None
    # 提供側不開示: the provider hides the transaction from the person's disclosure.
    non_disclosure: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionBundle:
    """Several `Provision`s in one message (provider → network → requester, between nodes of
    renkei's and the network), each as it would travel alone."""

    message_id: str
    provisions: tuple[Provision, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionBundleAnswer:
    """The answer to a `ProvisionBundle`: a line per provision, in order."""

    message_id: str
    lines: tuple[BundleAnswerLine, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionAck:
    """Acknowledgement of a Provision."""

    message_id: str
    transaction_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PayloadRecord:
    """One record of provided data: its data set, record id and (item code, value) pairs."""

    data_set: str
    record_id: str
    items: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Attachment:
    """A file that goes with a person's own information or a notice: its name, media type
    and content."""

    name: str
    media_type: str
    content: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class ProvisionPayload:
    """The provided information in plaintext (signed by the provider, then encrypted); a
    person's own information (自己情報提供) may carry attachments (自己情報提供用添付ファイル)."""

    transaction_number: str
    information_name: str
    provider: str
    requester: str
    created_at: datetime
    records: tuple[PayloadRecord, ...] = ()
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorMessage:
    """A refusal: a published error code and its English and Japanese messages, and the
    処理通番 the refusal concerns (under which the refusing party recorded it), if any."""

    code: str
    message_en: str
    message_ja: str
    transaction_number: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NetworkRecord:
    """One party's provision record as it travels: in a `RecordList` (the hub's records of a
    transaction, for its parties) or in `DisclosedRecords` (a person's records, as the person
    is shown them: with the transaction, affair and procedure, never marked 不開示)."""

    seq: int
    recorded_at: datetime
    event: str
    status: str
    requester: str | None = None
    provider: str | None = None
    information_name: str | None = None
    error_code: str | None = None
    non_disclosure: bool = False
    delegating_requester: str | None = None
    delegating_provider: str | None = None
    transaction_number: str | None = None
    affair: str | None = None
    procedure: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordList:
    """The network's records of one transaction, for one of its parties."""

    transaction_number: str
    records: tuple[NetworkRecord, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordDisclosureRequest:
    """マイナポータル → network (and network → institution): the provision records of the
    person behind ``person_fugo`` (the sender's 符号 of them), the network's own or, with
    ``institution``, that institution's (情報提供等記録の開示)."""

    message_id: str
    person_fugo: str
    institution: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DisclosedRecords:
    """A party's provision records of one person, without those marked 不開示, oldest first;
    ``truncated`` when only the newest were given."""

    message_id: str
    party: str
    records: tuple[NetworkRecord, ...] = ()
    truncated: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """お知らせ: an institution → network → マイナポータル, for the person behind
    ``person_fugo`` (the sender's 符号 of them; on the hop to the portal, the portal's). The
    network adds its ``notice_number`` and the ``sender`` on that hop."""

    message_id: str
    person_fugo: str
    title: str
    body: str
    attachments: tuple[Attachment, ...] = ()
    notice_number: str | None = None
    sender: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NoticeAck:
    """The acknowledgement of a Notice or a NoticeRead: the notice's number at the network."""

    message_id: str
    notice_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class NoticeRead:
    """マイナポータル → network: the person read the notice at ``read_at``."""

    message_id: str
    notice_number: str
    read_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class NoticeStatusRequest:
    """お知らせ状況確認: an institution asks the network how its notices stand."""

    message_id: str
    notice_numbers: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class NoticeState:
    """How one notice stands at the network: ``sent``, ``delivered``, ``read`` or
    ``undeliverable`` (with the code of why), since ``changed_at``."""

    notice_number: str
    status: str
    changed_at: datetime
    error_code: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NoticeStatusList:
    """The network's answer to a NoticeStatusRequest: the asker's notices among those asked
    about (others are left out)."""

    message_id: str
    notices: tuple[NoticeState, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchItem:
    """One message of a `Batch`: its operation, its document (bytes exactly as sent alone)
    and its ``Content-Digest``, if the sender gave one."""

    operation: str
    document: bytes
    digest: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """Several messages of one sender to one receiver in one request (``POST /batch``)."""

    items: tuple[BatchItem, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchAnswerItem:
    """The answer one item of a batch would have had alone: its HTTP status and document
    (the answer, or an ``Error``)."""

    status: int
    document: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchAnswer:
    """The answer to a `Batch`: one item per item of the batch, in the same order."""

    items: tuple[BatchAnswerItem, ...]


Message = (
    FugoRequest
    | FugoResponse
    | PermittedListDocument
    | QueryRequest
    | QueryAccepted
    | QueryBundle
    | QueryBundleAnswer
    | Permit
    | PermitBundle
    | ProvisionRequest
    | ProvisionRequestBundle
    | ProvisionRequestBundleAnswer
    | SelfInformationQuery
    | SelfInformationRequest
    | ProvisionRequestAck
    | Provision
    | ProvisionBundle
    | ProvisionBundleAnswer
    | ProvisionAck
    | ProvisionPayload
    | ErrorMessage
    | RecordList
    | RecordDisclosureRequest
    | DisclosedRecords
    | Notice
    | NoticeAck
    | NoticeRead
    | NoticeStatusRequest
    | NoticeStatusList
    | Batch
    | BatchAnswer
)

T = TypeVar("T", bound=Message)


# ---------------------------------------------------------------------------------------------
# Value helpers


@functools.cache
def _q(local: str) -> str:
    """The qualified name of an element of the protocol (one string per name: lxml matches
    a string it has seen faster)."""
    return f"{{{NS}}}{local}"


_NSMAP = {None: NS}


def _format_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: message times must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time without a time zone: {text!r}")
    return value.astimezone(UTC)


def _b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


_XML_INCOMPATIBLE = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _message_text(text: str) -> str:
    """Make a human-readable message fit the MessageText type (XML characters, 1–2000)."""
    text = _XML_INCOMPATIBLE.sub("\ufffd", text)[:_MESSAGE_TEXT_MAX]
    return text or "-"


# ---------------------------------------------------------------------------------------------
# Encoding


def _root(local: str, **attributes: str) -> etree._Element:
    element = etree.Element(_q(local), nsmap=_NSMAP)  # type: ignore[arg-type]
    for name, value in attributes.items():
        element.set(name, value)
    return element


def _sub(parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, _q(local))
    if text is not None:
        element.text = text
    return element


def _add_conditions(parent: etree._Element, conditions: QueryConditions | None) -> None:
    if conditions is None:
        return
    element = _sub(parent, "Conditions")
    if conditions.fiscal_year is not None:
        _sub(element, "FiscalYear", f"{conditions.fiscal_year:04d}")
    if conditions.period_start is not None:
        _sub(element, "PeriodStart", conditions.period_start.isoformat())
    if conditions.period_end is not None:
        _sub(element, "PeriodEnd", conditions.period_end.isoformat())


def _add_acting_for(
    parent: etree._Element,
    delegating_requester: str | None,
    delegating_provider: str | None,
    non_disclosure: bool,
) -> None:
    if delegating_requester is not None:
        _sub(parent, "DelegatingRequester", delegating_requester)
    if delegating_provider is not None:
        _sub(parent, "DelegatingProvider", delegating_provider)
    if non_disclosure:
        _sub(parent, "NonDisclosure", "true")


def _add_messages(parent: etree._Element, english: str, japanese: str) -> None:
    _sub(parent, "Message", english).set("lang", "en")
    _sub(parent, "Message", japanese).set("lang", "ja")


def _fugo_request_element(m: FugoRequest) -> etree._Element:
    root = _root("FugoRequest", messageId=m.message_id)
    _sub(root, "IndividualNumber", m.individual_number)
    return root


def _fugo_response_element(m: FugoResponse) -> etree._Element:
    root = _root("FugoResponse", messageId=m.message_id)
    _sub(root, "Fugo", m.fugo)
    return root


def _permitted_list_element(m: PermittedListDocument) -> etree._Element:
    root = _root(
        "PermittedList",
        version=str(m.version),
        issuedAt=_format_time(m.issued_at),
        expiresAt=_format_time(m.expires_at),
    )
    for institution in m.institutions:
        element = _sub(root, "Institution")
        element.set("code", institution.code)
        element.set("name", institution.name)
        element.set("kind", institution.kind)
    for row in m.rows:
        element = _sub(root, "Row")
        element.set("requesterKind", row.requester_kind)
        element.set("affair", row.affair)
        element.set("procedure", row.procedure)
        element.set("providerKind", row.provider_kind)
        element.set("informationName", row.information_name)
        element.set("legalBasis", row.legal_basis)
    for delegation in m.delegations:
        element = _sub(root, "Delegation")
        element.set("delegator", delegation.delegator)
        element.set("delegate", delegation.delegate)
    return root


def _query_request_element(m: QueryRequest) -> etree._Element:
    root = _root("QueryRequest", messageId=m.message_id)
    _sub(root, "RequesterFugo", m.requester_fugo)
    _sub(root, "Affair", m.affair)
    _sub(root, "Procedure", m.procedure)
    _sub(root, "InformationName", m.information_name)
    _sub(root, "Provider", m.provider)
    _add_conditions(root, m.conditions)
    _add_acting_for(root, m.delegating_requester, m.delegating_provider, m.non_disclosure)
    return root


def _query_accepted_element(m: QueryAccepted) -> etree._Element:
    return _root("QueryAccepted", messageId=m.message_id, transactionNumber=m.transaction_number)


def _query_bundle_element(m: QueryBundle) -> etree._Element:
    root = _root("QueryBundle", messageId=m.message_id)
    _sub(root, "Affair", m.affair)
    _sub(root, "Procedure", m.procedure)
    _sub(root, "InformationName", m.information_name)
    _sub(root, "Provider", m.provider)
    _add_conditions(root, m.conditions)
    _add_acting_for(root, m.delegating_requester, m.delegating_provider, m.non_disclosure)
    for line in m.lines:
        element = _sub(root, "Line")
        element.set("messageId", line.message_id)
        _sub(element, "RequesterFugo", line.requester_fugo)
    return root


def _query_bundle_answer_element(m: QueryBundleAnswer) -> etree._Element:
    root = _root("QueryBundleAnswer", messageId=m.message_id)
    for line in m.lines:
        element = _sub(root, "Line")
        element.set("messageId", line.message_id)
        _add_line_answer(element, line)
    return root


def _provision_request_bundle_answer_element(m: ProvisionRequestBundleAnswer) -> etree._Element:
    root = _root("ProvisionRequestBundleAnswer", messageId=m.message_id)
    for line in m.lines:
        _add_line_answer(_sub(root, "Line"), line)
    return root


def _add_line_answer(
    element: etree._Element, line: QueryBundleAnswerLine | BundleAnswerLine
) -> None:
    """A bundle answer's line: its 処理通番 and, for a refused line, its code and reason."""
    element.set("transactionNumber", line.transaction_number)
    if line.code is not None:
        element.set("code", line.code)
        _add_messages(
            _sub(element, "Reason"),
            _message_text(line.message_en or ""),
            _message_text(line.message_ja or ""),
        )


def _permit_element(m: Permit) -> etree._Element:
    root = _root("Permit")
    _sub(root, "TransactionNumber", m.transaction_number)
    _sub(root, "Requester", m.requester)
    _sub(root, "Provider", m.provider)
    _sub(root, "Affair", m.affair)
    _sub(root, "Procedure", m.procedure)
    _sub(root, "InformationName", m.information_name)
    _sub(root, "ProviderFugo", m.provider_fugo)
    _add_conditions(root, m.conditions)
    _add_acting_for(root, m.delegating_requester, m.delegating_provider, m.non_disclosure)
    _sub(root, "IssuedAt", _format_time(m.issued_at))
    _sub(root, "ExpiresAt", _format_time(m.expires_at))
    return root


def _permit_bundle_element(m: PermitBundle) -> etree._Element:
    root = _root("PermitBundle")
    _sub(root, "Requester", m.requester)
    _sub(root, "Provider", m.provider)
    _sub(root, "Affair", m.affair)
    _sub(root, "Procedure", m.procedure)
    _sub(root, "InformationName", m.information_name)
    _add_conditions(root, m.conditions)
    _add_acting_for(root, m.delegating_requester, m.delegating_provider, m.non_disclosure)
    _sub(root, "IssuedAt", _format_time(m.issued_at))
    _sub(root, "ExpiresAt", _format_time(m.expires_at))
    for line in m.lines:
        element = _sub(root, "Line")
        _sub(element, "TransactionNumber", line.transaction_number)
        _sub(element, "ProviderFugo", line.provider_fugo)
    return root


def _self_information_query_element(m: SelfInformationQuery) -> etree._Element:
    root = _root("SelfInformationQuery", messageId=m.message_id)
    _sub(root, "PersonFugo", m.person_fugo)
    _sub(root, "Provider", m.provider)
    _sub(root, "InformationName", m.information_name)
    return root


def _self_information_request_element(m: SelfInformationRequest) -> etree._Element:
    return _permit_request_element("SelfInformationRequest", m)


def _provision_request_element(m: ProvisionRequest) -> etree._Element:
    return _permit_request_element("ProvisionRequest", m)


def _provision_request_bundle_element(m: ProvisionRequestBundle) -> etree._Element:
    return _permit_request_element("ProvisionRequestBundle", m, "PermitBundle")


def _permit_request_element(
    name: str,
    m: ProvisionRequest | SelfInformationRequest | ProvisionRequestBundle,
    permit_name: str = "Permit",
) -> etree._Element:
    """A request carrying a signed permit (or permit bundle) and its route (ProvisionRequest,
    SelfInformationRequest and ProvisionRequestBundle have this one shape)."""
    if m.permit_element.tag != _q(permit_name):
        raise ValueError(f"permit_element is a {m.permit_element.tag}, not a {permit_name}")
    root = _root(name, messageId=m.message_id)
    permit = copy.deepcopy(m.permit_element)
    permit.tail = None
    root.append(permit)
    route = _sub(root, "Route")
    _sub(route, "Requester", m.route.requester)
    _sub(route, "EncryptionCertificate", _b64encode(m.route.encryption_certificate))
    return root


def _provision_request_ack_element(m: ProvisionRequestAck) -> etree._Element:
    return _root(
        "ProvisionRequestAck", messageId=m.message_id, transactionNumber=m.transaction_number
    )


def _provision_element(m: Provision) -> etree._Element:
    if (m.reason_en is None) != (m.reason_ja is None):
        raise ValueError("a Provision reason needs both reason_en and reason_ja, or neither")
    root = _root(
        "Provision",
        messageId=m.message_id,
        transactionNumber=m.transaction_number,
        status=m.status,
    )
    if m.error_code is not None:
        root.set("errorCode", m.error_code)
    if m.query_message_id is not None:
        root.set("queryMessageId", m.query_message_id)
    if m.non_disclosure:
        root.set("nonDisclosure", "true")
    if m.encrypted_payload is not None:
        _sub(root, "EncryptedPayload", _b64encode(m.encrypted_payload))
    if m.reason_en is not None and m.reason_ja is not None:
        _add_messages(_sub(root, "Reason"), m.reason_en, m.reason_ja)
    return root


def _provision_bundle_element(m: ProvisionBundle) -> etree._Element:
    root = _root("ProvisionBundle", messageId=m.message_id)
    for provision in m.provisions:
        element = _provision_element(provision)
        root.append(element)
    return root


def _provision_bundle_answer_element(m: ProvisionBundleAnswer) -> etree._Element:
    root = _root("ProvisionBundleAnswer", messageId=m.message_id)
    for line in m.lines:
        _add_line_answer(_sub(root, "Line"), line)
    return root


# A record's optional attributes, in the order they are written, and their fields.
_RECORD_ATTRIBUTES = (
    ("transactionNumber", "transaction_number"),
    ("requester", "requester"),
    ("provider", "provider"),
    ("affair", "affair"),
    ("procedure", "procedure"),
    ("informationName", "information_name"),
    ("errorCode", "error_code"),
    ("delegatingRequester", "delegating_requester"),
    ("delegatingProvider", "delegating_provider"),
)


def _add_records(parent: etree._Element, records: tuple[NetworkRecord, ...]) -> None:
    for record in records:
        entry = _sub(parent, "Record")
        entry.set("seq", str(record.seq))
        entry.set("recordedAt", _format_time(record.recorded_at))
        entry.set("event", record.event)
        entry.set("status", record.status)
        for attribute, field_name in _RECORD_ATTRIBUTES:
            value = getattr(record, field_name)
            if value is not None:
                entry.set(attribute, value)
        if record.non_disclosure:
            entry.set("nonDisclosure", "true")


def _read_records(parent: etree._Element) -> tuple[NetworkRecord, ...]:
    return tuple(
        NetworkRecord(
            seq=int(_attr(entry, "seq")),
            recorded_at=_parse_time(_attr(entry, "recordedAt")),
            event=_attr(entry, "event"),
            status=_attr(entry, "status"),
            non_disclosure=entry.get("nonDisclosure") in ("true", "1"),
            **{field_name: entry.get(attribute) for attribute, field_name in _RECORD_ATTRIBUTES},
        )
        for entry in _children(parent, "Record")
    )


def _record_list_element(m: RecordList) -> etree._Element:
    root = _root("RecordList", transactionNumber=m.transaction_number)
    _add_records(root, m.records)
    return root


def _build_record_list(root: etree._Element) -> RecordList:
    return RecordList(
        transaction_number=_attr(root, "transactionNumber"), records=_read_records(root)
    )


def _record_disclosure_request_element(m: RecordDisclosureRequest) -> etree._Element:
    root = _root("RecordDisclosureRequest", messageId=m.message_id)
    _sub(root, "PersonFugo", m.person_fugo)
    if m.institution is not None:
        _sub(root, "Institution", m.institution)
    return root


def _disclosed_records_element(m: DisclosedRecords) -> etree._Element:
    root = _root("DisclosedRecords", messageId=m.message_id, party=m.party)
    if m.truncated:
        root.set("truncated", "true")
    _add_records(root, m.records)
    return root


def _notice_element(m: Notice) -> etree._Element:
    root = _root("Notice", messageId=m.message_id)
    if m.notice_number is not None:
        root.set("noticeNumber", m.notice_number)
    if m.sender is not None:
        root.set("sender", m.sender)
    _sub(root, "PersonFugo", m.person_fugo)
    _sub(root, "Title", m.title)
    _sub(root, "Body", m.body)
    _add_attachments(root, m.attachments)
    return root


def _notice_ack_element(m: NoticeAck) -> etree._Element:
    return _root("NoticeAck", messageId=m.message_id, noticeNumber=m.notice_number)


def _notice_read_element(m: NoticeRead) -> etree._Element:
    return _root(
        "NoticeRead",
        messageId=m.message_id,
        noticeNumber=m.notice_number,
        readAt=_format_time(m.read_at),
    )


def _notice_status_request_element(m: NoticeStatusRequest) -> etree._Element:
    root = _root("NoticeStatusRequest", messageId=m.message_id)
    for number in m.notice_numbers:
        _sub(root, "NoticeNumber", number)
    return root


def _notice_status_list_element(m: NoticeStatusList) -> etree._Element:
    root = _root("NoticeStatusList", messageId=m.message_id)
    for state in m.notices:
        entry = _sub(root, "Notice")
        entry.set("noticeNumber", state.notice_number)
        entry.set("status", state.status)
        entry.set("changedAt", _format_time(state.changed_at))
        if state.error_code is not None:
            entry.set("errorCode", state.error_code)
    return root


def _provision_ack_element(m: ProvisionAck) -> etree._Element:
    return _root("ProvisionAck", messageId=m.message_id, transactionNumber=m.transaction_number)


def _provision_payload_element(m: ProvisionPayload) -> etree._Element:
    root = _root(
        "ProvisionPayload",
        transactionNumber=m.transaction_number,
        informationName=m.information_name,
        provider=m.provider,
        requester=m.requester,
        createdAt=_format_time(m.created_at),
    )
    for record in m.records:
        record_element = _sub(root, "Record")
        record_element.set("dataSet", record.data_set)
        record_element.set("recordId", record.record_id)
        for code, value in record.items:
            _sub(record_element, "Item", value).set("code", code)
    _add_attachments(root, m.attachments)
    return root


def _add_attachments(parent: etree._Element, attachments: tuple[Attachment, ...]) -> None:
    for attachment in attachments:
        element = _sub(parent, "Attachment", _b64encode(attachment.content))
        element.set("name", attachment.name)
        element.set("mediaType", attachment.media_type)


def _batch_element(m: Batch) -> etree._Element:
    root = _root("Batch")
    for item in m.items:
        element = _sub(root, "Item", _b64encode(item.document))
        element.set("operation", item.operation)
        if item.digest is not None:
            element.set("digest", item.digest)
    return root


def _batch_answer_element(m: BatchAnswer) -> etree._Element:
    root = _root("BatchAnswer")
    for item in m.items:
        _sub(root, "Item", _b64encode(item.document)).set("status", str(item.status))
    return root


def _error_element(m: ErrorMessage) -> etree._Element:
    root = _root("Error", code=m.code)
    if m.transaction_number is not None:
        root.set("transactionNumber", m.transaction_number)
    _add_messages(root, m.message_en, m.message_ja)
    return root


# ---------------------------------------------------------------------------------------------
# Decoding (from validated elements only)


def _find(parent: etree._Element, local: str) -> etree._Element | None:
    """The first child element ``local`` of ``parent`` (as ``find``, without its path
    parser: a tag matched in C)."""
    return next(parent.iterchildren(_q(local)), None)


def _children(parent: etree._Element, local: str) -> Iterator[etree._Element]:
    """Every child element ``local`` of ``parent``, in order (as ``iterfind``)."""
    return parent.iterchildren(_q(local))


def _child(parent: etree._Element, local: str) -> etree._Element:
    element = _find(parent, local)
    if element is None:
        raise ValueError(f"missing {local} in {etree.QName(parent).localname}")
    return element


def _text(element: etree._Element) -> str:
    """The whole text of a simple-content element (text split by comments is joined)."""
    if not len(element):  # no comment splits it: its text is all of it
        return element.text or ""
    return "".join(cast("Iterator[str]", element.itertext()))


def _child_text(parent: etree._Element, local: str) -> str:
    return _text(_child(parent, local))


def _attr(element: etree._Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise ValueError(f"missing attribute {name} on {etree.QName(element).localname}")
    return value


def _read_conditions(parent: etree._Element) -> QueryConditions | None:
    element = _find(parent, "Conditions")
    if element is None:
        return None
    fiscal_year = _find(element, "FiscalYear")
    period_start = _find(element, "PeriodStart")
    period_end = _find(element, "PeriodEnd")
    return QueryConditions(
        fiscal_year=None if fiscal_year is None else int(_text(fiscal_year)),
        period_start=None if period_start is None else date.fromisoformat(_text(period_start)),
        period_end=None if period_end is None else date.fromisoformat(_text(period_end)),
    )


def _optional_text(parent: etree._Element, local: str) -> str | None:
    element = _find(parent, local)
    return None if element is None else _text(element)


def _read_non_disclosure(parent: etree._Element) -> bool:
    return _optional_text(parent, "NonDisclosure") in ("true", "1")


def _read_messages(parent: etree._Element) -> tuple[str, str]:
    by_lang = {_attr(m, "lang"): _text(m) for m in _children(parent, "Message")}
    return by_lang["en"], by_lang["ja"]


def _build_fugo_request(root: etree._Element) -> FugoRequest:
    return FugoRequest(
        message_id=_attr(root, "messageId"),
        individual_number=_child_text(root, "IndividualNumber"),
    )


def _build_fugo_response(root: etree._Element) -> FugoResponse:
    return FugoResponse(message_id=_attr(root, "messageId"), fugo=_child_text(root, "Fugo"))


def _build_permitted_list(root: etree._Element) -> PermittedListDocument:
    return PermittedListDocument(
        version=int(_attr(root, "version")),
        issued_at=_parse_time(_attr(root, "issuedAt")),
        expires_at=_parse_time(_attr(root, "expiresAt")),
        institutions=tuple(
            InstitutionEntry(code=_attr(e, "code"), name=_attr(e, "name"), kind=_attr(e, "kind"))
            for e in _children(root, "Institution")
        ),
        rows=tuple(
            PermittedRow(
                requester_kind=_attr(e, "requesterKind"),
                affair=_attr(e, "affair"),
                procedure=_attr(e, "procedure"),
                provider_kind=_attr(e, "providerKind"),
                information_name=_attr(e, "informationName"),
                legal_basis=_attr(e, "legalBasis"),
            )
            for e in _children(root, "Row")
        ),
        delegations=tuple(
            DelegationEntry(delegator=_attr(e, "delegator"), delegate=_attr(e, "delegate"))
            for e in _children(root, "Delegation")
        ),
    )


def _build_query_request(root: etree._Element) -> QueryRequest:
    return QueryRequest(
        message_id=_attr(root, "messageId"),
        requester_fugo=_child_text(root, "RequesterFugo"),
        affair=_child_text(root, "Affair"),
        procedure=_child_text(root, "Procedure"),
        information_name=_child_text(root, "InformationName"),
        provider=_child_text(root, "Provider"),
        conditions=_read_conditions(root),
        delegating_requester=_optional_text(root, "DelegatingRequester"),
        delegating_provider=_optional_text(root, "DelegatingProvider"),
        non_disclosure=_read_non_disclosure(root),
    )


def _build_query_accepted(root: etree._Element) -> QueryAccepted:
    return QueryAccepted(
        message_id=_attr(root, "messageId"),
        transaction_number=_attr(root, "transactionNumber"),
    )


def _build_query_bundle(root: etree._Element) -> QueryBundle:
    return QueryBundle(
        message_id=_attr(root, "messageId"),
        affair=_child_text(root, "Affair"),
        procedure=_child_text(root, "Procedure"),
        information_name=_child_text(root, "InformationName"),
        provider=_child_text(root, "Provider"),
        conditions=_read_conditions(root),
        delegating_requester=_optional_text(root, "DelegatingRequester"),
        delegating_provider=_optional_text(root, "DelegatingProvider"),
        non_disclosure=_read_non_disclosure(root),
        lines=tuple(
            QueryBundleLine(
                message_id=_attr(line, "messageId"),
                requester_fugo=_child_text(line, "RequesterFugo"),
            )
            for line in root.iterfind(_q("Line"))
        ),
    )


def _build_query_bundle_answer(root: etree._Element) -> QueryBundleAnswer:
    return QueryBundleAnswer(
        message_id=_attr(root, "messageId"),
        lines=tuple(
            QueryBundleAnswerLine(message_id=_attr(line, "messageId"), **_read_line_answer(line))
            for line in root.iterfind(_q("Line"))
        ),
    )


def _build_provision_request_bundle_answer(root: etree._Element) -> ProvisionRequestBundleAnswer:
    return ProvisionRequestBundleAnswer(
        message_id=_attr(root, "messageId"),
        lines=tuple(
            BundleAnswerLine(**_read_line_answer(line)) for line in root.iterfind(_q("Line"))
        ),
    )


def _read_line_answer(line: etree._Element) -> dict[str, Any]:
    """A bundle answer's line: its 処理通番 and, for a refused line, its code and reason."""
    reason = line.find(_q("Reason"))
    message_en, message_ja = (None, None) if reason is None else _read_messages(reason)
    return {
        "transaction_number": _attr(line, "transactionNumber"),
        "code": line.get("code"),
        "message_en": message_en,
        "message_ja": message_ja,
    }


def _build_permit(root: etree._Element) -> Permit:
    return Permit(
        transaction_number=_child_text(root, "TransactionNumber"),
        requester=_child_text(root, "Requester"),
        provider=_child_text(root, "Provider"),
        affair=_child_text(root, "Affair"),
        procedure=_child_text(root, "Procedure"),
        information_name=_child_text(root, "InformationName"),
        provider_fugo=_child_text(root, "ProviderFugo"),
        conditions=_read_conditions(root),
        delegating_requester=_optional_text(root, "DelegatingRequester"),
        delegating_provider=_optional_text(root, "DelegatingProvider"),
        non_disclosure=_read_non_disclosure(root),
        issued_at=_parse_time(_child_text(root, "IssuedAt")),
        expires_at=_parse_time(_child_text(root, "ExpiresAt")),
    )


def _build_permit_bundle(root: etree._Element) -> PermitBundle:
    return PermitBundle(
        requester=_child_text(root, "Requester"),
        provider=_child_text(root, "Provider"),
        affair=_child_text(root, "Affair"),
        procedure=_child_text(root, "Procedure"),
        information_name=_child_text(root, "InformationName"),
        conditions=_read_conditions(root),
        delegating_requester=_optional_text(root, "DelegatingRequester"),
        delegating_provider=_optional_text(root, "DelegatingProvider"),
        non_disclosure=_read_non_disclosure(root),
        issued_at=_parse_time(_child_text(root, "IssuedAt")),
        expires_at=_parse_time(_child_text(root, "ExpiresAt")),
        lines=tuple(
            PermitBundleLine(
                transaction_number=_child_text(line, "TransactionNumber"),
                provider_fugo=_child_text(line, "ProviderFugo"),
            )
            for line in root.iterfind(_q("Line"))
        ),
    )


def _build_provision_request_bundle(root: etree._Element) -> ProvisionRequestBundle:
    permit, route = _permit_and_route(root, "PermitBundle")
    return ProvisionRequestBundle(
        message_id=_attr(root, "messageId"), permit_element=permit, route=route
    )


def _build_provision_request(root: etree._Element) -> ProvisionRequest:
    permit, route = _permit_and_route(root)
    return ProvisionRequest(message_id=_attr(root, "messageId"), permit_element=permit, route=route)


def _build_self_information_request(root: etree._Element) -> SelfInformationRequest:
    permit, route = _permit_and_route(root)
    return SelfInformationRequest(
        message_id=_attr(root, "messageId"), permit_element=permit, route=route
    )


def _permit_and_route(
    root: etree._Element, permit_name: str = "Permit"
) -> tuple[etree._Element, Route]:
    """The UNVERIFIED permit (or permit bundle) of a request, detached as its own document,
    and its route."""
    permit = copy.deepcopy(_child(root, permit_name))  # detached: its own document root
    permit.tail = None
    route = _child(root, "Route")
    return permit, Route(
        requester=_child_text(route, "Requester"),
        encryption_certificate=_b64decode(_child_text(route, "EncryptionCertificate")),
    )


def _build_self_information_query(root: etree._Element) -> SelfInformationQuery:
    return SelfInformationQuery(
        message_id=_attr(root, "messageId"),
        person_fugo=_child_text(root, "PersonFugo"),
        provider=_child_text(root, "Provider"),
        information_name=_child_text(root, "InformationName"),
    )


def _build_provision_request_ack(root: etree._Element) -> ProvisionRequestAck:
    return ProvisionRequestAck(
        message_id=_attr(root, "messageId"),
        transaction_number=_attr(root, "transactionNumber"),
    )


def _build_provision(root: etree._Element) -> Provision:
    payload = _find(root, "EncryptedPayload")
    reason = _find(root, "Reason")
    reason_en, reason_ja = (None, None) if reason is None else _read_messages(reason)
    return Provision(
        message_id=_attr(root, "messageId"),
        transaction_number=_attr(root, "transactionNumber"),
        status=_attr(root, "status"),
        error_code=root.get("errorCode"),
        query_message_id=root.get("queryMessageId"),
        encrypted_payload=None if payload is None else _b64decode(_text(payload)),
        reason_en=reason_en,
        reason_ja=reason_ja,
        non_disclosure=root.get("nonDisclosure") in ("true", "1"),
    )


def _build_provision_bundle(root: etree._Element) -> ProvisionBundle:
    return ProvisionBundle(
        message_id=_attr(root, "messageId"),
        provisions=tuple(_build_provision(e) for e in root.iterfind(_q("Provision"))),
    )


def _build_provision_bundle_answer(root: etree._Element) -> ProvisionBundleAnswer:
    return ProvisionBundleAnswer(
        message_id=_attr(root, "messageId"),
        lines=tuple(BundleAnswerLine(**_read_line_answer(e)) for e in root.iterfind(_q("Line"))),
    )


def _build_provision_ack(root: etree._Element) -> ProvisionAck:
    return ProvisionAck(
        message_id=_attr(root, "messageId"),
        transaction_number=_attr(root, "transactionNumber"),
    )


def _build_provision_payload(root: etree._Element) -> ProvisionPayload:
    return ProvisionPayload(
        transaction_number=_attr(root, "transactionNumber"),
        information_name=_attr(root, "informationName"),
        provider=_attr(root, "provider"),
        requester=_attr(root, "requester"),
        created_at=_parse_time(_attr(root, "createdAt")),
        records=tuple(
            PayloadRecord(
                data_set=_attr(record, "dataSet"),
                record_id=_attr(record, "recordId"),
                items=tuple(
                    (_attr(item, "code"), _text(item)) for item in _children(record, "Item")
                ),
            )
            for record in _children(root, "Record")
        ),
        attachments=_read_attachments(root),
    )


def _read_attachments(parent: etree._Element) -> tuple[Attachment, ...]:
    return tuple(
        Attachment(
            name=_attr(element, "name"),
            media_type=_attr(element, "mediaType"),
            content=_b64decode(_text(element)),
        )
        for element in _children(parent, "Attachment")
    )


def _build_record_disclosure_request(root: etree._Element) -> RecordDisclosureRequest:
    return RecordDisclosureRequest(
        message_id=_attr(root, "messageId"),
        person_fugo=_child_text(root, "PersonFugo"),
        institution=_optional_text(root, "Institution"),
    )


def _build_disclosed_records(root: etree._Element) -> DisclosedRecords:
    return DisclosedRecords(
        message_id=_attr(root, "messageId"),
        party=_attr(root, "party"),
        truncated=root.get("truncated") in ("true", "1"),
        records=_read_records(root),
    )


def _build_notice(root: etree._Element) -> Notice:
    return Notice(
        message_id=_attr(root, "messageId"),
        notice_number=root.get("noticeNumber"),
        sender=root.get("sender"),
        person_fugo=_child_text(root, "PersonFugo"),
        title=_child_text(root, "Title"),
        body=_child_text(root, "Body"),
        attachments=_read_attachments(root),
    )


def _build_notice_ack(root: etree._Element) -> NoticeAck:
    return NoticeAck(message_id=_attr(root, "messageId"), notice_number=_attr(root, "noticeNumber"))


def _build_notice_read(root: etree._Element) -> NoticeRead:
    return NoticeRead(
        message_id=_attr(root, "messageId"),
        notice_number=_attr(root, "noticeNumber"),
        read_at=_parse_time(_attr(root, "readAt")),
    )


def _build_notice_status_request(root: etree._Element) -> NoticeStatusRequest:
    return NoticeStatusRequest(
        message_id=_attr(root, "messageId"),
        notice_numbers=tuple(_text(e) for e in _children(root, "NoticeNumber")),
    )


def _build_notice_status_list(root: etree._Element) -> NoticeStatusList:
    return NoticeStatusList(
        message_id=_attr(root, "messageId"),
        notices=tuple(
            NoticeState(
                notice_number=_attr(entry, "noticeNumber"),
                status=_attr(entry, "status"),
                changed_at=_parse_time(_attr(entry, "changedAt")),
                error_code=entry.get("errorCode"),
            )
            for entry in _children(root, "Notice")
        ),
    )


def _build_batch(root: etree._Element) -> Batch:
    return Batch(
        items=tuple(
            BatchItem(
                operation=_attr(item, "operation"),
                document=_b64decode(item.text or ""),
                digest=item.get("digest"),
            )
            for item in root
            if isinstance(item.tag, str)
        )
    )


def _build_batch_answer(root: etree._Element) -> BatchAnswer:
    return BatchAnswer(
        items=tuple(
            BatchAnswerItem(status=int(_attr(item, "status")), document=_b64decode(item.text or ""))
            for item in root
            if isinstance(item.tag, str)
        )
    )


def _build_error(root: etree._Element) -> ErrorMessage:
    message_en, message_ja = _read_messages(root)
    return ErrorMessage(
        code=_attr(root, "code"),
        message_en=message_en,
        message_ja=message_ja,
        transaction_number=root.get("transactionNumber"),
    )


# ---------------------------------------------------------------------------------------------
# Registry: one entry per message type, schemas compiled once at import


@dataclass(frozen=True)
class _Spec:
    root: str  # local name of the root element, also the schema's file name
    signed: bool
    to_element: Callable[[Any], etree._Element]
    build: Callable[[etree._Element], Any]


_SPECS: dict[type, _Spec] = {
    FugoRequest: _Spec("FugoRequest", False, _fugo_request_element, _build_fugo_request),
    FugoResponse: _Spec("FugoResponse", False, _fugo_response_element, _build_fugo_response),
    PermittedListDocument: _Spec(
        "PermittedList", True, _permitted_list_element, _build_permitted_list
    ),
    QueryRequest: _Spec("QueryRequest", False, _query_request_element, _build_query_request),
    QueryAccepted: _Spec("QueryAccepted", False, _query_accepted_element, _build_query_accepted),
    QueryBundle: _Spec("QueryBundle", False, _query_bundle_element, _build_query_bundle),
    QueryBundleAnswer: _Spec(
        "QueryBundleAnswer", False, _query_bundle_answer_element, _build_query_bundle_answer
    ),
    Permit: _Spec("Permit", True, _permit_element, _build_permit),
    PermitBundle: _Spec("PermitBundle", True, _permit_bundle_element, _build_permit_bundle),
    ProvisionRequestBundle: _Spec(
        "ProvisionRequestBundle",
        False,
        _provision_request_bundle_element,
        _build_provision_request_bundle,
    ),
    ProvisionRequestBundleAnswer: _Spec(
        "ProvisionRequestBundleAnswer",
        False,
        _provision_request_bundle_answer_element,
        _build_provision_request_bundle_answer,
    ),
    ProvisionRequest: _Spec(
        "ProvisionRequest", False, _provision_request_element, _build_provision_request
    ),
    SelfInformationQuery: _Spec(
        "SelfInformationQuery",
        False,
        _self_information_query_element,
        _build_self_information_query,
    ),
    SelfInformationRequest: _Spec(
        "SelfInformationRequest",
        False,
        _self_information_request_element,
        _build_self_information_request,
    ),
    ProvisionRequestAck: _Spec(
        "ProvisionRequestAck", False, _provision_request_ack_element, _build_provision_request_ack
    ),
    Provision: _Spec("Provision", False, _provision_element, _build_provision),
    ProvisionAck: _Spec("ProvisionAck", False, _provision_ack_element, _build_provision_ack),
    ProvisionBundle: _Spec(
        "ProvisionBundle", False, _provision_bundle_element, _build_provision_bundle
    ),
    ProvisionBundleAnswer: _Spec(
        "ProvisionBundleAnswer",
        False,
        _provision_bundle_answer_element,
        _build_provision_bundle_answer,
    ),
    ProvisionPayload: _Spec(
        "ProvisionPayload", True, _provision_payload_element, _build_provision_payload
    ),
    ErrorMessage: _Spec("Error", False, _error_element, _build_error),
    RecordList: _Spec("RecordList", False, _record_list_element, _build_record_list),
    RecordDisclosureRequest: _Spec(
        "RecordDisclosureRequest",
        False,
        _record_disclosure_request_element,
        _build_record_disclosure_request,
    ),
    DisclosedRecords: _Spec(
        "DisclosedRecords", False, _disclosed_records_element, _build_disclosed_records
    ),
    Notice: _Spec("Notice", False, _notice_element, _build_notice),
    NoticeAck: _Spec("NoticeAck", False, _notice_ack_element, _build_notice_ack),
    NoticeRead: _Spec("NoticeRead", False, _notice_read_element, _build_notice_read),
    NoticeStatusRequest: _Spec(
        "NoticeStatusRequest",
        False,
        _notice_status_request_element,
        _build_notice_status_request,
    ),
    NoticeStatusList: _Spec(
        "NoticeStatusList", False, _notice_status_list_element, _build_notice_status_list
    ),
    Batch: _Spec("Batch", False, _batch_element, _build_batch),
    BatchAnswer: _Spec("BatchAnswer", False, _batch_answer_element, _build_batch_answer),
}


def _load_schema(root: str) -> etree.XMLSchema:
    """Compile a trusted local schema (``xs:include`` resolves relative to its file)."""
    document = etree.parse(str(SCHEMA_DIR / f"{root}.xsd"), etree.XMLParser())
    return etree.XMLSchema(document)


_SCHEMAS: dict[str, etree.XMLSchema] = {
    spec.root: _load_schema(spec.root) for spec in _SPECS.values()
}
MESSAGE_TYPES: tuple[type[Message], ...] = tuple(_SPECS)
"""Every message type of the protocol."""
COMPILED_SCHEMAS: frozenset[str] = frozenset(_SCHEMAS)
"""The root names whose XSD was compiled at import (one per message type)."""


def is_signed(message_type: type[Message]) -> bool:
    """Whether messages of this type carry an enveloped XML signature."""
    return _spec(message_type).signed


# A compiled schema may be shared, but each XMLSchema object keeps one error log: one validation
# at a time per schema.
_SCHEMA_LOCKS: dict[str, threading.Lock] = {root: threading.Lock() for root in _SCHEMAS}


def _spec(message_type: type) -> _Spec:
    spec = _SPECS.get(message_type)
    if spec is None:
        raise TypeError(f"{message_type!r} is not a message type")
    return spec


def _received_name(element: etree._Element) -> str:
    qname = etree.QName(element)
    if qname.namespace == NS:
        return qname.localname
    return f"{qname.localname} (namespace {qname.namespace or 'none'})"


def _check_root(element: etree._Element, spec: _Spec) -> None:
    if not isinstance(element.tag, str) or element.tag != _q(spec.root):
        received = _received_name(element) if isinstance(element.tag, str) else "a non-element"
        raise RenkeiError(UNEXPECTED_MESSAGE, expected=spec.root, received=received)


def _validate(element: etree._Element, spec: _Spec) -> None:
    schema = _SCHEMAS[spec.root]
    with _SCHEMA_LOCKS[spec.root]:
        if schema.validate(element):
            return
        errors: list[Any] = list(cast(Any, schema.error_log))
    detail = f"line {errors[0].line}: {errors[0].message}" if errors else "invalid"
    raise RenkeiError(XML_SCHEMA_INVALID, message_type=spec.root, detail=detail)


def _build(element: etree._Element, spec: _Spec) -> Any:
    try:
        return spec.build(element)
    except (ValueError, KeyError, binascii.Error) as error:
        # Schema-valid but not representable (e.g. a date Python cannot hold).
        raise RenkeiError(XML_SCHEMA_INVALID, message_type=spec.root, detail=str(error)) from None


def _is_signature(node: etree._Element) -> bool:
    return isinstance(node.tag, str) and etree.QName(node).namespace == DSIG_NS


# ---------------------------------------------------------------------------------------------
# Public API


def to_element(message: Message) -> etree._Element:
    """Build the XML element of a message (for signed parts: the UNSIGNED element)."""
    return _spec(type(message)).to_element(message)


def encode(message: Message) -> bytes:
    """Serialize a message as a UTF-8 document (for signed parts: UNSIGNED; sign the element)."""
    return serialize(to_element(message))


def check_document(data: bytes) -> str:
    """The root name of ``data`` once it is known to be a well-formed, schema-valid message
    of the protocol (any type; signed ones are not verified here); `RenkeiError` otherwise."""
    root = parse_xml(data)
    name = etree.QName(root).localname if isinstance(root.tag, str) else ""
    for message_type, spec in _SPECS.items():
        if spec.root == name and etree.QName(root).namespace == NS:
            if spec.signed:
                decode_signed(data, message_type)
            else:
                decode(data, message_type)
            return name
    raise RenkeiError(
        UNEXPECTED_MESSAGE, expected="a message of the protocol", received=_received_name(root)
    )


def root_name(message_type: type[Message]) -> str:
    """The local name of the root element of a message type (e.g. ``"Error"``)."""
    return _spec(message_type).root


def decode(data: bytes, expected: type[T], *, max_bytes: int | None = None) -> T:
    """Parse, check and validate a received unsigned message, and build its dataclass.

    Raises `RenkeiError` with the hardened parser's codes, ``UnexpectedMessage`` if the root is
    not ``expected``'s, ``XmlSchemaInvalid`` with the first libxml2 validation error.
    A `ProvisionRequest`'s ``permit_element`` is returned UNVERIFIED. Signed documents
    (`PermittedListDocument`, `Permit`, `PermitBundle`, `ProvisionPayload`) are refused with
    `TypeError`: use `decode_signed`, verify, then `from_element`.
    """
    spec = _spec(expected)
    if spec.signed:
        raise TypeError(
            f"{expected.__name__} is signed: use decode_signed, verify, then from_element"
        )
    root = parse_xml(data) if max_bytes is None else parse_xml(data, max_bytes=max_bytes)
    _check_root(root, spec)
    _validate(root, spec)
    return cast(T, _build(root, spec))


def decode_signed(
    data: bytes, expected: type[Message], *, max_bytes: int | None = None
) -> etree._Element:
    """Parse, check and validate a whole signed document; return its root element TO VERIFY.

    For `PermittedListDocument`, `ProvisionPayload` and `Permit`. The schema requires the
    ``ds:Signature`` but does not check it: nothing in the returned element may be trusted
    until the caller has verified the signature; then build with `from_element`.
    """
    spec = _spec(expected)
    if not spec.signed:
        raise TypeError(f"{expected.__name__} is not signed: use decode")
    root = parse_xml(data) if max_bytes is None else parse_xml(data, max_bytes=max_bytes)
    _check_root(root, spec)
    _validate(root, spec)
    return root


def from_element(element: etree._Element, expected: type[T]) -> T:
    """Build a message from an element whose signature has ALREADY been verified.

    Pass the verifier's output (the signed content a ``crypto.xmlsig`` verifier returns), never
    an element whose signature has not been checked. The element is checked (root,
    ``UnexpectedMessage``) and validated (``XmlSchemaInvalid``) again; as the verified output no
    longer carries the enveloped ``ds:Signature``, a placeholder signature is appended to a copy
    for validation. Also accepts elements of unsigned message types (validated the same way).
    """
    spec = _spec(expected)
    _check_root(element, spec)
    candidate = element
    if spec.signed:
        children = [child for child in element if isinstance(child.tag, str)]
        if not children or not _is_signature(children[-1]):
            candidate = copy.deepcopy(element)
            etree.SubElement(candidate, f"{{{DSIG_NS}}}Signature")
    _validate(candidate, spec)
    return cast(T, _build(element, spec))


def error_message(err: RenkeiError) -> ErrorMessage:
    """The Error message telling a peer about a refusal (messages fitted to the schema)."""
    number = err.params.get("transaction_number")
    return ErrorMessage(
        code=err.code,
        message_en=_message_text(err.message_en),
        message_ja=_message_text(err.message_ja),
        transaction_number=number
        if isinstance(number, str) and _TRANSACTION.fullmatch(number)
        else None,
    )
