"""Batched links (adapters/link_batch.py): messages to one destination gathered into one
request, each answered or refused as if sent alone; hostile batches refused whole."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from adapters.link_batch import BatchingTransport, answer_batch, read_batch
from adapters.network_link import NetworkClient
from codes import errors
from codes.errors import RenkeiError
from middleware import messages
from middleware.config import BatchingConfig
from middleware.network import (
    FUGO,
    HUB,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    NOTICE_STATUS,
    PROVISION,
    QUERY,
    DeliveryRefused,
    TransientFailure,
    answer_of,
    content_digest,
)
from tests.network import (
    CARE_INSURANCE,
    HANAKO_MEGURO,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
    write_config,
)
from tests.test_refusals import as_institution

SENDER = MEGURO


class Party:
    """A receiving party's `NetworkEndpoint`: answers each document with ``answer:`` and the
    document, refuses ``refuse`` (4xx) and fails ``fail`` (5xx); remembers what it handled."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str, bytes]] = []

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        assert document is not None
        self.handled.append((caller, operation, document))
        if document == b"refuse":
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code="0000000000000000")
        if document == b"fail":
            return fail(RenkeiError(errors.NETWORK_UNAVAILABLE, detail="down"))
        return succeed(b"answer:" + document)


def over_http(answered: Deferred[bytes]) -> Deferred[bytes]:
    """A receiver's answer as a sender's HTTPS client reads it: a refusal of the whole
    request becomes its Error message's classification."""

    def refused(failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, RenkeiError)
        return answer_of(error.status, messages.encode(messages.error_message(error)), "test")

    return answered.addErrback(refused)


class Link:
    """The sender's plain link (one request a message) and its ``/batch`` poster, both to
    ``party`` directly; ``batch_answer`` replaces the poster's behaviour when set."""

    def __init__(self, party: Party) -> None:
        self.party = party
        self.alone: list[bytes] = []
        self.batches: list[messages.Batch] = []
        self.batch_answer: Any = None
        self.alone_answer: Any = None
        self.closed = False

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        assert document is not None
        self.alone.append(document)
        if self.alone_answer is not None:
            answer: Deferred[bytes] = self.alone_answer()
            return answer
        return succeed(b"alone:" + document)

    def post(self, destination: str, body: bytes) -> Deferred[bytes]:
        self.batches.append(read_batch(body))
        if self.batch_answer is not None:
            answer: Deferred[bytes] = self.batch_answer()
            return answer
        return over_http(answer_batch(self.party, SENDER, body))

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


def batching(
    size: int = 32, max_bytes: int = 1_048_576, linger: float = 0.0, in_flight: int = 0
) -> tuple[BatchingTransport, Link, Party, Clock]:
    """A batching transport to the hub over a `Link` to a `Party`, on a manual clock."""
    party, clock = Party(), Clock()
    link = Link(party)
    policy = BatchingConfig(size=size, max_bytes=max_bytes, linger=linger, in_flight=in_flight)
    return BatchingTransport(link, link.post, clock, policy, [HUB]), link, party, clock


def outcome(answered: Deferred[bytes]) -> Any:
    """What a Deferred fired with: its result, or the exception it failed with."""
    results: list[Any] = []
    answered.addBoth(results.append)
    assert results, "the exchange has not ended"
    value = results[0]
    return value.value if isinstance(value, Failure) else value


def test_messages_of_one_turn_travel_in_one_batch_each_with_its_own_answer() -> None:
    """Three messages sent in one reactor turn go in one request, and each caller gets the
    answer to its own message."""
    transport, link, party, clock = batching()
    sent = [transport.exchange(HUB, PROVISION, f"m{n}".encode()) for n in range(3)]
    assert not link.batches and not sent[0].called
    clock.advance(0)
    assert len(link.batches) == 1 and not link.alone
    assert [outcome(d) for d in sent] == [b"answer:m0", b"answer:m1", b"answer:m2"]
    assert party.handled == [(SENDER, PROVISION, f"m{n}".encode()) for n in range(3)]


def test_each_item_carries_the_document_byte_exact_with_its_digest() -> None:
    """An item is the document base64-encoded, unchanged, with its Content-Digest."""
    transport, link, _, clock = batching()
    document = b'<?xml version="1.0"?>\n<x a="1">\xe7\xac\xa6\xe5\x8f\xb7</x>'
    transport.exchange(HUB, PROVISION, document)
    transport.exchange(HUB, QUERY, b"other")
    clock.advance(0)
    item = link.batches[0].items[0]
    assert item == messages.BatchItem(
        operation=PROVISION, document=document, digest=content_digest(document)
    )


def test_a_refused_message_among_accepted_ones_is_refused_alone() -> None:
    """A coded 4xx refusal of one item is that item's DeliveryRefused; the others are
    answered."""
    transport, _, _, clock = batching()
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"refuse", b"b")]
    clock.advance(0)
    refused = outcome(sent[1])
    assert isinstance(refused, DeliveryRefused) and refused.code == "UnknownInstitution"
    assert (outcome(sent[0]), outcome(sent[2])) == (b"answer:a", b"answer:b")


def test_an_item_failing_at_the_receiver_is_transient_for_that_item_only() -> None:
    """A 5xx answer to one item is a TransientFailure of that item."""
    transport, _, _, clock = batching()
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"fail", b"b")]
    clock.advance(0)
    assert isinstance(outcome(sent[0]), TransientFailure)
    assert outcome(sent[1]) == b"answer:b"


def test_a_damaged_message_is_refused_alone_and_sent_again() -> None:
    """An item whose document does not match its digest reaches no party and is a transient
    failure (the sender sends it again); the others of the batch are answered."""
    transport, _, party, clock = batching()
    damaged = transport.exchange(HUB, PROVISION, b"flipped", digest=content_digest(b"sent"))
    whole = transport.exchange(HUB, PROVISION, b"whole")
    clock.advance(0)
    failure = outcome(damaged)
    assert isinstance(failure, TransientFailure) and "ContentDigestMismatch" in str(failure)
    assert outcome(whole) == b"answer:whole"
    assert [document for _, _, document in party.handled] == [b"whole"]


@pytest.mark.parametrize(
    "answer",
    [
        lambda: fail(TransientFailure("connection refused")),
        lambda: fail(DeliveryRefused("PageNotFound", "no /batch here")),
        lambda: succeed(b"<not-a-batch-answer/>"),
        lambda: succeed(
            messages.encode(
                messages.BatchAnswer(items=(messages.BatchAnswerItem(status=200, document=b"one"),))
            )
        ),
    ],
    ids=["request-failed", "batch-refused-whole", "unreadable-answer", "too-few-answers"],
)
def test_a_batch_failing_as_a_whole_makes_every_message_transient(answer: Any) -> None:
    """A batch request that failed, was refused whole or answered unreadably refused none of
    its messages: each is a TransientFailure, which its outbox sends again."""
    transport, link, _, clock = batching()
    link.batch_answer = answer
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"b")]
    clock.advance(0)
    assert all(isinstance(outcome(d), TransientFailure) for d in sent)


def test_a_batch_of_one_goes_as_its_own_request() -> None:
    """A message alone in its batch is sent as today, without a batch document."""
    transport, link, _, clock = batching()
    sent = transport.exchange(HUB, PROVISION, b"only")
    clock.advance(0)
    assert outcome(sent) == b"alone:only"
    assert link.alone == [b"only"] and not link.batches


def test_what_may_not_be_batched_goes_alone_at_once() -> None:
    """Operations with large answers, documents above the byte cap and destinations that
    serve no batches (outside members) are sent at once, alone."""
    transport, link, _, _ = batching(max_bytes=10)
    outcome(transport.exchange(HUB, NOTICE_STATUS, b"status"))
    outcome(transport.exchange(HUB, PROVISION, b"eleven byte"))
    outcome(transport.exchange("1131121000000000", PROVISION, b"elsewhere"))
    assert link.alone == [b"status", b"eleven byte", b"elsewhere"] and not link.batches


def test_a_full_batch_leaves_at_once_and_the_next_message_opens_another() -> None:
    """A batch leaves as soon as it holds ``size`` messages."""
    transport, link, _, clock = batching(size=2)
    first = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"b")]
    assert len(link.batches) == 1 and outcome(first[1]) == b"answer:b"
    third = transport.exchange(HUB, PROVISION, b"c")
    assert not third.called
    clock.advance(0)
    assert outcome(third) == b"alone:c"


def test_a_batch_leaves_before_its_documents_pass_the_byte_cap() -> None:
    """A message that would take the open batch past ``max_bytes`` sends the batch first."""
    transport, link, _, clock = batching(max_bytes=10)
    transport.exchange(HUB, PROVISION, b"12345")
    transport.exchange(HUB, PROVISION, b"6789")
    later = transport.exchange(HUB, PROVISION, b"ab")
    assert [len(batch.items) for batch in link.batches] == [2]
    clock.advance(0)
    assert outcome(later) == b"alone:ab"


def test_a_batch_lingers_for_its_first_message_then_leaves() -> None:
    """With a linger, a batch waits that long after its first message, gathering those that
    come meanwhile."""
    transport, link, _, clock = batching(linger=0.005)
    early = transport.exchange(HUB, PROVISION, b"a")
    clock.advance(0.004)
    late = transport.exchange(HUB, FUGO, b"b")
    assert not link.batches
    clock.advance(0.001)
    assert len(link.batches) == 1
    assert (outcome(early), outcome(late)) == (b"answer:a", b"answer:b")


def test_with_requests_in_flight_a_lingered_batch_waits_for_one_to_end() -> None:
    """With ``in_flight`` requests to its destination unanswered, a batch whose linger has
    passed goes on gathering, and leaves when one of them is answered."""
    transport, link, _, clock = batching(in_flight=1)
    pending: Deferred[bytes] = Deferred()
    link.alone_answer = lambda: pending
    first = transport.exchange(HUB, PROVISION, b"a")
    clock.advance(0)
    assert link.alone == [b"a"]
    waiting = [transport.exchange(HUB, PROVISION, body) for body in (b"b", b"c")]
    clock.advance(1)
    later = transport.exchange(HUB, PROVISION, b"d")
    assert not link.batches
    pending.callback(b"answer:a")
    assert outcome(first) == b"answer:a"
    assert [len(batch.items) for batch in link.batches] == [3]
    assert [outcome(d) for d in [*waiting, later]] == [b"answer:b", b"answer:c", b"answer:d"]


def test_a_full_batch_leaves_whatever_is_in_flight() -> None:
    """The wait for a request in flight holds back a lingered batch, never a full one."""
    transport, link, _, clock = batching(size=2, in_flight=1)
    link.alone_answer = Deferred
    transport.exchange(HUB, PROVISION, b"a")
    clock.advance(0)
    full = [transport.exchange(HUB, PROVISION, body) for body in (b"b", b"c")]
    assert len(link.batches) == 1 and outcome(full[1]) == b"answer:c"


def test_a_message_cancelled_before_its_batch_leaves_is_not_sent() -> None:
    """Cancelling an exchange still in an open batch takes it out of the batch."""
    transport, _, party, clock = batching()
    dropped = transport.exchange(HUB, PROVISION, b"a")
    kept = [transport.exchange(HUB, PROVISION, body) for body in (b"b", b"c")]
    dropped.cancel()
    assert isinstance(outcome(dropped), CancelledError)
    clock.advance(0)
    assert [outcome(d) for d in kept] == [b"answer:b", b"answer:c"]
    assert [document for _, _, document in party.handled] == [b"b", b"c"]


def test_cancelling_every_message_of_an_open_batch_sends_nothing() -> None:
    """A batch whose every message was cancelled before it left is not sent (the outbox
    cancels its attempts when it stops)."""
    transport, link, _, clock = batching()
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"b")]
    for answered in sent:
        answered.cancel()
    clock.advance(0)
    assert not link.batches and not link.alone
    assert not clock.getDelayedCalls()


def test_cancelling_messages_in_flight_abandons_the_request_once_no_one_waits() -> None:
    """A message cancelled while its batch is in flight fails with CancelledError at once
    and its answer is ignored; the request itself is cancelled when every message of it
    is."""
    transport, link, _, clock = batching()
    request_cancelled: list[bool] = []
    link.batch_answer = lambda: Deferred(lambda _: request_cancelled.append(True))
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"b")]
    clock.advance(0)
    sent[0].cancel()
    assert isinstance(outcome(sent[0]), CancelledError) and not request_cancelled
    sent[1].cancel()
    assert isinstance(outcome(sent[1]), CancelledError) and request_cancelled == [True]


def test_an_answer_to_a_cancelled_message_reaches_only_the_others() -> None:
    """The answer to a batch in which one message was cancelled settles the others only."""
    transport, link, _, clock = batching()
    pending: Deferred[bytes] = Deferred()
    link.batch_answer = lambda: pending
    sent = [transport.exchange(HUB, PROVISION, body) for body in (b"a", b"b")]
    clock.advance(0)
    sent[0].cancel()
    items = (
        messages.BatchAnswerItem(status=200, document=b"one"),
        messages.BatchAnswerItem(status=200, document=b"two"),
    )
    pending.callback(messages.encode(messages.BatchAnswer(items=items)))
    assert isinstance(outcome(sent[0]), CancelledError)
    assert outcome(sent[1]) == b"two"


def test_closing_fails_the_messages_of_open_batches_as_transient() -> None:
    """Closing the link fails the messages still waiting in a batch, transiently: their
    outboxes send them again."""
    transport, link, _, clock = batching(linger=1.0)
    sent = transport.exchange(HUB, PROVISION, b"a")
    transport.close()
    assert isinstance(outcome(sent), TransientFailure) and link.closed
    assert not clock.getDelayedCalls()


# -- hostile batches ---------------------------------------------------------------------------


def batch_document(*items: tuple[str, bytes]) -> bytes:
    """A batch of ``(operation, document)`` items, without digests."""
    return messages.encode(
        messages.Batch(
            items=tuple(
                messages.BatchItem(operation=operation, document=document)
                for operation, document in items
            )
        )
    )


def refusal(body: bytes) -> RenkeiError:
    """The error a receiver refuses ``body`` with, checked to have reached no party."""
    party = Party()
    results: list[Any] = []
    answer_batch(party, SENDER, body).addBoth(results.append)
    assert isinstance(results[0], Failure), "the batch was accepted"
    assert not party.handled, "a refused batch reached the party"
    error = results[0].value
    assert isinstance(error, RenkeiError)
    return error


TOO_MANY = batch_document(*[(PROVISION, b"x")] * (MAX_BATCH_ITEMS + 1))
HOSTILE = {
    "malformed": (b"<Batch xmlns='urn:renkei:linkage:1'><Item", "XmlMalformed"),
    "doctype": (
        b'<!DOCTYPE x [<!ENTITY e "e">]><Batch xmlns="urn:renkei:linkage:1"/>',
        "XmlDoctypeForbidden",
    ),
    "another-message": (
        messages.encode(messages.ProvisionAck(message_id="0" * 36, transaction_number="1" * 20)),
        "UnexpectedMessage",
    ),
    "empty": (b'<Batch xmlns="urn:renkei:linkage:1"/>', "XmlSchemaInvalid"),
    "unknown-operation": (batch_document(("delete_everything", b"x")), "XmlSchemaInvalid"),
    "operation-not-batched": (batch_document(("records", b"x")), "XmlSchemaInvalid"),
    "not-base64": (
        batch_document((PROVISION, b"x")).replace(base64.b64encode(b"x"), b"not base64!"),
        "XmlSchemaInvalid",
    ),
    "too-many-items": (TOO_MANY, "BatchTooLarge"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_batch_is_refused_whole_with_its_code(name: str) -> None:
    """A batch that is not a well-formed, schema-valid batch of at most MAX_BATCH_ITEMS
    batchable messages is refused with a coded error and reaches no party."""
    body, code = HOSTILE[name]
    assert refusal(body).code == code


def test_too_many_items_are_counted_before_the_schema() -> None:
    """BatchTooLarge (413) names how many items came and how many are accepted."""
    error = refusal(TOO_MANY)
    assert error.params == {"count": MAX_BATCH_ITEMS + 1, "limit": MAX_BATCH_ITEMS}
    assert error.status == 413


def test_an_item_above_a_message_limit_is_refused_alone() -> None:
    """An item larger than a message may be is refused as its own request would be
    (BodyTooLarge), the others answered."""
    party = Party()
    big = b"x" * (1_048_576 + 1)
    answered = outcome(answer_batch(party, SENDER, batch_document((PROVISION, big), (QUERY, b"q"))))
    items = messages.decode(answered, messages.BatchAnswer).items
    assert items[0].status == 413
    assert messages.decode(items[0].document, messages.ErrorMessage).code == "BodyTooLarge"
    assert items[1] == messages.BatchAnswerItem(status=200, document=b"answer:q")
    assert [document for _, _, document in party.handled] == [b"q"]


# -- over mutual TLS ---------------------------------------------------------------------------


async def post_batch(tls_box: Any, body: bytes) -> bytes:
    """``body`` posted to the hub's ``/batch`` with Meguro's TLS certificate."""
    client: NetworkClient = as_institution(tls_box, MEGURO)
    try:
        answer: bytes = await client.request("POST", tls_box.config.hub_address + "/batch", body)
    finally:
        await client.close()
    return answer


@pytest_twisted.ensureDeferred
async def test_the_hub_refuses_a_hostile_batch_with_its_code(tls_box: Any) -> None:
    """Over mutual TLS, a batch with an operation that may not be batched is refused whole
    with XmlSchemaInvalid."""
    with pytest.raises(DeliveryRefused) as refused:
        await post_batch(tls_box, batch_document(("records", b"x"), (PROVISION, b"y")))
    assert refused.value.code == "XmlSchemaInvalid"


@pytest_twisted.ensureDeferred
async def test_a_batch_body_above_its_cap_is_refused_while_it_arrives(tls_box: Any) -> None:
    """The listener takes a batch up to MAX_BATCH_BYTES, not more (BodyTooLarge)."""
    with pytest.raises(DeliveryRefused) as refused:
        await post_batch(tls_box, b" " * (MAX_BATCH_BYTES + 1))
    assert refused.value.code == "BodyTooLarge"


@pytest_twisted.ensureDeferred
async def test_the_hub_answers_each_message_of_a_batch(tls_box: Any) -> None:
    """Over mutual TLS, the hub answers a batch item by item, the caller taken from the
    certificate: a damaged item refused with ContentDigestMismatch, a malformed one with
    its own schema refusal."""
    body = messages.encode(
        messages.Batch(
            items=(
                messages.BatchItem(
                    operation=FUGO, document=b"<x/>", digest=content_digest(b"<y/>")
                ),
                messages.BatchItem(operation=QUERY, document=b"<QueryRequest/>"),
            )
        )
    )
    items = messages.decode(await post_batch(tls_box, body), messages.BatchAnswer).items
    codes = [messages.decode(item.document, messages.ErrorMessage).code for item in items]
    assert codes == ["ContentDigestMismatch", "UnexpectedMessage"]
    assert [item.status for item in items] == [400, 400]


@pytest_twisted.ensureDeferred
async def test_concurrent_queries_over_batched_links_are_each_provided(
    tmp_path: Path, network_pki: Path
) -> None:
    """A box over mutual TLS whose links batch (link_batch_size 32, a linger of 20 ms, so
    that the messages of concurrent flows meet): every query of a burst is provided."""
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults

    from simulators.back_office import BackOfficeClient
    from tests.conftest import running_box

    delivery = "link_batch_size = 32\nlink_batch_linger = 0.02"
    config = write_config(tmp_path, network_pki, delivery=delivery)
    box = await running_box(config, in_memory=False)
    client = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
    try:
        submitted = await gatherResults(
            [
                client.submit_query(
                    integrated_address_number=HANAKO_MEGURO,
                    procedure=PREMIUM_ASSESSMENT,
                    information_name=TAX_INFORMATION,
                    provider=SETAGAYA,
                )
                for _ in range(6)
            ]
        )
        for query in submitted:
            status = await client.wait_for_result(query["query_id"])
            assert status["state"] == "provided"
    finally:
        await client.close()
        await box.stopService()
