"""全国地方公共団体コード (municipality code): 5 digits and a check digit (JIS X 0401/0402).

The check digit is public: weights 6, 5, 4, 3, 2 on the five digits from the left; the check
digit is the last digit of 11 − (sum mod 11). Meguro 13110 → 131105.
"""

from __future__ import annotations

import re

from codes import errors
from codes.errors import RenkeiError

__all__ = [
    "BASE_WHAT",
    "WHAT",
    "check_digit",
    "make_municipality_code",
    "validate_municipality_code",
]

WHAT = "municipality code (全国地方公共団体コード)"
BASE_WHAT = "municipality code without check digit (全国地方公共団体コード, 5 digits)"

_WEIGHTS = (6, 5, 4, 3, 2)
_CODE = re.compile(r"[0-9]{6}")
_BASE = re.compile(r"[0-9]{5}")


def _check_digit(code5: str) -> int:
    total = sum(int(digit) * weight for digit, weight in zip(code5, _WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def check_digit(code5: str) -> int:
    """Return the check digit of a 5-digit municipality code; refuse anything but 5 digits."""
    if not isinstance(code5, str) or not _BASE.fullmatch(code5):
        raise RenkeiError(errors.INVALID_CODE, value=code5, what=BASE_WHAT)
    return _check_digit(code5)


def validate_municipality_code(value: str) -> str:
    """Return `value` unchanged if it is 6 ASCII digits whose last one is the check digit.

    Raises RenkeiError(INVALID_CODE) otherwise.
    """
    if (
        not isinstance(value, str)
        or not _CODE.fullmatch(value)
        or _check_digit(value[:5]) != int(value[5])
    ):
        raise RenkeiError(errors.INVALID_CODE, value=value, what=WHAT)
    return value


def make_municipality_code(code5: str) -> str:
    """Return the 6-digit municipality code made of `code5` and its check digit."""
    return code5 + str(check_digit(code5))
