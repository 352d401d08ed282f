"""Every message the parties of a box exchange, captured for a scenario's report and checks.

`CapturingTransport` wraps one party's transport (outside its faults, so that an attempt a
fault hit is captured with what the sender saw) and tells its `Capture` of each attempt as
an `Exchange`: who sent what to whom, the request and the answer documents, the refusal or
failure, and when. A box of the run captures into a `MessageLog` in memory, kept while a
scenario runs. A party's process (``make run``) captures into a `CaptureFile` of its own, a
JSON line per exchange, only while the network's state says so (the control API's
``/capture``, docs/control.md); `read_captured` reads such a file back. `check_exchange`
says what is wrong with one captured exchange: a document that is not a schema-valid
message of the protocol (unless the receiver refused it as damaged).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from codes.errors import RenkeiError
from middleware.clock import iso, utc_now
from middleware.messages import check_document
from middleware.network import DeliveryRefused, Transport
from simulators.faults import message_id_of, names_of, transaction_number_of

__all__ = [
    "Capture",
    "CaptureFile",
    "CapturingTransport",
    "Exchange",
    "MessageLog",
    "check_exchange",
    "exchange_from_json",
    "exchange_to_json",
    "read_captured",
]

_log = Logger(namespace=__name__)
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
    def named(self) -> tuple[str, ...]:
        """A bundle's: every 処理通番 and line message id it (or its answer) names."""
        return names_of(self.operation, self.request) or names_of(self.operation, self.answer)

    @property
    def status(self) -> str | None:
        """The status a Provision carries (provided, no_data, held, refused, error)."""
        if self.state is not None:
            return self.state
        found = _STATUS.search(self.request[:1024]) if self.request else None
        return found.group(1).decode("ascii") if found else None


def _bytes(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unbytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def exchange_to_json(exchange: Exchange) -> dict[str, Any]:
    """A captured exchange as JSON, its documents in base64 (read back by
    `exchange_from_json`)."""
    return {
        **{key: getattr(exchange, key) for key in ("source", "destination", "operation")},
        "argument": exchange.argument,
        "at": iso(exchange.at),
        "request": _bytes(exchange.request),
        "answer": _bytes(exchange.answer),
        "refusal": exchange.refusal,
        "failure": exchange.failure,
        "seconds": exchange.seconds,
        "order": exchange.order,
    }


def exchange_from_json(document: dict[str, Any]) -> Exchange:
    """The exchange `exchange_to_json` wrote."""
    return Exchange(
        at=datetime.fromisoformat(document["at"]),
        source=document["source"],
        destination=document["destination"],
        operation=document["operation"],
        argument=document["argument"],
        request=_unbytes(document["request"]),
        answer=_unbytes(document["answer"]),
        refusal=document["refusal"],
        failure=document["failure"],
        seconds=document["seconds"],
        order=document["order"],
    )


class Capture(Protocol):
    """Where a `CapturingTransport` tells what it captures."""

    def next_order(self) -> int:
        """The place of the next thing captured (or put beside it) in one order."""
        ...

    def sent(self, exchange: Exchange) -> bool:
        """``exchange`` is being sent; whether it is kept (its end is then told)."""
        ...

    def ended(self, exchange: Exchange) -> None:
        """A kept ``exchange`` has its answer, refusal or failure."""
        ...


@dataclass
class MessageLog:
    """The exchanges of a box's parties, in the order they were sent; `next_order` also
    numbers what others put beside them (a back office's requests), in one order."""

    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._order = itertools.count()

    def next_order(self) -> int:
        return next(self._order)

    def sent(self, exchange: Exchange) -> bool:
        self.exchanges.append(exchange)
        return True

    def ended(self, exchange: Exchange) -> None:
        """Nothing to do: the exchange is in the log since it was sent."""

    def refresh(self) -> None:
        """Take in what was captured elsewhere since the last look (a log filled in this
        process as the messages are sent has nothing to take in)."""


class CaptureFile:
    """A party's process's capture: while `on` (the network's state says so), each exchange
    its parties send is appended, once it has ended, as a JSON line (`exchange_to_json` and
    ``real``: the real time it was sent, to order the lines of several processes) to
    ``path``, a file only the box's user may read. `in_flight` counts the kept exchanges
    not ended yet."""

    def __init__(self, path: Path, reactor: Any) -> None:
        self.path = path
        self.on = False
        self._reactor = reactor  # real time
        self._order = itertools.count()
        self._sent_at: dict[int, float] = {}

    @property
    def in_flight(self) -> int:
        return len(self._sent_at)

    def next_order(self) -> int:
        return next(self._order)

    def sent(self, exchange: Exchange) -> bool:
        if self.on:
            self._sent_at[id(exchange)] = float(self._reactor.seconds())
        return self.on

    def ended(self, exchange: Exchange) -> None:
        real = self._sent_at.pop(id(exchange), None)
        if real is None:
            return
        line = json.dumps({**exchange_to_json(exchange), "real": real}) + "\n"
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line.encode("ascii"))  # one write: no line is split
            finally:
                os.close(descriptor)
        except OSError:  # the capture is the tester's; the message itself went on
            _log.failure("the capture file {path} cannot be written", path=self.path)


def read_captured(path: Path, offset: int = 0) -> tuple[list[tuple[float, Exchange]], int]:
    """The exchanges a `CaptureFile` appended to ``path`` after ``offset`` (each with the
    real time it was sent), and the offset after the last whole line (a line being written
    is read next time)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read()
    except FileNotFoundError:
        return [], offset
    whole = text[: text.rfind(b"\n") + 1]
    found = []
    for line in whole.splitlines():
        document = json.loads(line)
        found.append((float(document["real"]), exchange_from_json(document)))
    return found, offset + len(whole)


class CapturingTransport:
    """One party's `Transport`, each exchange told to ``log``."""

    def __init__(self, inner: Transport, source: str, log: Capture, clock: Any) -> None:
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
        kept = self._log.sent(captured)
        started = float(self._clock.seconds())
        sent = self._inner.exchange(destination, operation, document, argument, digest=digest)
        if not kept:
            return sent

        def answered(answer: bytes) -> bytes:
            captured.answer = answer
            captured.seconds = float(self._clock.seconds()) - started
            self._log.ended(captured)
            return answer

        def failed(failure: Any) -> Any:
            captured.seconds = float(self._clock.seconds()) - started
            if failure.check(DeliveryRefused):
                captured.refusal = failure.value.code
            else:
                captured.failure = f"{failure.type.__name__}: {failure.getErrorMessage()}"
            self._log.ended(captured)
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
