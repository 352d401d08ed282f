"""Tests for codes.typed: the JM/JT/TM/TK/data set code formats."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from codes import errors
from codes.errors import RenkeiError
from codes.typed import (
    ItemCode,
    information_name_of_item,
    validate_affair_code,
    validate_data_set_code,
    validate_information_name_code,
    validate_item_code,
    validate_procedure_code,
)

Validator = Callable[[str], str]

VALID: list[tuple[Validator, str]] = [
    (validate_affair_code, "JM01000000121000"),
    (validate_procedure_code, "JT01010000000214"),
    (validate_information_name_code, "TM00000000000004"),
    (validate_item_code, "TK00000401010001"),
    (validate_data_set_code, "0101"),
]


@pytest.mark.parametrize(("validate", "value"), VALID)
def test_public_example_codes_are_valid(validate: Validator, value: str) -> None:
    """Codes of the publicly seen shapes validate and are returned unchanged."""
    assert validate(value) == value


INVALID: list[tuple[Validator, str, str]] = [
    (validate_affair_code, "JT01000000121000", "事務コード"),
    (validate_affair_code, "JM0100000012100", "事務コード"),
    (validate_affair_code, "jm01000000121000", "事務コード"),
    (validate_procedure_code, "JM01010000000214", "事務手続コード"),
    (validate_procedure_code, "JT010100000002140", "事務手続コード"),
    (validate_information_name_code, "TM0000000000004", "特定個人情報名コード"),
    (validate_information_name_code, "TK00000000000004", "特定個人情報名コード"),
    (validate_information_name_code, "TM0000000000000４", "特定個人情報名コード"),
    (validate_item_code, "TK0000040101000", "項目コード"),
    (validate_item_code, "TM00000401010001", "項目コード"),
    (validate_item_code, "TK00000401010001 ", "項目コード"),
    (validate_data_set_code, "101", "データセットコード"),
    (validate_data_set_code, "01010", "データセットコード"),
    (validate_data_set_code, "01a1", "データセットコード"),
    (validate_data_set_code, "", "データセットコード"),
]


@pytest.mark.parametrize(("validate", "value", "what_ja"), INVALID)
def test_malformed_codes_are_refused_naming_the_kind_of_code(
    validate: Validator, value: str, what_ja: str
) -> None:
    """A malformed code is refused with InvalidCode whose `what` names the kind of code."""
    with pytest.raises(RenkeiError) as info:
        validate(value)
    assert info.value.kind is errors.INVALID_CODE
    assert info.value.params["value"] == value
    assert what_ja in info.value.params["what"]


def test_item_code_carries_its_information_name_number() -> None:
    """The 6 digits after TK give the information name: TK000004… → TM00000000000004."""
    assert information_name_of_item(ItemCode("TK00000401010001")) == "TM00000000000004"
    assert information_name_of_item(ItemCode("TK00000201010009")) == "TM00000000000002"
    assert information_name_of_item(ItemCode("TK90000101010001")) == "TM00000000900001"


def test_information_name_of_malformed_item_is_refused() -> None:
    """information_name_of_item refuses a string that is not an item code."""
    with pytest.raises(RenkeiError) as info:
        information_name_of_item(ItemCode("TK0004"))
    assert info.value.kind is errors.INVALID_CODE
