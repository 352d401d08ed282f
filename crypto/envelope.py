"""Payload envelopes: CMS EnvelopedData (DER) sealed to an institution's RSA certificate.

The plaintext is already-signed XML; the recipient opens the envelope and then verifies the
signature before using anything inside (CMS EnvelopedData is not authenticated encryption).

Facts about cryptography 50's `pkcs7` found while building this:

* `PKCS7EnvelopeBuilder.encrypt` without options applies S/MIME canonicalization: every
  bare LF becomes CRLF. With `PKCS7Options.Binary` the bytes are encrypted unchanged.
* `pkcs7_decrypt_der` accepts only no option or `Text`; `Text` expects a MIME
  `Content-Type` header inside and strips it. With no option it returns the exact bytes.
  So: seal with `Binary`, open with `[]`, and a round trip returns exactly the bytes sealed.
* Key transport is RSA PKCS#1 v1.5, content encryption AES-256-CBC (set explicitly; the
  default is AES-128-CBC). `openssl cms -decrypt -inform DER` reads the result.
* Failures surface as ValueError (no matching recipient, ASN.1 errors, bad padding) or
  TypeError (non-RSA key or certificate); all become one PayloadUnreadable error here.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from codes import errors
from crypto.pki import Credentials

__all__ = ["open_envelope", "seal"]


def seal(plaintext: bytes, recipient: x509.Certificate) -> bytes:
    """Encrypt `plaintext` for the holder of `recipient` (an RSA certificate); return DER."""
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ValueError("envelopes can only be sealed to an RSA certificate")
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(plaintext)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def open_envelope(envelope: bytes, credentials: Credentials) -> bytes:
    """Decrypt a DER envelope with `credentials`; return exactly the bytes that were sealed.

    Every failure (another recipient, a non-RSA key, garbage, truncation, tampering) raises
    the same `RenkeiError(errors.PAYLOAD_UNREADABLE)`, with no cause attached, so that
    nothing distinguishes one failure from another. A wrong key can in principle yield
    random bytes instead of an error; the signature check that follows catches that.
    """
    key = credentials.private_key
    try:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("not an RSA key")
        return pkcs7.pkcs7_decrypt_der(bytes(envelope), credentials.certificate, key, [])
    except Exception:
        raise errors.RenkeiError(errors.PAYLOAD_UNREADABLE) from None
