"""Tests for codes.individual_number: the public check-digit rule of 個人番号."""

from __future__ import annotations

import pytest

from codes import errors
from codes.errors import RenkeiError
from codes.individual_number import (
    check_digit,
    make_individual_number,
    validate_individual_number,
)


def test_public_example_is_valid() -> None:
    """The published example 123456789018 passes validation and is returned unchanged."""
    assert validate_individual_number("123456789018") == "123456789018"


def test_check_digit_of_public_example_base_is_eight() -> None:
    """The check digit of 12345678901 is 8."""
    assert check_digit("12345678901") == 8


def test_make_individual_number_appends_check_digit() -> None:
    """make_individual_number appends the computed check digit to the base."""
    assert make_individual_number("12345678901") == "123456789018"


def test_individual_number_with_wrong_check_digit_is_refused() -> None:
    """Every check digit but the right one is refused with InvalidCode."""
    for digit in "012345679":
        with pytest.raises(RenkeiError) as info:
            validate_individual_number("12345678901" + digit)
        assert info.value.kind is errors.INVALID_CODE
        assert info.value.params["value"] == "12345678901" + digit
        assert "個人番号" in info.value.params["what"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "12345678901",
        "1234567890180",
        "12345678901a",
        " 123456789018",
        "123456789018\n",
        "１２３４５６７８９０１８",
        "-23456789018",
    ],
)
def test_individual_number_of_wrong_shape_is_refused(value: str) -> None:
    """Anything but exactly 12 ASCII digits is refused, including full-width digits."""
    with pytest.raises(RenkeiError) as info:
        validate_individual_number(value)
    assert info.value.code == "InvalidCode"


def test_all_zero_base_gets_check_digit_zero() -> None:
    """A weighted sum of 0 (remainder 0) gives check digit 0."""
    assert check_digit("00000000000") == 0
    assert validate_individual_number("000000000000") == "000000000000"


def test_remainder_one_gives_check_digit_zero() -> None:
    """A remainder of 1 gives check digit 0, not 10."""
    # The rightmost base digit has weight 2 and the second weight 3: 3*4 = 12, 12 mod 11 = 1.
    base = "00000000040"
    assert check_digit(base) == 0
    assert make_individual_number(base) == base + "0"


def test_weights_follow_the_published_rule() -> None:
    """A single 1 at position n (from the right) gives 11 - Q(n) with Q(n) as published."""
    expected_weights = [2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6]
    for n, weight in enumerate(expected_weights, start=1):
        base = "0" * (11 - n) + "1" + "0" * (n - 1)
        assert check_digit(base) == 11 - weight


def test_generated_numbers_validate() -> None:
    """Every number made by make_individual_number validates."""
    for i in range(0, 10**11, 7_919_191_919):
        number = make_individual_number(f"{i:011d}")
        assert validate_individual_number(number) == number


@pytest.mark.parametrize("base", ["", "1234567890", "123456789012", "1234567890x"])
def test_check_digit_of_wrong_base_is_refused(base: str) -> None:
    """check_digit refuses a base that is not 11 ASCII digits."""
    with pytest.raises(RenkeiError) as info:
        check_digit(base)
    assert info.value.kind is errors.INVALID_CODE


def test_refusal_message_names_the_value_in_both_languages() -> None:
    """The InvalidCode refusal renders English and Japanese messages naming the value."""
    with pytest.raises(RenkeiError) as info:
        validate_individual_number("123456789019")
    assert "'123456789019'" in info.value.message_en
    assert "individual number" in info.value.message_en
    assert "'123456789019'" in info.value.message_ja
    assert "個人番号" in info.value.message_ja
