"""Typed codes of the network: 事務, 事務手続, 特定個人情報名, 項目 and data sets.

Formats seen in public vendor and tool code:

- 事務コード (affair code): ``JM`` + 14 digits, e.g. ``JM01000000121000``;
- 事務手続コード (procedure code): ``JT`` + 14 digits, e.g. ``JT01010000000214``;
- 特定個人情報名コード (information name code): ``TM`` + 14 digits, e.g. ``TM00000000000004``;
- 項目コード (item code): ``TK`` + 14 digits; the 6 digits after ``TK`` carry the number of
  the information name, so the items of TM00000000000004 are ``TK000004`` + 8 digits;
- data set code: 4 digits, e.g. ``0101``.

The validators return their argument typed with the NewType, or raise
RenkeiError(INVALID_CODE).
"""

from __future__ import annotations

import re
from typing import NewType

from codes import errors
from codes.errors import RenkeiError

__all__ = [
    "AFFAIR_WHAT",
    "DATA_SET_WHAT",
    "INFORMATION_NAME_WHAT",
    "ITEM_WHAT",
    "PROCEDURE_WHAT",
    "AffairCode",
    "DataSetCode",
    "InformationNameCode",
    "ItemCode",
    "ProcedureCode",
    "information_name_of_item",
    "validate_affair_code",
    "validate_data_set_code",
    "validate_information_name_code",
    "validate_item_code",
    "validate_procedure_code",
]

AffairCode = NewType("AffairCode", str)
ProcedureCode = NewType("ProcedureCode", str)
InformationNameCode = NewType("InformationNameCode", str)
ItemCode = NewType("ItemCode", str)
DataSetCode = NewType("DataSetCode", str)

AFFAIR_WHAT = "affair code (事務コード, JM + 14 digits)"
PROCEDURE_WHAT = "procedure code (事務手続コード, JT + 14 digits)"
INFORMATION_NAME_WHAT = "information name code (特定個人情報名コード, TM + 14 digits)"
ITEM_WHAT = "item code (項目コード, TK + 14 digits)"
DATA_SET_WHAT = "data set code (データセットコード, 4 digits)"

_AFFAIR = re.compile(r"JM[0-9]{14}")
_PROCEDURE = re.compile(r"JT[0-9]{14}")
_INFORMATION_NAME = re.compile(r"TM[0-9]{14}")
_ITEM = re.compile(r"TK[0-9]{14}")
_DATA_SET = re.compile(r"[0-9]{4}")


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RenkeiError(errors.INVALID_CODE, value=value, what=what)
    return value


def validate_affair_code(value: str) -> AffairCode:
    """Return `value` as an AffairCode if it is ``JM`` + 14 digits."""
    return AffairCode(_check(_AFFAIR, value, AFFAIR_WHAT))


def validate_procedure_code(value: str) -> ProcedureCode:
    """Return `value` as a ProcedureCode if it is ``JT`` + 14 digits."""
    return ProcedureCode(_check(_PROCEDURE, value, PROCEDURE_WHAT))


def validate_information_name_code(value: str) -> InformationNameCode:
    """Return `value` as an InformationNameCode if it is ``TM`` + 14 digits."""
    return InformationNameCode(_check(_INFORMATION_NAME, value, INFORMATION_NAME_WHAT))


def validate_item_code(value: str) -> ItemCode:
    """Return `value` as an ItemCode if it is ``TK`` + 14 digits."""
    return ItemCode(_check(_ITEM, value, ITEM_WHAT))


def validate_data_set_code(value: str) -> DataSetCode:
    """Return `value` as a DataSetCode if it is 4 digits."""
    return DataSetCode(_check(_DATA_SET, value, DATA_SET_WHAT))


def information_name_of_item(item: ItemCode) -> InformationNameCode:
    """Return the information name an item code belongs to.

    The 6 digits after ``TK`` are the information name's number: TK000004… → TM00000000000004.
    Raises RenkeiError(INVALID_CODE) if `item` is not an item code.
    """
    validate_item_code(item)
    return InformationNameCode("TM" + "0" * 8 + item[2:8])
