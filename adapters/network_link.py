"""The network link: the parties' messages as XML over HTTPS with mutual TLS.

`HttpsTransport` is the `middleware.network.Transport` of a party: each operation is one HTTP
request to the destination's address (``ROUTES``), sent on the `Agent` of a pooled client
that keeps connections alive (crypto/tls.py); a coded refusal (4xx with an ``Error``
message) is a final `DeliveryRefused`, anything else a `TransientFailure` the outbox
retries. The factories
below wrap it in a `BatchingTransport` (adapters/link_batch.py) that sends several messages
in one request, as the configuration's ``[delivery]`` ``link_batch_*`` say. `NetworkApi`,
served by a party's `network_listener` (an `adapters.listening.Listener`), is the way in to
its `NetworkEndpoint`: it maps each route to its operation, takes the caller's
identity from the TLS peer certificate (never from the message), caps the body and renders
every refusal as the same ``Error`` message with its stable code and HTTP status; its
``POST /batch`` hands a batch's messages to the same endpoint. Nothing of HTTP reaches the
party (docs/architecture.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.url import URL
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from twisted.web.server import Request
from zope.interface import implementer

from adapters.link_batch import BATCH_PATH, BatchingTransport, answer_batch
from adapters.listening import Listener
from codes import errors
from codes.errors import RenkeiError
from crypto.pki import (
    PkiLayout,
    load_certificate,
    server_name_of_hub,
    server_name_of_institution,
    server_name_of_portal,
)
from crypto.tls import (
    ClientTLSPolicy,
    RevocationList,
    make_http_client,
    peer_identity,
    server_options,
)
from middleware import messages
from middleware.config import BatchingConfig, Config, InstitutionConfig
from middleware.deferred import deferred
from middleware.network import (
    FUGO,
    HUB,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    NOTICE,
    NOTICE_READ,
    NOTICE_STATUS,
    PERMITTED_LIST,
    PROVISION,
    PROVISION_BUNDLE,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
    QUERY,
    QUERY_BUNDLE,
    RECORD_DISCLOSURE,
    RECORDS,
    SELF_INFORMATION,
    SELF_INFORMATION_REQUEST,
    NetworkEndpoint,
    TransientFailure,
    Transport,
    answer_of,
    check_content_digest,
    content_digest,
)

__all__ = [
    "ROUTES",
    "HttpsTransport",
    "NetworkApi",
    "NetworkClient",
    "host_and_port",
    "hub_listener",
    "hub_transport",
    "institution_listener",
    "institution_transport",
    "network_listener",
    "portal_listener",
    "portal_transport",
    "xml_refusal",
]

T = TypeVar("T", bound=messages.Message)

XML = b"application/xml; charset=utf-8"
# Seconds to wait for a peer's answer before the outbox treats the attempt as failed.
REQUEST_TIMEOUT = 30.0

# Each operation's HTTP request: its method and path (``{}`` takes the operation's argument).
ROUTES: dict[str, tuple[str, str]] = {
    FUGO: ("POST", "/fugo"),
    PERMITTED_LIST: ("GET", "/permitted-list"),
    QUERY: ("POST", "/queries"),
    QUERY_BUNDLE: ("POST", "/query-bundles"),
    RECORDS: ("GET", "/records/{}"),
    PROVISION_REQUEST: ("POST", "/provision-requests"),
    PROVISION_REQUEST_BUNDLE: ("POST", "/provision-request-bundles"),
    PROVISION: ("POST", "/provisions"),
    PROVISION_BUNDLE: ("POST", "/provision-bundles"),
    SELF_INFORMATION: ("POST", "/self-information"),
    SELF_INFORMATION_REQUEST: ("POST", "/self-information-requests"),
    RECORD_DISCLOSURE: ("POST", "/record-disclosures"),
    NOTICE: ("POST", "/notices"),
    NOTICE_READ: ("POST", "/notice-reads"),
    NOTICE_STATUS: ("POST", "/notice-status"),
}


def host_and_port(address: str) -> tuple[str, int]:
    """The host and port of an ``https://host:port`` address."""
    parts = urlsplit(address)
    if parts.scheme != "https" or parts.hostname is None:
        raise ValueError(f"{address!r} is not an https:// address")
    return parts.hostname, parts.port or 443


@functools.lru_cache(maxsize=1024)
def _request_target(url: str) -> bytes:
    """The bytes of ``url`` as a request names it (hosts and paths made ASCII as treq does),
    computed once per URL: a party sends to a few addresses and paths, again and again."""
    return cast(bytes, URL.from_text(url).to_uri().to_text().encode("ascii"))


@implementer(IBodyProducer)
class _Document:
    """A request body held in memory, written in one piece (no cooperator task)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        return None

    def resumeProducing(self) -> None:
        return None

    def stopProducing(self) -> None:
        return None


class _Collector(Protocol):
    """Gathers a response's body; ``finished`` fires with it (or the failure that ended it),
    a body without a length included, as treq reads one."""

    def __init__(self, finished: Deferred[bytes]) -> None:
        self._parts: list[bytes] = []
        self._finished = finished

    def dataReceived(self, data: bytes) -> None:
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def _body_of(response: IResponse) -> Deferred[bytes]:
    """The whole body of ``response``."""
    finished: Deferred[bytes] = Deferred()
    cast(Any, response).deliverBody(_Collector(finished))
    return finished


class NetworkClient:
    """Sends requests to known peers over mutual TLS and classifies their answers.

    Requests go straight to the pooled `Agent` (not through treq's `request`, whose URL
    parsing and cookie, redirect and content-decoding agents cost about 4 % of a flow's CPU):
    the network's peers set no cookies, never redirect and never compress.
    """

    log = Logger()

    def __init__(self, reactor: Any, policy: ClientTLSPolicy, max_per_host: int = 16) -> None:
        self._reactor = reactor
        self._http = make_http_client(reactor, policy, max_per_host=max_per_host)

    def close(self) -> Any:
        """Close kept-alive connections (a Deferred)."""
        return self._http.close()

    @deferred
    async def request(
        self, method: str, url: str, body: bytes | None, digest: str | None = None
    ) -> bytes:
        """The answer document of one request (bytes), or DeliveryRefused for a coded
        refusal (4xx with an Error message) and TransientFailure for anything that may
        succeed later (no connection, a timeout, 5xx, a 4xx without an Error, a refusal of a
        damaged message). A body goes with its Content-Digest (``digest``, else computed)."""
        headers = None
        if body is not None:
            headers = Headers(
                {
                    b"Content-Type": [XML],
                    b"Content-Digest": [(digest or content_digest(body)).encode("ascii")],
                }
            )
        try:
            response = await self._send(method, url, body, headers)
            content = await _body_of(response)
        except Exception as failure:
            raise TransientFailure(repr(failure)) from failure
        return answer_of(response.code, content, url)

    def _send(
        self, method: str, url: str, body: bytes | None, headers: Headers | None
    ) -> Deferred[IResponse]:
        """The response to one request (its headers; the body follows), cancelled if it has
        not come within `REQUEST_TIMEOUT` seconds."""
        sent: Deferred[IResponse] = self._http.agent.request(
            method.encode("ascii"),
            _request_target(url),
            headers,
            None if body is None else IBodyProducer(_Document(body)),
        )
        timer = self._reactor.callLater(REQUEST_TIMEOUT, sent.cancel)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        sent.addBoth(settled)
        return sent

    @deferred
    async def post(self, url: str, body: bytes, expected: type[T]) -> T:
        """POST ``body`` and return the decoded ``expected`` answer (refusals as `request`)."""
        content = await self.request("POST", url, body)
        return _decoded(content, expected)

    @deferred
    async def get_message(self, url: str, expected: type[T]) -> T:
        """GET and decode the ``expected`` answer; refusals as for `request`."""
        content = await self.request("GET", url, None)
        return _decoded(content, expected)

    def get(self, url: str) -> Deferred[bytes]:
        """GET a document (bytes); refusals as for `request`."""
        return self.request("GET", url, None)


def _decoded(content: bytes, expected: type[T]) -> T:
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
        *,
        digest: str | None = None,
    ) -> Deferred[bytes]:
        method, path = ROUTES[operation]
        address = self._addresses.get(destination)
        if address is None:
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=destination)
        url = address + (path.format(argument) if "{}" in path else path)
        return self._client.request(method, url, document, digest)

    def post_batch(self, destination: str, body: bytes) -> Deferred[bytes]:
        """POST a batch document (adapters/link_batch.py) to ``destination``'s ``/batch``."""
        address = self._addresses.get(destination)
        if address is None:
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=destination)
        return self._client.request("POST", address + BATCH_PATH, body)

    def close(self) -> Deferred[None]:
        return cast("Deferred[None]", self._client.close())


def _batching(
    reactor: Any, link: HttpsTransport, batching: BatchingConfig, batched: list[str]
) -> Transport:
    """``link``, batching its messages to ``batched`` as ``batching`` says (alone when its
    size is 1)."""
    if not batching.enabled:
        return link
    return BatchingTransport(link, link.post_batch, reactor, batching, batched)


def _client_policy(layout: PkiLayout, credentials: Any) -> ClientTLSPolicy:
    return ClientTLSPolicy([load_certificate(layout.ca().certificate)], credentials)


def hub_transport(reactor: Any, config: Config) -> Transport:
    """The hub's transport: to every institution of the network (outside members included),
    its TLS certificate shown; batched (``config.batching``) to renkei's nodes and portal,
    not to outside members, whose listeners need serve no ``/batch``."""
    layout = PkiLayout(config.pki)
    policy = _client_policy(layout, layout.hub_tls().load())
    addresses = {}
    for member in config.members:
        host, port = host_and_port(member.network_address)
        policy.expect(host, port, server_name_of_institution(member.code))
        addresses[member.code] = member.network_address
    if config.portal is not None:
        host, port = host_and_port(config.portal.network_address)
        policy.expect(host, port, server_name_of_portal())
        addresses[config.portal.code] = config.portal.network_address
    link = HttpsTransport(NetworkClient(reactor, policy), addresses)
    ours = [institution.code for institution in config.institutions]
    if config.portal is not None:
        ours.append(config.portal.code)
    return _batching(reactor, link, config.batching, ours)


def institution_transport(
    reactor: Any, config: Config, institution: InstitutionConfig
) -> Transport:
    """An intermediate server's transport: to the hub, its institution's TLS certificate
    shown, batched as ``config.batching`` says."""
    layout = PkiLayout(config.pki)
    policy = _client_policy(layout, layout.institution_tls(institution.code).load())
    host, port = host_and_port(config.hub_address)
    policy.expect(host, port, server_name_of_hub())
    link = HttpsTransport(NetworkClient(reactor, policy), {HUB: config.hub_address})
    return _batching(reactor, link, config.batching, [HUB])


def portal_transport(reactor: Any, config: Config) -> Transport:
    """マイナポータル's transport: to the hub, the portal's TLS certificate shown, batched as
    ``config.batching`` says."""
    layout = PkiLayout(config.pki)
    policy = _client_policy(layout, layout.portal_tls().load())
    host, port = host_and_port(config.hub_address)
    policy.expect(host, port, server_name_of_hub())
    link = HttpsTransport(NetworkClient(reactor, policy), {HUB: config.hub_address})
    return _batching(reactor, link, config.batching, [HUB])


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


def _read_body(request: Request, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    content = request.content
    assert content is not None
    body: bytes = content.read(limit + 1)
    if len(body) > limit:
        raise RenkeiError(errors.XML_TOO_LARGE, size=f"more than {len(body) - 1}", limit=limit)
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

    @deferred
    async def _dispatch(
        self, request: Request, operation: str, argument: str | None = None
    ) -> bytes:
        caller = _network_caller(request)
        document = _read_body(request) if ROUTES[operation][0] == "POST" else None
        if document is not None:
            check_content_digest(document, request.getHeader("content-digest"))
        answer = await self._endpoint.dispatch(caller, operation, document, argument)
        request.setHeader(b"Content-Type", XML)
        return answer

    @deferred
    async def _batch(self, request: Request) -> bytes:
        caller = _network_caller(request)
        body = _read_body(request, MAX_BATCH_BYTES)
        check_content_digest(body, request.getHeader("content-digest"))
        answer = await answer_batch(self._endpoint, caller, body)
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

    @app.route("/query-bundles", methods=["POST"])
    def query_bundles(self, request: Request) -> Any:
        return self._dispatch(request, QUERY_BUNDLE)

    @app.route("/records/<number>", methods=["GET"])
    def records(self, request: Request, number: str) -> Any:
        return self._dispatch(request, RECORDS, number)

    @app.route("/provision-requests", methods=["POST"])
    def provision_requests(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION_REQUEST)

    @app.route("/provision-request-bundles", methods=["POST"])
    def provision_request_bundles(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION_REQUEST_BUNDLE)

    @app.route("/provisions", methods=["POST"])
    def provisions(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION)

    @app.route("/provision-bundles", methods=["POST"])
    def provision_bundles(self, request: Request) -> Any:
        return self._dispatch(request, PROVISION_BUNDLE)

    @app.route("/self-information", methods=["POST"])
    def self_information(self, request: Request) -> Any:
        return self._dispatch(request, SELF_INFORMATION)

    @app.route("/self-information-requests", methods=["POST"])
    def self_information_requests(self, request: Request) -> Any:
        return self._dispatch(request, SELF_INFORMATION_REQUEST)

    @app.route("/record-disclosures", methods=["POST"])
    def record_disclosures(self, request: Request) -> Any:
        return self._dispatch(request, RECORD_DISCLOSURE)

    @app.route("/notices", methods=["POST"])
    def notices(self, request: Request) -> Any:
        return self._dispatch(request, NOTICE)

    @app.route("/notice-reads", methods=["POST"])
    def notice_reads(self, request: Request) -> Any:
        return self._dispatch(request, NOTICE_READ)

    @app.route("/notice-status", methods=["POST"])
    def notice_status(self, request: Request) -> Any:
        return self._dispatch(request, NOTICE_STATUS)

    @app.route(BATCH_PATH, methods=["POST"])
    def batch(self, request: Request) -> Any:
        return self._batch(request)


def network_listener(
    reactor: Any, endpoint: NetworkEndpoint, description: str, options: Any, shared: bool = False
) -> Listener:
    """A party's network listener: its `NetworkApi` on ``description``, mutual TLS ``options``,
    bodies capped at a message's limit (a batch's at `MAX_BATCH_BYTES`), refusals as
    ``Error`` messages; ``shared`` by the processes of an institution."""
    return Listener(
        reactor,
        description,
        NetworkApi(endpoint).app.resource(),
        options,
        max_body=MAX_MESSAGE_BYTES,
        render_refusal=xml_refusal,
        shared=shared,
        larger_bodies={BATCH_PATH.encode("ascii"): MAX_BATCH_BYTES},
    )


def hub_listener(reactor: Any, config: Config, endpoint: NetworkEndpoint) -> Listener:
    """The hub's listener: its TLS certificate, clients from the network CA (not revoked)."""
    assert config.network is not None
    layout = PkiLayout(config.pki)
    ca = load_certificate(layout.ca().certificate)
    options = server_options(layout.hub_tls().load(), [ca], RevocationList([(layout.crl(), ca)]))
    return network_listener(reactor, endpoint, config.network.listen, options)


def institution_listener(
    reactor: Any, config: Config, institution: InstitutionConfig, endpoint: NetworkEndpoint
) -> Listener:
    """An intermediate server's network listener: its TLS certificate, the network CA (not
    revoked)."""
    layout = PkiLayout(config.pki)
    ca = load_certificate(layout.ca().certificate)
    options = server_options(
        layout.institution_tls(institution.code).load(), [ca], RevocationList([(layout.crl(), ca)])
    )
    return network_listener(
        reactor, endpoint, institution.network_listen, options, institution.processes > 1
    )


def portal_listener(reactor: Any, config: Config, endpoint: NetworkEndpoint) -> Listener:
    """マイナポータル's network listener (from the hub): its TLS certificate, the network CA
    (not revoked)."""
    assert config.portal is not None
    layout = PkiLayout(config.pki)
    ca = load_certificate(layout.ca().certificate)
    options = server_options(layout.portal_tls().load(), [ca], RevocationList([(layout.crl(), ca)]))
    return network_listener(reactor, endpoint, config.portal.network_listen, options)


def xml_refusal(error: RenkeiError) -> tuple[bytes, bytes]:
    """A refusal as the network's ``Error`` message."""
    return XML, messages.encode(messages.error_message(error))
