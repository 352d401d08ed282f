#!/usr/bin/env python3
"""An example outside member of the renkei network: an intermediate server that is not renkei's.

Written from docs/protocol.md and the XSDs (middleware/schemas/) only: it imports nothing of
the project, just the standard library, lxml, cryptography and signxml. It joins the network
as one institution, with the certificates `renkei pki enrol` wrote into its folder, and does
what an intermediate server does on the network (docs/protocol.md §1-§8):

- ``acquire``: 符号 acquisition for its persons (``POST /fugo`` at the hub, §3);
- ``serve``: its network listener, which the hub calls with provision requests (it verifies
  the permit, re-checks the permitted-query list, answers from its data, signs the payload
  and encrypts it for the requester only, then sends the provision to the hub) and with the
  provisions that answer its own queries (it decrypts and verifies them);
- ``query``: a query to another institution through the hub; it waits until ``serve`` has
  received the provision and prints the items;
- ``open``: decrypts and verifies a Provision document with this member's key (a provision
  meant for another institution cannot be read);
- ``sut``: the member as the system under test of a scenario (``renkei scenario run --sut
  ACTOR=COMMAND``): from what the runner tells it in its environment (``RENKEI_*``), it
  acquires its persons' 符号, listens, sends the queries the scenario expects of it and
  serves until stopped.

Its state lives in the folder, next to the certificates: ``fugo.json`` (its persons' 符号),
``queries/`` and ``results/`` (its queries), ``provisions/`` (the provision requests it
answered), ``outbox/`` and ``sent/`` (its provisions, before and after the hub acknowledged
them) and ``records.jsonl`` (its provision records). See README.md next to this file.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import logging
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)

log = logging.getLogger("outside-member")

NS = "urn:renkei:linkage:1"
DS = "http://www.w3.org/2000/09/xmldsig#"
XML_TYPE = "application/xml; charset=utf-8"
MAX_MESSAGE_BYTES = 1_048_576  # §7: the network listeners' limit
MAX_DEPTH = 32  # §7
CLOCK_SKEW = timedelta(seconds=30)  # §5: a permit issued at most 30 s in the future
LIST_REFRESH = 60.0  # seconds between two fetches of the permitted-query list
JAPAN = timedelta(hours=9)  # publication windows are read on Japan's calendar
FINAL = ("provided", "no_data", "refused", "error")
DEFAULT_SCHEMAS = Path(__file__).resolve().parents[2] / "middleware" / "schemas"

# §5: enveloped XML Signature, ECDSA P-256 / SHA-256, exclusive C14N, one reference URI="".
SIGNATURE_CONFIG = SignatureConfiguration(
    require_x509=True,
    location="./",
    expect_references=1,
    signature_methods=frozenset({SignatureMethod.ECDSA_SHA256}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)

# §12: the HTTP status of each code this member answers with. The codes are the protocol's;
# the wording of the messages is this member's own (peers act on the code only).
STATUS: dict[str, int] = {
    **dict.fromkeys(
        ("XmlMalformed", "XmlDoctypeForbidden", "XmlTooDeep", "XmlSchemaInvalid", "BadRequest",
         "UnexpectedMessage", "UnknownInstitution", "PermitMismatch", "PayloadUnreadable",
         "PayloadSignatureInvalid", "ContentDigestMismatch"),
        400,
    ),
    **dict.fromkeys(
        ("NotPermitted", "DelegationNotPermitted", "PermitSignatureInvalid", "PermitExpired",
         "PermitNotYetValid", "PermitWrongProvider", "CertificateNotAuthorized"),
        403,
    ),
    **dict.fromkeys(("FugoUnknown", "UnknownTransaction", "PageNotFound"), 404),
    "PermitReplayed": 409,
    **dict.fromkeys(("XmlTooLarge", "BodyTooLarge"), 413),
    "Internal": 500,
    **dict.fromkeys(("PermittedListMissing", "PermittedListExpired"), 503),
}  # fmt: skip


class Refusal(Exception):
    """A coded refusal this member answers with: an ``Error`` with the code's HTTP status."""

    def __init__(self, code: str, detail: str = "", transaction_number: str | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.status = STATUS.get(code, 400)
        self.message_en = (f"Refused: {code}. {detail}" if detail else f"Refused: {code}.")[:2000]
        self.message_ja = f"受け付けられません({code})。{detail}"[:2000]
        self.transaction_number = transaction_number


class Refused(Exception):
    """The hub refused a request: its code, English message and 処理通番 (if any)."""

    def __init__(self, code: str, message: str, transaction_number: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.transaction_number = transaction_number


class Transient(Exception):
    """The hub could not answer now (no connection, 5xx, a damaged message): try again."""


# -- XML --------------------------------------------------------------------------------------


def q(local: str) -> str:
    return f"{{{NS}}}{local}"


def element(local: str, **attributes: str | None) -> etree._Element:
    """A root element of the protocol's namespace (the only namespace it declares)."""
    root = etree.Element(q(local), nsmap={None: NS})  # type: ignore[dict-item]
    for name, value in attributes.items():
        if value is not None:
            root.set(name, value)
    return root


def child(parent: etree._Element, local: str, text: str | None = None) -> etree._Element:
    node = etree.SubElement(parent, q(local))
    node.text = text
    return node


def text_of(parent: etree._Element, local: str) -> str | None:
    node = parent.find(q(local))
    return None if node is None else (node.text or "")


def serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def utc(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.ffffffZ`` (common.xsd UtcDateTime)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


class Schemas:
    """The protocol's XSDs (one per root element), compiled on first use."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._compiled: dict[str, etree.XMLSchema] = {}
        self._lock = threading.Lock()  # an XMLSchema keeps one error log

    def validate(self, root: etree._Element, name: str) -> None:
        with self._lock:
            if name not in self._compiled:
                self._compiled[name] = etree.XMLSchema(etree.parse(self._directory / f"{name}.xsd"))
            schema = self._compiled[name]
            if schema.validate(root):
                return
            errors: list[Any] = list(cast(Any, schema.error_log))
        raise Refusal("XmlSchemaInvalid", f"{name}: {errors[0].message if errors else 'invalid'}")


def parse(data: bytes, expected: str, schemas: Schemas) -> etree._Element:
    """A received document, checked as §7 says: size, no DOCTYPE or entities, nesting, the
    root element, then its XSD."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise Refusal("XmlTooLarge", f"{len(data)} bytes; at most {MAX_MESSAGE_BYTES}")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise Refusal("XmlDoctypeForbidden")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as failure:
        raise Refusal("XmlMalformed", str(failure)) from None
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or any(True for _ in root.iter(etree.Entity)):
        raise Refusal("XmlDoctypeForbidden")
    if any(True for _ in root.iter(etree.PI)):
        raise Refusal("XmlMalformed", "processing instructions are not accepted")
    if _depth(root) > MAX_DEPTH:
        raise Refusal("XmlTooDeep", f"more than {MAX_DEPTH} levels")
    if root.tag != q(expected):
        raise Refusal(
            "UnexpectedMessage", f"expected {expected}, received {etree.QName(root).localname}"
        )
    schemas.validate(root, expected)
    return root


def _depth(root: etree._Element) -> int:
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((kid, depth + 1) for kid in node if isinstance(kid.tag, str))
    return deepest


def error_document(refusal: Refusal) -> bytes:
    root = element("Error", code=refusal.code, transactionNumber=refusal.transaction_number)
    child(root, "Message", refusal.message_en).set("lang", "en")
    child(root, "Message", refusal.message_ja).set("lang", "ja")
    return serialize(root)


def content_digest(body: bytes) -> str:
    """§8: RFC 9530 ``Content-Digest`` of a body."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


# -- the folder: enrolment files and state ------------------------------------------------------


def subject_of(certificate: x509.Certificate) -> tuple[str, str]:
    """(CN, OU) of a certificate: the network names parties by them (§1)."""

    def one(oid: x509.ObjectIdentifier) -> str:
        values = certificate.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if len(values) == 1 else ""

    return one(NameOID.COMMON_NAME), one(NameOID.ORGANIZATIONAL_UNIT_NAME)


def write_json(path: Path, value: Any) -> None:
    """Write a JSON file atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


class Member:
    """One outside member: its folder (what `renkei pki enrol` wrote, then its state)."""

    def __init__(self, folder: Path, schemas: Path) -> None:
        self.folder = folder
        info = json.loads((folder / "member.json").read_text(encoding="utf-8"))
        self.code: str = info["code"]
        self.name: str = info["name"]
        self.schemas = Schemas(schemas)
        self.ca = self._certificate("ca.pem")
        self.hub_signing = self._certificate("hub-signing.pem")
        self.signing_key = self._key("signing.key")
        self.signing_certificate = self._certificate("signing.pem")
        self.encryption_key = self._key("encryption.key")
        self.encryption_certificate = self._certificate("encryption.pem")
        self.hub = HubClient(self, info["hub_address"], info["hub_server_name"])
        self.lock = threading.Lock()  # one writer of the state files at a time
        self._list: PermittedList | None = None
        self._list_fetched = 0.0

    def _certificate(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.folder / name).read_bytes())

    def _key(self, name: str) -> Any:
        return serialization.load_pem_private_key((self.folder / name).read_bytes(), None)

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def fugo(self) -> dict[str, str]:
        """Its persons' 符号: person id → 符号."""
        found: dict[str, str] = read_json(self.path("fugo.json"), {})
        return found

    def record(self, **entry: Any) -> None:
        """Append one provision record (情報提供等記録, §9) to records.jsonl."""
        entry = {"recorded_at": utc(datetime.now(UTC)), **entry}
        with self.path("records.jsonl").open("a", encoding="utf-8") as records:
            records.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def permitted_list(self, *, refresh: bool = False) -> PermittedList:
        """The verified permitted-query list in force (§4), fetched again every minute."""
        stale = time.monotonic() - self._list_fetched > LIST_REFRESH
        if self._list is None or stale or refresh:
            try:
                document = self.hub.call("GET", "/permitted-list", None, "PermittedList")
                self._list = PermittedList.verified(document, self.hub_signing, self.schemas)
                self._list_fetched = time.monotonic()
            except (Transient, Refused, Refusal, OSError) as failure:
                log.warning("permitted-query list not fetched: %s", failure)
        if self._list is None:
            raise Refusal("PermittedListMissing")
        return self._list


# -- signatures and envelopes (§4, §5) -------------------------------------------------------


def verify_pinned(signed: etree._Element, certificate: x509.Certificate) -> etree._Element:
    """The signed content (without ds:Signature) of an element signed by ``certificate``."""
    result: Any = XMLVerifier().verify(
        _standalone(signed), x509_cert=certificate, expect_config=SIGNATURE_CONFIG
    )
    return _signed_content(result)


def verify_with_ca(
    signed: etree._Element, ca_file: Path
) -> tuple[etree._Element, x509.Certificate]:
    """The signed content and the signer's certificate, validated up to the network CA."""
    result: Any = XMLVerifier().verify(
        _standalone(signed), ca_pem_file=str(ca_file), expect_config=SIGNATURE_CONFIG
    )
    content = _signed_content(result)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    for node in result.signature_xml.iter(f"{{{DS}}}X509Certificate"):
        candidate = x509.load_der_x509_certificate(base64.b64decode("".join(node.text.split())))
        key = candidate.public_key().public_bytes(serialization.Encoding.PEM, spki)
        if key.strip() == result.signature_key.strip():
            return content, candidate
    raise ValueError("no certificate of the signature holds its key")


def _standalone(signed: etree._Element) -> etree._Element:
    copied = copy.deepcopy(signed)  # a document of its own: it is verified as it was signed
    copied.tail = None
    return copied


def _signed_content(result: Any) -> etree._Element:
    references = result.signature_xml.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(references) != 1 or references[0].get("URI") != "":
        raise ValueError('the signature must have exactly one reference, URI=""')
    content: etree._Element = result.signed_xml
    return content


def revalidate(content: etree._Element, name: str, schemas: Schemas) -> None:
    """Validate verified content again (its ds:Signature removed: a placeholder stands in)."""
    candidate = copy.deepcopy(content)
    etree.SubElement(candidate, f"{{{DS}}}Signature")
    schemas.validate(candidate, name)


def sign(content: etree._Element, member: Member) -> bytes:
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(content, key=member.signing_key, cert=[member.signing_certificate])
    return serialize(signed)


def seal(plaintext: bytes, recipient: x509.Certificate) -> bytes:
    """CMS EnvelopedData (DER), RSA key transport, AES-256-CBC, the bytes unchanged."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(plaintext)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def open_payload(
    provision: etree._Element, member: Member
) -> tuple[etree._Element, x509.Certificate]:
    """Decrypt a Provision's payload with this member's key and verify its signature:
    the signed ProvisionPayload and its signer (PayloadUnreadable, PayloadSignatureInvalid)."""
    number = provision.get("transactionNumber")
    ciphertext = text_of(provision, "EncryptedPayload")
    try:
        if ciphertext is None or not isinstance(member.encryption_key, rsa.RSAPrivateKey):
            raise ValueError("nothing to decrypt")
        plaintext = pkcs7.pkcs7_decrypt_der(
            base64.b64decode("".join(ciphertext.split())),
            member.encryption_certificate,
            member.encryption_key,
            [],
        )
        signed = parse(plaintext, "ProvisionPayload", member.schemas)
    except (ValueError, TypeError, Refusal):
        raise Refusal("PayloadUnreadable") from None
    try:
        content, signer = verify_with_ca(signed, member.path("ca.pem"))
        revalidate(content, "ProvisionPayload", member.schemas)
    except Exception:
        raise Refusal("PayloadSignatureInvalid", "", number) from None
    return content, signer


def records_of(payload: etree._Element) -> list[dict[str, Any]]:
    return [
        {
            "data_set": record.get("dataSet"),
            "record_id": record.get("recordId"),
            "items": {item.get("code"): item.text or "" for item in record.iter(q("Item"))},
        }
        for record in payload.iter(q("Record"))
    ]


# -- the permitted-query list (§4) -----------------------------------------------------------


@dataclass(frozen=True)
class PermittedList:
    version: int
    expires_at: datetime
    kinds: Mapping[str, str]  # institution code → kind
    rows: frozenset[tuple[str, str, str, str, str]]  # (requester kind, affair, procedure, ...)
    delegations: frozenset[tuple[str, str]]  # (delegator, delegate)

    @classmethod
    def verified(
        cls, document: etree._Element, hub: x509.Certificate, schemas: Schemas
    ) -> PermittedList:
        content = verify_pinned(document, hub)
        revalidate(content, "PermittedList", schemas)
        return cls(
            version=int(content.get("version", "0")),
            expires_at=parse_time(content.get("expiresAt", "")),
            kinds={e.get("code", ""): e.get("kind", "") for e in content.iter(q("Institution"))},
            rows=frozenset(
                (
                    e.get("requesterKind", ""),
                    e.get("affair", ""),
                    e.get("procedure", ""),
                    e.get("providerKind", ""),
                    e.get("informationName", ""),
                )
                for e in content.iter(q("Row"))
            ),
            delegations=frozenset(
                (e.get("delegator", ""), e.get("delegate", ""))
                for e in content.iter(q("Delegation"))
            ),
        )

    def kind(self, code: str) -> str:
        if code not in self.kinds:
            raise Refusal("UnknownInstitution", code)
        return self.kinds[code]

    def acting_for(self, institution: str, delegator: str | None) -> str:
        if delegator is None or delegator == institution:
            return institution
        self.kind(delegator)
        if (delegator, institution) not in self.delegations:
            raise Refusal("DelegationNotPermitted", f"{institution} for {delegator}")
        return delegator

    def affairs(self, requester: str, procedure: str, provider: str, information: str) -> list[str]:
        """The affairs under which ``requester`` may query ``information`` for ``procedure``."""
        kinds = (self.kind(requester), self.kind(provider))
        return sorted(
            r[1]
            for r in self.rows
            if (r[0], r[2], r[3], r[4]) == (kinds[0], procedure, *kinds[1:], information)
        )

    def check(self, permit: Permit, now: datetime) -> None:
        if now >= self.expires_at:
            raise Refusal("PermittedListExpired", f"expired at {utc(self.expires_at)}")
        requester = self.acting_for(permit.requester, permit.delegating_requester)
        provider = self.acting_for(permit.provider, permit.delegating_provider)
        key = (
            self.kind(requester),
            permit.affair,
            permit.procedure,
            self.kind(provider),
            permit.information_name,
        )
        if key not in self.rows:
            raise Refusal("NotPermitted", f"{permit.information_name} for {permit.procedure}")


# -- the provider: provision requests in, provisions out (§5) --------------------------------


@dataclass(frozen=True)
class Permit:
    transaction_number: str
    requester: str
    provider: str
    affair: str
    procedure: str
    information_name: str
    provider_fugo: str
    fiscal_year: int | None
    period_start: date | None
    period_end: date | None
    delegating_requester: str | None
    delegating_provider: str | None
    issued_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, content: etree._Element) -> Permit:
        """The fields of a VERIFIED permit (signxml's signed content, never the input)."""

        def field(name: str) -> str:
            return text_of(content, name) or ""

        conditions = content.find(q("Conditions"))
        found = (lambda n: text_of(conditions, n)) if conditions is not None else (lambda n: None)
        year, start, end = found("FiscalYear"), found("PeriodStart"), found("PeriodEnd")
        return cls(
            transaction_number=field("TransactionNumber"),
            requester=field("Requester"),
            provider=field("Provider"),
            affair=field("Affair"),
            procedure=field("Procedure"),
            information_name=field("InformationName"),
            provider_fugo=field("ProviderFugo"),
            fiscal_year=int(year) if year else None,
            period_start=date.fromisoformat(start) if start else None,
            period_end=date.fromisoformat(end) if end else None,
            delegating_requester=text_of(content, "DelegatingRequester"),
            delegating_provider=text_of(content, "DelegatingProvider"),
            issued_at=parse_time(field("IssuedAt")),
            expires_at=parse_time(field("ExpiresAt")),
        )


Span = tuple[date | None, date | None]  # days from … to, both included; None is open


def overlaps(a: Span, b: Span) -> bool:
    return (a[0] is None or b[1] is None or a[0] <= b[1]) and (
        b[0] is None or a[1] is None or b[0] <= a[1]
    )


def day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def span_of_record(period: Mapping[str, str] | None, items: Mapping[str, str]) -> Span | None:
    """The days a record is about (the catalogue's ``period`` of its data set), if any."""
    if not period:
        return None
    if "fiscal_year" in period:
        year = items.get(period["fiscal_year"], "")
        if len(year) != 4 or not year.isdigit() or year == "0000":
            return None
        return date(int(year), 4, 1), date(int(year) + 1, 3, 31)
    if "month" in period:
        month = items.get(period["month"], "")
        if len(month) != 6 or not month.isdigit() or not 1 <= int(month[4:]) <= 12:
            return None
        first = date(int(month[:4]), int(month[4:]), 1)
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return first, following - timedelta(days=1)
    starts, ends = day(items.get(period.get("from", ""))), day(items.get(period.get("to", "")))
    return None if starts is None and ends is None else (starts, ends)


def meets(permit: Permit, period: Mapping[str, str] | None, items: Mapping[str, str]) -> bool:
    """§5 query conditions: a record is given only when it meets every condition."""
    spans: list[Span] = []
    if permit.fiscal_year is not None:
        spans.append((date(permit.fiscal_year, 4, 1), date(permit.fiscal_year + 1, 3, 31)))
    if permit.period_start is not None or permit.period_end is not None:
        spans.append((permit.period_start, permit.period_end))
    if not spans:
        return True
    year = items.get(period["fiscal_year"]) if period and "fiscal_year" in period else None
    if permit.fiscal_year is not None and year is not None and year != f"{permit.fiscal_year:04d}":
        return False  # a record of a fiscal year meets only that year
    record = span_of_record(period, items)
    return record is not None and all(overlaps(record, span) for span in spans)


class Provider:
    """Answers the hub's provision requests from the member's data file."""

    def __init__(self, member: Member, data: Path, outbox: Outbox) -> None:
        self.member = member
        self.data = data
        self.outbox = outbox

    def receive(self, body: bytes) -> bytes:
        """情報提供要求: the ProvisionRequestAck, or a Refusal (recorded)."""
        member = self.member
        request = parse(body, "ProvisionRequest", member.schemas)
        message_id = request.get("messageId", "")
        permit: Permit | None = None
        try:
            signed = request.find(q("Permit"))
            assert signed is not None  # the schema requires it
            try:
                content = verify_pinned(signed, member.hub_signing)
                revalidate(content, "Permit", member.schemas)
            except Exception:
                raise Refusal("PermitSignatureInvalid") from None
            permit = Permit.of(content)
            now = datetime.now(UTC)
            number = permit.transaction_number
            if permit.provider != member.code:
                raise Refusal("PermitWrongProvider", f"addressed to {permit.provider}")
            if now >= permit.expires_at:
                raise Refusal("PermitExpired", f"expired at {utc(permit.expires_at)}", number)
            if permit.issued_at - CLOCK_SKEW > now:
                raise Refusal("PermitNotYetValid", f"issued at {utc(permit.issued_at)}", number)
            recipient = self._route_certificate(request, permit, now)
            member.permitted_list().check(permit, now)
            with member.lock:
                answered = read_json(member.path("provisions", f"{number}.json"))
                if answered is not None:
                    if answered["message_id"] != message_id:
                        raise Refusal("PermitReplayed", "", number)
                    log.info("%s: the hub's retry, acknowledged again", number)
                else:
                    self._answer(message_id, permit, recipient, now)
        except Refusal as refusal:
            if refusal.status < 500:  # §9: a refused request is recorded too
                member.record(
                    event="provision",
                    status="refused",
                    error_code=refusal.code,
                    transaction_number=permit.transaction_number if permit else None,
                    requester=permit.requester if permit else None,
                    information_name=permit.information_name if permit else None,
                )
                log.info("provision request refused: %s", refusal)
            if permit is not None and refusal.transaction_number is None:
                refusal.transaction_number = permit.transaction_number
            raise
        ack = element("ProvisionRequestAck", messageId=message_id, transactionNumber=number)
        return serialize(ack)

    def _route_certificate(
        self, request: etree._Element, permit: Permit, now: datetime
    ) -> x509.Certificate:
        """The route's certificate: the permit requester's encryption certificate from the
        network CA (else PermitMismatch)."""
        route = request.find(q("Route"))
        assert route is not None
        try:
            der = base64.b64decode("".join((text_of(route, "EncryptionCertificate") or "").split()))
            certificate = x509.load_der_x509_certificate(der)
            certificate.verify_directly_issued_by(self.member.ca)
        except Exception:
            raise Refusal("PermitMismatch") from None
        valid = certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
        if (
            not valid
            or text_of(route, "Requester") != permit.requester
            or subject_of(certificate) != (permit.requester, "encryption")
            or not isinstance(certificate.public_key(), rsa.RSAPublicKey)
        ):
            raise Refusal("PermitMismatch")
        return certificate

    def _answer(
        self, message_id: str, permit: Permit, recipient: x509.Certificate, now: datetime
    ) -> None:
        """Build, sign and seal the payload; queue the Provision; mark the request answered."""
        member, number = self.member, permit.transaction_number
        person = next((p for p, f in member.fugo().items() if f == permit.provider_fugo), None)
        if person is None:
            raise Refusal("FugoUnknown", "", number)
        data = json.loads(self.data.read_text(encoding="utf-8"))
        periods: dict[str, dict[str, str]] = data.get("periods", {})
        records = [
            record
            for entry in data["persons"]
            if entry["id"] == person
            for record in entry.get("records", [])
            if record["information_name"] == permit.information_name
            and published(record, now)
            and meets(
                permit,
                periods.get(f"{permit.information_name}/{record['data_set']}"),
                record["items"],
            )
        ]
        payload = element(
            "ProvisionPayload",
            transactionNumber=number,
            informationName=permit.information_name,
            provider=member.code,
            requester=permit.requester,
            createdAt=utc(now),
        )
        for record in records:
            node = child(payload, "Record")
            node.set("dataSet", record["data_set"])
            node.set("recordId", record["record_id"])
            for code, value in sorted(record["items"].items()):
                child(node, "Item", value).set("code", code)
        status = "provided" if records else "no_data"
        provision = element(
            "Provision", messageId=str(uuid.uuid4()), transactionNumber=number, status=status
        )
        child(
            provision,
            "EncryptedPayload",
            base64.b64encode(seal(sign(payload, member), recipient)).decode(),
        )
        self.outbox.put(number, serialize(provision))  # first the provision, then the mark
        write_json(
            member.path("provisions", f"{number}.json"),
            {"message_id": message_id, "status": status, "person": person, "at": utc(now)},
        )
        member.record(
            event="provision",
            status=status,
            transaction_number=number,
            requester=permit.requester,
            affair=permit.affair,
            procedure=permit.procedure,
            information_name=permit.information_name,
            person=person,
        )
        log.info("%s: %s to %s, %d records", number, status, permit.requester, len(records))


def published(record: Mapping[str, Any], now: datetime) -> bool:
    """Within its publication window (公開日 … 公開終了日), on Japan's calendar."""
    today = (now + JAPAN).date()
    first, last = day(record.get("publication_date")), day(record.get("published_end_date"))
    return (first is None or first <= today) and (last is None or today <= last)


class Outbox(threading.Thread):
    """Sends the provisions in outbox/ to the hub until it acknowledges each (then sent/),
    again after a failure, from the folder: a restart resumes what was not acknowledged."""

    def __init__(self, member: Member) -> None:
        super().__init__(name="outbox", daemon=True)
        self.member = member
        self.wake = threading.Event()
        for name in ("outbox", "sent", "refused"):
            member.path(name).mkdir(parents=True, exist_ok=True)

    def put(self, number: str, body: bytes) -> None:
        final = self.member.path("outbox", f"{number}.xml")
        temporary = final.with_name(f".{number}.{uuid.uuid4().hex}")
        temporary.write_bytes(body)
        os.replace(temporary, final)
        self.wake.set()

    def run(self) -> None:
        delay = 0.1
        while True:
            failed = False
            for path in sorted(self.member.path("outbox").glob("*.xml")):
                try:
                    ack = self.member.hub.call(
                        "POST", "/provisions", path.read_bytes(), "ProvisionAck"
                    )
                    if ack.get("transactionNumber") != path.stem:
                        raise Transient(f"acknowledged {ack.get('transactionNumber')}")
                    os.replace(path, self.member.path("sent", path.name))
                    log.info("%s: provision acknowledged by the hub", path.stem)
                except Refused as refused:
                    log.warning("%s: the hub refused the provision: %s", path.stem, refused)
                    os.replace(path, self.member.path("refused", path.name))
                except (Transient, Refusal, OSError) as failure:
                    log.warning("%s: not delivered yet (%s)", path.stem, failure)
                    failed = True
            delay = min(delay * 2, 5.0) if failed else 0.1
            self.wake.wait(delay if failed else 5.0)
            self.wake.clear()


# -- the requester: provisions that answer our queries (§5) ---------------------------------


class Requester:
    def __init__(self, member: Member) -> None:
        self.member = member

    def receive(self, body: bytes) -> bytes:
        """A provision relayed by the hub: decrypt, verify, store once; the ProvisionAck."""
        member = self.member
        provision = parse(body, "Provision", member.schemas)
        number = provision.get("transactionNumber", "")
        query_id = provision.get("queryMessageId") or ""
        query = read_json(member.path("queries", f"{query_id}.json")) if query_id else None
        if query is None or query.get("transaction_number") not in (None, number):
            raise Refusal("UnknownTransaction", number)
        ack = serialize(
            element("ProvisionAck", messageId=provision.get("messageId"), transactionNumber=number)
        )
        result_path = member.path("results", f"{query_id}.json")
        with member.lock:
            known = read_json(result_path, {})
            if known.get("state") in FINAL:
                return ack  # delivered twice: the first delivery stands
            status = provision.get("status", "")
            result: dict[str, Any] = {"query_id": query_id, "transaction_number": number}
            if status == "held":
                result["state"] = "held"
            elif status in ("provided", "no_data"):
                try:
                    payload = self._verified(provision, query, number)
                except Refusal as refusal:
                    write_json(result_path, {**result, "state": "error", "error": refusal.code})
                    raise
                records = records_of(payload)
                result.update(
                    state="provided" if records else "no_data",
                    provider=payload.get("provider"),
                    created_at=payload.get("createdAt"),
                    records=records,
                )
            else:
                result.update(state="refused", error=provision.get("errorCode") or "Unspecified")
            write_json(result_path, result)
            member.record(
                event="result",
                status=result["state"],
                transaction_number=number,
                provider=query["provider"],
                error_code=result.get("error"),
            )
        log.info("%s: result %s", number, result["state"])
        return ack

    def _verified(
        self, provision: etree._Element, query: Mapping[str, str], number: str
    ) -> etree._Element:
        payload, signer = open_payload(provision, self.member)
        if (
            subject_of(signer) != (query["provider"], "signing")
            or payload.get("transactionNumber") != number
            or payload.get("provider") != query["provider"]
            or payload.get("requester") != self.member.code
            or payload.get("informationName") != query["information_name"]
        ):
            raise Refusal("PayloadSignatureInvalid", "", number)
        return payload


# -- the network listener ---------------------------------------------------------------------


class Listener(ThreadingHTTPServer):
    """HTTPS with mutual TLS: a client certificate from the network CA is required, and
    only the hub (CN ``hub``, OU ``tls``) may call."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], provider: Provider, requester: Requester) -> None:
        self.provider = provider
        self.requester = requester
        member = provider.member
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(member.path("tls.pem"), member.path("tls.key"))
        self.tls.load_verify_locations(member.path("ca.pem"))
        self.tls.verify_mode = ssl.CERT_REQUIRED
        super().__init__(address, Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(60)
        try:
            connection = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as failure:
            log.warning("TLS handshake with %s failed: %s", client_address, failure)
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            connection.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the hub keeps its connections alive
    server: Listener

    def do_POST(self) -> None:
        try:
            self._caller_is_the_hub()
            body = self._body()
            digest = self.headers.get("Content-Digest")
            if digest is not None and digest.strip() != content_digest(body):
                raise Refusal("ContentDigestMismatch")
            if self.path == "/provision-requests":
                answer = self.server.provider.receive(body)
            elif self.path == "/provisions":
                answer = self.server.requester.receive(body)
            else:
                raise Refusal("PageNotFound")
            self._send(200, answer)
        except Refusal as refusal:
            self._send(refusal.status or 400, error_document(refusal))
        except Exception:
            log.exception("internal error on %s", self.path)
            self._send(500, error_document(Refusal("Internal")))

    def do_GET(self) -> None:
        self._send(404, error_document(Refusal("PageNotFound")))

    def _caller_is_the_hub(self) -> None:
        certificate = self.connection.getpeercert()
        subject = dict(pair for rdn in (certificate or {}).get("subject", ()) for pair in rdn)
        if (subject.get("commonName"), subject.get("organizationalUnitName")) != ("hub", "tls"):
            raise Refusal("CertificateNotAuthorized", str(subject.get("commonName", "(none)")))

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Refusal("BadRequest", "a Content-Length is required")
        if int(length) > MAX_MESSAGE_BYTES:
            self.close_connection = True
            raise Refusal("BodyTooLarge", f"at most {MAX_MESSAGE_BYTES} bytes")
        return self.rfile.read(int(length))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", XML_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Digest", content_digest(body))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


# -- the hub's client -------------------------------------------------------------------------


class _TLSConnection(HTTPConnection):
    """HTTP over mutual TLS, checking the server's certificate for a given name (the hub
    is reached at 127.0.0.1 but presents hub.renkei.test)."""

    def __init__(self, host: str, port: int, server_name: str, tls: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=30)
        self._server_name = server_name
        self._tls = tls

    def connect(self) -> None:
        super().connect()
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class HubClient:
    def __init__(self, member: Member, address: str, server_name: str) -> None:
        parts = urlsplit(address)
        self.host, self.port = parts.hostname or "", parts.port or 443
        self.server_name = server_name
        self.schemas = member.schemas
        self.tls = ssl.create_default_context(cafile=member.path("ca.pem"))
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(member.path("tls.pem"), member.path("tls.key"))

    def call(self, method: str, path: str, body: bytes | None, expected: str) -> etree._Element:
        """One request to the hub: the answer ``expected``, else Refused or Transient."""
        headers = {"Content-Type": XML_TYPE}
        if body is not None:
            headers["Content-Digest"] = content_digest(body)
        connection = _TLSConnection(self.host, self.port, self.server_name, self.tls)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            status, answer = response.status, response.read()
        finally:
            connection.close()
        if 200 <= status < 300:
            try:
                return parse(answer, expected, self.schemas)
            except Refusal as refusal:
                raise Transient(f"unreadable answer: {refusal}") from None
        if 400 <= status < 500:
            try:
                error = parse(answer, "Error", self.schemas)
            except Refusal:
                raise Transient(f"HTTP {status} without an Error message") from None
            code = error.get("code", "")
            messages = {m.get("lang"): m.text or "" for m in error.iter(q("Message"))}
            if code == "ContentDigestMismatch":
                raise Transient(code)
            raise Refused(code, messages.get("en", ""), error.get("transactionNumber"))
        raise Transient(f"HTTP {status} from {path}")


def retrying(call: Any, attempts: int = 10) -> Any:
    """``call()`` again after a transient failure (the hub is idempotent on messageId)."""
    for attempt in range(attempts):
        try:
            return call()
        except (Transient, OSError) as failure:
            if attempt == attempts - 1:
                raise
            log.warning("the hub did not answer (%s); trying again", failure)
            time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


# -- commands ---------------------------------------------------------------------------------


def listen(member: Member, data: Path, interface: str, port: int) -> Listener:
    """The network listener and the outbox of provisions, started (the listener still to
    be served)."""
    outbox = Outbox(member)
    listener = Listener((interface, port), Provider(member, data, outbox), Requester(member))
    outbox.start()
    print(f"{member.name} ({member.code}) listening on {interface}:{port}", flush=True)
    return listener


def serve(member: Member, data: Path, interface: str, port: int) -> int:
    listener = listen(member, data, interface, port)
    with contextlib.suppress(KeyboardInterrupt):
        listener.serve_forever()
    return 0


def sut(member: Member, data: Path, interface: str, port: int, queries: str) -> int:
    """The member as the system under test of a scenario (``renkei scenario run --sut
    ACTOR=COMMAND``, docs/scenarios.md), from what the runner tells it: acquire the 符号
    of the data file's persons, listen (so that no provision request finds a person
    unknown for want of a 符号), send the queries the scenario expects of it (``queries``:
    a JSON list, each with the person's individual number, the provider's code, the
    information name, the procedure and maybe conditions), print each result as a JSON line,
    and serve until stopped."""
    acquired = acquire(member, data)
    listener = listen(member, data, interface, port)
    threading.Thread(target=listener.serve_forever, name="listener", daemon=True).start()
    persons = json.loads(data.read_text(encoding="utf-8"))["persons"]
    ours = {person["individual_number"]: person["id"] for person in persons}
    for asked in json.loads(queries or "[]"):
        person = ours.get(asked["individual_number"])
        if person is None:
            result = {"state": "error", "error": "not a person of the data file"}
        else:
            result = ask(
                member,
                person,
                asked["provider"],
                asked["information_name"],
                asked["procedure"],
                fiscal_year=asked.get("conditions", {}).get("fiscal_year"),
            )
        print(json.dumps({"asked": asked, "result": result}, ensure_ascii=False), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()  # serving, until the runner stops it (SIGTERM)
    return acquired


def acquire(member: Member, data: Path) -> int:
    """符号取得 (§3) for every person of the data file not yet acquired."""
    persons = json.loads(data.read_text(encoding="utf-8"))["persons"]
    failed = 0
    for person in persons:
        with member.lock:
            if person["id"] in member.fugo():
                continue
        request = element("FugoRequest", messageId=str(uuid.uuid4()))
        child(request, "IndividualNumber", person["individual_number"])
        body = serialize(request)
        try:
            answer = retrying(
                lambda body=body: member.hub.call("POST", "/fugo", body, "FugoResponse")
            )
        except Refused as refused:
            print(f"{person['id']}: {refused}", file=sys.stderr)
            failed += 1
            continue
        with member.lock:
            write_json(
                member.path("fugo.json"), {**member.fugo(), person["id"]: text_of(answer, "Fugo")}
            )
        print(f"{person['id']}: 符号 acquired")
    return 1 if failed else 0


def query(member: Member, arguments: argparse.Namespace) -> int:
    """情報照会 (§5) as a command: the result printed (as JSON with ``--json``)."""
    result = ask(
        member,
        arguments.person,
        arguments.provider,
        arguments.information_name,
        arguments.procedure,
        affair=arguments.affair,
        fiscal_year=arguments.fiscal_year,
        wait=arguments.wait,
    )
    if arguments.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        show(result)
    return 0 if result.get("state") in ("provided", "no_data") else 1


def ask(
    member: Member,
    person: str,
    provider: str,
    information: str,
    procedure: str,
    *,
    affair: str | None = None,
    fiscal_year: int | None = None,
    wait: float = 30.0,
) -> dict[str, Any]:
    """情報照会 (§5): check the list, send the QueryRequest, wait for the result (at most
    ``wait`` seconds; ``accepted`` until it comes)."""
    fugo = member.fugo().get(person)
    if fugo is None:
        return {"person": person, "state": "error", "error": "no 符号 acquired (run acquire)"}
    try:
        affairs = member.permitted_list().affairs(member.code, procedure, provider, information)
    except Refusal as refusal:
        return {"person": person, "state": "error", "error": refusal.code}
    affair = affair or (affairs[0] if affairs else "")
    if affair not in affairs:
        return {"person": person, "state": "error", "error": "NotPermitted"}
    query_id = str(uuid.uuid4())
    request = element("QueryRequest", messageId=query_id)
    for name, value in (
        ("RequesterFugo", fugo),
        ("Affair", affair),
        ("Procedure", procedure),
        ("InformationName", information),
        ("Provider", provider),
    ):
        child(request, name, value)
    if fiscal_year is not None:
        child(child(request, "Conditions"), "FiscalYear", f"{fiscal_year:04d}")
    stored = {
        "query_id": query_id,
        "person": person,
        "provider": provider,
        "information_name": information,
        "procedure": procedure,
        "affair": affair,
    }
    write_json(member.path("queries", f"{query_id}.json"), stored)  # before the result can come
    result_path = member.path("results", f"{query_id}.json")
    try:
        body = serialize(request)
        accepted = retrying(lambda: member.hub.call("POST", "/queries", body, "QueryAccepted"))
        number = accepted.get("transactionNumber")
        write_json(
            member.path("queries", f"{query_id}.json"), {**stored, "transaction_number": number}
        )
        return wait_for(result_path, wait) or {
            "query_id": query_id,
            "state": "accepted",  # no provision yet: `serve` stores it when it comes
            "transaction_number": number,
        }
    except Refused as refused:
        result = {
            "query_id": query_id,
            "state": "refused",
            "error": refused.code,
            "transaction_number": refused.transaction_number,
        }
        write_json(result_path, result)
        return result


def wait_for(path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        result: dict[str, Any] = read_json(path, {})
        if result.get("state") in FINAL or time.monotonic() >= deadline:
            return result
        time.sleep(0.1)


def show(result: Mapping[str, Any]) -> None:
    print(f"state: {result.get('state')}")
    print(f"処理通番 (transaction number): {result.get('transaction_number')}")
    if result.get("error"):
        print(f"error: {result['error']}")
    for record in result.get("records", []):
        print(f"record {record['record_id']} (data set {record['data_set']})")
        for code, value in record["items"].items():
            print(f"  {code}: {value}")


def keys(folder: Path) -> int:
    """The member's own keys (TLS and signing EC P-256, encryption RSA 2048) in ``folder``
    and their certificate signing requests in ``folder/csr``, for `renkei pki enrol
    --csr-dir`: the keys never leave the member."""
    (folder / "csr").mkdir(parents=True, exist_ok=True)
    for use in ("tls", "signing", "encryption"):
        key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if use == "encryption"
            else ec.generate_private_key(ec.SECP256R1())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(folder / f"{use}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(pem)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"outside member {use}")])
        request = x509.CertificateSigningRequestBuilder().subject_name(subject)
        signed = request.sign(key, hashes.SHA256())
        (folder / "csr" / f"{use}.csr").write_bytes(signed.public_bytes(serialization.Encoding.PEM))
        print(f"wrote {folder / f'{use}.key'} and {folder / 'csr' / f'{use}.csr'}")
    return 0


def open_command(member: Member, document: Path) -> int:
    """Decrypt and verify a Provision document with this member's key."""
    try:
        provision = parse(document.read_bytes(), "Provision", member.schemas)
        payload, signer = open_payload(provision, member)
    except Refusal as refusal:
        print(refusal, file=sys.stderr)
        return 1
    print(f"signed by {subject_of(signer)[0]}; for {payload.get('requester')}")
    show(
        {
            "state": provision.get("status"),
            "transaction_number": provision.get("transactionNumber"),
            "records": records_of(payload),
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    told = os.environ.get  # what a scenario runner tells a system under test (RENKEI_*)
    parser.add_argument(
        "--folder",
        type=Path,
        default=told("RENKEI_MEMBER_FOLDER"),
        required=told("RENKEI_MEMBER_FOLDER") is None,
        help="the enrolment folder (default: $RENKEI_MEMBER_FOLDER)",
    )
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="the XSDs")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="the network listener the hub calls")
    serving.add_argument("--listen", type=int, required=True, help="port")
    serving.add_argument("--interface", default="127.0.0.1")
    serving.add_argument("--data", type=Path, required=True, help="persons and records (JSON)")
    acquiring = commands.add_parser("acquire", help="acquire the 符号 of the data file's persons")
    acquiring.add_argument("--data", type=Path, required=True)
    asking = commands.add_parser("query", help="query another institution and wait")
    asking.add_argument("--person", required=True, help="a person id of the data file")
    asking.add_argument("--provider", required=True, help="institution code")
    asking.add_argument("--information-name", required=True, help="TM code")
    asking.add_argument("--procedure", required=True, help="JT code")
    asking.add_argument("--affair", help="JM code (default: the list's for the procedure)")
    asking.add_argument("--fiscal-year", type=int)
    asking.add_argument("--wait", type=float, default=30.0, help="seconds")
    asking.add_argument("--json", action="store_true", help="print the result as JSON")
    opening = commands.add_parser("open", help="decrypt and verify a Provision document")
    opening.add_argument("document", type=Path)
    commands.add_parser("keys", help="make the member's keys and CSRs (before enrolment)")
    testing = commands.add_parser("sut", help="run as a scenario's system under test")
    testing.add_argument("--data", type=Path, required=True, help="persons and records (JSON)")
    testing.add_argument("--listen", type=int, default=told("RENKEI_LISTEN_PORT"), help="port")
    testing.add_argument("--interface", default=told("RENKEI_LISTEN_INTERFACE", "127.0.0.1"))
    testing.add_argument(
        "--queries", default=told("RENKEI_SUT_QUERIES", "[]"), help="the queries to send (JSON)"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if arguments.command == "keys":
        return keys(arguments.folder)
    member = Member(arguments.folder, arguments.schemas)
    if arguments.command == "serve":
        return serve(member, arguments.data, arguments.interface, arguments.listen)
    if arguments.command == "acquire":
        return acquire(member, arguments.data)
    if arguments.command == "query":
        return query(member, arguments)
    if arguments.command == "sut":
        if arguments.listen is None:
            parser.error("sut: --listen PORT (or $RENKEI_LISTEN_PORT) is needed")
        return sut(member, arguments.data, arguments.interface, arguments.listen, arguments.queries)
    return open_command(member, arguments.document)


if __name__ == "__main__":
    sys.exit(main())
