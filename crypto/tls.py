"""Mutual TLS on Twisted: servers that demand client certificates, clients that present one.

Servers: `server_options` builds a `CertificateOptions` whose `trustRoot` turns on peer
verification and requires a client certificate (endpoint strings cannot express that), and
`listen_mutual_tls` wraps any server endpoint description with it. Handlers learn who is
calling with `peer_identity`.

Clients: `ClientTLSPolicy` is an `IPolicyForHTTPS` that knows, for each host and port it
may contact, which server name the certificate there must carry (the hub listens on
127.0.0.1 but presents hub.renkei.test). `make_http_client` puts it behind a treq client
with a persistent connection pool; keep-alive matters (a new mTLS handshake per request
costs about five times a request on a kept connection).

Revocation: a server given a `RevocationList` refuses, during the handshake, a client
certificate that a revocation list of its issuer names; the lists are files (`renkei pki
revoke` writes them) re-read whenever they change, so a withdrawal takes effect for the next
connection without a restart (connections already open stay until they close).

The peer's identity is read from its certificate once per connection: a mutual-TLS server
refuses renegotiation, so the certificate cannot change while the connection lives.

Only TLS 1.2 and later are offered. `cryptography` objects are handed to Twisted and
pyOpenSSL wherever they accept them, which avoids pyOpenSSL 26's deprecation warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from weakref import WeakKeyDictionary

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto
from treq.client import HTTPClient
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    serverFromString,
    wrapClientTLS,
    wrapServerTLS,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.compat import nativeString
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,  # private: the pool's connection factory
)
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from codes import errors
from crypto.pki import Credentials, PeerIdentity, identity_of

__all__ = [
    "ClientTLSPolicy",
    "MutualTLSHTTPClient",
    "PeerEndpoints",
    "QuietConnectionPool",
    "RevocationList",
    "ServerNotExpected",
    "listen_mutual_tls",
    "make_http_client",
    "peer_identity",
    "server_only_options",
    "server_options",
]

MINIMUM_TLS_VERSION = TLSVersion.TLSv1_2
# The TLS 1.2 suites every listener accepts: forward secrecy (ECDHE) and an AEAD cipher, as
# the Japanese government's TLS guidelines (CRYPTREC) and Mozilla's "intermediate" profile
# recommend; no CBC suite (LUCKY13), no RSA key exchange. TLS 1.3's suites are all AEAD and
# OpenSSL configures them apart from this list.
SERVER_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
)
_SERVER_CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(SERVER_CIPHERS)
# Idle kept-alive connections are closed by the client after this many seconds.
DEFAULT_CACHED_CONNECTION_TIMEOUT = 120
DEFAULT_CONNECT_TIMEOUT = 10.0


class RevocationList:
    """The certificates withdrawn by some CAs: each CA's revocation list (a PEM file that
    may not exist yet), re-read when the file changes; a list not signed by its CA is
    ignored (and logged)."""

    def __init__(self, sources: Sequence[tuple[Path, x509.Certificate]]) -> None:
        self._sources = list(sources)
        self._seen: dict[Path, tuple[int, int] | None] = {}
        self._revoked: dict[Path, frozenset[tuple[bytes, int]]] = {}

    def revoked(self, certificate: x509.Certificate) -> bool:
        """Whether a revocation list of ``certificate``'s issuer names it."""
        entry = (certificate.issuer.public_bytes(), certificate.serial_number)
        return any(entry in self._current(path, ca) for path, ca in self._sources)

    def _current(self, path: Path, ca: x509.Certificate) -> frozenset[tuple[bytes, int]]:
        try:
            status = path.stat()
            version: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            version = None
        if path in self._seen and self._seen[path] == version:
            return self._revoked[path]
        self._seen[path] = version
        if version is None:
            self._revoked[path] = frozenset()
            return self._revoked[path]
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
            public_key = ca.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise ValueError("the CA's key cannot sign a revocation list")
            if crl.issuer != ca.subject or not crl.is_signature_valid(public_key):
                raise ValueError("not signed by its CA")
        except (OSError, ValueError) as failure:
            from twisted.logger import Logger

            Logger(namespace=__name__).error(
                "revocation list {path} ignored: {failure}", path=path, failure=failure
            )
            return self._revoked.setdefault(path, frozenset())
        issuer = crl.issuer.public_bytes()
        self._revoked[path] = frozenset((issuer, entry.serial_number) for entry in crl)
        return self._revoked[path]


class _MutualOptions(CertificateOptions):
    """Mutual-TLS server options that refuse renegotiation: the client certificate seen at
    the handshake stays the connection's (`peer_identity` reads it once per connection)."""

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        context = super()._makeContext(skipCiphers)
        context.set_options(SSL.OP_NO_RENEGOTIATION)  # type: ignore[attr-defined]  # not in the stubs
        return context


class _CheckedOptions(_MutualOptions):
    """Server options whose handshake also refuses a revoked client certificate."""

    def __init__(self, revocations: RevocationList, **options: Any) -> None:
        super().__init__(**options)
        self._revocations = revocations

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        context = super()._makeContext(skipCiphers)
        context.set_verify(context.get_verify_mode(), self._verify)
        return context

    def _verify(
        self, connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
    ) -> bool:
        return bool(ok) and not self._revocations.revoked(certificate.to_cryptography())


def server_options(
    credentials: Credentials,
    trust_roots: Sequence[x509.Certificate],
    revocations: RevocationList | None = None,
) -> CertificateOptions:
    """TLS server options presenting `credentials` and requiring a client certificate.

    The client certificate must chain to one of `trust_roots`, and not be named by
    `revocations`; the handshake fails otherwise. TLS 1.2 or later.
    """
    if not trust_roots:
        raise ValueError("a mutual TLS server needs at least one trust root")
    options: dict[str, Any] = {
        "privateKey": _tls_key(credentials),
        # Typed as pyOpenSSL X509, but pyOpenSSL 26 takes (and prefers) cryptography objects.
        "certificate": credentials.certificate,
        "trustRoot": _trust_root(trust_roots),
        "raiseMinimumTo": MINIMUM_TLS_VERSION,
        "acceptableCiphers": _SERVER_CIPHERS,
    }
    if revocations is None:
        return _MutualOptions(**options)
    return _CheckedOptions(revocations, **options)


def server_only_options(credentials: Credentials) -> CertificateOptions:
    """TLS server options presenting ``credentials`` and asking for no client certificate
    (the operator console, where staff log in with a password and a one-time code): the
    same versions and suites as `server_options`."""
    return CertificateOptions(
        privateKey=_tls_key(credentials),
        certificate=credentials.certificate,  # type: ignore[arg-type]
        raiseMinimumTo=MINIMUM_TLS_VERSION,
        acceptableCiphers=_SERVER_CIPHERS,
    )


def listen_mutual_tls(
    reactor: Any,
    endpoint_description: str,
    options: CertificateOptions,
    factory: Factory[Any],
) -> Deferred[IListeningPort]:
    """Listen with TLS `options` on a plain server endpoint such as `tcp:8443:interface=::`."""
    endpoint: Any = wrapServerTLS(
        cast(IOpenSSLServerConnectionCreator, options),
        serverFromString(reactor, endpoint_description),
    )
    listening: Deferred[IListeningPort] = endpoint.listen(factory)
    return listening


def peer_identity(transport_or_request: object) -> PeerIdentity:
    """The CN, OU and O of the verified client certificate of a request or TLS transport.

    Accepts a twisted.web / Klein request (its `transport` or `channel.transport`) or a
    transport. Raises `RenkeiError(CERTIFICATE_NOT_AUTHORIZED)` when there is no
    certificate (a plain TCP connection, for instance) or it has no usable common name.
    """
    transport = _tls_transport(transport_or_request)
    # A TLS connection's identity, once read (no renegotiation: see `_MutualOptions`).
    connection = transport if isinstance(transport, TLSMemoryBIOProtocol) else None
    if connection is not None:
        known = _IDENTITIES.get(connection)
        if known is not None:
            return known
    certificate = _peer_certificate(transport)
    if certificate is None:
        raise errors.RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject="(none)")
    try:
        identity = identity_of(certificate)
    except ValueError:
        raise errors.RenkeiError(
            errors.CERTIFICATE_NOT_AUTHORIZED, subject=certificate.subject.rfc4514_string()
        ) from None
    if connection is not None:
        _IDENTITIES[connection] = identity
    return identity


_IDENTITIES: WeakKeyDictionary[TLSMemoryBIOProtocol, PeerIdentity] = WeakKeyDictionary()


class ServerNotExpected(LookupError):
    """A client was asked to connect to a host and port nobody registered with `expect`."""


@implementer(IPolicyForHTTPS)
class ClientTLSPolicy:
    """Client TLS policy: present one client certificate (or none), check each server's
    expected name.

    Every (host, port) the client may contact is registered with `expect` together with the
    DNS name its certificate must carry; any other netloc is refused with
    `ServerNotExpected` (the request's Deferred fails with it). Connection creators are
    built once per netloc and reused, so the SSL context is not rebuilt per connection.
    """

    def __init__(
        self,
        trust_roots: x509.Certificate | Sequence[x509.Certificate],
        credentials: Credentials | None,
    ) -> None:
        """Trust servers certified by `trust_roots`; authenticate with `credentials`, or
        present no client certificate when None (a staff member's browser on a console)."""
        roots = [trust_roots] if isinstance(trust_roots, x509.Certificate) else list(trust_roots)
        if not roots:
            raise ValueError("a TLS client needs at least one trust root")
        self._trust_root = _trust_root(roots)
        self._client_options: dict[str, Any] = {"raiseMinimumTo": MINIMUM_TLS_VERSION}
        if credentials is not None:
            self._client_options["privateKey"] = _tls_key(credentials)
            self._client_options["certificate"] = credentials.certificate
        self._creators: dict[tuple[str, int], IOpenSSLClientConnectionCreator] = {}
        self._names: dict[tuple[str, int], str] = {}

    def expect(self, host: str, port: int, server_name: str) -> None:
        """Require the server at `host`:`port` to present a certificate for `server_name`."""
        netloc = (_normalize_host(host), int(port))
        # optionsForClientTLS with clientCertificate= would wrap the key and certificate in
        # pyOpenSSL objects (deprecated); passing the cryptography objects through
        # extraCertificateOptions does the same thing without the deprecation warning.
        self._creators[netloc] = optionsForClientTLS(
            server_name,
            trustRoot=self._trust_root,
            extraCertificateOptions=dict(self._client_options),
        )
        self._names[netloc] = server_name

    def expected_server_name(self, host: str, port: int) -> str | None:
        """The server name registered for `host`:`port`, if any."""
        return self._names.get((_normalize_host(host), int(port)))

    def creatorForNetloc(self, hostname: bytes | str, port: int) -> IOpenSSLClientConnectionCreator:
        """The connection creator registered for this netloc (Agent passes `hostname` as bytes)."""
        host = hostname.decode("ascii") if isinstance(hostname, bytes) else hostname
        try:
            return self._creators[(_normalize_host(host), int(port))]
        except KeyError:
            raise ServerNotExpected(
                f"no TLS server identity is expected at {host}:{port}; "
                "register one with ClientTLSPolicy.expect(host, port, server_name)"
            ) from None


class _QuietClientFactory(_HTTP11ClientFactory):
    """The factory of one pooled connection, which does not log its start and stop."""

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """A connection pool whose connections log nothing of their own: Twisted's logs a
    "Starting factory" and a "Stopping factory" line for every new connection (1,500 of the
    1,700 lines of a box's logs after the use cases), which tells a reader nothing."""

    _factory = _QuietClientFactory


class MutualTLSHTTPClient(HTTPClient):
    """A treq `HTTPClient` that owns its persistent connection pool.

    ``agent`` is the bare `Agent` under it, for a caller that sends its own requests on the
    same pool without treq's per-request work (URL parsing, cookie, redirect and decoding
    agents): the network link does (adapters/network_link.py).
    """

    def __init__(self, agent: Agent, pool: HTTPConnectionPool) -> None:
        """Send requests through `agent`, whose connections are kept in `pool`."""
        super().__init__(cast(IAgent, agent))
        self.agent = agent
        self.pool = pool

    def close(self) -> Deferred[None]:
        """Close every cached connection; fires when they are closed."""
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed


def make_http_client(
    reactor: Any,
    policy: ClientTLSPolicy,
    max_per_host: int = 16,
    *,
    cached_connection_timeout: int = DEFAULT_CACHED_CONNECTION_TIMEOUT,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
) -> MutualTLSHTTPClient:
    """A treq client over mutual TLS keeping up to `max_per_host` idle connections per host.

    Call `close()` (or `client.pool.closeCachedConnections()`) when done with it.
    """
    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = cached_connection_timeout
    agent = Agent.usingEndpointFactory(
        reactor, PeerEndpoints(reactor, policy, connect_timeout), pool=pool
    )
    return MutualTLSHTTPClient(agent, pool)


@implementer(IAgentEndpointFactory)
class PeerEndpoints:
    """An `Agent`'s endpoints, one per peer (scheme, host and port), made at its first request.

    Twisted's own factory builds a `HostnameEndpoint` (the host's IDNA encoding included) and
    its TLS wrapper for every request, also when the pool then lends a kept-alive connection
    and the endpoint is never used: 1.8 % of a flow's CPU in the box. The endpoints are the
    same (the same connect timeout, `policy`'s connection creator for the peer, the host
    resolved at each connection); one is made anew when `policy` names another creator for
    its peer.
    """

    def __init__(
        self, reactor: Any, policy: ClientTLSPolicy, connect_timeout: float | None
    ) -> None:
        self._reactor = reactor
        self._policy = policy
        self._timeout = {} if connect_timeout is None else {"timeout": connect_timeout}
        self._endpoints: dict[tuple[bytes, bytes, int], tuple[object, IStreamClientEndpoint]] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint of ``uri``'s peer."""
        creator: object = None
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        key = (uri.scheme, uri.host, uri.port)
        kept = self._endpoints.get(key)
        if kept is not None and kept[0] is creator:
            return kept[1]
        endpoint: Any = HostnameEndpoint(
            self._reactor, nativeString(uri.host), uri.port, **cast(Any, self._timeout)
        )
        if creator is not None:
            endpoint = wrapClientTLS(cast(Any, creator), endpoint)
        if len(self._endpoints) >= _PEER_ENDPOINTS_KEPT:
            self._endpoints.clear()
        self._endpoints[key] = (creator, endpoint)
        return endpoint


_PEER_ENDPOINTS_KEPT = 4096


def _tls_key(credentials: Credentials) -> Any:
    key = credentials.private_key
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("a TLS private key must be EC or RSA")
    return key


def _trust_root(roots: Sequence[x509.Certificate]) -> IOpenSSLTrustRoot:
    # The trust store API (X509Store.add_cert) still takes pyOpenSSL X509 objects only.
    trust_root: IOpenSSLTrustRoot = trustRootFromCertificates(
        [Certificate(crypto.X509.from_cryptography(root)) for root in roots]
    )
    return trust_root


def _normalize_host(host: str) -> str:
    return host.strip("[]").lower()


def _tls_transport(source: object) -> Any:
    """The TLS transport behind a request or transport (what has `getPeerCertificate`)."""
    channel = getattr(source, "channel", None)
    candidates = (
        source,
        getattr(source, "transport", None),
        getattr(channel, "transport", None),
    )
    for candidate in candidates:
        if getattr(candidate, "getPeerCertificate", None) is not None:
            return candidate
    return None


def _peer_certificate(transport: Any) -> x509.Certificate | None:
    """The peer certificate of a TLS transport (None without one)."""
    if transport is None:
        return None
    certificate = transport.getPeerCertificate()
    if certificate is None:
        return None
    if isinstance(certificate, x509.Certificate):
        return certificate
    converted: x509.Certificate = certificate.to_cryptography()
    return converted
