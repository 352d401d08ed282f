"""Tests for crypto.tls: mutual TLS servers and clients on Twisted (pytest-twisted)."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet.defer import gatherResults
from twisted.web.client import URI, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from codes import errors
from crypto.pki import Credentials, PeerIdentity, PkiLayout, load_certificate, server_name_of_hub
from crypto.pki import server_name_of_institution as institution_name
from crypto.tls import (
    ClientTLSPolicy,
    PeerEndpoints,
    ServerNotExpected,
    listen_mutual_tls,
    make_http_client,
    peer_identity,
    server_options,
)
from tests.certs import BACK_OFFICE_SYSTEM, INSTITUTION, make_pki
from tests.logs import LogRecorder

TIMEOUT = 10


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def foreign_layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("foreign-pki"))


@pytest.fixture(scope="module")
def ca(layout: PkiLayout) -> x509.Certificate:
    return load_certificate(layout.ca().certificate)


class EchoPeer(Resource):
    """Answers every GET with the client certificate's CN, OU and O."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        who = peer_identity(request)
        return f"{who.common_name}|{who.organizational_unit}|{who.organization}".encode()


class CountingSite(Site):
    """A Site that counts the connections it accepts."""

    def __init__(self) -> None:
        super().__init__(EchoPeer())
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


def _listen(
    reactor: Any,
    layout: PkiLayout,
    trust_roots: list[x509.Certificate],
    site: Site | None = None,
) -> Any:
    options = server_options(layout.hub_tls().load(), trust_roots)
    factory = site if site is not None else CountingSite()
    return listen_mutual_tls(reactor, "tcp:0:interface=127.0.0.1", options, factory)


def _reasons(error: ResponseNeverReceived) -> str:
    """The TLS errors behind a failed request, as one string."""
    return " ".join(repr(failure.value) for failure in error.reasons)


def _get(reactor: Any, client: Any, port: int) -> Any:
    request = client.get(f"https://127.0.0.1:{port}/")
    request.addTimeout(TIMEOUT, reactor)
    return request


@pytest_twisted.inlineCallbacks
def test_client_with_an_institution_certificate_gets_its_cn_back(
    layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """A server demanding client certs sees the institution's CN; keep-alive reuses one TCP link."""
    from twisted.internet import reactor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        site = CountingSite()
        port = yield _listen(reactor, layout, [ca], site)
        number = port.getHost().port
        policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
        policy.expect("127.0.0.1", number, server_name_of_hub())
        client = make_http_client(reactor, policy, max_per_host=4)
        try:
            for _ in range(3):
                response = yield _get(reactor, client, number)
                assert response.code == 200
                body = yield response.content()
                assert body == f"{INSTITUTION}|tls|None".encode()
            # All three requests travelled over a single kept-alive connection.
            assert site.connections == 1
        finally:
            yield client.close()
            yield port.stopListening()
    noisy = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert noisy == [], [str(w.message) for w in noisy]


@pytest_twisted.inlineCallbacks
def test_pooled_connections_log_nothing_of_their_own(
    layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """Connections opened and closed by the client's pool log no "Starting factory" or
    "Stopping factory" line (Twisted's default for every connection)."""
    from twisted.internet import reactor

    port = yield _listen(reactor, layout, [ca])
    number = port.getHost().port
    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", number, server_name_of_hub())
    client = make_http_client(reactor, policy, max_per_host=1)
    with LogRecorder() as log:
        try:
            responses = yield gatherResults([_get(reactor, client, number) for _ in range(3)])
            for response in responses:
                yield response.content()
        finally:
            yield client.close()
            yield port.stopListening()
    events = log.events
    clients = [e for e in events if e.get("log_namespace", "").startswith("twisted.web.client")]
    assert len(responses) == 3 and clients == []


@pytest_twisted.inlineCallbacks
def test_server_trusting_several_roots_accepts_a_back_office_client(
    layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """A server given the back-office CA as a further root sees the back-office CN and O."""
    from twisted.internet import reactor

    back_office_ca = load_certificate(layout.back_office_ca(INSTITUTION).certificate)
    port = yield _listen(reactor, layout, [ca, back_office_ca])
    number = port.getHost().port
    policy = ClientTLSPolicy(
        [ca], layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM).load()
    )
    policy.expect("127.0.0.1", number, server_name_of_hub())
    client = make_http_client(reactor, policy)
    try:
        response = yield _get(reactor, client, number)
        body = yield response.content()
        assert body == f"{BACK_OFFICE_SYSTEM}|back-office|{INSTITUTION}".encode()
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_with_a_certificate_from_another_ca_is_refused(
    layout: PkiLayout, foreign_layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """A client certificate from a second PKI, same names, fails the handshake: the request errs."""
    from twisted.internet import reactor

    port = yield _listen(reactor, layout, [ca])
    number = port.getHost().port
    policy = ClientTLSPolicy(ca, foreign_layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", number, server_name_of_hub())
    client = make_http_client(reactor, policy)
    try:
        with pytest.raises(ResponseNeverReceived) as caught:
            yield _get(reactor, client, number)
        assert "unknown ca" in _reasons(caught.value)
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_expecting_another_server_name_refuses_the_server(
    layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """A client that expects an institution's name at the hub's address rejects the hub."""
    from twisted.internet import reactor

    port = yield _listen(reactor, layout, [ca])
    number = port.getHost().port
    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", number, institution_name(INSTITUTION))
    client = make_http_client(reactor, policy)
    try:
        with pytest.raises(ResponseNeverReceived) as caught:
            yield _get(reactor, client, number)
        assert "DNSMismatch" in _reasons(caught.value)
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_refuses_a_server_certified_by_another_ca(
    layout: PkiLayout, foreign_layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """A server whose certificate comes from a second PKI is rejected by the client."""
    from twisted.internet import reactor

    foreign_ca = load_certificate(foreign_layout.ca().certificate)
    port = yield _listen(reactor, foreign_layout, [foreign_ca, ca])
    number = port.getHost().port
    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", number, server_name_of_hub())
    client = make_http_client(reactor, policy)
    try:
        with pytest.raises(ResponseNeverReceived) as caught:
            yield _get(reactor, client, number)
        assert "certificate verify failed" in _reasons(caught.value)
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_request_to_an_unregistered_netloc_fails_with_server_not_expected(
    layout: PkiLayout, ca: x509.Certificate
) -> Generator[Any, Any, None]:
    """Without an `expect` for the host and port, the request fails before connecting."""
    from twisted.internet import reactor

    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", 1, server_name_of_hub())
    client = make_http_client(reactor, policy)
    try:
        with pytest.raises(ServerNotExpected, match=r"127\.0\.0\.1:2\b"):
            yield _get(reactor, client, 2)
    finally:
        yield client.close()


def test_policy_normalizes_hosts_and_accepts_bytes_from_agent(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """Agent passes the host as bytes; registration is case-insensitive and bracket-free."""
    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("LocalHost", 8443, server_name_of_hub())
    policy.expect("[::1]", 8443, institution_name(INSTITUTION))
    assert policy.creatorForNetloc(b"localhost", 8443) is policy.creatorForNetloc("LOCALHOST", 8443)
    assert policy.expected_server_name("::1", 8443) == institution_name(INSTITUTION)
    with pytest.raises(ServerNotExpected):
        policy.creatorForNetloc(b"localhost", 8444)


def test_server_options_refuse_an_empty_trust_root_list(layout: PkiLayout) -> None:
    """A mutual TLS server without any trust root would accept nobody; refuse to build it."""
    with pytest.raises(ValueError):
        server_options(layout.hub_tls().load(), [])


def test_server_options_require_a_client_certificate_and_tls_1_2(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """The options turn on peer verification, demand a certificate and exclude TLS < 1.2."""
    from OpenSSL import SSL

    options = server_options(layout.hub_tls().load(), [ca])
    assert options.verify and options.requireCertificate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        context = options.getContext()
    assert context.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    flags = options._options  # private: Twisted's CertificateOptions has no public getter
    assert flags & SSL.OP_NO_TLSv1_1 and flags & SSL.OP_NO_TLSv1
    # No renegotiation: the client certificate of the handshake stays the connection's.
    assert context.set_options(0) & SSL.OP_NO_RENEGOTIATION  # type: ignore[attr-defined,func-returns-value]


@pytest_twisted.inlineCallbacks
def test_peer_identity_is_read_once_per_connection(
    layout: PkiLayout, ca: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> Generator[Any, Any, None]:
    """Three requests on one kept-alive connection read the client certificate once; a new
    connection reads it again."""
    from twisted.internet import reactor
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    reads: list[object] = []
    read = TLSMemoryBIOProtocol.getPeerCertificate

    def counted(transport: TLSMemoryBIOProtocol) -> Any:
        reads.append(transport)
        return read(transport)

    monkeypatch.setattr(TLSMemoryBIOProtocol, "getPeerCertificate", counted)
    site = CountingSite()
    port = yield _listen(reactor, layout, [ca], site)
    number = port.getHost().port
    try:
        for round_ in (1, 2):
            policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
            policy.expect("127.0.0.1", number, server_name_of_hub())
            client = make_http_client(reactor, policy, max_per_host=1)
            try:
                for _ in range(3):
                    response = yield _get(reactor, client, number)
                    assert (yield response.content()) == f"{INSTITUTION}|tls|None".encode()
            finally:
                yield client.close()
            assert (site.connections, len(reads)) == (round_, round_)
    finally:
        yield port.stopListening()


def test_peer_identity_without_a_certificate_is_certificate_not_authorized() -> None:
    """A transport with no peer certificate, or no TLS at all, is refused with a coded error."""
    no_certificate = SimpleNamespace(getPeerCertificate=lambda: None)
    plain_request = SimpleNamespace(transport=SimpleNamespace(), channel=None)
    for source in (no_certificate, plain_request, SimpleNamespace(transport=no_certificate)):
        with pytest.raises(errors.RenkeiError) as caught:
            peer_identity(source)
        assert caught.value.kind is errors.CERTIFICATE_NOT_AUTHORIZED
        assert caught.value.params == {"subject": "(none)"}


def test_peer_identity_reads_the_certificate_through_request_channel_or_transport(
    layout: PkiLayout,
) -> None:
    """peer_identity finds the certificate on a transport, or a request's (channel's) transport."""
    from OpenSSL import crypto

    certificate = layout.institution_tls(INSTITUTION).load().certificate
    tls_transport = SimpleNamespace(
        getPeerCertificate=lambda: crypto.X509.from_cryptography(certificate)
    )
    expected = PeerIdentity(INSTITUTION, "tls", None)
    assert peer_identity(tls_transport) == expected
    assert peer_identity(SimpleNamespace(transport=tls_transport)) == expected
    assert (
        peer_identity(
            SimpleNamespace(transport=None, channel=SimpleNamespace(transport=tls_transport))
        )
        == expected
    )


def test_tls_credentials_must_be_ec_or_rsa(layout: PkiLayout, ca: x509.Certificate) -> None:
    """Credentials with an unsupported key type are refused when building options."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    odd = Credentials(layout.hub_tls().load().certificate, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValueError):
        server_options(odd, [ca])


def _handshake(port: int, cipher: str, layout: PkiLayout, ca: x509.Certificate) -> str | None:
    """A TLS 1.2 handshake offering only ``cipher`` (with the institution's client
    certificate), in a thread: the suite agreed, or None when the server refused."""
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    tls = layout.institution_tls(INSTITUTION)
    context.load_cert_chain(tls.certificate, tls.key)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw) as wrapped:
                agreed = wrapped.cipher()
                return agreed[0] if agreed else None
        except (ssl.SSLError, ConnectionResetError):
            return None


@pytest.mark.parametrize("mutual", [True, False], ids=["mutual-tls", "server-only"])
@pytest_twisted.ensureDeferred
async def test_tls_1_2_is_limited_to_ecdhe_with_aead_ciphers(
    layout: PkiLayout, ca: x509.Certificate, mutual: bool
) -> None:
    """Every listener's TLS 1.2 takes ECDHE suites with AES-GCM or ChaCha20-Poly1305 only:
    a client offering a CBC suite (LUCKY13) or no forward secrecy is refused in the
    handshake."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from crypto.tls import server_only_options

    credentials = layout.hub_tls().load()
    options = server_options(credentials, [ca]) if mutual else server_only_options(credentials)
    port: Any = await listen_mutual_tls(
        reactor, "tcp:0:interface=127.0.0.1", options, CountingSite()
    )
    number = port.getHost().port
    try:
        for accepted in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            assert await deferToThread(_handshake, number, accepted, layout, ca) == accepted
        for refused in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "AES128-GCM-SHA256"):
            assert await deferToThread(_handshake, number, refused, layout, ca) is None
    finally:
        await port.stopListening()


def test_peer_endpoints_are_made_once_per_peer_and_anew_for_a_new_identity(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """Requests to one peer share its endpoint, another peer gets its own, a peer the policy
    does not expect is refused, and a peer expected anew (another server name) gets a new
    endpoint."""
    from twisted.internet import reactor

    policy = ClientTLSPolicy(ca, layout.institution_tls(INSTITUTION).load())
    policy.expect("127.0.0.1", 8001, server_name_of_hub())
    policy.expect("127.0.0.1", 8002, institution_name(INSTITUTION))
    endpoints = PeerEndpoints(reactor, policy, 5.0)
    hub = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8001/queries"))
    assert endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8001/batch")) is hub
    other = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8002/batch"))
    assert other is not hub
    with pytest.raises(ServerNotExpected):
        endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8003/batch"))
    policy.expect("127.0.0.1", 8001, institution_name(INSTITUTION))
    renewed = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1:8001/batch"))
    assert renewed is not hub
