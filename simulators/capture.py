"""Every message the parties of a box exchange, captured for a scenario's report and checks.

`CapturingTransport` wraps one party's transport (outside its faults, so that an attempt a
fault hit is captured with what the sender saw) and appends an `Exchange` per attempt to a
`MessageLog`: who sent what to whom, the request and the answer documents, the refusal or
failure, and when. The log is kept only while a scenario runs (the box of ``make run`` does
not capture). `check_exchange` says what is wrong with one captured exchange: a document that
is not a schema-valid message of the protocol (unless the receiver refused it as damaged).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred

from codes.errors import RenkeiError
from middleware.clock import utc_now
from middleware.messages import check_document
from middleware.network import DeliveryRefused, Transport
from simulators.faults import message_id_of, transaction_number_of

__all__ = ["CapturingTransport", "Exchange", "MessageLog", "check_exchange"]

_STATUS = re.compile(rb'status="([a-z_]{1,16})"')


@dataclass
class Exchange:
    """One attempt of one party to send one message."""

    at: datetime
    source: str
    destination: str
    operation: str
    argument: str | None
    request: bytes | None
    answer: bytes | None = None
    refusal: str | None = None  # the receiver's coded refusal
    failure: str | None = None  # no answer: a connection error, a fault
    seconds: float = 0.0
    order: int = 0  # the place of the exchange among everything the log numbered
    # For an exchange known from the parties' records, not captured (no documents): its
    # 処理通番 and status.
    number: str | None = None
    state: str | None = None

    @property
    def message_id(self) -> str | None:
        return message_id_of(self.request)

    @property
    def transaction_number(self) -> str | None:
        if self.number is not None:
            return self.number
        return transaction_number_of(self.request) or transaction_number_of(self.answer)

    @property
    def status(self) -> str | None:
        """The status a Provision carries (provided, no_data, held, refused, error)."""
        if self.state is not None:
            return self.state
        found = _STATUS.search(self.request[:1024]) if self.request else None
        return found.group(1).decode("ascii") if found else None


@dataclass
class MessageLog:
    """The exchanges of a box's parties, in the order they were sent; `next_order` also
    numbers what others put beside them (a back office's requests), in one order."""

    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._order = itertools.count()

    def next_order(self) -> int:
        return next(self._order)


class CapturingTransport:
    """One party's `Transport`, each exchange captured into ``log``."""

    def __init__(self, inner: Transport, source: str, log: MessageLog, clock: Any) -> None:
        self._inner = inner
        self._source = source
        self._log = log
        self._clock = clock

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        captured = Exchange(
            utc_now(self._clock),
            self._source,
            destination,
            operation,
            argument,
            document,
            order=self._log.next_order(),
        )
        self._log.exchanges.append(captured)
        started = float(self._clock.seconds())
        sent = self._inner.exchange(destination, operation, document, argument, digest=digest)

        def answered(answer: bytes) -> bytes:
            captured.answer = answer
            captured.seconds = float(self._clock.seconds()) - started
            return answer

        def failed(failure: Any) -> Any:
            captured.seconds = float(self._clock.seconds()) - started
            if failure.check(DeliveryRefused):
                captured.refusal = failure.value.code
            else:
                captured.failure = f"{failure.type.__name__}: {failure.getErrorMessage()}"
            return failure

        return sent.addCallbacks(answered, failed)

    def close(self) -> Deferred[None]:
        return self._inner.close()


def check_exchange(exchange: Exchange) -> list[str]:
    """What is wrong with one captured exchange: each document (the request, the answer)
    must be a schema-valid message of the protocol. A request the receiver refused as
    damaged (a ``corrupt`` fault) or that never arrived is not checked."""
    problems = []
    checked = []
    if exchange.request is not None and exchange.refusal != "ContentDigestMismatch":
        checked.append(("request", exchange.request))
    if exchange.answer is not None:
        checked.append(("answer", exchange.answer))
    for which, document in checked:
        try:
            check_document(document)
        except RenkeiError as failure:
            problems.append(
                f"{exchange.operation} {which} from {exchange.source} to {exchange.destination}"
                f": {failure.message_en}"
            )
    return problems
