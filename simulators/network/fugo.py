"""機関別符号: issuing and converting per-institution person codes by a keyed permutation.

As public descriptions of the network put it (SOURCES.md): the person's 住民票コード gets an
IDコード; the IDコード followed by the institution code is encrypted with the network's secret
key, and the result is that institution's 符号. AES on one 16-byte block is a permutation,
so the network can convert any institution's 符号 into another's by decrypting and
re-encrypting, without a per-institution table, while no institution can link two 符号.
The exact derivation of the real IDコード is not public: ours is an HMAC of the 住民票コード.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from codes import errors
from codes.errors import RenkeiError

__all__ = ["FUGO", "ID_CODE_BYTES", "FugoCipher", "id_code"]

ID_CODE_BYTES = 8
FUGO = re.compile(r"[0-9A-F]{32}")


def id_code(resident_code: str, key: bytes) -> bytes:
    """The network's IDコード for a 住民票コード (8 bytes)."""
    return hmac.new(key, resident_code.encode("ascii"), hashlib.sha256).digest()[:ID_CODE_BYTES]


def _institution_block(institution_code: str) -> bytes:
    # 16 decimal digits packed as BCD fill the other half of the AES block.
    return bytes.fromhex(institution_code)


class FugoCipher:
    """The network's secret permutation; created once with the key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the 符号 key must be 32 bytes")
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())

    def issue(self, person_id_code: bytes, institution_code: str) -> str:
        """The 符号 of the person with ``person_id_code`` at ``institution_code``."""
        block = person_id_code + _institution_block(institution_code)
        encryptor = self._cipher.encryptor()
        return (encryptor.update(block) + encryptor.finalize()).hex().upper()

    def id_code_of(self, fugo: str, institution_code: str) -> bytes:
        """The IDコード behind ``fugo``; refused unless it was issued to ``institution_code``."""
        if FUGO.fullmatch(fugo) is None:
            raise RenkeiError(errors.FUGO_INVALID)
        raw = bytes.fromhex(fugo)
        decryptor = self._cipher.decryptor()
        block = decryptor.update(raw) + decryptor.finalize()
        if block[ID_CODE_BYTES:] != _institution_block(institution_code):
            raise RenkeiError(errors.FUGO_INVALID)
        return block[:ID_CODE_BYTES]

    def convert(self, fugo: str, from_institution: str, to_institution: str) -> str:
        """Convert one institution's 符号 of a person into another institution's."""
        return self.issue(self.id_code_of(fugo, from_institution), to_institution)
