"""Unit tests for simulators.network.fugo: the hub's keyed permutation of 符号."""

from __future__ import annotations

import re

import pytest

from codes import errors
from codes.errors import RenkeiError
from simulators.network.fugo import ID_CODE_BYTES, FugoCipher, id_code

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
RESIDENT = "12345678901"
PERSON = id_code(RESIDENT, KEY)
FUGO_SHAPE = re.compile(r"[0-9A-F]{32}")


def _differing_digits(a: str, b: str) -> int:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)


def test_issue_is_deterministic_per_person_and_institution() -> None:
    """Two ciphers with the same key issue the same 32-hex-digit 符号 for the same pair."""
    first = FugoCipher(KEY).issue(PERSON, MEGURO)
    second = FugoCipher(KEY).issue(PERSON, MEGURO)
    assert first == second
    assert FUGO_SHAPE.fullmatch(first)


def test_same_person_gets_unrelated_fugo_at_different_institutions() -> None:
    """The 符号 of one person at two institutions differ throughout, not just in a suffix."""
    cipher = FugoCipher(KEY)
    meguro = cipher.issue(PERSON, MEGURO)
    setagaya = cipher.issue(PERSON, SETAGAYA)
    assert meguro != setagaya
    assert meguro[:16] != setagaya[:16]
    assert meguro[16:] != setagaya[16:]
    assert _differing_digits(meguro, setagaya) >= 16


def test_different_persons_get_different_fugo_at_one_institution() -> None:
    """Two persons never share a 符号 at the same institution."""
    cipher = FugoCipher(KEY)
    other = id_code("98765432109", KEY)
    assert cipher.issue(PERSON, MEGURO) != cipher.issue(other, MEGURO)


def test_issue_depends_on_the_key() -> None:
    """Another network key issues another 符号 for the same person and institution."""
    assert FugoCipher(KEY).issue(PERSON, MEGURO) != FugoCipher(OTHER_KEY).issue(PERSON, MEGURO)


def test_convert_to_provider_equals_issue_for_provider() -> None:
    """Converting the requester's 符号 gives exactly the 符号 issued to the provider."""
    cipher = FugoCipher(KEY)
    requester_fugo = cipher.issue(PERSON, MEGURO)
    assert cipher.convert(requester_fugo, MEGURO, SETAGAYA) == cipher.issue(PERSON, SETAGAYA)


def test_convert_round_trips_back_to_the_requester_fugo() -> None:
    """Converting there and back again returns the original 符号."""
    cipher = FugoCipher(KEY)
    meguro = cipher.issue(PERSON, MEGURO)
    setagaya = cipher.convert(meguro, MEGURO, SETAGAYA)
    assert cipher.convert(setagaya, SETAGAYA, MEGURO) == meguro


def test_id_code_of_recovers_the_person_id_code() -> None:
    """The IDコード behind a 符号 is recovered for the institution it was issued to."""
    cipher = FugoCipher(KEY)
    assert cipher.id_code_of(cipher.issue(PERSON, MEGURO), MEGURO) == PERSON


def test_fugo_presented_by_another_institution_is_refused() -> None:
    """A 符号 issued to Meguro and presented as Setagaya's is refused with FugoInvalid."""
    cipher = FugoCipher(KEY)
    meguro = cipher.issue(PERSON, MEGURO)
    with pytest.raises(RenkeiError) as caught:
        cipher.convert(meguro, SETAGAYA, MEGURO)
    assert caught.value.code == "FugoInvalid"
    assert caught.value.kind is errors.FUGO_INVALID


def test_fugo_issued_under_another_key_is_refused() -> None:
    """A 符号 made with another key does not decrypt to the presenting institution."""
    foreign = FugoCipher(OTHER_KEY).issue(PERSON, MEGURO)
    with pytest.raises(RenkeiError) as caught:
        FugoCipher(KEY).id_code_of(foreign, MEGURO)
    assert caught.value.code == "FugoInvalid"


@pytest.mark.parametrize(
    "fugo",
    [
        "Z" * 32,
        "0123456789ABCDEF0123456789ABCDEG",
        "",
        "ABC",
        "0" * 30,
        "0" * 34,
        "0" * 64,
    ],
    ids=["not-hex", "one-bad-digit", "empty", "odd-length", "short", "long", "two-blocks"],
)
def test_malformed_or_wrong_length_fugo_is_refused(fugo: str) -> None:
    """Non-hex text and anything but 16 bytes of hex are refused with FugoInvalid."""
    with pytest.raises(RenkeiError) as caught:
        FugoCipher(KEY).id_code_of(fugo, MEGURO)
    assert caught.value.code == "FugoInvalid"


def test_fugo_with_embedded_whitespace_is_refused() -> None:
    """A 符号 spelled with spaces between byte pairs is malformed and refused."""
    cipher = FugoCipher(KEY)
    fugo = cipher.issue(PERSON, MEGURO)
    spaced = " ".join(fugo[i : i + 2] for i in range(0, 32, 2))
    with pytest.raises(RenkeiError) as caught:
        cipher.id_code_of(spaced, MEGURO)
    assert caught.value.code == "FugoInvalid"


def test_id_code_differs_per_key() -> None:
    """The same 住民票コード gives a different IDコード under another key."""
    assert id_code(RESIDENT, KEY) != id_code(RESIDENT, OTHER_KEY)


def test_id_code_is_deterministic_and_eight_bytes() -> None:
    """The IDコード is a stable 8-byte value that differs between residents."""
    assert id_code(RESIDENT, KEY) == id_code(RESIDENT, KEY)
    assert len(id_code(RESIDENT, KEY)) == ID_CODE_BYTES == 8
    assert id_code(RESIDENT, KEY) != id_code("12345678902", KEY)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_key_other_than_32_bytes_is_rejected(size: int) -> None:
    """The cipher demands a 32-byte key (AES-256)."""
    with pytest.raises(ValueError, match="32 bytes"):
        FugoCipher(bytes(size))
