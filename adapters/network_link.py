"""The network link: XML over HTTPS with mutual TLS between the hub and intermediate servers.

Outbound, a pooled treq client keeps connections alive and answers with the decoded message
or a classified failure (a coded refusal is final, anything else is retried by the outbox).
Inbound, Klein apps use ``xml_response`` and ``render_refusal`` so that every refusal travels
as the same ``Error`` message with its stable code and HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakSet

from klein import Klein
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site

from codes import errors
from codes.errors import RenkeiError
from crypto.tls import ClientTLSPolicy, listen_mutual_tls, make_http_client, peer_identity
from middleware import messages
from middleware.outbox import DeliveryRefused

T = TypeVar("T")

XML = b"application/xml; charset=utf-8"
MAX_MESSAGE_BYTES = 1_048_576
# Seconds to wait for a peer's answer before the outbox treats the attempt as failed.
REQUEST_TIMEOUT = 30.0


class TransientFailure(Exception):
    """The peer could not answer now (network error, 5xx, unreadable answer): retry later."""


def host_and_port(address: str) -> tuple[str, int]:
    """The host and port of an ``https://host:port`` address."""
    parts = urlsplit(address)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"{address!r} is not an https:// address")
    return parts.hostname, parts.port or 443


class NetworkClient:
    """Posts messages to known peers over mutual TLS and decodes their answers."""

    log = Logger()

    def __init__(self, reactor: Any, policy: ClientTLSPolicy, max_per_host: int = 16) -> None:
        self._http = make_http_client(reactor, policy, max_per_host=max_per_host)

    def close(self) -> Any:
        """Close kept-alive connections (a Deferred)."""
        return self._http.close()

    @inlineCallbacks
    def post(self, url: str, body: bytes, expected: type[T]) -> Any:
        """POST ``body`` and return the decoded ``expected`` answer.

        Fails with DeliveryRefused for a coded refusal (4xx with an Error message) and with
        TransientFailure for anything that may succeed later.
        """
        try:
            response = yield self._http.post(
                url,
                data=body,
                headers=Headers({b"Content-Type": [XML]}),
                timeout=REQUEST_TIMEOUT,
            )
            content = yield response.content()
        except Exception as failure:
            raise TransientFailure(repr(failure)) from failure
        return self._answer(response.code, content, expected)

    @inlineCallbacks
    def get_message(self, url: str, expected: type[T]) -> Any:
        """GET and decode the ``expected`` answer; refusals as for ``post``."""
        try:
            response = yield self._http.get(url, timeout=REQUEST_TIMEOUT)
            content = yield response.content()
        except Exception as failure:
            raise TransientFailure(repr(failure)) from failure
        return self._answer(response.code, content, expected)

    @inlineCallbacks
    def get(self, url: str) -> Any:
        """GET a document (bytes); any failure is transient."""
        try:
            response = yield self._http.get(url, timeout=REQUEST_TIMEOUT)
            content = yield response.content()
        except Exception as failure:
            raise TransientFailure(repr(failure)) from failure
        if response.code != 200:
            raise TransientFailure(f"HTTP {response.code} from {url}")
        return content

    @staticmethod
    def _answer(status: int, content: bytes, expected: Any) -> Any:
        if 200 <= status < 300:
            try:
                return messages.decode(content, expected)
            except RenkeiError as failure:
                raise TransientFailure(f"unreadable answer: {failure}") from failure
        if 400 <= status < 500:
            try:
                refusal = messages.decode(content, messages.ErrorMessage)
            except RenkeiError:
                raise TransientFailure(f"HTTP {status} without an Error message") from None
            raise DeliveryRefused(refusal.code, refusal.message_en)
        raise TransientFailure(f"HTTP {status}")


def xml_response(request: Request, message: Any, status: int = 200) -> bytes:
    """Encode ``message`` as the response body."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", XML)
    return messages.encode(message)


def render_refusal(request: Request, failure: Failure) -> bytes:
    """Klein error handler: a RenkeiError becomes an ``Error`` message with its status."""
    error = failure.value
    if not isinstance(error, RenkeiError):
        Logger().failure("internal error while handling a network request", failure)
        error = RenkeiError(errors.INTERNAL)
    return xml_response(request, messages.error_message(error), error.status)


def read_body(request: Request) -> bytes:
    """The request body, refused when larger than a message may be."""
    content = request.content
    assert content is not None
    body: bytes = content.read(MAX_MESSAGE_BYTES + 1)
    if len(body) > MAX_MESSAGE_BYTES:
        raise RenkeiError(
            errors.XML_TOO_LARGE, size=f"more than {len(body) - 1}", limit=MAX_MESSAGE_BYTES
        )
    return body


def caller_code(request: Request, allowed: set[str] | dict[str, Any]) -> str:
    """The institution code of the caller, from its TLS certificate (never from the message)."""
    identity = peer_identity(request)
    if identity.organizational_unit != "tls" or identity.common_name not in allowed:
        raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=identity.common_name)
    return identity.common_name


class ListeningSite(Site):
    """A Site whose open connections can be dropped when its service stops.

    Stopping a listening port leaves kept-alive connections open; a peer would go on sending
    requests to a stopped service through them. The per-request access log is off: it costs
    a few per cent of CPU on the hot path, and every party records what matters itself.
    """

    def __init__(self, resource: Any) -> None:
        super().__init__(resource)
        self.displayTracebacks = False
        self.noisy = False
        self._channels: WeakSet[Any] = WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        self._channels.add(channel)
        return channel

    def log(self, request: http.Request) -> None:
        pass

    def drop_connections(self) -> None:
        for channel in list(self._channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()


@dataclass
class Listener:
    """A listening port and its site."""

    port: Any
    site: ListeningSite

    def stop(self) -> Any:
        """Stop accepting and drop open connections (a Deferred)."""
        stopped = self.port.stopListening()
        self.site.drop_connections()
        return stopped


@inlineCallbacks
def listen(reactor: Any, description: str, app: Klein, options: Any) -> Any:
    """Serve a Klein app on ``description`` with mutual TLS ``options`` (a Deferred Listener)."""
    site = ListeningSite(app.resource())
    port = yield listen_mutual_tls(reactor, description, options, site)
    return Listener(port, site)
