"""Tests for crypto.envelope: CMS EnvelopedData sealed to an institution's RSA certificate."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest
from lxml import etree

from codes import errors
from crypto.envelope import open_envelope, seal
from crypto.pki import Credentials, PkiLayout
from crypto.xmlsig import Signer, verify_pinned
from tests.certs import INSTITUTION, OTHER_INSTITUTION, make_pki

# Mixed line endings, NUL and non-UTF-8 bytes: S/MIME canonicalization would alter these.
AWKWARD = b"<a>\r\nline1\nline2\rline3\x00\xff</a>\n"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def recipient(layout: PkiLayout) -> Credentials:
    return layout.institution_encryption(INSTITUTION).load()


def _assert_unreadable(envelope: bytes, credentials: Credentials) -> None:
    with pytest.raises(errors.RenkeiError) as caught:
        open_envelope(envelope, credentials)
    assert caught.value.kind is errors.PAYLOAD_UNREADABLE
    assert caught.value.code == "PayloadUnreadable"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "plaintext",
    [AWKWARD, b"", "<x>符号</x>\n".encode(), bytes(range(256)) * 512],
    ids=["line-endings", "empty", "utf8", "large-binary"],
)
def test_seal_then_open_returns_exactly_the_bytes_sealed(
    recipient: Credentials, plaintext: bytes
) -> None:
    """The round trip is byte-exact: no CRLF conversion, no MIME header, any length."""
    assert open_envelope(seal(plaintext, recipient.certificate), recipient) == plaintext


def test_sealing_twice_gives_different_envelopes(recipient: Credentials) -> None:
    """Each envelope has a fresh content key and IV."""
    assert seal(AWKWARD, recipient.certificate) != seal(AWKWARD, recipient.certificate)


def test_signed_xml_survives_seal_and_open_and_still_verifies(
    layout: PkiLayout, recipient: Credentials
) -> None:
    """The intended flow: sign, seal, open, verify the signature of the opened bytes."""
    signer = Signer(layout.institution_signing(OTHER_INSTITUTION).load())
    signed = signer.sign(etree.fromstring("<Payload><Item>符号</Item></Payload>\n"))
    opened = open_envelope(seal(etree.tostring(signed), recipient.certificate), recipient)
    verified = verify_pinned(etree.fromstring(opened), signer.certificate)
    assert verified.findtext("Item") == "符号"


def test_open_with_another_institutions_key_is_payload_unreadable(
    layout: PkiLayout, recipient: Credentials
) -> None:
    """An envelope for one institution cannot be opened with another's encryption key."""
    envelope = seal(AWKWARD, recipient.certificate)
    _assert_unreadable(envelope, layout.institution_encryption(OTHER_INSTITUTION).load())


def _assert_not_revealed(envelope: bytes, credentials: Credentials) -> None:
    # CMS key transport uses RSA PKCS#1 v1.5 with implicit rejection and AES-CBC has no
    # integrity check: a wrong key or a flipped bit gives PayloadUnreadable almost always,
    # and otherwise bytes that are not the plaintext (the inner signature check then
    # refuses them). The plaintext itself must never come out.
    try:
        opened = open_envelope(envelope, credentials)
    except errors.RenkeiError as caught:
        assert caught.kind is errors.PAYLOAD_UNREADABLE
    else:
        assert opened != AWKWARD


def test_open_with_a_key_that_does_not_match_the_recipient_certificate_reveals_nothing(
    layout: PkiLayout, recipient: Credentials
) -> None:
    """The right certificate with the wrong RSA key never yields the plaintext."""
    other_key = layout.institution_encryption(OTHER_INSTITUTION).load().private_key
    for _ in range(20):
        envelope = seal(AWKWARD, recipient.certificate)
        _assert_not_revealed(envelope, Credentials(recipient.certificate, other_key))


@pytest.mark.parametrize("which", ["tls", "signing"])
def test_open_with_the_hubs_ec_keys_is_payload_unreadable(
    layout: PkiLayout, recipient: Credentials, which: str
) -> None:
    """EC credentials cannot decrypt CMS key transport and give the uniform error."""
    paths = layout.hub_tls() if which == "tls" else layout.hub_signing()
    _assert_unreadable(seal(AWKWARD, recipient.certificate), paths.load())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: b"",
        lambda e: b"not an envelope at all",
        lambda e: e[:-20],
        lambda e: e[: len(e) // 2],
        lambda e: e + b"trailing",
    ],
    ids=["empty", "garbage", "truncated-tail", "truncated-half", "trailing-bytes"],
)
def test_open_of_damaged_or_garbage_input_is_payload_unreadable(
    recipient: Credentials, mangle: Callable[[bytes], bytes]
) -> None:
    """Garbage, truncation and tampering all give PayloadUnreadable and nothing else."""
    envelope = seal(AWKWARD, recipient.certificate)
    _assert_unreadable(mangle(envelope), recipient)


def test_open_of_a_flipped_bit_reveals_nothing(recipient: Credentials) -> None:
    """A tampered ciphertext gives PayloadUnreadable or bytes other than the plaintext."""
    envelope = seal(AWKWARD, recipient.certificate)
    _assert_not_revealed(envelope[:-1] + bytes([envelope[-1] ^ 0x01]), recipient)


def test_seal_refuses_an_ec_recipient(layout: PkiLayout) -> None:
    """Only RSA certificates can receive an envelope; sealing to an EC one fails early."""
    with pytest.raises(ValueError):
        seal(AWKWARD, layout.institution_signing(INSTITUTION).load().certificate)


def test_openssl_cms_decrypts_the_envelope(layout: PkiLayout, recipient: Credentials) -> None:
    """`openssl cms -decrypt -inform DER` reads the envelope and gets the exact bytes back."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    paths = layout.institution_encryption(INSTITUTION)
    result = subprocess.run(
        [
            openssl, "cms", "-decrypt", "-inform", "DER",
            "-recip", str(paths.certificate), "-inkey", str(paths.key),
        ],
        input=seal(AWKWARD, recipient.certificate),
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert result.stdout == AWKWARD
