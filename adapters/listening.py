"""Listening endpoints: every listener of a party (network, back office, console, metrics).

A `Listener` is the service of one endpoint: it serves a resource on an endpoint description
(``tcp:port=...``), behind mutual TLS when given TLS options, through a `ListeningSite` that
caps request bodies while they arrive (`BoundedRequest`) and drops its open connections when
it stops. What it serves, and how a refusal it makes itself is worded (``render_refusal``),
is up to the adapter that builds it.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from typing import Any, cast
from weakref import WeakSet

from twisted.application.service import Service
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    serverFromString,
    wrapServerTLS,
)
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from codes import errors
from codes.errors import RenkeiError
from crypto.tls import listen_mutual_tls
from middleware.deferred import deferred
from middleware.network import MAX_MESSAGE_BYTES

__all__ = [
    "BoundedRequest",
    "Listener",
    "ListeningSite",
    "RefusalRenderer",
    "parse_content_type",
    "text_refusal",
]

# Seconds a connection whose body was refused stays open for the answer to reach the peer.
REFUSAL_GRACE = 1.0

# How a listener words a refusal it makes itself, before any route runs: a content type and
# a body (the network's Error message, the back office's JSON, plain text for people).
RefusalRenderer = Callable[[RenkeiError], tuple[bytes, bytes]]


# twisted.web parses the Content-Type of every POST with the email package, only to find form
# bodies: about 5 % of a flow's CPU in the box (docs/performance.md). The parse maps the
# header's bytes to the media type's bytes, so a small cache of its answers changes nothing
# but the time; a long header goes to the parser as before. Installed once, process-wide,
# for every twisted.web server here.
_PARSE_CONTENT_TYPE: Callable[[bytes], bytes] | None = getattr(http, "_parseContentType", None)
_CACHED_CONTENT_TYPE_BYTES = 128


@functools.lru_cache(maxsize=32)
def _cached_content_type(line: bytes) -> bytes:
    assert _PARSE_CONTENT_TYPE is not None
    return _PARSE_CONTENT_TYPE(line)


def parse_content_type(line: bytes) -> bytes:
    """The media type of a Content-Type header, as twisted.web parses it (cached)."""
    assert _PARSE_CONTENT_TYPE is not None
    if len(line) > _CACHED_CONTENT_TYPE_BYTES:
        return _PARSE_CONTENT_TYPE(line)
    return _cached_content_type(line)


if _PARSE_CONTENT_TYPE is not None:
    http._parseContentType = parse_content_type


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
    _cap: int | None = None  # the limit of this request's path, once its headers are in
    _abort: Any = None  # the abort of a refused connection, once its grace period ends

    def _limit(self) -> int:
        if self._cap is None:
            site = getattr(self.channel, "site", None)
            if isinstance(site, ListeningSite):
                # The request line's target, which twisted.web keeps on the channel until
                # the body has arrived.
                target: bytes = getattr(self.channel, "_path", b"")
                self._cap = site.body_limit(target.split(b"?", 1)[0])
            else:
                self._cap = MAX_MESSAGE_BYTES
        return self._cap

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

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            # No server banner (which software and version answers is nobody's business),
            # and the headers the site adds to every answer.
            self.responseHeaders.removeHeader(b"server")
            site = getattr(self.channel, "site", None)
            for name, value in site.headers if isinstance(site, ListeningSite) else ():
                if not self.responseHeaders.hasHeader(name):
                    self.responseHeaders.setRawHeaders(name, [value])
        super().write(data)

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
        self._abort = channel.callLater(REFUSAL_GRACE, transport.abortConnection)

    def connectionLost(self, reason: Any) -> None:
        # Closed within the grace period (the peer read the answer and closed): nothing is
        # left to abort, and a TLS connection aborted after its end fails.
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        super().connectionLost(reason)


class ListeningSite(Site):
    """A Site that caps request bodies and whose open connections can be dropped.

    ``max_body`` is the largest body its routes accept (routes may accept less), except the
    paths of ``larger_bodies``, each with its own limit; a larger one is refused while it is
    being read (`BoundedRequest`), worded by ``render_refusal``. Stopping a listening port
    leaves kept-alive connections open; a peer would go on sending requests to a stopped
    service through them, hence ``drop_connections``. The per-request access log is off: it
    costs a few per cent of CPU on the hot path, and every party records what matters itself.
    ``headers`` are added to every answer (the console's HSTS and Referrer-Policy); none
    carries a ``Server`` banner.
    """

    requestFactory = BoundedRequest

    def __init__(
        self,
        resource: Any,
        max_body: int = MAX_MESSAGE_BYTES,
        render_refusal: RefusalRenderer = text_refusal,
        headers: Sequence[tuple[bytes, bytes]] = (),
        larger_bodies: Mapping[bytes, int] | None = None,
    ) -> None:
        super().__init__(resource)
        self.max_body = max_body
        self.larger_bodies = dict(larger_bodies or {})
        self.headers = tuple(headers)
        self.render_refusal = render_refusal
        self.displayTracebacks = False
        self.noisy = False
        self._channels: WeakSet[Any] = WeakSet()

    def body_limit(self, path: bytes) -> int:
        """The largest body a request to ``path`` may carry."""
        return self.larger_bodies.get(path, self.max_body)

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
            if transport is None or getattr(transport, "disconnected", False):
                continue
            # A TLS connection that has just finished shutting down by itself has no TLS
            # connection left to abort.
            with contextlib.suppress(AttributeError):
                transport.abortConnection()


class Listener(Service):
    """The service of one listening endpoint.

    ``resource`` is served on ``description``; with ``options`` (pyOpenSSL
    ``CertificateOptions`` that require a client certificate) behind mutual TLS, without them
    in plain TCP (the metrics listener, on loopback). Starting fires once the port listens
    (a taken port fails the start); stopping stops accepting and drops the connections that
    are open, kept-alive ones included. ``shared``: the port is bound with ``SO_REUSEPORT``,
    so that the several processes of one institution (``processes``) listen on it together,
    the kernel spreading the connections among them. ``headers`` go with every answer;
    ``larger_bodies`` lets named paths take bodies above ``max_body`` (`ListeningSite`).
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        resource: Resource,
        options: Any = None,
        *,
        max_body: int = MAX_MESSAGE_BYTES,
        render_refusal: RefusalRenderer = text_refusal,
        shared: bool = False,
        headers: Sequence[tuple[bytes, bytes]] = (),
        larger_bodies: Mapping[bytes, int] | None = None,
    ) -> None:
        self._reactor = reactor
        self.description = description
        self.shared = shared
        self.site = ListeningSite(resource, max_body, render_refusal, headers, larger_bodies)
        self._options = options
        self._port: Any = None

    @property
    def port(self) -> int:
        """The port it listens on (while it is running)."""
        assert self._port is not None, "the listener is not running"
        return int(self._port.getHost().port)

    @deferred
    async def startService(self) -> None:
        if self.shared:
            self._port = await self._listen_shared()
        elif self._options is None:
            self._port = await serverFromString(self._reactor, self.description).listen(self.site)
        else:
            self._port = await listen_mutual_tls(
                self._reactor, self.description, self._options, self.site
            )
        super().startService()

    async def _listen_shared(self) -> Any:
        """Listen on a TCP port bound with SO_REUSEPORT (``tcp:port=N:interface=ADDRESS``)."""
        parts = dict(part.split("=", 1) for part in self.description.split(":")[1:] if "=" in part)
        interface = parts.get("interface", "0.0.0.0")
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        bound = socket.socket(family, socket.SOCK_STREAM)
        try:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bound.bind((interface, int(parts["port"])))
            bound.listen(128)
            bound.setblocking(False)
            endpoint: Any = AdoptedStreamServerEndpoint(self._reactor, bound.fileno(), family)
            if self._options is not None:
                endpoint = wrapServerTLS(self._options, endpoint)
            port = await endpoint.listen(self.site)
        except BaseException:
            bound.close()
            raise
        bound.detach()  # the endpoint closed it once the reactor listened on a duplicate
        return port

    @deferred
    async def stopService(self) -> None:
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            stopped = port.stopListening()
            self.site.drop_connections()
            if stopped is not None:  # IListeningPort.stopListening: a Deferred or None
                await stopped
