"""The network link: the parties' messages as XML over HTTPS with mutual TLS.

`HttpsTransport` is the `middleware.network.Transport` of a party: each operation is one HTTP
request to the destination's address (``ROUTES``), over a pooled treq client that keeps
connections alive; a coded refusal (4xx with an ``Error`` message) is a final
`DeliveryRefused`, anything else a `TransientFailure` the outbox retries. `NetworkListener`
serves a party's `NetworkEndpoint`: it maps each route to its operation, takes the caller's
identity from the TLS peer certificate (never from the message), caps the body and renders
every refusal as the same ``Error`` message with its stable code and HTTP status. Nothing of
HTTP reaches the party (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit
from weakref import WeakSet

from klein import Klein
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site

from codes import errors
from codes.errors import RenkeiError
from crypto.pki import PkiLayout, load_certificate, server_name_of_hub, server_name_of_institution
from crypto.tls import (
    ClientTLSPolicy,
    listen_mutual_tls,
    make_http_client,
    peer_identity,
    server_options,
)
from middleware import messages
from middleware.config import Config, InstitutionConfig
from middleware.network import (
    FUGO,
    HUB,
    PERMITTED_LIST,
    PROVISION,
    PROVISION_REQUEST,
    QUERY,
    RECORDS,
    DeliveryRefused,
    NetworkEndpoint,
    TransientFailure,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ROUTES",
    "HttpsTransport",
    "Listener",
    "ListeningSite",
    "NetworkClient",
    "NetworkListener",
    "TransientFailure",
    "host_and_port",
    "hub_listener",
    "hub_transport",
    "institution_listener",
    "institution_transport",
    "listen",
    "text_refusal",
    "xml_refusal",
]

T = TypeVar("T")

XML = b"application/xml; charset=utf-8"
MAX_MESSAGE_BYTES = 1_048_576
# Seconds to wait for a peer's answer before the outbox treats the attempt as failed.
REQUEST_TIMEOUT = 30.0
# Seconds a connection whose body was refused stays open for the answer to reach the peer.
REFUSAL_GRACE = 1.0

# Each operation's HTTP request: its method and path (``{}`` takes the operation's argument).
ROUTES: dict[str, tuple[str, str]] = {
    FUGO: ("POST", "/fugo"),
    PERMITTED_LIST: ("GET", "/permitted-list"),
    QUERY: ("POST", "/queries"),
    RECORDS: ("GET", "/records/{}"),
    PROVISION_REQUEST: ("POST", "/provision-requests"),
    PROVISION: ("POST", "/provisions"),
}


def host_and_port(address: str) -> tuple[str, int]:
    """The host and port of an ``https://host:port`` address."""
    parts = urlsplit(address)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"{address!r} is not an https:// address")
    return parts.hostname, parts.port or 443


class NetworkClient:
    """Sends requests to known peers over mutual TLS and classifies their answers."""

    log = Logger()

    def __init__(self, reactor: Any, policy: ClientTLSPolicy, max_per_host: int = 16) -> None:
        self._http = make_http_client(reactor, policy, max_per_host=max_per_host)

    def close(self) -> Any:
        """Close kept-alive connections (a Deferred)."""
        return self._http.close()

    @inlineCallbacks
    def request(self, method: str, url: str, body: bytes | None) -> Any:
        """The answer document of one request (bytes), or DeliveryRefused for a coded
        refusal (4xx with an Error message) and TransientFailure for anything that may
        succeed later (no connection, a timeout, 5xx, a 4xx without an Error)."""
        try:
            response = yield self._http.request(
                method,
                url,
                data=body,
                headers=Headers({b"Content-Type": [XML]}) if body is not None else None,
                timeout=REQUEST_TIMEOUT,
            )
            content = yield response.content()
        except Exception as failure:
            raise TransientFailure(repr(failure)) from failure
        status = response.code
        if 200 <= status < 300:
            return content
        if 400 <= status < 500:
            try:
                refusal = messages.decode(content, messages.ErrorMessage)
            except RenkeiError:
                raise TransientFailure(f"HTTP {status} without an Error message") from None
            raise DeliveryRefused(refusal.code, refusal.message_en, refusal.transaction_number)
        raise TransientFailure(f"HTTP {status} from {url}")

    @inlineCallbacks
    def post(self, url: str, body: bytes, expected: type[T]) -> Any:
        """POST ``body`` and return the decoded ``expected`` answer (refusals as `request`)."""
        content = yield self.request("POST", url, body)
        return _decoded(content, expected)

    @inlineCallbacks
    def get_message(self, url: str, expected: type[T]) -> Any:
        """GET and decode the ``expected`` answer; refusals as for `request`."""
        content = yield self.request("GET", url, None)
        return _decoded(content, expected)

    def get(self, url: str) -> Deferred[bytes]:
        """GET a document (bytes); refusals as for `request`."""
        return cast("Deferred[bytes]", self.request("GET", url, None))


def _decoded(content: bytes, expected: Any) -> Any:
    try:
        return messages.decode(content, expected)
    except RenkeiError as failure:
        raise TransientFailure(f"unreadable answer: {failure}") from failure


class HttpsTransport:
    """The `Transport` of one party over mutual-TLS HTTPS: ``addresses`` maps each
    destination (``hub`` or an institution code) to its ``https://host:port``."""

    def __init__(self, client: NetworkClient, addresses: Mapping[str, str]) -> None:
        self._client = client
        self._addresses = dict(addresses)

    def exchange(
        self,
        destination: str,
        operation: str,
        document: bytes | None = None,
        argument: str | None = None,
    ) -> Deferred[bytes]:
        method, path = ROUTES[operation]
        address = self._addresses.get(destination)
        if address is None:
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=destination)
        url = address + (path.format(argument) if "{}" in path else path)
        return cast("Deferred[bytes]", self._client.request(method, url, document))

    def close(self) -> Deferred[None]:
        return cast("Deferred[None]", self._client.close())


def _client_policy(layout: PkiLayout, credentials: Any) -> ClientTLSPolicy:
    return ClientTLSPolicy([load_certificate(layout.ca().certificate)], credentials)


def hub_transport(reactor: Any, config: Config) -> HttpsTransport:
    """The hub's transport: to every configured institution, its TLS certificate shown."""
    layout = PkiLayout(config.pki)
    policy = _client_policy(layout, layout.hub_tls().load())
    addresses = {}
    for member in config.institutions:
        host, port = host_and_port(member.network_address)
        policy.expect(host, port, server_name_of_institution(member.code))
        addresses[member.code] = member.network_address
    return HttpsTransport(NetworkClient(reactor, policy), addresses)


def institution_transport(
    reactor: Any, config: Config, institution: InstitutionConfig
) -> HttpsTransport:
    """An intermediate server's transport: to the hub, its institution's TLS certificate shown."""
    layout = PkiLayout(config.pki)
    policy = _client_policy(layout, layout.institution_tls(institution.code).load())
    host, port = host_and_port(config.hub_address)
    policy.expect(host, port, server_name_of_hub())
    return HttpsTransport(NetworkClient(reactor, policy), {HUB: config.hub_address})


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


def _read_body(request: Request) -> bytes:
    content = request.content
    assert content is not None
    body: bytes = content.read(MAX_MESSAGE_BYTES + 1)
    if len(body) > MAX_MESSAGE_BYTES:
        raise RenkeiError(
            errors.XML_TOO_LARGE, size=f"more than {len(body) - 1}", limit=MAX_MESSAGE_BYTES
        )
    return body


def _network_caller(request: Request) -> str:
    """The caller's name from its TLS certificate: a network party's (OU ``tls``) only."""
    identity = peer_identity(request)
    if identity.organizational_unit != "tls":
        raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=identity.common_name)
    return identity.common_name


class NetworkApi:
    """The network's HTTP routes in front of one party's `NetworkEndpoint`."""

    app = Klein()

    def __init__(self, endpoint: NetworkEndpoint) -> None:
        self._endpoint = endpoint

    @inlineCallbacks
    def _dispatch(self, request: Request, operation: str, argument: str | None = None) -> Any:
        caller = _network_caller(request)
        document = _read_body(request) if ROUTES[operation][0] == "POST" else None
        answer = yield self._endpoint.dispatch(caller, operation, document, argument)
        request.setHeader(b"Content-Type", XML)
        return answer

    @app.handle_errors(Exception)
    def _refusal(self, request: Request, failure: Failure) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if isinstance(failure.value, NotFound | MethodNotAllowed):
            failure = Failure(RenkeiError(errors.PAGE_NOT_FOUND))
        return render_refusal(request, failure)

    @app.route("/fugo", methods=["POST"])
    def fugo(self, request: Request) -> Any:
        return self._dispatch(request, FUGO)

    @app.route("/permitted-list", methods=["GET"])
    def permitted_list(self, request: Request) -> Any:
        return self._dispatch(request, PERMITTED_LIST)

    @app.route("/queries", methods=["POST"])
    def queries(self, request: Request) -> Any:
        return self._dispatch(request, QUERY)

    @app.route("/records/<number>", methods=["GET"])
    def records(self, request: Request, number: str) -> Any:
        return self._dispatch(request, RECORDS, number)

    @app.route("/provision-requests", methods=["POST"])
    def provision_requests(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION_REQUEST)

    @app.route("/provisions", methods=["POST"])
    def provisions(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION)


class NetworkListener(Service):
    """Listens for the network on ``description`` (mutual TLS ``options``) for one party."""

    def __init__(
        self, reactor: Any, endpoint: NetworkEndpoint, description: str, options: Any
    ) -> None:
        self._reactor = reactor
        self._api = NetworkApi(endpoint)
        self._description = description
        self._options = options
        self._listener: Listener | None = None

    @inlineCallbacks
    def startService(self) -> Any:
        super().startService()
        self._listener = yield listen(
            self._reactor, self._description, self._api.app, self._options
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._listener is not None:
            yield self._listener.stop()
            self._listener = None


def hub_listener(reactor: Any, config: Config, endpoint: NetworkEndpoint) -> NetworkListener:
    """The hub's listener: its TLS certificate, clients from the network CA."""
    assert config.network is not None
    layout = PkiLayout(config.pki)
    ca = load_certificate(layout.ca().certificate)
    options = server_options(layout.hub_tls().load(), [ca])
    return NetworkListener(reactor, endpoint, config.network.listen, options)


def institution_listener(
    reactor: Any, config: Config, institution: InstitutionConfig, endpoint: NetworkEndpoint
) -> NetworkListener:
    """An intermediate server's network listener: its TLS certificate, the network CA."""
    layout = PkiLayout(config.pki)
    ca = load_certificate(layout.ca().certificate)
    options = server_options(layout.institution_tls(institution.code).load(), [ca])
    return NetworkListener(reactor, endpoint, institution.network_listen, options)


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
