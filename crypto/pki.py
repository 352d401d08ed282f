"""A test network PKI on disk: the network CA, the hub, institutions and their back offices.

`init_pki` creates whatever is missing under a directory and never overwrites a file, so it
can be re-run after institutions or back-office systems are added. `PkiLayout` is the one
place that knows where each file lives; the loaders turn those files into `cryptography`
objects.

Certificates live as long as real ones would: the CAs 10 years, TLS and back-office client
certificates 397 days (the CA/Browser Forum's limit), signing and encryption certificates
2 years. `enrol_member` issues an outside member's certificates (keys generated, or from its
own CSRs) and hands them over in a folder; `revoke` withdraws an institution's or a
back-office system's certificates and lists them in the issuing CA's revocation list, which
every listener checks (`crypto.tls.RevocationList`).

Layout (all PEM, keys unencrypted PKCS#8, every file mode 0600, directories 0700)::

    DIR/ca.pem, ca.key                          network CA (EC P-256, 10 years)
    DIR/crl.pem                                 the network CA's revocation list
    DIR/hub/tls.pem|key                         CN=hub, OU=tls
    DIR/hub/signing.pem|key                     CN=hub, OU=signing
    DIR/hub/fugo.key, idcode.key                32 random bytes each (raw, not PEM)
    DIR/institutions/C/tls.pem|key              CN=C, OU=tls
    DIR/institutions/C/signing.pem|key          CN=C, OU=signing
    DIR/institutions/C/encryption.pem|key       CN=C, OU=encryption (RSA 2048)
    DIR/institutions/C/back-office-ca.pem|key   CN="C back office CA", O=C
    DIR/institutions/C/back-office/S.pem|key    CN=S, O=C, OU=back-office
    DIR/institutions/C/back-office-crl.pem      the back-office CA's revocation list
    DIR/institutions/C/revoked/…                certificates withdrawn by `revoke`
    DIR/portal/tls.pem|key                      マイナポータル: CN=P (its code), OU=tls
    DIR/portal/signing.pem|key                  CN=P, OU=signing
    DIR/portal/encryption.pem|key               CN=P, OU=encryption (RSA 2048)

マイナポータル is a party of the network like an institution: its certificates carry its
(emulated) institution code, by which the hub knows it; its TLS certificate is valid for
``portal.renkei.test`` and serves its web pages too.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DOCUMENT_VALIDITY",
    "TLS_VALIDITY",
    "CredentialPaths",
    "Credentials",
    "InstitutionEntry",
    "IssuedCertificates",
    "PeerIdentity",
    "PkiLayout",
    "enrol_member",
    "identity_of",
    "init_pki",
    "load_certificate",
    "load_private_key",
    "load_secret_key",
    "revoke",
    "server_name_of_hub",
    "server_name_of_institution",
    "server_name_of_portal",
]

HUB_COMMON_NAME = "hub"
SECRET_KEY_BYTES = 32
CA_VALIDITY = datetime.timedelta(days=3650)
TLS_VALIDITY = datetime.timedelta(days=397)
DOCUMENT_VALIDITY = datetime.timedelta(days=730)  # signing and encryption certificates
CRL_VALIDITY = datetime.timedelta(days=7)  # next update of a revocation list
# Certificates start an hour in the past so that small clock skews do not reject them.
BACKDATE = datetime.timedelta(hours=1)

# Codes become a DNS label (i<code>.renkei.test) and a directory name; system names a file name.
_CODE_PATTERN = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z-]{0,60}[0-9A-Za-z])?")
_SYSTEM_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")


@dataclass(frozen=True)
class InstitutionEntry:
    """An institution on the network and the back-office systems that call its middleware."""

    code: str
    back_office_systems: tuple[str, ...] = ()


@dataclass(frozen=True)
class CredentialPaths:
    """Where a certificate and its private key are stored."""

    certificate: Path
    key: Path

    def load(self) -> Credentials:
        """Load the certificate and key from these paths."""
        return Credentials.load(self.certificate, self.key)


@dataclass(frozen=True)
class Credentials:
    """A certificate with its private key, loaded once and shared."""

    certificate: x509.Certificate
    private_key: PrivateKeyTypes

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Credentials:
        """Load a PEM certificate and unencrypted PEM key; refuse a key that does not match."""
        certificate = load_certificate(cert_path)
        private_key = load_private_key(key_path)
        if not _same_public_key(certificate.public_key(), private_key):
            raise ValueError(f"{key_path} is not the private key of {cert_path}")
        return cls(certificate, private_key)


@dataclass(frozen=True)
class PeerIdentity:
    """The names in a certificate's subject that the network relies on."""

    common_name: str
    organizational_unit: str | None
    organization: str | None


@functools.lru_cache(maxsize=4096)
def identity_of(cert: x509.Certificate) -> PeerIdentity:
    """Read CN, OU and O from a certificate's subject; each may occur at most once, CN once.

    Remembered per certificate (certificates are equal, and hash, by their DER bytes): the
    requester reads the identity of each payload's signer, the same few certificates again
    and again."""
    common_name = _single_attribute(cert.subject, NameOID.COMMON_NAME)
    if common_name is None:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()} has no common name")
    return PeerIdentity(
        common_name=common_name,
        organizational_unit=_single_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        organization=_single_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
    )


class IssuedCertificates:
    """Certificates checked to be directly issued by ``ca``, each checked once.

    A provider is handed the requester's encryption certificate (DER) in every provision
    request; loading it, checking the CA's signature on it and reading its names cost about
    a millisecond of a flow's CPU. A certificate that passed is remembered by its exact DER
    bytes (the whole certificate, signature included), so the same bytes are never checked
    twice and different bytes, another peer's certificate among them, are always checked
    anew. A certificate that fails is not remembered. At most ``capacity`` are kept (all are
    forgotten when it is reached: a network has a few thousand parties at most).
    """

    def __init__(self, ca: x509.Certificate, capacity: int = 4096) -> None:
        self._ca = ca
        self._capacity = capacity
        self._checked: dict[bytes, tuple[x509.Certificate, PeerIdentity]] = {}

    def check(self, der: bytes) -> tuple[x509.Certificate, PeerIdentity]:
        """The certificate ``der`` and its identity; raises (``ValueError``,
        ``InvalidSignature``, ``TypeError``) if it is unreadable, not issued by the CA or
        nameless."""
        checked = self._checked.get(der)
        if checked is None:
            certificate = x509.load_der_x509_certificate(der)
            certificate.verify_directly_issued_by(self._ca)
            checked = (certificate, identity_of(certificate))
            if len(self._checked) >= self._capacity:
                self._checked.clear()
            self._checked[bytes(der)] = checked
        return checked


def server_name_of_hub() -> str:
    """The DNS name the hub's TLS certificate is checked against."""
    return "hub.renkei.test"


def server_name_of_institution(code: str) -> str:
    """The DNS name an institution's TLS certificate is checked against."""
    return f"i{code}.renkei.test"


def server_name_of_portal() -> str:
    """The DNS name マイナポータル's TLS certificate is checked against."""
    return "portal.renkei.test"


@dataclass(frozen=True)
class PkiLayout:
    """Paths of every file of a PKI directory; the only code that knows the layout."""

    directory: Path

    def ca(self) -> CredentialPaths:
        """The network CA."""
        return self._pair(self.directory, "ca")

    def hub_tls(self) -> CredentialPaths:
        """The hub's TLS server and client certificate."""
        return self._pair(self.directory / "hub", "tls")

    def hub_signing(self) -> CredentialPaths:
        """The hub's XML signing certificate."""
        return self._pair(self.directory / "hub", "signing")

    def hub_fugo_key(self) -> Path:
        """The hub's AES-256 key for the 符号 permutation (32 raw bytes)."""
        return self.directory / "hub" / "fugo.key"

    def hub_idcode_key(self) -> Path:
        """The hub's secret for identification codes (32 raw bytes)."""
        return self.directory / "hub" / "idcode.key"

    def institution_directory(self, code: str) -> Path:
        """The directory holding one institution's files."""
        _check_code(code)
        return self.directory / "institutions" / code

    def institution_tls(self, code: str) -> CredentialPaths:
        """An institution's TLS server and client certificate."""
        return self._pair(self.institution_directory(code), "tls")

    def institution_signing(self, code: str) -> CredentialPaths:
        """An institution's XML signing certificate."""
        return self._pair(self.institution_directory(code), "signing")

    def institution_encryption(self, code: str) -> CredentialPaths:
        """An institution's RSA certificate that payload envelopes are sealed to."""
        return self._pair(self.institution_directory(code), "encryption")

    def institution_person_key(self, code: str) -> Path:
        """An institution's secret for person keys (32 raw bytes): the integrated-address
        function finds a person by HMAC-SHA256 of the individual number under it."""
        return self.institution_directory(code) / "person.key"

    def back_office_ca(self, code: str) -> CredentialPaths:
        """The local CA that issues an institution's back-office client certificates."""
        return self._pair(self.institution_directory(code), "back-office-ca")

    def back_office_client(self, code: str, system: str) -> CredentialPaths:
        """The client certificate of one back-office system of an institution."""
        _check_system(system)
        return self._pair(self.institution_directory(code) / "back-office", system)

    def portal_directory(self) -> Path:
        """The directory holding マイナポータル's files."""
        return self.directory / "portal"

    def portal_tls(self) -> CredentialPaths:
        """マイナポータル's TLS server and client certificate (its web pages too)."""
        return self._pair(self.portal_directory(), "tls")

    def portal_signing(self) -> CredentialPaths:
        """マイナポータル's XML signing certificate."""
        return self._pair(self.portal_directory(), "signing")

    def portal_encryption(self) -> CredentialPaths:
        """マイナポータル's RSA certificate that self-information envelopes are sealed to."""
        return self._pair(self.portal_directory(), "encryption")

    def crl(self) -> Path:
        """The network CA's certificate revocation list."""
        return self.directory / "crl.pem"

    def back_office_crl(self, code: str) -> Path:
        """The revocation list of an institution's back-office CA."""
        return self.institution_directory(code) / "back-office-crl.pem"

    def revoked_directory(self, code: str) -> Path:
        """Where an institution's withdrawn certificates are kept."""
        return self.institution_directory(code) / "revoked"

    @staticmethod
    def _pair(directory: Path, stem: str) -> CredentialPaths:
        return CredentialPaths(directory / f"{stem}.pem", directory / f"{stem}.key")


def load_certificate(path: Path) -> x509.Certificate:
    """Load one PEM certificate."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key."""
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def load_secret_key(path: Path) -> bytes:
    """Load a raw 32-byte symmetric key (such as the hub's fugo.key)."""
    data = Path(path).read_bytes()
    if len(data) != SECRET_KEY_BYTES:
        raise ValueError(f"{path} holds {len(data)} bytes, not {SECRET_KEY_BYTES}")
    return data


def init_pki(
    directory: Path, institutions: Sequence[InstitutionEntry], portal: str | None = None
) -> None:
    """Create every missing file of the test PKI under `directory`; never overwrite one:
    the hub's, each institution's and, with ``portal`` (its institution code),
    マイナポータル's.

    A certificate whose key exists but whose certificate file is missing is re-issued for
    that key. A certificate file without its key, or a missing CA key when something must be
    issued, is an error (fixing it would need an overwrite).
    """
    layout = PkiLayout(Path(directory))
    for entry in institutions:
        _check_code(entry.code)
        for system in entry.back_office_systems:
            _check_system(system)
    if portal is not None:
        _check_code(portal)
    now = datetime.datetime.now(datetime.UTC)
    _make_directory(layout.directory)

    network_ca = _ensure_ca(layout.ca(), _name("Renkei test network CA"), now)

    _make_directory(layout.directory / "hub")
    _ensure_leaf(
        layout.hub_tls(),
        network_ca,
        _name(HUB_COMMON_NAME, unit="tls"),
        _tls_profile(server_name_of_hub()),
        now,
    )
    _ensure_leaf(
        layout.hub_signing(),
        network_ca,
        _name(HUB_COMMON_NAME, unit="signing"),
        _SIGNING,
        now,
    )
    for secret in (layout.hub_fugo_key(), layout.hub_idcode_key()):
        if not secret.exists():
            _write_new(secret, secrets.token_bytes(SECRET_KEY_BYTES))

    if portal is not None:
        _make_directory(layout.portal_directory())
        for paths, subject, profile in (
            (layout.portal_tls(), _name(portal, unit="tls"), _tls_profile(server_name_of_portal())),
            (layout.portal_signing(), _name(portal, unit="signing"), _SIGNING),
            (layout.portal_encryption(), _name(portal, unit="encryption"), _ENCRYPTION),
        ):
            _ensure_leaf(paths, network_ca, subject, profile, now)

    for entry in institutions:
        code = entry.code
        _make_directory(layout.directory / "institutions")
        _make_directory(layout.institution_directory(code))
        for paths, subject, profile in _network_leaves(layout, code):
            _ensure_leaf(paths, network_ca, subject, profile, now)
        if not layout.institution_person_key(code).exists():
            _write_new(layout.institution_person_key(code), secrets.token_bytes(SECRET_KEY_BYTES))
        local_ca = _ensure_ca(
            layout.back_office_ca(code), _name(f"{code} back office CA", organization=code), now
        )
        if entry.back_office_systems:
            _make_directory(layout.institution_directory(code) / "back-office")
        for system in entry.back_office_systems:
            _ensure_leaf(
                layout.back_office_client(code, system),
                local_ca,
                _name(system, unit="back-office", organization=code),
                _BACK_OFFICE_CLIENT,
                now,
            )


def _network_leaves(
    layout: PkiLayout, code: str
) -> list[tuple[CredentialPaths, x509.Name, _Profile]]:
    """An institution's certificates from the network CA: TLS, signing, encryption."""
    return [
        (
            layout.institution_tls(code),
            _name(code, unit="tls"),
            _tls_profile(server_name_of_institution(code)),
        ),
        (layout.institution_signing(code), _name(code, unit="signing"), _SIGNING),
        (layout.institution_encryption(code), _name(code, unit="encryption"), _ENCRYPTION),
    ]


_MEMBER_USES = ("tls", "signing", "encryption")


def enrol_member(
    directory: Path,
    code: str,
    out: Path,
    about: dict[str, str],
    csr_directory: Path | None = None,
) -> list[Path]:
    """Issue an outside member's TLS, signing and encryption certificates from the network
    CA and hand them over in ``out``: with ``csr_directory`` (``tls.csr``, ``signing.csr``,
    ``encryption.csr``) for the member's own keys, which stay with it; else for keys made
    here, written to ``out`` too. ``out`` also gets the network CA (``ca.pem``), the hub's
    signing certificate (``hub-signing.pem``) and ``member.json`` (``about``). The
    certificates (not the keys) are kept in the PKI, where the hub finds them. Nothing is
    overwritten; the files written, in order."""
    layout = PkiLayout(Path(directory))
    _check_code(code)
    now = datetime.datetime.now(datetime.UTC)
    network_ca = _ensure_ca(layout.ca(), _name("Renkei test network CA"), now)
    _make_directory(layout.directory / "institutions")
    _make_directory(layout.institution_directory(code))
    _make_directory(out)
    written = []
    for use, (paths, subject, profile) in zip(
        _MEMBER_USES, _network_leaves(layout, code), strict=True
    ):
        if csr_directory is None:
            _ensure_leaf(paths, network_ca, subject, profile, now)
            key = out / f"{use}.key"
            _write_new(key, paths.key.read_bytes())
            written.append(key)
        else:
            if paths.certificate.exists():
                raise FileExistsError(f"{paths.certificate} exists: revoke it first")
            public_key = _requested_key(csr_directory / f"{use}.csr", profile)
            certificate = _issue(network_ca, subject, public_key, profile, now)
            _write_new(paths.certificate, certificate.public_bytes(serialization.Encoding.PEM))
        certificate_copy = out / f"{use}.pem"
        _write_new(certificate_copy, paths.certificate.read_bytes())
        written.append(certificate_copy)
    for name, source in (
        ("ca.pem", layout.ca().certificate),
        ("hub-signing.pem", layout.hub_signing().certificate),
    ):
        if source.exists():
            _write_new(out / name, source.read_bytes())
            written.append(out / name)
    _write_new(out / "member.json", json.dumps(about, ensure_ascii=False, indent=2).encode())
    written.append(out / "member.json")
    return written


def _requested_key(path: Path, profile: _Profile) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a certificate signing request, checked: its signature holds and
    its key is of the profile's type (EC P-256 or RSA of 2048 bits or more)."""
    try:
        request = x509.load_pem_x509_csr(path.read_bytes())
    except ValueError:
        raise ValueError(f"{path} is not a PEM certificate signing request") from None
    if not request.is_signature_valid:
        raise ValueError(f"{path}: the request's signature does not hold")
    key = request.public_key()
    if profile.key_type == "rsa":
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            raise ValueError(f"{path}: an encryption key is RSA of 2048 bits or more")
        return key
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path}: a TLS or signing key is EC P-256")
    return key


def revoke(directory: Path, code: str, system: str | None = None) -> list[x509.Certificate]:
    """Withdraw an institution's certificates from the network CA (TLS, signing,
    encryption), or with ``system`` one back-office system's client certificate: each is
    listed in its CA's revocation list (re-signed) and moved to the institution's
    ``revoked`` folder, so that `init_pki` or `enrol_member` may issue a new one. The
    certificates withdrawn."""
    layout = PkiLayout(Path(directory))
    now = datetime.datetime.now(datetime.UTC)
    if system is None:
        ca_paths, crl = layout.ca(), layout.crl()
        targets = [paths for paths, _, _ in _network_leaves(layout, code)]
    else:
        ca_paths, crl = layout.back_office_ca(code), layout.back_office_crl(code)
        targets = [layout.back_office_client(code, system)]
    present = [paths for paths in targets if paths.certificate.exists()]
    if not present:
        raise FileNotFoundError(f"no certificate to revoke for {system or code}")
    if not ca_paths.certificate.exists():
        raise FileNotFoundError(f"{ca_paths.certificate} is missing: nothing was issued by it")
    issuer = _ensure_ca(ca_paths, _name("unused"), now)  # loads the CA that exists
    withdrawn = [load_certificate(paths.certificate) for paths in present]
    _write_crl(crl, issuer, withdrawn, now)
    _make_directory(layout.revoked_directory(code))
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for paths, certificate in zip(present, withdrawn, strict=True):
        stem = f"{system or paths.certificate.stem}-{certificate.serial_number:x}-{stamp}"
        for source, suffix in ((paths.certificate, "pem"), (paths.key, "key")):
            if source.exists():
                os.replace(source, layout.revoked_directory(code) / f"{stem}.{suffix}")
    return withdrawn


def _write_crl(
    path: Path, issuer: _Issuer, withdrawn: list[x509.Certificate], now: datetime.datetime
) -> None:
    """Re-sign the revocation list at ``path`` with ``withdrawn`` added to what it lists."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
    )
    listed: set[int] = set()
    if path.exists():
        for entry in x509.load_pem_x509_crl(path.read_bytes()):
            builder = builder.add_revoked_certificate(entry)
            listed.add(entry.serial_number)
    for certificate in withdrawn:
        if certificate.serial_number not in listed:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(certificate.serial_number)
                .revocation_date(now)
                .build()
            )
    signed = builder.sign(issuer.key, hashes.SHA256())
    written = path.with_suffix(".tmp")
    written.unlink(missing_ok=True)
    _write_new(written, signed.public_bytes(serialization.Encoding.PEM))
    os.replace(written, path)


# Certificate profiles ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    key_type: str  # "ec" or "rsa"
    validity: datetime.timedelta
    key_usage: x509.KeyUsage
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_encipherment: bool = False,
    data_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=data_encipherment,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _tls_profile(server_name: str) -> _Profile:
    return _Profile(
        key_type="ec",
        validity=TLS_VALIDITY,
        key_usage=_key_usage(digital_signature=True),
        extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        dns_names=(server_name, "localhost"),
        ip_addresses=("127.0.0.1",),
    )


_SIGNING = _Profile(
    key_type="ec",
    validity=DOCUMENT_VALIDITY,
    key_usage=_key_usage(digital_signature=True, content_commitment=True),
)
_ENCRYPTION = _Profile(
    key_type="rsa",
    validity=DOCUMENT_VALIDITY,
    key_usage=_key_usage(key_encipherment=True, data_encipherment=True),
)
_BACK_OFFICE_CLIENT = _Profile(
    key_type="ec",
    validity=TLS_VALIDITY,
    key_usage=_key_usage(digital_signature=True),
    extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
)


def _name(
    common_name: str, *, unit: str | None = None, organization: str | None = None
) -> x509.Name:
    attributes = []
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


# Issuing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issuer:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


def _ensure_ca(paths: CredentialPaths, subject: x509.Name, now: datetime.datetime) -> _Issuer:
    """Load the CA at `paths`, creating it (self-signed EC P-256) when neither file exists."""
    if paths.certificate.exists():
        if not paths.key.exists():
            raise FileNotFoundError(
                f"{paths.key} is missing; cannot issue from {paths.certificate}"
            )
        credentials = paths.load()
        return _Issuer(credentials.certificate, _issuer_key(credentials.private_key, paths.key))
    key = _existing_or_new_key(paths.key, "ec")
    issuer_key = _issuer_key(key, paths.key)
    public_key = issuer_key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    _write_new(paths.certificate, certificate.public_bytes(serialization.Encoding.PEM))
    return _Issuer(certificate, issuer_key)


def _ensure_leaf(
    paths: CredentialPaths,
    issuer: _Issuer,
    subject: x509.Name,
    profile: _Profile,
    now: datetime.datetime,
) -> None:
    """Issue the end-entity certificate at `paths` unless it exists."""
    if paths.certificate.exists():
        if not paths.key.exists():
            raise FileNotFoundError(f"{paths.key} is missing for existing {paths.certificate}")
        return
    key = _existing_or_new_key(paths.key, profile.key_type)
    public_key = key.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"{paths.key} holds an unsupported key type")
    certificate = _issue(issuer, subject, public_key, profile, now)
    _write_new(paths.certificate, certificate.public_bytes(serialization.Encoding.PEM))


def _issue(
    issuer: _Issuer,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    profile: _Profile,
    now: datetime.datetime,
) -> x509.Certificate:
    """A certificate of ``profile`` for ``public_key``, signed by ``issuer``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        # A certificate never outlives its issuer.
        .not_valid_after(min(now + profile.validity, issuer.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profile.key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                issuer.certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value
            ),
            critical=False,
        )
    )
    if profile.extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(profile.extended_key_usage)), critical=False
        )
    if profile.dns_names or profile.ip_addresses:
        general_names: list[x509.GeneralName] = [x509.DNSName(n) for n in profile.dns_names]
        general_names += [
            x509.IPAddress(ipaddress.ip_address(address)) for address in profile.ip_addresses
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def _existing_or_new_key(path: Path, key_type: str) -> PrivateKeyTypes:
    """Reuse the key at `path` if there is one (its certificate went missing), else create it."""
    if path.exists():
        return load_private_key(path)
    key: PrivateKeyTypes
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, pem)
    return key


def _issuer_key(key: PrivateKeyTypes, path: Path) -> CertificateIssuerPrivateKeyTypes:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not a key that can issue certificates")
    return key


# Files ------------------------------------------------------------------------------------


def _make_directory(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    """Write `data` to a new file with mode 0600, atomically; fail if `path` exists."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # link() never replaces an existing file, unlike rename().
        os.link(temporary, path)
    finally:
        os.unlink(temporary)


# Helpers ----------------------------------------------------------------------------------


def _check_code(code: str) -> None:
    if not _CODE_PATTERN.fullmatch(code):
        raise ValueError(f"{code!r} cannot be used as an institution code in the PKI")


def _check_system(system: str) -> None:
    if not _SYSTEM_PATTERN.fullmatch(system):
        raise ValueError(f"{system!r} cannot be used as a back-office system name in the PKI")


def _single_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    if not attributes:
        return None
    if len(attributes) > 1:
        raise ValueError(f"{name.rfc4514_string()} has more than one {oid.dotted_string}")
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8")


def _same_public_key(public_key: CertificatePublicKeyTypes, private_key: PrivateKeyTypes) -> bool:
    encoding = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return public_key.public_bytes(encoding, spki) == private_key.public_key().public_bytes(
            encoding, spki
        )
    except (TypeError, ValueError):
        return False
