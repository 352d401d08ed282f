"""Persons at a node: the integrated-address function and the 符号 ↔ 団体内統合宛名番号 store.

An intermediate server pairs each person's integrated address number with its own 符号 (and
the 宛名番号 it is given) and keeps nothing else about identity: never the individual number,
never another institution's 符号.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from codes import errors
from codes.errors import RenkeiError
from middleware.storage import in_slices
from middleware.tables import address_number as address_number_table
from middleware.tables import person

__all__ = [
    "INTEGRATED_ADDRESS_DIGITS",
    "enrol",
    "fugo_of",
    "fugos_of",
    "link",
    "link_address_number",
    "person_key",
    "person_of",
    "person_of_address_number",
    "person_state",
    "persons_of",
    "record_failure",
]

INTEGRATED_ADDRESS_DIGITS = 15


def link(connection: Connection, integrated_address_number: str, fugo: str, now: datetime) -> bool:
    """Pair a person with the 符号 just acquired; True when the pair is new.

    Registering the same pair again changes nothing; pairing an integrated address number
    with a different person's 符号 (or the reverse) is refused.
    """
    row = connection.execute(
        select(person.c.fugo).where(person.c.integrated_address_number == integrated_address_number)
    ).first()
    if row is not None and row.fugo == fugo:
        return False
    if row is not None and row.fugo is not None:
        raise RenkeiError(
            errors.PERSON_CONFLICT, integrated_address_number=integrated_address_number
        )
    other = connection.execute(
        select(person.c.integrated_address_number).where(person.c.fugo == fugo)
    ).first()
    if other is not None:
        raise RenkeiError(
            errors.PERSON_CONFLICT, integrated_address_number=integrated_address_number
        )
    if row is None:
        connection.execute(
            person.insert().values(
                integrated_address_number=integrated_address_number,
                fugo=fugo,
                registered_at=now,
                fugo_acquired_at=now,
            )
        )
    else:
        connection.execute(
            person.update()
            .where(person.c.integrated_address_number == integrated_address_number)
            .values(fugo=fugo, fugo_acquired_at=now, fugo_error=None)
        )
    return True


# A person looked up on every query and every provision: statements built once.
_FUGO_OF = select(person.c.fugo).where(
    person.c.integrated_address_number == bindparam("integrated_address_number")
)
_PERSON_OF = select(person.c.integrated_address_number).where(person.c.fugo == bindparam("fugo"))
_FUGOS_OF = select(person.c.integrated_address_number, person.c.fugo).where(
    person.c.integrated_address_number.in_(bindparam("numbers", expanding=True))
)
_PERSONS_OF = select(person.c.integrated_address_number, person.c.fugo).where(
    person.c.fugo.in_(bindparam("fugos", expanding=True))
)


def fugo_of(connection: Connection, integrated_address_number: str) -> str:
    """This institution's 符号 of a person; FugoNotAcquired when there is none."""
    fugo = connection.execute(
        _FUGO_OF, {"integrated_address_number": integrated_address_number}
    ).scalar_one_or_none()
    if fugo is None:
        raise RenkeiError(
            errors.FUGO_NOT_ACQUIRED, integrated_address_number=integrated_address_number
        )
    return str(fugo)


def fugos_of(connection: Connection, integrated_address_numbers: Iterable[str]) -> dict[str, str]:
    """This institution's 符号 of each of some persons who have one (`fugo_of` of many: one
    statement per `IN_SLICE` persons), by integrated address number."""
    found: dict[str, str] = {}
    for some in in_slices(sorted(set(integrated_address_numbers))):
        for row in connection.execute(_FUGOS_OF, {"numbers": some}):
            if row.fugo is not None:
                found[row.integrated_address_number] = row.fugo
    return found


def persons_of(connection: Connection, fugos: Iterable[str]) -> dict[str, str]:
    """The integrated address number linked to each of some of our 符号 that has one
    (`person_of` of many: one statement per `IN_SLICE` 符号), by 符号."""
    found: dict[str, str] = {}
    for some in in_slices(sorted(set(fugos))):
        for row in connection.execute(_PERSONS_OF, {"fugos": some}):
            found[row.fugo] = row.integrated_address_number
    return found


def person_of(connection: Connection, fugo: str) -> str:
    """The integrated address number linked to one of our 符号; FugoUnknown otherwise."""
    number = connection.execute(_PERSON_OF, {"fugo": fugo}).scalar_one_or_none()
    if number is None:
        raise RenkeiError(errors.FUGO_UNKNOWN)
    return str(number)


def person_key(secret: bytes, individual_number: str) -> str:
    """The integrated-address function's key of a person: HMAC-SHA256 of the individual
    number under the institution's secret (``person.key``). The node stores this key, never
    the number; without the secret the key cannot be matched against candidate numbers."""
    return hmac.new(secret, individual_number.encode("ascii"), hashlib.sha256).hexdigest()


def enrol(
    connection: Connection, key: str, requested: str | None, now: datetime
) -> tuple[str, str | None]:
    """The integrated-address function: the person with ``key`` gets (or keeps) an integrated
    address number; returns it and the person's 符号 if already acquired.

    A back office may propose the number (``requested``); without one the next free
    15-digit number is allocated. One person never gets two numbers and one number never
    two persons (PersonConflict).
    """
    row = connection.execute(select(person).where(person.c.person_key == key)).first()
    if row is not None:
        if requested is not None and requested != row.integrated_address_number:
            raise RenkeiError(errors.PERSON_CONFLICT, integrated_address_number=requested)
        return str(row.integrated_address_number), row.fugo
    if requested is None:
        highest = connection.execute(
            select(func.max(person.c.integrated_address_number)).where(
                func.length(person.c.integrated_address_number) == INTEGRATED_ADDRESS_DIGITS
            )
        ).scalar_one_or_none()
        requested = f"{int(highest or 0) + 1:0{INTEGRATED_ADDRESS_DIGITS}d}"
    existing = connection.execute(
        select(person).where(person.c.integrated_address_number == requested)
    ).first()
    if existing is None:
        connection.execute(
            person.insert().values(
                integrated_address_number=requested, person_key=key, registered_at=now
            )
        )
        return requested, None
    if existing.person_key is not None:
        raise RenkeiError(errors.PERSON_CONFLICT, integrated_address_number=requested)
    connection.execute(
        person.update()
        .where(person.c.integrated_address_number == requested)
        .values(person_key=key)
    )
    return requested, existing.fugo


def link_address_number(
    connection: Connection, address_number: str, integrated_address_number: str, now: datetime
) -> None:
    """Keep a person's 宛名番号 (idempotent); one already linked to another person is
    refused (AddressNumberConflict)."""
    row = connection.execute(
        select(address_number_table.c.integrated_address_number).where(
            address_number_table.c.address_number == address_number
        )
    ).first()
    if row is None:
        connection.execute(
            address_number_table.insert().values(
                address_number=address_number,
                integrated_address_number=integrated_address_number,
                registered_at=now,
            )
        )
    elif row.integrated_address_number != integrated_address_number:
        raise RenkeiError(errors.ADDRESS_NUMBER_CONFLICT, address_number=address_number)


def person_of_address_number(connection: Connection, address_number: str) -> str:
    """The integrated address number a 宛名番号 is linked to (UnknownAddressNumber if none)."""
    row = connection.execute(
        select(address_number_table.c.integrated_address_number).where(
            address_number_table.c.address_number == address_number
        )
    ).first()
    if row is None:
        raise RenkeiError(errors.UNKNOWN_ADDRESS_NUMBER, address_number=address_number)
    return str(row.integrated_address_number)


def record_failure(connection: Connection, integrated_address_number: str, code: str) -> None:
    """Remember why the background acquisition of a person's 符号 failed."""
    connection.execute(
        person.update()
        .where(person.c.integrated_address_number == integrated_address_number)
        .values(fugo_error=code)
    )


def person_state(connection: Connection, integrated_address_number: str) -> dict[str, Any]:
    """A person's registration: ``fugo_state`` acquired, pending or failed (with ``error``,
    a code). Never the 符号 itself: it does not leave the node."""
    row = connection.execute(
        select(person).where(person.c.integrated_address_number == integrated_address_number)
    ).first()
    if row is None:
        raise RenkeiError(
            errors.UNKNOWN_PERSON, integrated_address_number=integrated_address_number
        )
    if row.fugo is not None:
        state = "acquired"
    elif row.fugo_error is not None:
        state = "failed"
    else:
        state = "pending"
    return {
        "integrated_address_number": row.integrated_address_number,
        "fugo_state": state,
        "error": row.fugo_error if state == "failed" else None,
        "registered_at": row.registered_at.isoformat(),
        "fugo_acquired_at": row.fugo_acquired_at.isoformat() if row.fugo_acquired_at else None,
    }
