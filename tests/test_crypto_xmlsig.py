"""Tests for crypto.xmlsig: enveloped ECDSA XML signatures, pinned and CA-validated."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner

from crypto.pki import Credentials, PkiLayout, identity_of, load_certificate
from crypto.xmlsig import (
    SIGNATURE_TAG,
    CAVerifier,
    IssuedVerifier,
    PinnedVerifier,
    SignatureInvalid,
    Signer,
    verify_pinned,
    verify_with_ca,
)
from tests.certs import BACK_OFFICE_SYSTEM, INSTITUTION, OTHER_INSTITUTION, make_pki

DS = "http://www.w3.org/2000/09/xmldsig#"
PERMIT = b"""<p:Permit xmlns:p="urn:renkei:permit" xmlns:x="urn:renkei:extra">
  <p:Transaction>T0001</p:Transaction>
  <p:Provider x:kind="municipality">1131105000000000</p:Provider>
  <p:Note>\xe7\xac\xa6\xe5\x8f\xb7</p:Note>
</p:Permit>"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def foreign_layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("foreign-pki"))


@pytest.fixture(scope="module")
def ca(layout: PkiLayout) -> x509.Certificate:
    return load_certificate(layout.ca().certificate)


@pytest.fixture(scope="module")
def signer(layout: PkiLayout) -> Signer:
    return Signer(layout.institution_signing(INSTITUTION).load())


def _permit() -> etree._Element:
    return etree.fromstring(PERMIT)


def _text(element: etree._Element, name: str) -> str | None:
    return element.findtext(f"{{urn:renkei:permit}}{name}")


def test_sign_appends_an_exclusive_c14n_ecdsa_signature_with_the_certificate(
    signer: Signer,
) -> None:
    """The signature is the element's last child: ECDSA-SHA256, exc-c14n, URI="", X.509 inside."""
    original = _permit()
    signed = signer.sign(original)
    signature = signed[-1]
    assert signature.tag == SIGNATURE_TAG
    ns = {"ds": DS}
    exc_c14n = "http://www.w3.org/2001/10/xml-exc-c14n#"
    assert signature.xpath("ds:SignedInfo/ds:CanonicalizationMethod/@Algorithm", namespaces=ns) == [
        exc_c14n
    ]
    assert signature.xpath("ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=ns) == [
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    ]
    assert signature.xpath("ds:SignedInfo/ds:Reference/@URI", namespaces=ns) == [""]
    assert signature.xpath(
        "ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform/@Algorithm", namespaces=ns
    ) == ["http://www.w3.org/2000/09/xmldsig#enveloped-signature", exc_c14n]
    certificates = signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=ns)
    assert len(certificates) == 1
    assert original.find(SIGNATURE_TAG) is None, "the argument must not be modified"


def test_verify_pinned_returns_the_signed_content_without_the_signature(signer: Signer) -> None:
    """A round trip yields the signed element's content, with ds:Signature removed."""
    verified = verify_pinned(signer.sign(_permit()), signer.certificate)
    assert verified.tag == "{urn:renkei:permit}Permit"
    assert _text(verified, "Transaction") == "T0001"
    assert _text(verified, "Note") == "符号"
    assert verified.find(f".//{SIGNATURE_TAG}") is None


def test_verify_pinned_refuses_a_signature_by_another_key(
    layout: PkiLayout, signer: Signer
) -> None:
    """A signature by another institution's key fails against the pinned certificate."""
    other = Signer(layout.institution_signing(OTHER_INSTITUTION).load())
    with pytest.raises(SignatureInvalid):
        verify_pinned(other.sign(_permit()), signer.certificate)


def test_verify_pinned_ignores_the_certificate_carried_in_key_info(
    layout: PkiLayout, signer: Signer
) -> None:
    """The pinned certificate wins even when KeyInfo carries a valid certificate of the signer."""
    hub = Signer(layout.hub_signing().load())
    signed = hub.sign(_permit())
    assert verify_pinned(signed, hub.certificate) is not None
    with pytest.raises(SignatureInvalid):
        verify_pinned(signed, signer.certificate)


def test_verify_pinned_refuses_a_tampered_element(signer: Signer) -> None:
    """Changing signed content after signing breaks the digest."""
    signed = signer.sign(_permit())
    signed.find("{urn:renkei:permit}Provider").text = "2131105000000000"  # type: ignore[union-attr]
    with pytest.raises(SignatureInvalid):
        verify_pinned(signed, signer.certificate)


def test_verify_pinned_refuses_an_added_element(signer: Signer) -> None:
    """Adding an element next to the signed content breaks the digest."""
    signed = signer.sign(_permit())
    signed.insert(0, etree.Element("{urn:renkei:permit}Provider"))
    with pytest.raises(SignatureInvalid):
        verify_pinned(signed, signer.certificate)


def test_verify_pinned_refuses_an_element_whose_signature_was_removed(signer: Signer) -> None:
    """An element without ds:Signature is refused, not accepted as unsigned."""
    signed = signer.sign(_permit())
    signed.remove(signed[-1])
    with pytest.raises(SignatureInvalid):
        verify_pinned(signed, signer.certificate)


def test_verify_pinned_refuses_a_signature_nested_below_the_element(signer: Signer) -> None:
    """A signed element moved inside another one does not sign its new parent (wrapping)."""
    signed = signer.sign(_permit())
    wrapper = etree.fromstring(
        b'<p:Permit xmlns:p="urn:renkei:permit"><p:Transaction>EVIL</p:Transaction></p:Permit>'
    )
    wrapper.append(signed)
    with pytest.raises(SignatureInvalid):
        verify_pinned(wrapper, signer.certificate)


def test_verify_pinned_refuses_a_reference_to_only_part_of_the_element(
    layout: PkiLayout, signer: Signer
) -> None:
    """A valid signature over one child by Id is refused: only URI="" covers the whole element."""
    document = etree.fromstring(
        b'<p:Permit xmlns:p="urn:renkei:permit"><p:Transaction Id="t">T0001</p:Transaction>'
        b"<p:Provider>EVIL</p:Provider></p:Permit>"
    )
    credentials = layout.institution_signing(INSTITUTION).load()
    assert isinstance(credentials.private_key, ec.EllipticCurvePrivateKey)
    partial = XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(
        document, key=credentials.private_key, cert=[credentials.certificate], reference_uri="#t"
    )
    with pytest.raises(SignatureInvalid, match='URI=""'):
        verify_pinned(partial, signer.certificate)


def _sign_with_xmlsec(
    credentials: Credentials, c14n: Any, digest: Any, transforms: tuple[Any, ...]
) -> etree._Element:
    """A valid enveloped signature of a permit with python-xmlsec, any algorithms."""
    key = credentials.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    document = _permit()
    signature = xmlsec.template.create(
        document, c14n, xmlsec.constants.TransformEcdsaSha256, ns="ds"
    )
    document.append(signature)
    reference = xmlsec.template.add_reference(signature, digest, uri="")
    for transform in transforms:
        xmlsec.template.add_transform(reference, transform)
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem)
    context.sign(signature)
    return document


@pytest.mark.parametrize(
    ("c14n", "digest", "transforms"),
    [
        ("TransformInclC14N", "TransformSha256", ("TransformEnveloped", "TransformExclC14N")),
        ("TransformExclC14N", "TransformSha1", ("TransformEnveloped", "TransformExclC14N")),
        ("TransformExclC14N", "TransformSha256", ("TransformEnveloped", "TransformInclC14N")),
    ],
    ids=["inclusive-c14n-signed-info", "sha1-digest", "inclusive-c14n-reference"],
)
def test_verify_refuses_a_valid_signature_with_other_algorithms(
    layout: PkiLayout, signer: Signer, c14n: str, digest: str, transforms: tuple[str, ...]
) -> None:
    """Only the profile of docs/protocol.md verifies, even when the signature itself is valid."""
    constants = xmlsec.constants
    signed = _sign_with_xmlsec(
        layout.institution_signing(INSTITUTION).load(),
        getattr(constants, c14n),
        getattr(constants, digest),
        tuple(getattr(constants, name) for name in transforms),
    )
    with pytest.raises(SignatureInvalid, match="another algorithm or transform"):
        verify_pinned(signed, signer.certificate)


def test_verify_accepts_a_signature_of_the_profile_made_elsewhere(
    layout: PkiLayout, signer: Signer
) -> None:
    """The same helper with the profile's algorithms makes a signature that verifies."""
    constants = xmlsec.constants
    signed = _sign_with_xmlsec(
        layout.institution_signing(INSTITUTION).load(),
        constants.TransformExclC14N,
        constants.TransformSha256,
        (constants.TransformEnveloped, constants.TransformExclC14N),
    )
    assert _text(verify_pinned(signed, signer.certificate), "Transaction") == "T0001"


def test_verify_returns_the_signed_text_not_the_comments_inserted_in_it(signer: Signer) -> None:
    """Comments are not signed (URI=""): one added inside a text is gone from the content
    returned, which reads the whole signed text rather than the part before the comment."""
    signed = signer.sign(_permit())
    transaction = signed.find("{urn:renkei:permit}Transaction")
    assert transaction is not None
    transaction.text = "T00"
    comment = etree.Comment(" inserted ")
    comment.tail = "01"
    transaction.append(comment)
    verified = verify_pinned(signed, signer.certificate)
    assert _text(verified, "Transaction") == "T0001"
    assert not list(verified.iter(etree.Comment))


def test_verify_refuses_a_key_value_beside_the_certificate(signer: Signer) -> None:
    """KeyInfo names the key by its certificate only; a KeyValue there is refused."""
    signed = signer.sign(_permit())
    key_info = signed[-1].find(f"{{{DS}}}KeyInfo")
    assert key_info is not None
    etree.SubElement(key_info, f"{{{DS}}}KeyValue")
    with pytest.raises(SignatureInvalid, match="X509Data"):
        verify_pinned(signed, signer.certificate)


def test_verify_refuses_a_second_signature_beside_the_first(signer: Signer) -> None:
    """The element carries exactly one enveloped ds:Signature."""
    signed = signer.sign(_permit())
    signed.append(copy.deepcopy(signed[-1]))
    with pytest.raises(SignatureInvalid, match="exactly one ds:Signature"):
        verify_pinned(signed, signer.certificate)


def test_verify_pinned_refuses_garbage_input(signer: Signer) -> None:
    """Anything that is not a signed element raises SignatureInvalid, nothing else."""
    with pytest.raises(SignatureInvalid):
        verify_pinned(etree.fromstring(b"<a/>"), signer.certificate)
    with pytest.raises(SignatureInvalid):
        verify_pinned(etree.Comment("x"), signer.certificate)


def test_signed_element_verifies_after_embedding_in_a_larger_document(signer: Signer) -> None:
    """Exclusive c14n keeps the signature valid inside a document with other namespaces."""
    signed = signer.sign(_permit())
    envelope = etree.fromstring(
        b'<Message xmlns="urn:renkei:message" xmlns:p="urn:other:p" xmlns:x="urn:other:x">'
        b"<Header><Id>1</Id></Header><Body/></Message>"
    )
    envelope.find("{urn:renkei:message}Body").append(copy.deepcopy(signed))  # type: ignore[union-attr]
    wire = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    received = etree.fromstring(wire)
    extracted = received.find("{urn:renkei:message}Body/{urn:renkei:permit}Permit")
    assert extracted is not None
    verified = verify_pinned(extracted, signer.certificate)
    assert _text(verified, "Provider") == INSTITUTION
    assert received.find("{urn:renkei:message}Body")[0] is extracted  # type: ignore[index]


def test_verify_with_ca_accepts_an_institution_signature_and_returns_its_certificate(
    ca: x509.Certificate, signer: Signer
) -> None:
    """Path validation to the network CA succeeds and names the signing institution."""
    verified, certificate = verify_with_ca(signer.sign(_permit()), ca)
    assert _text(verified, "Transaction") == "T0001"
    assert verified.find(f".//{SIGNATURE_TAG}") is None
    assert identity_of(certificate).common_name == INSTITUTION
    assert certificate == signer.certificate


def test_verify_with_ca_accepts_the_hub_signing_certificate(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """The hub's signing certificate passes the strict path validation too."""
    hub = Signer(layout.hub_signing().load())
    _, certificate = CAVerifier(ca).verify(hub.sign(_permit()))
    assert identity_of(certificate).common_name == "hub"


def test_verify_with_ca_refuses_a_certificate_from_another_ca(
    foreign_layout: PkiLayout, ca: x509.Certificate
) -> None:
    """A signing certificate with the same names but issued by another CA is refused."""
    impostor = Signer(foreign_layout.institution_signing(INSTITUTION).load())
    with pytest.raises(SignatureInvalid):
        verify_with_ca(impostor.sign(_permit()), ca)


def test_verify_with_ca_refuses_a_back_office_certificate(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """Certificates issued by an institution's local back-office CA do not chain to the network."""
    back_office = Signer(layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM).load())
    with pytest.raises(SignatureInvalid):
        verify_with_ca(back_office.sign(_permit()), ca)


def test_verify_with_ca_refuses_a_tls_key_posing_as_a_signing_key(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """By default the signer certificate must have OU=signing; a TLS certificate is refused."""
    tls_signer = Signer(layout.institution_tls(INSTITUTION).load())
    signed = tls_signer.sign(_permit())
    with pytest.raises(SignatureInvalid, match="signing"):
        verify_with_ca(signed, ca)
    _, certificate = verify_with_ca(signed, ca, required_unit=None)
    assert identity_of(certificate).organizational_unit == "tls"


def test_verify_with_ca_refuses_a_tampered_element(ca: x509.Certificate, signer: Signer) -> None:
    """CA validation does not excuse a broken digest."""
    signed = signer.sign(_permit())
    signed.find("{urn:renkei:permit}Transaction").text = "T0002"  # type: ignore[union-attr]
    with pytest.raises(SignatureInvalid):
        verify_with_ca(signed, ca)


def test_verifiers_are_reusable_across_many_elements(
    layout: PkiLayout, ca: x509.Certificate, signer: Signer
) -> None:
    """One PinnedVerifier and one CAVerifier serve any number of verifications."""
    pinned = PinnedVerifier(signer.certificate)
    by_ca = CAVerifier(ca)
    other = Signer(layout.institution_signing(OTHER_INSTITUTION).load())
    for number in range(5):
        element = _permit()
        transaction = element.find("{urn:renkei:permit}Transaction")
        assert transaction is not None
        transaction.text = f"T{number}"
        assert _text(pinned.verify(signer.sign(element)), "Transaction") == f"T{number}"
        _, certificate = by_ca.verify(other.sign(element))
        assert identity_of(certificate).common_name == OTHER_INSTITUTION


def test_signer_refuses_an_rsa_key(layout: PkiLayout) -> None:
    """Signing is ECDSA P-256 only; the RSA encryption key cannot be used to sign."""
    with pytest.raises(ValueError):
        Signer(layout.institution_encryption(INSTITUTION).load())


def test_signature_verifies_with_xmlsec1_when_available(
    tmp_path: Path, layout: PkiLayout, signer: Signer
) -> None:
    """Interoperability: xmlsec1 accepts the signatures (skipped when it is not installed)."""
    import shutil
    import subprocess

    xmlsec1 = shutil.which("xmlsec1")
    if xmlsec1 is None:
        pytest.skip("xmlsec1 is not installed")
    signed = signer.sign(_permit())
    document = tmp_path / "signed.xml"
    command = [xmlsec1, "--verify", "--trusted-pem", str(layout.ca().certificate), str(document)]
    document.write_bytes(etree.tostring(signed))
    assert subprocess.run(command, capture_output=True).returncode == 0
    signed[0].text = "T0002"
    document.write_bytes(etree.tostring(signed))
    assert subprocess.run(command, capture_output=True).returncode != 0


def test_an_element_signed_in_place_inherits_its_namespaces_and_verifies_elsewhere(
    signer: Signer,
) -> None:
    """Signing an embedded element (default namespace from its parent) leaves the parent alone."""
    document = etree.fromstring(
        b'<Message xmlns="urn:renkei:message" xmlns:x="urn:renkei:extra">'
        b'<Body><Result x:status="ok"><Value>42</Value></Result></Body></Message>'
    )
    body = document[0]
    signed = signer.sign(body[0])
    assert body[0].find(SIGNATURE_TAG) is None, "the embedded original is not modified"
    body[0] = signed
    moved = etree.fromstring(b'<Other xmlns="urn:other">' + etree.tostring(signed) + b"</Other>")
    for candidate in (body[0], moved[0]):
        verified = verify_pinned(candidate, signer.certificate)
        assert verified.tag == "{urn:renkei:message}Result"
        assert verified.get("{urn:renkei:extra}status") == "ok"
        assert verified.findtext("{urn:renkei:message}Value") == "42"


def _expired_signing_credentials(layout: PkiLayout) -> Credentials:
    """A signing certificate of INSTITUTION issued by the network CA that expired a year ago."""
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    issuer = layout.ca().load()
    issuer_key = issuer.private_key
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, INSTITUTION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "signing"),
        ]
    )
    usage = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=800))
        .not_valid_after(now - datetime.timedelta(days=365))
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return Credentials(certificate, key)


def test_issued_verifier_accepts_a_signature_whose_certificate_has_expired_since(
    layout: PkiLayout, ca: x509.Certificate
) -> None:
    """A document kept for years verifies with the certificate it was signed with, issued by
    the CA, though that certificate has expired; CA validation (valid now) refuses it."""
    expired = Signer(_expired_signing_credentials(layout))
    signed = expired.sign(_permit())
    content, certificate = IssuedVerifier(ca).verify(signed)
    assert _text(content, "Transaction") == "T0001" and content.find(SIGNATURE_TAG) is None
    assert identity_of(certificate).common_name == INSTITUTION
    with pytest.raises(SignatureInvalid, match="expired"):
        verify_with_ca(signed, ca)


def test_issued_verifier_refuses_another_ca_a_tls_key_and_a_tampered_element(
    layout: PkiLayout, foreign_layout: PkiLayout, ca: x509.Certificate, signer: Signer
) -> None:
    """The signer must be issued by the CA, be a signing certificate, and the digest hold."""
    verifier = IssuedVerifier(ca)
    impostor = Signer(foreign_layout.institution_signing(INSTITUTION).load())
    with pytest.raises(SignatureInvalid, match="not issued by the trusted CA"):
        verifier.verify(impostor.sign(_permit()))
    with pytest.raises(SignatureInvalid, match="not a signing certificate"):
        verifier.verify(Signer(layout.institution_tls(INSTITUTION).load()).sign(_permit()))
    signed = signer.sign(_permit())
    signed.find("{urn:renkei:permit}Transaction").text = "T0002"  # type: ignore[union-attr]
    with pytest.raises(SignatureInvalid):
        verifier.verify(signed)
    unsigned = _permit()
    with pytest.raises(SignatureInvalid, match="exactly one ds:Signature"):
        verifier.verify(unsigned)
