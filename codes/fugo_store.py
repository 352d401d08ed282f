"""The node's 符号 ↔ 団体内統合宛名番号 store.

An intermediate server pairs each person's integrated address number with its own 符号 and
keeps nothing else about identity: never the individual number, never another
institution's 符号.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from codes import errors
from codes.errors import RenkeiError
from middleware.tables import person


def register(connection: Connection, integrated_address_number: str, now: datetime) -> None:
    """Register a person before the 符号 is acquired (idempotent)."""
    exists = connection.execute(
        select(person.c.integrated_address_number).where(
            person.c.integrated_address_number == integrated_address_number
        )
    ).first()
    if exists is None:
        connection.execute(
            person.insert().values(
                integrated_address_number=integrated_address_number, registered_at=now
            )
        )


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
            .values(fugo=fugo, fugo_acquired_at=now)
        )
    return True


def fugo_of(connection: Connection, integrated_address_number: str) -> str:
    """This institution's 符号 of a person; FugoNotAcquired when there is none."""
    fugo = connection.execute(
        select(person.c.fugo).where(person.c.integrated_address_number == integrated_address_number)
    ).scalar_one_or_none()
    if fugo is None:
        raise RenkeiError(
            errors.FUGO_NOT_ACQUIRED, integrated_address_number=integrated_address_number
        )
    return str(fugo)


def person_of(connection: Connection, fugo: str) -> str:
    """The integrated address number linked to one of our 符号; FugoUnknown otherwise."""
    number = connection.execute(
        select(person.c.integrated_address_number).where(person.c.fugo == fugo)
    ).scalar_one_or_none()
    if number is None:
        raise RenkeiError(errors.FUGO_UNKNOWN)
    return str(number)
