"""XML Signature (enveloped, ECDSA P-256 / SHA-256, exclusive c14n) with libxmlsec1.

Signed elements travel inside bigger documents, so an element is always signed as a
standalone document (a copy becomes the root, the signature covers URI="" and is appended
as its last child) and verified the same way: the element is first copied into a document
of its own. Exclusive canonicalization keeps the signature valid whatever namespace
declarations the surrounding document carries.

Signing and verifying are libxmlsec1's (python-xmlsec), restricted to the one profile of
docs/protocol.md: verification accepts exactly one ds:Signature child of the element, with
exactly one Reference, URI="", and libxmlsec1 refuses any algorithm but exclusive c14n and
ECDSA-SHA256 for SignedInfo and any transform but enveloped-signature, exclusive c14n and a
SHA-256 digest for the Reference. The key is never taken from KeyInfo by libxmlsec1: it is the
pinned certificate's, or that of the KeyInfo certificate once this module has validated it.

Verification returns only what the signature covers: the element without its ds:Signature,
in its exclusive canonical form (comments, which URI="" does not sign, are gone) parsed anew.
Callers must act on that return value, never on the element they passed in (signature
wrapping).

python-xmlsec and lxml each carry a libxml2 of their own and must carry the same version
(python-xmlsec refuses to import otherwise): pyproject.toml pins both.

Build a `Signer`, `PinnedVerifier` or `CAVerifier` once at start and reuse it; the
module-level `verify_pinned` and `verify_with_ca` are conveniences for cold paths. A document
kept for years (a hash chain's checkpoint) outlives the certificate it was signed with:
`IssuedVerifier` checks that its signer's certificate was issued by the CA, whatever its
validity period now.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from crypto.pki import Credentials, identity_of

__all__ = [
    "SIGNATURE_TAG",
    "CAVerifier",
    "IssuedVerifier",
    "PinnedVerifier",
    "SignatureInvalid",
    "Signer",
    "verify_pinned",
    "verify_with_ca",
]

DS_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"
DSIG11_NAMESPACE = "http://www.w3.org/2009/xmldsig11#"
SIGNATURE_TAG = f"{{{DS_NAMESPACE}}}Signature"
SIGNING_UNIT = "signing"
_TRANSFORMS = xmlsec.constants
# What libxmlsec1 may meet: in SignedInfo, and in the Reference (its transforms and digest).
_SIGNATURE_TRANSFORMS = (_TRANSFORMS.TransformExclC14N, _TRANSFORMS.TransformEcdsaSha256)
_REFERENCE_TRANSFORMS = (
    _TRANSFORMS.TransformEnveloped,
    _TRANSFORMS.TransformExclC14N,
    _TRANSFORMS.TransformSha256,
)
# Signer certificates whose path validation a CAVerifier remembers (a network has a few).
_TRUSTED_SIGNERS_KEPT = 64


class SignatureInvalid(Exception):
    """The element is not validly signed by the expected key; the message says why."""


class Signer:
    """Signs elements with one EC P-256 key; create once and reuse."""

    def __init__(self, credentials: Credentials) -> None:
        """Keep the key and certificate; refuse anything but an EC P-256 key."""
        key = credentials.private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("XML signing needs an EC P-256 private key")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._key = xmlsec.Key.from_memory(pem, _TRANSFORMS.KeyDataFormatPem)
        self._certificate = credentials.certificate
        der = credentials.certificate.public_bytes(serialization.Encoding.DER)
        self._certificate_text = base64.b64encode(der).decode("ascii")

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate included in every signature's KeyInfo."""
        return self._certificate

    def sign(self, element: etree._Element) -> etree._Element:
        """Return a signed copy of `element` (a new root; ds:Signature is its last child).

        The argument is left untouched; embed the returned element where it belongs.
        """
        signed = _standalone(element)
        signature = xmlsec.template.create(
            signed, _TRANSFORMS.TransformExclC14N, _TRANSFORMS.TransformEcdsaSha256, ns="ds"
        )
        signed.append(signature)
        reference = xmlsec.template.add_reference(signature, _TRANSFORMS.TransformSha256, uri="")
        xmlsec.template.add_transform(reference, _TRANSFORMS.TransformEnveloped)
        xmlsec.template.add_transform(reference, _TRANSFORMS.TransformExclC14N)
        context = xmlsec.SignatureContext()
        context.key = self._key
        context.sign(signature)
        # KeyInfo is not signed: written here rather than by libxmlsec1, which would copy the
        # certificate into every signing context.
        key_info = etree.SubElement(signature, _ds("KeyInfo"))
        x509_data = etree.SubElement(key_info, _ds("X509Data"))
        etree.SubElement(x509_data, _ds("X509Certificate")).text = self._certificate_text
        return signed


class PinnedVerifier:
    """Verifies signatures made with exactly one certificate's key; create once and reuse."""

    def __init__(self, certificate: x509.Certificate) -> None:
        """Pin `certificate`; whatever KeyInfo a signature carries is ignored."""
        self._certificate = certificate
        self._key = _verification_key(certificate)

    @property
    def certificate(self) -> x509.Certificate:
        """The pinned certificate."""
        return self._certificate

    def verify(self, element: etree._Element) -> etree._Element:
        """Return the signed content of `element` (without ds:Signature) or raise.

        The pinned certificate must be valid now (not yet valid or expired: refused)."""
        _check_validity(self._certificate, _now())
        return _verify(_standalone(element), self._key)


@dataclasses.dataclass(frozen=True)
class _TrustedSigner:
    """A signer certificate whose path to the CA was validated, and while that holds."""

    key: xmlsec.Key
    valid_from: datetime.datetime
    valid_until: datetime.datetime


class CAVerifier:
    """Verifies signatures whose KeyInfo certificate chains to one CA; create once and reuse.

    The certificate path is validated with cryptography's X.509 verifier (as signxml did):
    the one KeyInfo certificate must be valid now, carry KeyUsage digitalSignature (the
    web-PKI defaults for the CA), and be issued by `ca`; its subject OU must be
    `required_unit` ("signing" by default, so that a TLS key cannot stand in for a signing
    key; None accepts any). A certificate that passed is remembered with the period in which
    every certificate of its path is valid, and not validated again within it (nothing else
    in the validation depends on the time). The caller decides which signer is acceptable
    (its CN) from the returned certificate.
    """

    def __init__(self, ca: x509.Certificate, *, required_unit: str | None = SIGNING_UNIT) -> None:
        """Trust only `ca`; accept signer certificates whose OU is `required_unit`."""
        self._store = x509.verification.Store([ca])
        self._required_unit = required_unit
        self._trusted: dict[bytes, _TrustedSigner] = {}

    def verify(self, element: etree._Element) -> tuple[etree._Element, x509.Certificate]:
        """Return the signed content of `element` and the signer's certificate, or raise."""
        standalone = _standalone(element)
        signer = _key_info_certificate(standalone)
        return _verify(standalone, self._trusted_key(signer)), signer

    def _trusted_key(self, signer: x509.Certificate) -> xmlsec.Key:
        """The key of `signer` once its path to the CA is valid now, or raise."""
        now = _now()
        der = signer.public_bytes(serialization.Encoding.DER)
        trusted = self._trusted.get(der)
        if trusted is not None and trusted.valid_from <= now <= trusted.valid_until:
            return trusted.key
        verifier = (
            x509.verification.PolicyBuilder()
            .store(self._store)
            .extension_policies(ee_policy=_SIGNER_POLICY, ca_policy=_CA_POLICY)
            .time(now)
            .build_client_verifier()
        )
        name = signer.subject.rfc4514_string()
        try:
            chain = verifier.verify(signer, []).chain
        except x509.verification.VerificationError as exc:
            _check_validity(signer, now)
            raise SignatureInvalid(f"{name}: {exc}") from exc
        if self._required_unit is not None:
            try:
                unit = identity_of(signer).organizational_unit
            except ValueError as exc:
                raise SignatureInvalid(str(exc)) from exc
            if unit != self._required_unit:
                raise SignatureInvalid(f"{name} is not a {self._required_unit} certificate")
        if len(self._trusted) >= _TRUSTED_SIGNERS_KEPT:
            self._trusted.clear()
        self._trusted[der] = trusted = _TrustedSigner(
            _verification_key(signer),
            max(certificate.not_valid_before_utc for certificate in chain),
            min(certificate.not_valid_after_utc for certificate in chain),
        )
        return trusted.key


class IssuedVerifier:
    """Verifies signatures kept for years, whose signer's certificate may have expired (or
    been renewed) since: the one KeyInfo certificate must have been issued by `ca` (its
    signature checked with the CA's key), carry KeyUsage digitalSignature and the subject OU
    `required_unit`; its validity period is not looked at. The caller decides which signer is
    acceptable (its CN) from the returned certificate. Create once and reuse.
    """

    def __init__(self, ca: x509.Certificate, *, required_unit: str = SIGNING_UNIT) -> None:
        """Trust certificates issued by `ca` whose OU is `required_unit`."""
        self._ca = ca
        self._required_unit = required_unit

    def verify(self, element: etree._Element) -> tuple[etree._Element, x509.Certificate]:
        """Return the signed content of `element` and the signer's certificate, or raise."""
        standalone = _standalone(element)
        signer = _key_info_certificate(standalone)
        name = signer.subject.rfc4514_string()
        try:
            signer.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise SignatureInvalid(f"{name} was not issued by the trusted CA") from exc
        try:
            usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
            unit = identity_of(signer).organizational_unit
        except (x509.ExtensionNotFound, ValueError) as exc:
            raise SignatureInvalid(f"{name}: {exc}") from exc
        if not usage.digital_signature:
            raise SignatureInvalid(f"{name} may not sign (KeyUsage)")
        if unit != self._required_unit:
            raise SignatureInvalid(f"{name} is not a {self._required_unit} certificate")
        return _verify(standalone, _verification_key(signer)), signer


def verify_pinned(element: etree._Element, certificate: x509.Certificate) -> etree._Element:
    """Verify `element` against exactly `certificate`; return only the signed content."""
    return PinnedVerifier(certificate).verify(element)


def verify_with_ca(
    element: etree._Element, ca: x509.Certificate, *, required_unit: str | None = SIGNING_UNIT
) -> tuple[etree._Element, x509.Certificate]:
    """Verify `element` with path validation to `ca`; return the signed content and signer."""
    return CAVerifier(ca, required_unit=required_unit).verify(element)


def _ds(name: str) -> str:
    return f"{{{DS_NAMESPACE}}}{name}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _standalone(element: etree._Element) -> etree._Element:
    """Copy `element` into a document of its own (in-scope namespaces come along)."""
    if not isinstance(element, etree._Element) or not isinstance(element.tag, str):
        raise SignatureInvalid("only an XML element can be signed or verified")
    standalone = copy.deepcopy(element)
    standalone.tail = None
    return standalone


def _signature(standalone: etree._Element) -> etree._Element:
    """The element's one enveloped ds:Signature (a direct child)."""
    signatures = [child for child in standalone if child.tag == SIGNATURE_TAG]
    if len(signatures) != 1:
        raise SignatureInvalid("the element must carry exactly one ds:Signature")
    return signatures[0]


def _key_info_certificate(standalone: etree._Element) -> x509.Certificate:
    """The one certificate in the KeyInfo of `standalone`'s enveloped signature."""
    found = _signature(standalone).findall(
        f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}"
    )
    if len(found) != 1:
        raise SignatureInvalid("the signature must carry exactly one X509Certificate")
    try:
        der = base64.b64decode("".join((found[0].text or "").split()), validate=True)
        return x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error) as exc:
        raise SignatureInvalid(f"the signature's certificate cannot be read: {exc}") from exc


def _verify(standalone: etree._Element, key: xmlsec.Key) -> etree._Element:
    """The signed content of `standalone` (a copy, its own root) if `key` signed it."""
    signature = _signature(standalone)
    references = signature.findall(f"{_ds('SignedInfo')}/{_ds('Reference')}")
    if len(references) != 1 or references[0].get("URI") != "":
        raise SignatureInvalid('the signature must have exactly one reference, URI=""')
    # A key in KeyInfo other than the certificate could not be the one that verifies (signxml
    # refused it when it differed): refused whatever it is.
    key_info = signature.find(_ds("KeyInfo"))
    if key_info is not None and (
        key_info.find(_ds("KeyValue")) is not None
        or key_info.find(f"{{{DSIG11_NAMESPACE}}}DEREncodedKeyValue") is not None
    ):
        raise SignatureInvalid("the signature's KeyInfo may carry only X509Data")
    context = xmlsec.SignatureContext()
    context.key = key
    for transform in _SIGNATURE_TRANSFORMS:
        context.enable_signature_transform(transform)
    for transform in _REFERENCE_TRANSFORMS:
        context.enable_reference_transform(transform)
    try:
        context.verify(signature)
    except xmlsec.VerificationError as exc:
        raise SignatureInvalid(f"the signature does not verify: {exc}") from exc
    except xmlsec.Error as exc:
        raise SignatureInvalid(
            f"the signature is malformed or uses another algorithm or transform: {exc}"
        ) from exc
    _remove_enveloped(signature)
    # What the digest covered, as the enveloped-signature and exclusive c14n transforms made it.
    signed_bytes = etree.tostring(standalone, method="c14n", exclusive=True, with_comments=False)
    return etree.fromstring(signed_bytes, _CANONICAL_PARSER)


def _remove_enveloped(signature: etree._Element) -> None:
    """Take ds:Signature out of its parent as the enveloped-signature transform does: the
    node only, its tail text staying where it was (lxml's remove would take the tail too)."""
    parent = signature.getparent()
    assert parent is not None  # the signature is a child of the element
    if signature.tail:
        previous = signature.getprevious()
        if previous is None:
            parent.text = (parent.text or "") + signature.tail
        else:
            previous.tail = (previous.tail or "") + signature.tail
    parent.remove(signature)


def _verification_key(certificate: x509.Certificate) -> xmlsec.Key:
    """`certificate`'s public key for libxmlsec1."""
    pem = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        return xmlsec.Key.from_memory(pem, _TRANSFORMS.KeyDataFormatPem)
    except xmlsec.Error as exc:
        raise SignatureInvalid(f"{certificate.subject.rfc4514_string()}: {exc}") from exc


def _check_validity(certificate: x509.Certificate, now: datetime.datetime) -> None:
    """Raise unless `certificate` is within its validity period at `now`."""
    valid_from, valid_until = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if valid_from <= now <= valid_until:
        return
    state = "is not yet valid" if now < valid_from else "has expired"
    raise SignatureInvalid(
        f"{certificate.subject.rfc4514_string()}: certificate {state} at {now.isoformat()} "
        f"(valid from {valid_from.isoformat()} until {valid_until.isoformat()})"
    )


def _require_digital_signature(
    policy: x509.verification.Policy, certificate: x509.Certificate, usage: x509.KeyUsage
) -> None:
    if not usage.digital_signature:
        raise ValueError("certificate KeyUsage does not allow digitalSignature")


# signxml's policies: the signer certificate must carry KeyUsage with digitalSignature, the CA
# follows the web-PKI defaults.
_SIGNER_POLICY = x509.verification.ExtensionPolicy.permit_all().require_present(
    x509.KeyUsage, x509.verification.Criticality.AGNOSTIC, _require_digital_signature
)
_CA_POLICY = x509.verification.ExtensionPolicy.webpki_defaults_ca()
# Canonical XML has no DTD, entity or comment; nothing to resolve, nothing to fetch.
_CANONICAL_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
