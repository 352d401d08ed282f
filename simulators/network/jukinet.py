"""住基ネット simulator: 個人番号 → 住民票コード, as J-LIS answers the network.

Only the resident registry holds individual numbers; intermediate servers never store them.
Residents are registered by testers and by the network in a box's demo population.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import Connection, select

from codes import errors
from codes.errors import RenkeiError
from codes.individual_number import validate_individual_number
from middleware.storage import insert_if_absent
from middleware.tables import resident

__all__ = ["register_resident", "register_residents", "resident_code_of"]

_CHUNK = 500  # below SQLite's default limit of bound parameters


def register_resident(connection: Connection, individual_number: str) -> str:
    """Register a resident (idempotent) and return the 住民票コード."""
    validate_individual_number(individual_number)
    existing = connection.execute(
        select(resident.c.resident_code).where(resident.c.individual_number == individual_number)
    ).scalar_one_or_none()
    if existing is not None:
        return str(existing)
    (resident_code,) = _free_codes(connection, 1)
    insert_if_absent(
        connection, resident, individual_number=individual_number, resident_code=resident_code
    )
    return str(
        connection.execute(
            select(resident.c.resident_code).where(
                resident.c.individual_number == individual_number
            )
        ).scalar_one()
    )


def resident_code_of(connection: Connection, individual_number: str) -> str:
    """The 住民票コード of a registered resident; refused for anyone else."""
    validate_individual_number(individual_number)
    code = connection.execute(
        select(resident.c.resident_code).where(resident.c.individual_number == individual_number)
    ).scalar_one_or_none()
    if code is None:
        raise RenkeiError(errors.UNKNOWN_RESIDENT)
    return str(code)


def register_residents(connection: Connection, individual_numbers: Sequence[str]) -> int:
    """Register many residents at once (idempotent); the number newly registered. Used to
    load a generated population: one query per chunk instead of three per resident."""
    added = 0
    for start in range(0, len(individual_numbers), _CHUNK):
        chunk = [validate_individual_number(n) for n in individual_numbers[start : start + _CHUNK]]
        known = set(
            connection.execute(
                select(resident.c.individual_number).where(resident.c.individual_number.in_(chunk))
            ).scalars()
        )
        fresh = sorted(set(chunk) - known)
        codes = _free_codes(connection, len(fresh))
        if fresh:
            connection.execute(
                resident.insert(),
                [
                    {"individual_number": n, "resident_code": c}
                    for n, c in zip(fresh, codes, strict=True)
                ],
            )
        added += len(fresh)
    return added


def _free_codes(connection: Connection, count: int) -> list[str]:
    """``count`` random 住民票コード that no resident has yet."""
    codes: set[str] = set()
    while len(codes) < count:
        drawn = {f"{secrets.randbelow(10**11):011d}" for _ in range(count - len(codes))} - codes
        taken = set(
            connection.execute(
                select(resident.c.resident_code).where(resident.c.resident_code.in_(drawn))
            ).scalars()
        )
        codes |= drawn - taken
    return sorted(codes)
