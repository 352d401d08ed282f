"""The in-memory network: parties wired in one process without sockets, with their real code.

As ``treq.testing`` ships fakes with real behaviour, this ships the network's links without
TLS sockets: each party's `middleware.network.Transport` hands the XML document it sends
straight to the destination's `NetworkEndpoint`, with the sender's name as the caller (what
the peer certificate says on a real link) and the same limits and answers as the mutual-TLS
link (a body over 1 MiB is ``BodyTooLarge``; a coded 4xx refusal is a final
`DeliveryRefused`, a 5xx or any other failure a `TransientFailure`). Messages are real XML,
parsed and validated on receipt; signatures, CMS envelopes and databases are the parties' own.

Every delivery goes through the reactor (``callLater(0)``), so a party never runs inside
another's call stack, as over a network. A party can be taken off the network
(`InMemoryNetwork.disconnect`): whoever sends to it then gets a `TransientFailure`, as from a
closed port, and the outbox retries.

    network = InMemoryNetwork(reactor)
    hub = Hub(config, reactor, network.transport("hub"), clock)
    network.connect("hub", hub)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from codes import errors
from codes.errors import RenkeiError
from middleware.network import (
    MAX_MESSAGE_BYTES,
    DeliveryRefused,
    NetworkEndpoint,
    TransientFailure,
    check_content_digest,
    refusal_of,
)

__all__ = ["InMemoryNetwork", "InMemoryTransport"]

_log = Logger(namespace=__name__)


class InMemoryNetwork:
    """The links between parties of one process: who is reachable under which name."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._endpoints: dict[str, NetworkEndpoint] = {}

    def connect(self, name: str, endpoint: NetworkEndpoint) -> None:
        """Make ``endpoint`` reachable as ``name`` (``hub`` or an institution code)."""
        self._endpoints[name] = endpoint

    def disconnect(self, name: str) -> None:
        """Take ``name`` off the network: sends to it fail as to a closed port."""
        self._endpoints.pop(name, None)

    def transport(self, sender: str) -> InMemoryTransport:
        """The transport of the party ``sender``: its messages arrive with that caller."""
        return InMemoryTransport(self, sender)

    def deliver(
        self,
        sender: str,
        destination: str,
        operation: str,
        document: bytes | None,
        argument: str | None,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        """One exchange, on the next turn of the reactor; ``document`` is checked against
        ``digest`` (the sender's) on arrival, as a listener checks its Content-Digest."""
        arrived: Deferred[None] = Deferred()
        self._reactor.callLater(0, arrived.callback, None)
        answered: Deferred[bytes] = arrived.addCallback(
            lambda _: self._dispatch(sender, destination, operation, document, argument, digest)
        )
        answered.addErrback(_as_sender_sees_it)
        return answered

    def _dispatch(
        self,
        sender: str,
        destination: str,
        operation: str,
        document: bytes | None,
        argument: str | None,
        digest: str | None,
    ) -> Deferred[bytes]:
        endpoint = self._endpoints.get(destination)
        if endpoint is None:
            raise TransientFailure(f"{destination} is not reachable")
        if document is not None and len(document) > MAX_MESSAGE_BYTES:
            raise RenkeiError(errors.BODY_TOO_LARGE, limit=MAX_MESSAGE_BYTES)
        if document is not None:
            check_content_digest(document, digest)
        answered: Deferred[bytes] = maybeDeferred(
            endpoint.dispatch, sender, operation, document, argument
        )
        return answered


def _as_sender_sees_it(failure: Failure) -> Failure:
    """A receiver's failure as the sender learns it over a link: its coded refusal, or, for
    anything else (logged, as a listener logs an internal error), a transient failure."""
    error = failure.value
    if isinstance(error, DeliveryRefused | TransientFailure):
        return failure
    if isinstance(error, RenkeiError):
        return Failure(refusal_of(error))
    _log.failure("internal error while handling an in-memory delivery", failure)
    return Failure(TransientFailure(f"the receiver failed: {error!r}"))


class InMemoryTransport:
    """One party's `Transport` on an `InMemoryNetwork`."""

    def __init__(self, network: InMemoryNetwork, sender: str) -> None:
        self._network = network
        self._sender = sender

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        return self._network.deliver(
            self._sender, destination, operation, document, argument, digest
        )

    def close(self) -> Deferred[None]:
        return succeed(None)
