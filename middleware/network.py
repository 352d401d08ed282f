"""The network as a party sees it: operations, the transport that carries them, and refusals.

A party of the network (the hub, an intermediate server) never sees HTTP. It receives
``(caller, operation, document)`` — who sent it (from the sender's certificate, established by
whatever carries the message), which operation, the XML document — through its
`NetworkEndpoint`, and answers with a document or a coded `RenkeiError`. It sends through a
`Transport`: ``exchange(destination, operation, document)`` gives the answer document, or
fails with `DeliveryRefused` (the receiver's coded refusal: final) or `TransientFailure`
(anything that may succeed later). The mutual-TLS HTTPS transport and listener
(`adapters.network_link`) and the in-memory network (`simulators.in_memory`) both carry
exactly these, so the same party code runs over sockets or without them.

Every document travels with its SHA-256 (``Content-Digest``, RFC 9530, as the sender computed
it): a receiver refuses a document that does not match (`ContentDigestMismatch`), and since
the damage happened on the way, that refusal is one the sender retries (`RETRYABLE`), not a
final one: the next copy arrives whole.

The operations and the messages they carry (docs/protocol.md §3–§5):

| operation | to | request | answer |
|---|---|---|---|
| ``fugo`` | hub | FugoRequest | FugoResponse |
| ``permitted_list`` | hub | none | the signed PermittedList |
| ``query`` | hub | QueryRequest | QueryAccepted |
| ``query_bundle`` | hub | QueryBundle | QueryBundleAnswer |
| ``records`` | hub | none; ``argument``: the 処理通番 | RecordList |
| ``provision_request`` | node | ProvisionRequest | ProvisionRequestAck |
| ``provision_request_bundle`` | node | ProvisionRequestBundle | ProvisionRequestBundleAnswer |
| ``provision`` | hub, node, portal | Provision | ProvisionAck |
| ``provision_bundle`` | hub, node | ProvisionBundle | ProvisionBundleAnswer |
| ``self_information`` | hub (from the portal) | SelfInformationQuery | QueryAccepted |
| ``self_information_request`` | node | SelfInformationRequest | ProvisionRequestAck |
| ``record_disclosure`` | hub, node | RecordDisclosureRequest | DisclosedRecords |
| ``notice`` | hub (from a node), portal (from the hub) | Notice | NoticeAck |
| ``notice_read`` | hub (from the portal) | NoticeRead | NoticeAck |
| ``notice_status`` | hub (from a node) | NoticeStatusRequest | NoticeStatusList |
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from codes import errors
from codes.errors import RenkeiError
from middleware import messages

__all__ = [
    "BATCHED_OPERATIONS",
    "FUGO",
    "HUB",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ITEMS",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_LINES",
    "MAX_MESSAGE_BYTES",
    "NOTICE",
    "NOTICE_READ",
    "NOTICE_STATUS",
    "OPERATIONS",
    "PERMITTED_LIST",
    "PROVISION",
    "PROVISION_BUNDLE",
    "PROVISION_REQUEST",
    "PROVISION_REQUEST_BUNDLE",
    "QUERY",
    "QUERY_BUNDLE",
    "RECORDS",
    "RECORD_DISCLOSURE",
    "RETRYABLE",
    "SELF_INFORMATION",
    "SELF_INFORMATION_REQUEST",
    "DeliveryRefused",
    "NetworkEndpoint",
    "TransientFailure",
    "Transport",
    "answer_of",
    "bundles_of",
    "check_content_digest",
    "content_digest",
    "decode_answer",
    "refusal_of",
]

HUB = "hub"
"""The hub's name as a destination and as a caller (institutions go by their codes)."""

FUGO = "fugo"
PERMITTED_LIST = "permitted_list"
QUERY = "query"
QUERY_BUNDLE = "query_bundle"
RECORDS = "records"
PROVISION_REQUEST = "provision_request"
PROVISION_REQUEST_BUNDLE = "provision_request_bundle"
PROVISION = "provision"
PROVISION_BUNDLE = "provision_bundle"
SELF_INFORMATION = "self_information"
SELF_INFORMATION_REQUEST = "self_information_request"
RECORD_DISCLOSURE = "record_disclosure"
NOTICE = "notice"
NOTICE_READ = "notice_read"
NOTICE_STATUS = "notice_status"
OPERATIONS = (
    FUGO,
    PERMITTED_LIST,
    QUERY,
    QUERY_BUNDLE,
    RECORDS,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
    PROVISION,
    PROVISION_BUNDLE,
    SELF_INFORMATION,
    SELF_INFORMATION_REQUEST,
    RECORD_DISCLOSURE,
    NOTICE,
    NOTICE_READ,
    NOTICE_STATUS,
)

MAX_MESSAGE_BYTES = 1_048_576
"""The largest message document a party accepts, whatever the transport."""

BATCHED_OPERATIONS = frozenset(
    {
        FUGO,
        QUERY,
        PROVISION_REQUEST,
        PROVISION,
        SELF_INFORMATION,
        SELF_INFORMATION_REQUEST,
        NOTICE,
        NOTICE_READ,
    }
)
"""Operations a link may carry in a batch (middleware/schemas/Batch.xsd): those whose request
is a document and whose answer a short acknowledgement, so that a batch's answer stays small."""
MAX_BATCH_ITEMS = 64
"""The most messages a receiver takes in one batch."""
MAX_BATCH_BYTES = 4 * 1_048_576
"""The largest batch document a receiver takes (its items base64-encoded)."""
MAX_BUNDLE_LINES = 500
"""The most lines of a bundle (middleware/schemas/QueryBundle.xsd and the others)."""
MAX_BUNDLE_BYTES = 512 * 1024
"""About the most a ProvisionBundle carries, well under `MAX_MESSAGE_BYTES`: a provision that
would take a bundle past it starts the next bundle (`bundles_of`)."""

RETRYABLE = frozenset({errors.CONTENT_DIGEST_MISMATCH.code})
"""Coded refusals that say the message was damaged on the way: the sender sends it again."""

T = TypeVar("T", bound=messages.Message)


class DeliveryRefused(Exception):
    """The receiver answered with a coded refusal: retrying would not change the answer."""

    def __init__(self, code: str, detail: str = "", transaction_number: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        # The 処理通番 under which the receiver recorded its refusal, if it gave one.
        self.transaction_number = transaction_number


class TransientFailure(Exception):
    """The peer could not answer now (unreachable, 5xx, an unreadable answer): retry later."""


class NetworkEndpoint(Protocol):
    """What a party offers the network: one entry point for every operation it serves."""

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        """The answer document to ``operation`` from ``caller``; fails with a `RenkeiError`
        for a refusal (its status tells final refusals, 4xx, from "not now", 5xx)."""
        ...


class Transport(Protocol):
    """How a party reaches the others."""

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        """Send ``document`` to ``destination`` (``HUB`` or an institution code) for
        ``operation``, with its ``digest`` (`content_digest` of the document meant, computed
        here when None); the answer document, or `DeliveryRefused` / `TransientFailure`."""
        ...

    def close(self) -> Deferred[None]:
        """Release what the transport holds (kept-alive connections)."""
        ...


def bundles_of(
    provisions: Sequence[messages.Provision],
) -> list[tuple[messages.Provision, ...]]:
    """Provisions, in order, in groups that each go as one ProvisionBundle: at most
    `MAX_BUNDLE_LINES`, and at most about `MAX_BUNDLE_BYTES` (each provision counted as its
    payload in base64, its reason in UTF-8 and 256 bytes for the rest) unless a provision
    alone is larger."""
    groups: list[list[messages.Provision]] = []
    size = 0
    for provision in provisions:
        reason = len(provision.reason_en or "") + len(provision.reason_ja or "")
        weight = 256 + 4 * len(provision.encrypted_payload or b"") // 3 + 3 * reason
        group = groups[-1] if groups else None
        if group is None or len(group) >= MAX_BUNDLE_LINES or size + weight > MAX_BUNDLE_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(provision)
        size += weight
    return [tuple(group) for group in groups]


def decode_answer(document: bytes, expected: type[T]) -> T:
    """An answer decoded as ``expected`` (hardened parser, XSD); an unreadable answer is a
    `TransientFailure` (the peer may answer properly later)."""
    try:
        return messages.decode(document, expected)
    except RenkeiError as failure:
        raise TransientFailure(f"unreadable answer: {failure}") from failure


def content_digest(document: bytes) -> str:
    """A document's ``Content-Digest`` field value: ``sha-256=:<base64>:`` (RFC 9530)."""
    digest = base64.b64encode(hashlib.sha256(document).digest()).decode("ascii")
    return f"sha-256=:{digest}:"


def check_content_digest(document: bytes, digest: str | None) -> None:
    """Refuse (ContentDigestMismatch) a document that does not match the digest it came
    with; a document without one is taken as it is."""
    if digest is not None and digest.strip() != content_digest(document):
        raise RenkeiError(errors.CONTENT_DIGEST_MISMATCH)


def answer_of(status: int, document: bytes, origin: str) -> bytes:
    """What a sender learns of an answer of HTTP ``status`` (from ``origin``, for the
    failure's text): the answer document for a 2xx; `DeliveryRefused` for a coded refusal
    (4xx with an ``Error`` message); `TransientFailure` for anything that may succeed later
    (5xx, a 4xx without an ``Error``, a refusal of a damaged message)."""
    if 200 <= status < 300:
        return document
    if 400 <= status < 500:
        try:
            refusal = messages.decode(document, messages.ErrorMessage)
        except RenkeiError:
            raise TransientFailure(f"HTTP {status} without an Error message") from None
        if refusal.code in RETRYABLE:
            raise TransientFailure(f"{refusal.code}: {refusal.message_en}")
        raise DeliveryRefused(refusal.code, refusal.message_en, refusal.transaction_number)
    raise TransientFailure(f"HTTP {status} from {origin}")


def refusal_of(error: RenkeiError) -> DeliveryRefused | TransientFailure:
    """What a sender learns of a receiver's refusal: a final `DeliveryRefused` for a 4xx
    code, a `TransientFailure` for a 5xx one (the same as over HTTP) or for a damaged
    message (`RETRYABLE`)."""
    if error.code in RETRYABLE:
        return TransientFailure(f"{error.code}: {error.message_en}")
    if 400 <= error.status < 500:
        answer: Any = messages.error_message(error)
        return DeliveryRefused(error.code, answer.message_en, answer.transaction_number)
    return TransientFailure(f"{error.code}: {error.message_en}")
