"""Batched links: the messages a party sends to one destination, several in one request.

Beneath the parties, their outboxes and their idempotence (a party still sends and receives
one message at a time): `BatchingTransport` wraps a party's mutual-TLS `Transport` and
gathers the exchanges to one destination that arrive while a batch is open into one
``POST /batch`` (a `messages.Batch`: each message's document base64-encoded, byte-exact,
with its operation and ``Content-Digest``). A batch leaves when it holds ``size`` messages,
when the next message would take its documents past ``max_bytes``, or ``linger`` seconds
after its first (0: at the reactor's next turn, which gathers what the flows produced in the
same turn) unless ``in_flight`` requests to its destination are still unanswered: then it
goes on gathering until one is; a batch of one goes as the message's own request. Each
caller gets its own answer or refusal, as if its message had gone alone: a coded 4xx refusal
of one item is a `DeliveryRefused` of that item only; a 5xx, an unreadable item, an
unreadable batch answer or a batch request that failed is a `TransientFailure` of the items
concerned, which their outboxes send again (receivers are idempotent on message ids).

`answer_batch` is the receiving side, served by `adapters.network_link.NetworkApi`: a batch
refused whole (malformed, schema-invalid, an operation that may not be batched, more than
`MAX_BATCH_ITEMS` messages) reaches no party; otherwise every item goes to the party's
`NetworkEndpoint.dispatch`, all at once, each checked against its digest and its size first,
and the answer says per item what its own request would have answered (a `BatchAnswer`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from codes import errors
from codes.errors import RenkeiError
from middleware import messages
from middleware.config import BatchingConfig
from middleware.deferred import deferred
from middleware.hardened_xml import MAX_TREE_BYTES, parse_xml
from middleware.network import (
    BATCHED_OPERATIONS,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    MAX_MESSAGE_BYTES,
    DeliveryRefused,
    NetworkEndpoint,
    TransientFailure,
    Transport,
    answer_of,
    check_content_digest,
    content_digest,
)

__all__ = ["BATCH_PATH", "BatchPoster", "BatchingTransport", "answer_batch", "read_batch"]

_log = Logger(namespace=__name__)

BATCH_PATH = "/batch"
"""The route of a batch on every network listener of renkei's."""

BatchPoster = Callable[[str, bytes], "Deferred[bytes]"]
"""Posts a batch document to a destination; the answer document, or the failure of the
request as `middleware.network.answer_of` classifies it."""


# -- receiving ---------------------------------------------------------------------------------


def read_batch(body: bytes) -> messages.Batch:
    """A received batch document, parsed by the hardened parser (at most `MAX_BATCH_BYTES`),
    its items counted (``BatchTooLarge`` above `MAX_BATCH_ITEMS`, before the schema) and
    validated (Batch.xsd); a `RenkeiError` otherwise."""
    root = parse_xml(body, max_bytes=MAX_BATCH_BYTES)
    count = sum(1 for child in root if isinstance(child.tag, str))
    if count > MAX_BATCH_ITEMS:
        raise RenkeiError(errors.BATCH_TOO_LARGE, count=count, limit=MAX_BATCH_ITEMS)
    return messages.from_element(root, messages.Batch)


@deferred
async def answer_batch(endpoint: NetworkEndpoint, caller: str, body: bytes) -> bytes:
    """The `BatchAnswer` document to a batch from ``caller``: every item dispatched to
    ``endpoint`` at once, each answered as its own request would have been. A batch refused
    whole fails with its `RenkeiError` before any item reaches the party."""
    batch = read_batch(body)
    pending = [_answered(endpoint, caller, item) for item in batch.items]
    answers = [await answer for answer in pending]
    return messages.encode(messages.BatchAnswer(items=tuple(answers)))


def _answered(
    endpoint: NetworkEndpoint, caller: str, item: messages.BatchItem
) -> Deferred[messages.BatchAnswerItem]:
    answered: Deferred[bytes] = maybeDeferred(_dispatched, endpoint, caller, item)
    return answered.addCallbacks(
        lambda document: messages.BatchAnswerItem(status=200, document=document), _refusal
    )


def _dispatched(endpoint: NetworkEndpoint, caller: str, item: messages.BatchItem) -> Any:
    # The checks a listener makes of a message's own request: its size, then its digest.
    if len(item.document) > MAX_MESSAGE_BYTES:
        raise RenkeiError(errors.BODY_TOO_LARGE, limit=MAX_MESSAGE_BYTES)
    check_content_digest(item.document, item.digest)
    return endpoint.dispatch(caller, item.operation, item.document, None)


def _refusal(failure: Failure) -> messages.BatchAnswerItem:
    error = failure.value
    if not isinstance(error, RenkeiError):
        _log.failure("internal error while handling a batched message", failure)
        error = RenkeiError(errors.INTERNAL)
    document = messages.encode(messages.error_message(error))
    return messages.BatchAnswerItem(status=error.status, document=document)


# -- sending -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Item:
    operation: str
    document: bytes
    digest: str
    answered: Deferred[bytes] = field(init=False)
    cancelled: bool = False


@dataclass(eq=False)
class _Batch:
    destination: str
    items: list[_Item] = field(default_factory=list)
    size: int = 0  # bytes of the items' documents
    timer: Any = None  # the linger's delayed call
    waiting: bool = False  # lingered, and waits for a request to its destination to end
    request: Deferred[Any] | None = None  # once sent


class BatchingTransport:
    """A party's `Transport` that sends its messages to the ``batched`` destinations in
    batches (``policy``), through ``post``, and everything else through ``link``: messages
    to others (outside members serve no ``/batch``), operations not in
    `BATCHED_OPERATIONS`, documents larger than a batch may hold."""

    def __init__(
        self,
        link: Transport,
        post: BatchPoster,
        reactor: Any,
        policy: BatchingConfig,
        batched: Collection[str],
    ) -> None:
        self._link = link
        self._post = post
        self._reactor = reactor
        self._policy = policy
        self._batched = frozenset(batched)
        self._open: dict[str, _Batch] = {}
        self._flying: dict[str, int] = {}  # requests sent to each destination, not yet ended

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        if (
            destination not in self._batched
            or operation not in BATCHED_OPERATIONS
            or document is None
            or argument is not None
            or len(document) > self._policy.max_bytes
        ):
            return self._link.exchange(destination, operation, document, argument, digest=digest)
        batch = self._open.get(destination)
        if batch is not None and batch.size + len(document) > self._policy.max_bytes:
            self._send(batch)
            batch = None
        if batch is None:
            batch = self._open[destination] = _Batch(destination)
            batch.timer = self._reactor.callLater(self._policy.linger, self._lingered, batch)
        item = _Item(operation, document, digest or content_digest(document))
        item.answered = Deferred(lambda _: self._cancel(batch, item))
        batch.items.append(item)
        batch.size += len(document)
        if len(batch.items) >= self._policy.size:
            self._send(batch)
        return item.answered

    def _lingered(self, batch: _Batch) -> None:
        cap = self._policy.in_flight
        if cap and self._flying.get(batch.destination, 0) >= cap:
            batch.waiting = True
        else:
            self._send(batch)

    def _landed(self, destination: str) -> None:
        """A request to ``destination`` ended: a batch waiting for that leaves."""
        self._flying[destination] -= 1
        batch = self._open.get(destination)
        if batch is not None and batch.waiting:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        if self._open.get(batch.destination) is batch:
            del self._open[batch.destination]
        if batch.timer.active():
            batch.timer.cancel()
        if not batch.items:
            return
        if len(batch.items) == 1:
            item = batch.items[0]
            alone: Deferred[bytes] = maybeDeferred(
                self._link.exchange,
                batch.destination,
                item.operation,
                item.document,
                digest=item.digest,
            )
            batch.request = alone.addCallback(lambda answer: [answer])
        else:
            body = messages.encode(
                messages.Batch(
                    items=tuple(
                        messages.BatchItem(
                            operation=item.operation, document=item.document, digest=item.digest
                        )
                        for item in batch.items
                    )
                )
            )
            posted: Deferred[bytes] = maybeDeferred(self._post, batch.destination, body)
            batch.request = posted.addCallback(self._outcomes, batch)
        batch.request.addCallbacks(
            self._settle, self._failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )
        self._flying[batch.destination] = self._flying.get(batch.destination, 0) + 1
        batch.request.addBoth(lambda _: self._landed(batch.destination))

    def _outcomes(self, answer: bytes, batch: _Batch) -> list[bytes | Exception]:
        """Each item's answer document or failure, from the batch's answer."""
        try:
            read = messages.decode(answer, messages.BatchAnswer, max_bytes=MAX_TREE_BYTES)
        except RenkeiError as error:
            return [TransientFailure(f"unreadable batch answer: {error}")] * len(batch.items)
        if len(read.items) != len(batch.items):
            miscount = TransientFailure(
                f"a batch answer of {len(read.items)} items to {len(batch.items)} messages"
            )
            return [miscount] * len(batch.items)
        outcomes: list[bytes | Exception] = []
        origin = f"{batch.destination} (in a batch)"
        for item in read.items:
            try:
                outcomes.append(answer_of(item.status, item.document, origin))
            except (DeliveryRefused, TransientFailure) as failure:
                outcomes.append(failure)
        return outcomes

    def _settle(self, outcomes: list[bytes | Exception], batch: _Batch) -> None:
        for item, outcome in zip(batch.items, outcomes, strict=True):
            if item.cancelled or item.answered.called:
                continue
            if isinstance(outcome, Exception):
                item.answered.errback(Failure(outcome))
            else:
                item.answered.callback(outcome)

    def _failed(self, failure: Failure, batch: _Batch) -> None:
        # A message sent alone fails as it failed; a batch that failed whole refused none of
        # its messages (its receiver may not even have read them): each may succeed later.
        if len(batch.items) == 1:
            outcome: Exception = failure.value
        else:
            outcome = TransientFailure(f"the batch to {batch.destination} failed: {failure.value}")
        self._settle([outcome] * len(batch.items), batch)

    def _cancel(self, batch: _Batch, item: _Item) -> None:
        """A caller gave up on its message: dropped from a batch still open; once sent, its
        answer is ignored, and the request is abandoned when no one waits for it any more."""
        item.cancelled = True
        if batch.request is None:
            batch.items.remove(item)
            batch.size -= len(item.document)
            if not batch.items:
                self._send(batch)  # closes the empty batch
        elif all(other.cancelled or other.answered.called for other in batch.items):
            batch.request.cancel()

    def close(self) -> Deferred[None]:
        """Fail the messages of open batches (their outboxes send them again) and close
        the link."""
        for batch in list(self._open.values()):
            del self._open[batch.destination]
            if batch.timer.active():
                batch.timer.cancel()
            for item in batch.items:
                item.answered.errback(TransientFailure("the link was closed"))
        return self._link.close()
