"""マイナポータル's persons: the demo residents it holds, their accounts and their sessions.

The real portal signs a person in with the user-certificate (利用者証明用電子証明書) of their
マイナンバーカード and learns who they are from J-LIS. The simulator holds the demo residents'
individual numbers instead (`load_residents`, the ``residents`` file of ``[portal]``): a person
picks who they are, and the portal resolves that number through the network's 住基ネット
(the hub's 符号 acquisition) into its own 符号 of the person. The account is opened at the
first sign-in and kept by that 符号 (`open_account`); the individual number is never stored.

Sessions are rows (`start_session`, `resume_session`, `end_session`): the cookie carries a
random token, the database its SHA-256 only, and a session left idle ends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, delete, select

from codes import errors
from codes.errors import RenkeiError
from codes.individual_number import validate_individual_number
from middleware.tables import portal_account, portal_session

__all__ = [
    "Resident",
    "Session",
    "check_csrf",
    "end_session",
    "load_residents",
    "open_account",
    "resume_session",
    "start_session",
    "token_hash",
]


@dataclass(frozen=True)
class Resident:
    """A demo resident the portal holds (as if their card were in the reader)."""

    name: str
    individual_number: str

    @property
    def masked_number(self) -> str:
        """The individual number as a page may show it: only its last four digits."""
        return "********" + self.individual_number[-4:]


@dataclass(frozen=True)
class Session:
    """A signed-in person: the portal's 符号 of them, their name and the forms' CSRF token."""

    fugo: str
    display_name: str
    csrf_token: str


def load_residents(path: Path) -> tuple[Resident, ...]:
    """The demo residents of a JSON file with ``persons`` (each a ``name`` and an
    ``individual_number`` with a valid check digit); ValueError names what is wrong."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        persons = document["persons"]
        residents = tuple(
            Resident(str(person["name"]), validate_individual_number(person["individual_number"]))
            for person in persons
        )
    except (OSError, ValueError, KeyError, TypeError, RenkeiError) as failure:
        raise ValueError(f"{path}: not a file of demo residents ({failure})") from None
    return residents


def token_hash(token: str) -> str:
    """What the database keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_account(connection: Connection, fugo: str, display_name: str, now: datetime) -> bool:
    """Open the account of the person behind ``fugo`` at their first sign-in (True), or note
    this sign-in on the account they have (False)."""
    known = connection.execute(
        select(portal_account.c.fugo).where(portal_account.c.fugo == fugo)
    ).first()
    if known is None:
        connection.execute(
            portal_account.insert().values(
                fugo=fugo, display_name=display_name, opened_at=now, last_signed_in_at=now
            )
        )
        return True
    connection.execute(
        portal_account.update()
        .where(portal_account.c.fugo == fugo)
        .values(display_name=display_name, last_signed_in_at=now)
    )
    return False


def start_session(connection: Connection, fugo: str, now: datetime) -> str:
    """A new session of the account ``fugo``; its token (only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    connection.execute(
        portal_session.insert().values(
            token_hash=token_hash(token),
            fugo=fugo,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
        )
    )
    return token


def resume_session(
    connection: Connection, token: str | None, now: datetime, idle: timedelta
) -> Session:
    """The session of ``token``, seen now; SessionExpired when there is none or it has been
    idle longer than ``idle`` (it is then ended)."""
    if not token:
        raise RenkeiError(errors.SESSION_EXPIRED)
    hashed = token_hash(token)
    row = connection.execute(
        select(
            portal_session.c.fugo,
            portal_session.c.csrf_token,
            portal_session.c.last_seen_at,
            portal_account.c.display_name,
        )
        .join(portal_account, portal_account.c.fugo == portal_session.c.fugo)
        .where(portal_session.c.token_hash == hashed)
    ).first()
    if row is None:
        raise RenkeiError(errors.SESSION_EXPIRED)
    if now - row.last_seen_at > idle:
        connection.execute(delete(portal_session).where(portal_session.c.token_hash == hashed))
        raise RenkeiError(errors.SESSION_EXPIRED)
    connection.execute(
        portal_session.update()
        .where(portal_session.c.token_hash == hashed)
        .values(last_seen_at=now)
    )
    return Session(fugo=row.fugo, display_name=row.display_name, csrf_token=row.csrf_token)


def end_session(connection: Connection, token: str) -> None:
    """Sign out: the session is gone."""
    connection.execute(
        delete(portal_session).where(portal_session.c.token_hash == token_hash(token))
    )


def check_csrf(session: Session, given: str | None) -> None:
    """Refuse a form whose CSRF token is not the session's (CsrfRejected)."""
    if not given or not hmac.compare_digest(given, session.csrf_token):
        raise RenkeiError(errors.CSRF_REJECTED)
