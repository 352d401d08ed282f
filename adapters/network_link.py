"""The network link: XML over HTTPS with mutual TLS between the hub and intermediate servers.

Outbound, a pooled treq client keeps connections alive and answers with the decoded message
or a classified failure (a coded refusal is final, anything else is retried by the outbox).
Inbound, Klein apps use ``xml_response`` and ``render_refusal`` so that every refusal travels
as the same ``Error`` message with its stable code and HTTP status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar, cast
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
# Seconds a connection whose body was refused stays open for the answer to reach the peer.
REFUSAL_GRACE = 1.0


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
            raise DeliveryRefused(refusal.code, refusal.message_en, refusal.transaction_number)
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


# How a listener words a refusal it makes itself, before any route runs: a content type and
# a body (the network's Error message, the back office's JSON, plain text for people).
RefusalRenderer = Callable[[RenkeiError], tuple[bytes, bytes]]


def xml_refusal(error: RenkeiError) -> tuple[bytes, bytes]:
    """A refusal as the network's ``Error`` message."""
    return XML, messages.encode(messages.error_message(error))


def text_refusal(error: RenkeiError) -> tuple[bytes, bytes]:
    """A refusal as plain text: the code and both messages."""
    text = f"{error.code}: {error.message_en}\n{error.message_ja}\n"
    return b"text/plain; charset=utf-8", text.encode()


class BoundedRequest(Request):
    """A request whose body may not exceed its site's ``max_body``, checked while it arrives.

    Twisted would otherwise receive a whole body (into a temporary file) before any route
    sees it. A declared ``Content-Length`` over the limit is refused as soon as the headers
    end, a chunked body as soon as it passes the limit: the listener answers 413 with the
    ``BodyTooLarge`` code itself, drops what has arrived and closes the connection, and no
    route runs.
    """

    _refused = False
    _received = 0

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return site.max_body if isinstance(site, ListeningSite) else MAX_MESSAGE_BYTES

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()
        self.content = cast(Any, BytesIO())
        site = getattr(self.channel, "site", None)
        render = site.render_refusal if isinstance(site, ListeningSite) else text_refusal
        content_type, body = render(RenkeiError(errors.BODY_TOO_LARGE, limit=self._limit()))
        channel = self.channel
        transport: Any = channel.transport
        if transport is None:
            return
        # Stop reading what the peer goes on sending, answer, and close. A TLS close waits
        # for the peer's close_notify, which a peer busy sending never sends: abort after a
        # short grace period in which the answer can reach it.
        transport.pauseProducing()
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Connection: close\r\n"
            b"Content-Type: " + content_type + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        channel.loseConnection()
        channel.callLater(REFUSAL_GRACE, transport.abortConnection)


class ListeningSite(Site):
    """A Site that caps request bodies and whose open connections can be dropped.

    ``max_body`` is the largest body any of its routes accepts (routes may accept less);
    a larger one is refused while it is being read (`BoundedRequest`), worded by
    ``render_refusal``. Stopping a listening port leaves kept-alive connections open; a peer
    would go on sending requests to a stopped service through them, hence
    ``drop_connections``. The per-request access log is off: it costs a few per cent of CPU
    on the hot path, and every party records what matters itself.
    """

    requestFactory = BoundedRequest

    def __init__(
        self,
        resource: Any,
        max_body: int = MAX_MESSAGE_BYTES,
        render_refusal: RefusalRenderer = text_refusal,
    ) -> None:
        super().__init__(resource)
        self.max_body = max_body
        self.render_refusal = render_refusal
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
        for protocol in list(self._channels):
            # Site.buildProtocol gives a wrapper (_GenericHTTPChannelProtocol, which picks
            # HTTP/1.1 or HTTP/2) without a transport of its own: the channel inside has it.
            channel = getattr(protocol, "_channel", protocol)
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
def listen(
    reactor: Any,
    description: str,
    app: Klein,
    options: Any,
    *,
    max_body: int = MAX_MESSAGE_BYTES,
    render_refusal: RefusalRenderer = xml_refusal,
) -> Any:
    """Serve a Klein app on ``description`` with mutual TLS ``options`` (a Deferred Listener);
    request bodies over ``max_body`` are refused while they arrive (`BoundedRequest`)."""
    site = ListeningSite(app.resource(), max_body, render_refusal)
    port = yield listen_mutual_tls(reactor, description, options, site)
    return Listener(port, site)
