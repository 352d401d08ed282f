"""Faults on the network's links, injected on purpose: what testers use to prove that nothing
is lost or doubled when the network misbehaves.

A `Fault` names what it does, after Toxiproxy's toxics and Jepsen's nemeses, and which
messages it hits: those from a party (``source``), to a party (``destination``), of an
operation (``query``, ``provision_request``, ``provision``, ``fugo``, ``permitted_list``,
``records``), each hit with a ``probability`` and at most ``limit`` times. The kinds:

- ``latency``: the message arrives ``latency`` seconds (± ``jitter``) late; with jitter,
  messages overtake each other;
- ``reorder``: the message is held a random time between 0 and ``latency`` seconds (0.2
  without one), so that the messages it hits arrive out of the order they were sent in;
- ``drop``: the message never arrives; the sender learns it as a connection error after
  ``latency`` seconds;
- ``timeout``: the connection hangs for ``latency`` seconds (default 30), then fails, and the
  message never arrives;
- ``duplicate``: the message arrives twice (the sender gets the first answer);
- ``reset_peer``: the message arrives and is handled, but the connection is reset before the
  answer: the sender must send it again, the receiver must not act on it twice;
- ``down``: the destination refuses connections;
- ``corrupt``: bytes of the message are flipped on the way (``probability`` per message); it
  still carries the digest of what was sent, so the receiver refuses it
  (ContentDigestMismatch) and the sender sends it again;
- ``skew``: the clock of the party ``source`` (every party's without one) runs ``offset``
  seconds ahead (behind, when negative) of the network's: its permits, lists and holds are
  judged by that time.

A `FaultPlan` holds the faults in force for a network (shared by every party of a process)
and draws from a seeded random generator, so a run can be repeated; every hit is logged with
the message id it hit and kept (`FaultPlan.hits`). `FaultyTransport` applies a plan to what
one party sends, around its real transport (in memory or HTTPS): the parties' code is the
same with or without faults.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from codes import errors
from codes.errors import RenkeiError
from middleware.clock import utc_now
from middleware.network import (
    OPERATIONS,
    PROVISION_BUNDLE,
    PROVISION_REQUEST_BUNDLE,
    QUERY_BUNDLE,
    TransientFailure,
    Transport,
    content_digest,
)

__all__ = [
    "BUNDLES",
    "KINDS",
    "REORDER_WINDOW",
    "Fault",
    "FaultPlan",
    "FaultyTransport",
    "Hit",
    "SkewedClock",
    "message_id_of",
    "names_of",
    "transaction_number_of",
]

KINDS = (
    "latency",
    "reorder",
    "drop",
    "timeout",
    "duplicate",
    "reset_peer",
    "down",
    "corrupt",
    "skew",
)
REORDER_WINDOW = 0.2  # seconds a ``reorder`` fault holds a message at most, unless it names one
KEPT_HITS = 10_000  # the most recent hits a plan keeps
FLIPPED = 3  # bytes a ``corrupt`` fault flips in a message
DEFAULT_TIMEOUT = 30.0  # seconds a ``timeout`` fault hangs when it names no latency

_log = Logger(namespace=__name__)
_MESSAGE_ID = re.compile(rb'messageId="([^"]{1,64})"')
_TRANSACTION_NUMBER = re.compile(rb'transactionNumber="([0-9]{20})"')
# What a bundle names of its lines: their 処理通番 (attributes, or a permit bundle's elements)
# and the message ids of a query bundle's lines.
_NAMED = re.compile(
    rb'(?:transactionNumber="|<TransactionNumber>)([0-9]{20})|<Line messageId="([^"]{1,64})"'
)
BUNDLES = frozenset({QUERY_BUNDLE, PROVISION_REQUEST_BUNDLE, PROVISION_BUNDLE})


@dataclass(frozen=True)
class Fault:
    """One fault on the links: what it does and which messages it hits (None: any)."""

    kind: str
    source: str | None = None  # the sending party: "hub" or an institution code
    destination: str | None = None
    operation: str | None = None
    probability: float = 1.0
    latency: float = 0.0  # seconds (latency, drop, timeout)
    jitter: float = 0.0  # seconds, latency only
    limit: int | None = None  # hits at most, then the fault stays but no longer fires
    offset: float = 0.0  # seconds, skew only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RenkeiError(errors.BAD_REQUEST, detail=f"no such fault: {self.kind}")
        if self.operation is not None and self.operation not in OPERATIONS:
            raise RenkeiError(errors.BAD_REQUEST, detail=f"no such operation: {self.operation}")
        if not 0 <= self.probability <= 1:
            raise RenkeiError(errors.BAD_REQUEST, detail="probability must be between 0 and 1")
        if self.latency < 0 or self.jitter < 0 or (self.limit is not None and self.limit < 0):
            raise RenkeiError(errors.BAD_REQUEST, detail="latency, jitter and limit are >= 0")

    @classmethod
    def from_json(cls, document: Any) -> Fault:
        """A fault from its JSON form (`to_json`): an object of these fields, ``kind`` required;
        anything else is refused with BadRequest."""
        if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
            raise RenkeiError(errors.BAD_REQUEST, detail="a fault is an object with a kind")
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(document) - set(known))
        if unknown:
            raise RenkeiError(errors.BAD_REQUEST, detail=f"no such fault field: {unknown[0]}")
        values: dict[str, Any] = {}
        for name, value in document.items():
            if value is None or name == "kind":
                values[name] = value
            elif name in ("source", "destination", "operation"):
                if not isinstance(value, str):
                    raise RenkeiError(errors.BAD_REQUEST, detail=f"{name} must be a string")
                values[name] = value
            elif name == "limit":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise RenkeiError(errors.BAD_REQUEST, detail="limit must be an integer")
                values[name] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise RenkeiError(errors.BAD_REQUEST, detail=f"{name} must be a number")
                values[name] = float(value)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """This fault as a JSON object (read back by `from_json`)."""
        return asdict(self)

    def matches(self, source: str, destination: str, operation: str) -> bool:
        return (
            self.source in (None, source)
            and self.destination in (None, destination)
            and self.operation in (None, operation)
        )


@dataclass(frozen=True)
class Hit:
    """A fault that hit a message."""

    fault: str  # the fault's name in the plan
    kind: str
    source: str
    destination: str
    operation: str
    message_id: str | None
    at: datetime
    transaction_number: str | None = None  # the 処理通番 the message names, if any
    named: tuple[str, ...] = ()  # a bundle's: every 処理通番 and line message id it names


@dataclass
class _Entry:
    fault: Fault
    hits: int = 0


@dataclass
class FaultPlan:
    """The faults in force on a network's links."""

    seed: int | None = None
    clock: Any = None  # what tells the time of a hit (the network's clock); None: the reactor
    hits: deque[Hit] = field(default_factory=lambda: deque(maxlen=KEPT_HITS))  # newest last

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._faults: dict[str, _Entry] = {}
        self._names = itertools.count(1)

    def add(self, fault: Fault) -> str:
        """Put ``fault`` in force; its name in the plan (to remove it)."""
        name = f"f{next(self._names)}"
        self._faults[name] = _Entry(fault)
        _log.info("fault {name} added: {fault}", name=name, fault=fault)
        return name

    def remove(self, name: str) -> None:
        if self._faults.pop(name, None) is None:
            raise RenkeiError(errors.UNKNOWN_FAULT, name=name)
        _log.info("fault {name} removed", name=name)

    def replace(self, faults: Mapping[str, Fault]) -> None:
        """Put exactly ``faults`` in force, by name (as the control API names them): a fault
        already in force under its name keeps its count of hits."""
        kept = {
            name: self._faults[name]
            if name in self._faults and self._faults[name].fault == fault
            else _Entry(fault)
            for name, fault in faults.items()
        }
        for name in kept.keys() - self._faults.keys():
            _log.info("fault {name} added: {fault}", name=name, fault=faults[name])
        for name in self._faults.keys() - kept.keys():
            _log.info("fault {name} removed", name=name)
        self._faults = kept

    def clear(self) -> None:
        """Remove every fault (the hits stay in ``hits``)."""
        self._faults.clear()
        _log.info("every fault removed")

    def faults(self) -> dict[str, tuple[Fault, int]]:
        """The faults in force, by name, with how many messages each has hit."""
        return {name: (entry.fault, entry.hits) for name, entry in self._faults.items()}

    def draw(
        self, source: str, destination: str, operation: str, document: bytes | None
    ) -> list[Fault]:
        """The faults that hit this message (each drawn with its probability), recorded."""
        fired = []
        for name, entry in list(self._faults.items()):
            fault = entry.fault
            if fault.kind == "skew" or not fault.matches(source, destination, operation):
                continue
            if fault.limit is not None and entry.hits >= fault.limit:
                continue
            if self._random.random() >= fault.probability:
                continue
            entry.hits += 1
            fired.append(fault)
            hit = Hit(
                name,
                fault.kind,
                source,
                destination,
                operation,
                message_id_of(document),
                self._now(),
                transaction_number_of(document),
                names_of(operation, document),
            )
            self.hits.append(hit)
            _log.info(
                "fault {name} ({kind}) hit {operation} {message_id} from {source} to {destination}",
                name=name,
                kind=fault.kind,
                operation=operation,
                message_id=hit.message_id or "-",
                source=source,
                destination=destination,
            )
        return fired

    def hits_of(self, transaction_number: str, message_ids: Collection[str] = ()) -> list[Hit]:
        """The hits on the messages of one transaction: those naming its 処理通番, and those
        with one of ``message_ids`` (a query, sent before the hub gave it its number), alone
        or among the lines of a bundle."""
        return [
            hit
            for hit in self.hits
            if hit.transaction_number == transaction_number
            or hit.message_id in message_ids
            or transaction_number in hit.named
            or any(name in message_ids for name in hit.named)
        ]

    def corrupted(self, document: bytes) -> bytes:
        """``document`` with `FLIPPED` of its bytes flipped, at random places."""
        damaged = bytearray(document)
        for _ in range(FLIPPED):
            damaged[self._random.randrange(len(damaged))] ^= 0xFF
        return bytes(damaged)

    def skew_of(self, party: str) -> float:
        """How many seconds ``party``'s clock runs ahead of the network's (the skew faults)."""
        return sum(
            entry.fault.offset
            for entry in self._faults.values()
            if entry.fault.kind == "skew" and entry.fault.source in (None, party)
        )

    def held(self, fault: Fault) -> float:
        """How long a ``reorder`` fault holds one message: at random, up to its window."""
        return self._random.uniform(0.0, fault.latency or REORDER_WINDOW)

    def jittered(self, fault: Fault) -> float:
        return max(0.0, fault.latency + self._random.uniform(-fault.jitter, fault.jitter))

    def _now(self) -> datetime:
        if self.clock is None:
            from twisted.internet import reactor

            return utc_now(reactor)
        return utc_now(self.clock)


class SkewedClock:
    """A party's clock: the network's, plus the skew the plan gives that party. Timers are
    the network clock's (a delay is the same in every frame)."""

    def __init__(self, network: Any, plan: FaultPlan, party: str) -> None:
        self._network = network
        self._plan = plan
        self._party = party

    def seconds(self) -> float:
        return float(self._network.seconds()) + self._plan.skew_of(self._party)

    def callLater(self, delay: float, call: Any, /, *args: Any, **kwargs: Any) -> Any:
        return self._network.callLater(delay, call, *args, **kwargs)


class FaultyTransport:
    """One party's `Transport` with a plan's faults applied to what it sends."""

    def __init__(self, inner: Transport, source: str, plan: FaultPlan, reactor: Any) -> None:
        self._inner = inner
        self._source = source
        self._plan = plan
        self._reactor = reactor

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        fired = self._plan.draw(self._source, destination, operation, document)
        if not fired:
            return self._inner.exchange(destination, operation, document, argument, digest=digest)
        return Deferred.fromCoroutine(
            self._faulty(fired, destination, operation, document, argument)
        )

    async def _faulty(
        self,
        fired: list[Fault],
        destination: str,
        operation: str,
        document: bytes | None,
        argument: str | None,
    ) -> bytes:
        kinds = {fault.kind: fault for fault in fired}
        link = f"{self._source} → {destination} ({operation})"
        if "down" in kinds:
            raise TransientFailure(f"{destination} refuses connections (fault down)")
        for kind in ("drop", "timeout"):
            if kind in kinds:
                fault = kinds[kind]
                wait = fault.latency or (DEFAULT_TIMEOUT if kind == "timeout" else 0.0)
                await self._sleep(wait)
                raise TransientFailure(f"{link}: no answer (fault {kind})")
        if "latency" in kinds:
            await self._sleep(self._plan.jittered(kinds["latency"]))
        if "reorder" in kinds:
            await self._sleep(self._plan.held(kinds["reorder"]))
        digest = None
        if "corrupt" in kinds and document:
            digest = content_digest(document)  # what was sent; what arrives differs
            document = self._plan.corrupted(document)
        answer = await self._inner.exchange(
            destination, operation, document, argument, digest=digest
        )
        if "duplicate" in kinds:
            again = maybeDeferred(
                self._inner.exchange, destination, operation, document, argument, digest=digest
            )
            again.addErrback(lambda _: None)  # the copy's answer is nobody's
        if "reset_peer" in kinds:
            raise TransientFailure(f"{link}: connection reset before the answer (fault reset_peer)")
        return answer

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await deferLater(self._reactor, seconds, lambda: None)

    def close(self) -> Deferred[None]:
        return self._inner.close()


def transaction_number_of(document: bytes | None) -> str | None:
    """The 処理通番 a message document names (its ``transactionNumber``), if any."""
    if document is None:
        return None
    found = _TRANSACTION_NUMBER.search(document[:1024])
    return found.group(1).decode("ascii") if found else None


def names_of(operation: str, document: bytes | None) -> tuple[str, ...]:
    """Every 処理通番 and line message id a bundle (`BUNDLES`) or its answer names; nothing
    for any other message."""
    if operation not in BUNDLES or document is None:
        return ()
    return tuple(
        (number or message_id).decode("ascii", "replace")
        for number, message_id in _NAMED.findall(document)
    )


def message_id_of(document: bytes | None) -> str | None:
    """The ``messageId`` of a message document, if it has one."""
    if document is None:
        return None
    found = _MESSAGE_ID.search(document[:512])
    return found.group(1).decode("ascii", "replace") if found else None
