"""XML Signature (enveloped, ECDSA P-256 / SHA-256, exclusive c14n) with signxml.

Signed elements travel inside bigger documents, so an element is always signed as a
standalone document (a copy becomes the root, the signature covers URI="" and is appended
as its last child) and verified the same way: the element is first copied into a document
of its own. Exclusive canonicalization keeps the signature valid whatever namespace
declarations the surrounding document carries.

Verification returns only what signxml reports as signed (`VerifyResult.signed_xml`): a
copy of the element without its ds:Signature. Callers must act on that return value, never
on the element they passed in (signature wrapping).

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
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.util import X509CertChainVerifier

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
SIGNATURE_TAG = f"{{{DS_NAMESPACE}}}Signature"
SIGNING_UNIT = "signing"
_REFERENCE_PATH = f"{{{DS_NAMESPACE}}}SignedInfo/{{{DS_NAMESPACE}}}Reference"

_CONFIG = SignatureConfiguration(
    require_x509=True,
    # ds:Signature must be a direct child of the (copied) element.
    location="./",
    expect_references=1,
    signature_methods=frozenset({SignatureMethod.ECDSA_SHA256}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)


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
        self._key = key
        self._certificate = credentials.certificate
        self._signer = XMLSigner(
            signature_algorithm=SignatureMethod.ECDSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate included in every signature's KeyInfo."""
        return self._certificate

    def sign(self, element: etree._Element) -> etree._Element:
        """Return a signed copy of `element` (a new root; ds:Signature is its last child).

        The argument is left untouched; embed the returned element where it belongs.
        """
        signed: etree._Element = self._signer.sign(
            _standalone(element), key=self._key, cert=[self._certificate]
        )
        return signed


class PinnedVerifier:
    """Verifies signatures made with exactly one certificate's key; create once and reuse."""

    def __init__(self, certificate: x509.Certificate) -> None:
        """Pin `certificate`; whatever KeyInfo a signature carries is ignored."""
        self._certificate = certificate

    @property
    def certificate(self) -> x509.Certificate:
        """The pinned certificate."""
        return self._certificate

    def verify(self, element: etree._Element) -> etree._Element:
        """Return the signed content of `element` (without ds:Signature) or raise."""
        return _verify_with(element, self._certificate, _CONFIG)


class CAVerifier:
    """Verifies signatures whose KeyInfo certificate chains to one CA; create once and reuse.

    The certificate path is validated by signxml (cryptography's X.509 verifier): the signer
    certificate must be valid now, carry KeyUsage digitalSignature, SKI/AKI, and be issued
    by `ca`, and its subject OU must be `required_unit` ("signing" by default, so that a
    TLS key cannot stand in for a signing key; None accepts any). The caller decides which
    signer is acceptable (its CN) from the returned certificate.
    """

    def __init__(self, ca: x509.Certificate, *, required_unit: str | None = SIGNING_UNIT) -> None:
        """Trust only `ca`; accept signer certificates whose OU is `required_unit`."""
        self._store = x509.verification.Store([ca])
        self._required_unit = required_unit

    def verify(self, element: etree._Element) -> tuple[etree._Element, x509.Certificate]:
        """Return the signed content of `element` and the signer's certificate, or raise."""
        verifier = _StoreXMLVerifier(self._store)
        try:
            result = verifier.verify(_standalone(element), expect_config=_CONFIG)
            signed = _signed_element(result)
        except SignatureInvalid:
            raise
        except Exception as exc:
            raise SignatureInvalid(f"{type(exc).__name__}: {exc}") from exc
        if verifier.signing_certificate is None:  # pragma: no cover - signxml always sets it
            raise SignatureInvalid("no certificate was validated")
        signer = verifier.signing_certificate
        if self._required_unit is not None:
            try:
                unit = identity_of(signer).organizational_unit
            except ValueError as exc:
                raise SignatureInvalid(str(exc)) from exc
            if unit != self._required_unit:
                raise SignatureInvalid(
                    f"{signer.subject.rfc4514_string()} is not a {self._required_unit} certificate"
                )
        return signed, signer


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
        signer = _key_info_certificate(_standalone(element))
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
        # The key is checked, not the time: "verify" at a moment the certificate was valid.
        config = dataclasses.replace(_CONFIG, verification_time=signer.not_valid_before_utc)
        return _verify_with(element, signer, config), signer


def _verify_with(
    element: etree._Element, certificate: x509.Certificate, config: SignatureConfiguration
) -> etree._Element:
    """The signed content of `element` if `certificate`'s key signed it, else raise."""
    try:
        result = XMLVerifier().verify(
            _standalone(element), x509_cert=certificate, expect_config=config
        )
        return _signed_element(result)
    except SignatureInvalid:
        raise
    except Exception as exc:
        raise SignatureInvalid(f"{type(exc).__name__}: {exc}") from exc


def _key_info_certificate(element: etree._Element) -> x509.Certificate:
    """The one certificate in the KeyInfo of `element`'s enveloped signature."""
    signatures = [child for child in element if child.tag == SIGNATURE_TAG]
    if len(signatures) != 1:
        raise SignatureInvalid("the element must carry exactly one ds:Signature")
    found = signatures[0].findall(
        f"{{{DS_NAMESPACE}}}KeyInfo/{{{DS_NAMESPACE}}}X509Data/{{{DS_NAMESPACE}}}X509Certificate"
    )
    if len(found) != 1:
        raise SignatureInvalid("the signature must carry exactly one X509Certificate")
    try:
        der = base64.b64decode("".join((found[0].text or "").split()), validate=True)
        return x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error) as exc:
        raise SignatureInvalid(f"the signature's certificate cannot be read: {exc}") from exc


def verify_pinned(element: etree._Element, certificate: x509.Certificate) -> etree._Element:
    """Verify `element` against exactly `certificate`; return only the signed content."""
    return PinnedVerifier(certificate).verify(element)


def verify_with_ca(
    element: etree._Element, ca: x509.Certificate, *, required_unit: str | None = SIGNING_UNIT
) -> tuple[etree._Element, x509.Certificate]:
    """Verify `element` with path validation to `ca`; return the signed content and signer."""
    return CAVerifier(ca, required_unit=required_unit).verify(element)


def _standalone(element: etree._Element) -> etree._Element:
    """Copy `element` into a document of its own (in-scope namespaces come along)."""
    if not isinstance(element, etree._Element) or not isinstance(element.tag, str):
        raise SignatureInvalid("only an XML element can be signed or verified")
    standalone = copy.deepcopy(element)
    standalone.tail = None
    return standalone


def _signed_element(result: Any) -> etree._Element:
    """Extract signxml's `signed_xml`, insisting the one reference covered the whole element."""
    references = result.signature_xml.findall(_REFERENCE_PATH)
    if len(references) != 1 or references[0].get("URI") != "":
        raise SignatureInvalid('the signature must have exactly one reference, URI=""')
    signed = result.signed_xml
    if not isinstance(signed, etree._Element):
        raise SignatureInvalid("the signed data is not an XML element")
    return signed


class _StoreChainVerifier(X509CertChainVerifier):
    """signxml's chain verifier with a preloaded trust store instead of a PEM file."""

    def __init__(self, store: x509.verification.Store, **kwargs: Any) -> None:
        self._preloaded_store = store
        self.verified: x509.Certificate | None = None
        super().__init__(ca_pem_file="(preloaded)", **kwargs)

    @property
    def store(self) -> x509.verification.Store:
        return self._preloaded_store

    def verify(self, cert_chain: list[x509.Certificate]) -> x509.Certificate:
        verified: x509.Certificate = super().verify(cert_chain)
        self.verified = verified
        return verified


class _StoreXMLVerifier(XMLVerifier):
    """One verification against a preloaded store; remembers the validated signer."""

    def __init__(self, store: x509.verification.Store) -> None:
        super().__init__()
        self._store = store
        self._chain_verifier: _StoreChainVerifier | None = None

    def get_cert_chain_verifier(
        self, ca_pem_file: Any, ee_policy: Any, ca_policy: Any
    ) -> _StoreChainVerifier:
        self._chain_verifier = _StoreChainVerifier(
            self._store,
            verification_time=self._get_cert_verification_time(),
            ee_policy=ee_policy,
            ca_policy=ca_policy,
        )
        return self._chain_verifier

    @property
    def signing_certificate(self) -> x509.Certificate | None:
        if self._chain_verifier is None:
            return None
        return self._chain_verifier.verified
