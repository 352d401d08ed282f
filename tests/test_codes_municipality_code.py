"""Tests for codes.municipality_code and codes.institution."""

from __future__ import annotations

import pytest

from codes import errors
from codes.errors import RenkeiError
from codes.institution import (
    institution_code_for_municipality,
    municipality_code_of_institution,
    validate_institution_code,
)
from codes.municipality_code import (
    check_digit,
    make_municipality_code,
    validate_municipality_code,
)

PUBLIC_EXAMPLES = [
    ("13110", "131105"),  # Meguro
    ("13101", "131016"),  # Chiyoda
    ("13112", "131121"),  # Setagaya
    ("13104", "131041"),  # Shinjuku: remainder 0
    ("13113", "131130"),  # Shibuya: remainder 1
]


@pytest.mark.parametrize(("code5", "code6"), PUBLIC_EXAMPLES)
def test_public_examples_get_their_published_check_digit(code5: str, code6: str) -> None:
    """The published Tokyo ward codes get their published check digits."""
    assert make_municipality_code(code5) == code6
    assert check_digit(code5) == int(code6[5])
    assert validate_municipality_code(code6) == code6


def test_remainder_zero_gives_check_digit_one() -> None:
    """A sum divisible by 11 gives 11, whose last digit 1 is the check digit."""
    assert check_digit("13104") == 1
    assert check_digit("00000") == 1


def test_remainder_one_gives_check_digit_zero() -> None:
    """A remainder of 1 gives 10, whose last digit 0 is the check digit."""
    assert check_digit("13113") == 0


def test_municipality_code_with_wrong_check_digit_is_refused() -> None:
    """Every check digit but the right one is refused with InvalidCode."""
    for digit in "012346789":
        with pytest.raises(RenkeiError) as info:
            validate_municipality_code("13110" + digit)
        assert info.value.kind is errors.INVALID_CODE
        assert "全国地方公共団体コード" in info.value.params["what"]


@pytest.mark.parametrize("value", ["", "13110", "1311050", "13110a", "１３１１０５", " 131105"])
def test_municipality_code_of_wrong_shape_is_refused(value: str) -> None:
    """Anything but exactly 6 ASCII digits is refused."""
    with pytest.raises(RenkeiError) as info:
        validate_municipality_code(value)
    assert info.value.kind is errors.INVALID_CODE


@pytest.mark.parametrize("code5", ["", "1311", "131100", "1311x"])
def test_check_digit_of_wrong_base_is_refused(code5: str) -> None:
    """check_digit refuses a base that is not 5 ASCII digits."""
    with pytest.raises(RenkeiError):
        check_digit(code5)


def test_meguro_institution_code_follows_emulated_scheme() -> None:
    """Meguro (131105) gets the emulated institution code 1131105000000000."""
    assert institution_code_for_municipality("131105") == "1131105000000000"


def test_institution_code_for_municipality_with_wrong_check_digit_is_refused() -> None:
    """A municipality code with a wrong check digit gets no institution code."""
    with pytest.raises(RenkeiError) as info:
        institution_code_for_municipality("131106")
    assert info.value.kind is errors.INVALID_CODE


def test_institution_code_for_municipality_refuses_code_without_check_digit() -> None:
    """The 5-digit form of a municipality code is refused: the check digit is required."""
    with pytest.raises(RenkeiError):
        institution_code_for_municipality("13110")


def test_institution_code_of_sixteen_digits_is_valid() -> None:
    """Any 16 ASCII digits form a valid institution code."""
    assert validate_institution_code("0000000000000000") == "0000000000000000"
    assert validate_institution_code("1131105000000000") == "1131105000000000"


@pytest.mark.parametrize(
    "value", ["", "113110500000000", "11311050000000000", "113110500000000a", "ＡＢ"]
)
def test_institution_code_of_wrong_shape_is_refused(value: str) -> None:
    """Anything but exactly 16 ASCII digits is refused, naming 機関コード."""
    with pytest.raises(RenkeiError) as info:
        validate_institution_code(value)
    assert info.value.kind is errors.INVALID_CODE
    assert "機関コード" in info.value.params["what"]


def test_municipality_code_is_recovered_from_its_institution_code() -> None:
    """The municipality code inside an emulated municipality institution code is recovered."""
    for _, code6 in PUBLIC_EXAMPLES:
        institution = institution_code_for_municipality(code6)
        assert municipality_code_of_institution(institution) == code6


@pytest.mark.parametrize("value", ["2131105000000000", "1131105000000001", "1131106000000000"])
def test_other_institution_codes_have_no_municipality_code(value: str) -> None:
    """Institution codes outside the municipality scheme give None."""
    assert municipality_code_of_institution(value) is None
