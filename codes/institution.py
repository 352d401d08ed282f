"""機関コード (institution code): 16 digits.

The real assignment of institution codes is not public. The scheme for municipalities here is
an EMULATION of this project, not the real one: "1" + the 6-digit municipality code (with its
check digit) + nine zeros, so Meguro (131105) is 1131105000000000. Only the length (16 digits)
is taken from public material.
"""

from __future__ import annotations

import re
from typing import NewType

from codes import errors
from codes.errors import RenkeiError
from codes.municipality_code import validate_municipality_code

__all__ = [
    "INSTITUTION_KINDS",
    "PORTAL_KIND",
    "WHAT",
    "InstitutionCode",
    "institution_code_for_municipality",
    "municipality_code_of_institution",
    "validate_institution_code",
]

InstitutionCode = NewType("InstitutionCode", str)

WHAT = "institution code (機関コード)"

# The kinds of institution the permitted-query list names (the XSD's InstitutionKind).
INSTITUTION_KINDS = (
    "municipality",
    "prefecture",
    "ministry",
    "pension",
    "health_insurer",
    "welfare_office",
    "other",
)

# マイナポータル's kind in the permitted-query list's directory: a party of the network that
# acts for persons (their own information, their records, their notices), never a provider
# or a requester of the list's rows, so not one of INSTITUTION_KINDS.
PORTAL_KIND = "portal"

_CODE = re.compile(r"[0-9]{16}")
_MUNICIPALITY_PREFIX = "1"
_MUNICIPALITY_SUFFIX = "0" * 9


def validate_institution_code(value: str) -> InstitutionCode:
    """Return `value` as an InstitutionCode if it is 16 ASCII digits.

    Raises RenkeiError(INVALID_CODE) otherwise.
    """
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise RenkeiError(errors.INVALID_CODE, value=value, what=WHAT)
    return InstitutionCode(value)


def institution_code_for_municipality(municipality_code: str) -> InstitutionCode:
    """Return the (emulated) institution code of a municipality.

    `municipality_code` is the 6-digit code with its check digit; a wrong check digit raises
    RenkeiError(INVALID_CODE).
    """
    validate_municipality_code(municipality_code)
    return InstitutionCode(_MUNICIPALITY_PREFIX + municipality_code + _MUNICIPALITY_SUFFIX)


def municipality_code_of_institution(institution_code: str) -> str | None:
    """Return the municipality code inside an (emulated) municipality institution code.

    Returns None when the code is a valid institution code that does not follow the
    municipality scheme; raises RenkeiError(INVALID_CODE) when it is not 16 digits.
    """
    code = validate_institution_code(institution_code)
    if not (code.startswith(_MUNICIPALITY_PREFIX) and code.endswith(_MUNICIPALITY_SUFFIX)):
        return None
    candidate = code[1:7]
    try:
        return validate_municipality_code(candidate)
    except RenkeiError:
        return None
