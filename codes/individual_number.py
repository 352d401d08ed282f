"""個人番号 (individual number): check digit and validation.

The rule is public: with P(n) the n-th digit of the 11-digit base counted from the right and
Q(n) = n + 1 for 1 ≤ n ≤ 6 and n − 5 for 7 ≤ n ≤ 11, the check digit is
11 − (Σ P(n)·Q(n) mod 11), or 0 when that remainder is 0 or 1. 123456789018 is valid.
"""

from __future__ import annotations

import re

from codes import errors
from codes.errors import RenkeiError

__all__ = [
    "BASE_WHAT",
    "WHAT",
    "check_digit",
    "make_individual_number",
    "validate_individual_number",
]

WHAT = "individual number (個人番号)"
BASE_WHAT = "individual number base (個人番号の基礎番号, 11 digits)"

_NUMBER = re.compile(r"[0-9]{12}")
_BASE = re.compile(r"[0-9]{11}")


def _weight(n: int) -> int:
    """Q(n) for the n-th digit counted from the right (1-based)."""
    return n + 1 if n <= 6 else n - 5


def _check_digit(base11: str) -> int:
    total = sum(int(digit) * _weight(n) for n, digit in enumerate(reversed(base11), start=1))
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def check_digit(base11: str) -> int:
    """Return the check digit of an 11-digit base; refuse anything but 11 ASCII digits."""
    if not isinstance(base11, str) or not _BASE.fullmatch(base11):
        raise RenkeiError(errors.INVALID_CODE, value=base11, what=BASE_WHAT)
    return _check_digit(base11)


def validate_individual_number(value: str) -> str:
    """Return `value` unchanged if it is 12 ASCII digits with a correct check digit.

    Raises RenkeiError(INVALID_CODE) otherwise.
    """
    if (
        not isinstance(value, str)
        or not _NUMBER.fullmatch(value)
        or _check_digit(value[:11]) != int(value[11])
    ):
        raise RenkeiError(errors.INVALID_CODE, value=value, what=WHAT)
    return value


def make_individual_number(base11: str) -> str:
    """Return the 12-digit individual number made of `base11` and its check digit."""
    return base11 + str(check_digit(base11))
