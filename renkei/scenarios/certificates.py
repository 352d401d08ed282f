"""Certificates the network must refuse, for the ``connect`` and ``revoke`` steps of a
scenario (docs/scenarios.md).

A ``connect`` step reaches one listener of the scenario's network — the hub's network
listener, a node's network listener, a node's back-office listener, a console — as a party
or a back-office system, presenting a certificate of its choosing, and says what the listener
made of it: the TLS handshake refused (and the alert), or the request answered, with its
status and, for a refusal, its code. The certificates are:

- ``own``: the subject's certificate, as the network issued it (a control: it is taken);
- ``foreign-ca``: a certificate with the same subject and extensions, issued by a CA the
  network does not trust that carries the trusted CA's name (`Impostors`): an institution's
  name is not enough, its issuer's key is what counts;
- ``revoked``: the subject's certificate a ``revoke`` step withdrew (`revoke_for_scenario`, as
  ``renkei pki revoke`` does: the issuing CA's revocation list, which every listener re-reads);
- ``signing``: the party's signing certificate, a valid certificate of the network that is
  not meant for TLS;
- ``none``: no client certificate at all.

The connection is made with the standard library's ``ssl`` in a thread, the server's
certificate checked against the network CA for the listener's server name, so that a refusal
is seen as the client sees it (a TLS alert, not a wrapped connection error).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.threads import deferToThread

from adapters.network_link import host_and_port
from crypto.pki import (
    PkiLayout,
    load_certificate,
    revoke,
    server_name_of_hub,
    server_name_of_institution,
)
from middleware.config import Config
from middleware.network import HUB

__all__ = [
    "CERTIFICATES",
    "LISTENERS",
    "Impostors",
    "Knock",
    "Listener",
    "Presented",
    "Subject",
    "credentials_of",
    "knock",
    "listener_of",
    "original_of",
    "revoke_for_scenario",
]

CERTIFICATES = ("own", "foreign-ca", "revoked", "signing", "none")
LISTENERS = ("network", "back_office", "console")
CONNECT_TIMEOUT = 10.0  # seconds to connect and to wait for each answer
# What is asked of each listener: a request every caller the listener takes is answered
# for, after its certificate has been checked (a node's network listener answers the hub's
# GET /permitted-list with PageNotFound: it serves no list, but it took the certificate).
REQUESTS = {"network": "/permitted-list", "back_office": "/openapi.json", "console": "/held"}
_CONSOLE_CODE = re.compile(rb'id="error-code">([A-Za-z]+)<')


@dataclass(frozen=True)
class Subject:
    """Whose certificate a ``connect`` step presents: a party of the network (``system``
    None: its TLS certificate, OU ``tls``) or one of an institution's back-office systems."""

    code: str  # hub, or an institution code
    system: str | None = None

    @property
    def label(self) -> str:
        return self.code if self.system is None else f"{self.code}-{self.system}"


@dataclass(frozen=True)
class Listener:
    """A listener of the scenario's network: its kind, address and TLS server name."""

    kind: str  # network, back_office or console
    party: str  # hub, or an institution code
    address: str
    server_name: str

    @property
    def path(self) -> str:
        return REQUESTS[self.kind]


def listener_of(config: Config, party: str, kind: str) -> Listener:
    """The ``kind`` listener of ``party`` (hub, or an institution's name or code; an outside
    member has a network listener only, its own)."""
    if party == HUB:
        if kind != "network":
            raise LookupError(f"the hub has no {kind} listener")
        return Listener(kind, HUB, config.hub_address, server_name_of_hub())
    member = config.member(party)
    name = server_name_of_institution(member.code)
    if kind == "network":
        return Listener(kind, member.code, member.network_address, name)
    if member not in config.institutions:
        raise LookupError(f"{party} is an outside member: its only listener is its network one")
    institution = config.institution(member.code)
    if kind == "back_office":
        return Listener(kind, member.code, institution.back_office_address, name)
    if institution.console_address is None:
        raise LookupError(f"{institution.name} has no console (console_address)")
    return Listener(kind, member.code, institution.console_address, name)


class Impostors:
    """Certificates from CAs the network does not trust, made for one scenario in
    ``directory``: each copies a real certificate's subject and extensions, for a key of its
    own, and is issued by a CA of its own named like the real certificate's issuer."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def like(self, original: x509.Certificate, label: str) -> tuple[Path, Path]:
        """The certificate and key files of an impostor of ``original`` (made once)."""
        certificate_path = self._directory / f"{label}-foreign-ca.pem"
        key_path = self._directory / f"{label}-foreign-ca.key"
        if certificate_path.exists():
            return certificate_path, key_path
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(original.issuer)
            .issuer_name(original.issuer)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(original.subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(original.not_valid_before_utc)
            .not_valid_after(original.not_valid_after_utc)
        )
        for extension in original.extensions:
            value: Any = extension.value
            if isinstance(value, x509.SubjectKeyIdentifier):
                value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            elif isinstance(value, x509.AuthorityKeyIdentifier):
                value = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
            builder = builder.add_extension(value, extension.critical)
        certificate = builder.sign(ca_key, hashes.SHA256())
        self._directory.mkdir(parents=True, exist_ok=True)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        certificate_path.write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
            + ca.public_bytes(serialization.Encoding.PEM)
        )
        return certificate_path, key_path


def revoke_for_scenario(pki: Path, subject: Subject) -> list[tuple[Path, Path]]:
    """Withdraw ``subject``'s certificates as ``renkei pki revoke`` does (its network
    certificates, or its back-office system's); the certificate and key files of the
    withdrawn TLS or back-office client certificate, where `revoke` moved them."""
    withdrawn = revoke(pki, subject.code, subject.system)
    moved = PkiLayout(pki).revoked_directory(subject.code)
    stem = subject.system or "tls"
    found = []
    for certificate in withdrawn:
        for path in moved.glob(f"{stem}-{certificate.serial_number:x}-*.pem"):
            found.append((path, path.with_suffix(".key")))
    return found


@dataclass(frozen=True)
class Knock:
    """What a listener made of a connection: the handshake refused (``alert`` says how), or
    the request answered with ``status`` and, for a refusal, its ``code``."""

    handshake_refused: bool
    alert: str = ""
    status: int = 0
    code: str | None = None

    def __str__(self) -> str:
        if self.handshake_refused:
            return f"the TLS handshake was refused ({self.alert})"
        return f"answered {self.status}" + (f" {self.code}" if self.code else "")


def knock(
    listener: Listener, ca: Path, credentials: tuple[Path, Path] | None
) -> Any:  # a Deferred firing with a Knock
    """Connect to ``listener`` over TLS, presenting ``credentials`` (certificate and key
    files; None: no certificate), checking its certificate against ``ca`` for its server
    name, and ask its request; a Deferred firing with the `Knock`. ConnectionRefusedError
    when nothing listens there."""
    return deferToThread(_knock, listener, ca, credentials)


def _knock(listener: Listener, ca: Path, credentials: tuple[Path, Path] | None) -> Knock:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials is not None:
        context.load_cert_chain(str(credentials[0]), str(credentials[1]))
    host, port = host_and_port(listener.address)
    request = (
        f"GET {listener.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=listener.server_name) as tls:
                # With TLS 1.3 the server checks the client's certificate after the client
                # has finished its side of the handshake: a refusal comes as an alert on the
                # first read.
                tls.sendall(request)
                answer = http.client.HTTPResponse(tls)
                answer.begin()
                body = answer.read()
        except ssl.SSLError as failure:
            return Knock(True, alert=failure.reason or str(failure))
        except (ConnectionResetError, http.client.RemoteDisconnected) as failure:
            return Knock(True, alert=f"the connection was closed: {failure}")
    return Knock(False, status=answer.status, code=_code_of(listener.kind, body, answer.status))


def _code_of(kind: str, body: bytes, status: int) -> str | None:
    """The code of a refusal as each listener words it: the network's Error message, the
    back-office API's JSON, the console's error page."""
    if status < 400:
        return None
    if kind == "network":
        found = re.search(rb'<(?:\w+:)?Error\b[^>]*\bcode="([A-Za-z]+)"', body)
        return found.group(1).decode("ascii") if found else None
    if kind == "back_office":
        try:
            return str(json.loads(body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None
    found = _CONSOLE_CODE.search(body)
    return found.group(1).decode("ascii") if found else None


def credentials_of(pki: Path, subject: Subject, which: str) -> tuple[Path, Path]:
    """The certificate and key files of ``subject``'s ``own`` or ``signing`` certificate,
    as the network issued them."""
    layout = PkiLayout(pki)
    if subject.system is not None:
        if which != "own":
            raise LookupError(f"a back-office system has no {which} certificate")
        paths = layout.back_office_client(subject.code, subject.system)
    elif subject.code == HUB:
        paths = layout.hub_tls() if which == "own" else layout.hub_signing()
    else:
        paths = (
            layout.institution_tls(subject.code)
            if which == "own"
            else layout.institution_signing(subject.code)
        )
    if not paths.certificate.exists():
        raise LookupError(f"{paths.certificate} does not exist (revoked?)")
    return paths.certificate, paths.key


def original_of(pki: Path, subject: Subject) -> x509.Certificate:
    """The certificate an impostor of ``subject`` copies: its TLS or back-office client
    certificate (or, once withdrawn, the last one withdrawn)."""
    layout = PkiLayout(pki)
    paths = (
        layout.back_office_client(subject.code, subject.system)
        if subject.system is not None
        else (layout.hub_tls() if subject.code == HUB else layout.institution_tls(subject.code))
    )
    if paths.certificate.exists():
        return load_certificate(paths.certificate)
    stem = subject.system or "tls"
    withdrawn = sorted(layout.revoked_directory(subject.code).glob(f"{stem}-*.pem"))
    if not withdrawn:
        raise LookupError(f"{subject.label} has no certificate to imitate")
    return load_certificate(withdrawn[-1])


class Presented:
    """The certificates one scenario presents (``connect``) and withdraws (``revoke``), in
    its network's PKI; the impostors made in ``directory``."""

    def __init__(self, pki: Path, directory: Path) -> None:
        self.pki = pki
        self.ca = PkiLayout(pki).ca().certificate
        self._impostors = Impostors(directory)
        self._revoked: dict[Subject, tuple[Path, Path]] = {}

    def files(self, subject: Subject, which: str) -> tuple[Path, Path] | None:
        """The certificate and key files ``subject`` presents as ``which`` (None: none)."""
        if which == "none":
            return None
        if which == "foreign-ca":
            return self._impostors.like(original_of(self.pki, subject), subject.label)
        if which == "revoked":
            if subject not in self._revoked:
                raise LookupError(f"no revoke step withdrew {subject.label}'s certificate")
            return self._revoked[subject]
        return credentials_of(self.pki, subject, which)

    def revoke(self, subject: Subject) -> str:
        """Withdraw ``subject``'s certificates; where they are listed, in words."""
        if subject.code == HUB:
            raise LookupError("the hub's certificates are not withdrawn by a scenario")
        withdrawn = revoke_for_scenario(self.pki, subject)
        if not withdrawn:
            raise LookupError(f"{subject.label} had no certificate to withdraw")
        self._revoked[subject] = withdrawn[0]
        if subject.system is not None:
            return "its client certificate in its node's back-office CA's revocation list"
        return "its TLS, signing and encryption certificates in the network CA's revocation list"
