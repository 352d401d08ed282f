"""Staff authentication and authorization: users, roles, passwords, TOTP, sessions, CSRF.

Staff users are named persons (no shared accounts) with one or more roles:

- ``operator``: records and queues, metadata only;
- ``approver``: held provisions, including their content;
- ``auditor``: the audit log, records and exports;
- ``admin``: users, roles, flags and configuration.

Roles do not imply one another: an admin who approves must also hold ``approver``.
Passwords are hashed with argon2id; a TOTP second factor (RFC 6238, 30 s, 6 digits) is
required of approvers and admins and checked for anyone who has one. Repeated failures lock
the account for a while; sessions end after an idle period. Only a SHA-256 of each session
token is stored. The time always comes from the caller (``now``), read from the reactor's
clock (``middleware.clock.utc_now``).

The functions taking a ``connection`` are units of work for ``Database.run``; each one writes
its audit entry (``middleware.audit``) in the same transaction. A refused login or an expired
session must still be remembered (the failure count, the audit entry), so those functions
commit before raising their coded error: the rollback that the error then causes finds
nothing left to undo. They must therefore be given a transaction of their own.

Callers (the console, the CLI) check roles with ``require_role`` before calling the user
management functions, and pass the acting staff member's name (or ``audit.SYSTEM``) as
``actor``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NoReturn

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Connection,
    Row,
    delete,
    select,
    update,
)

from codes import errors
from codes.errors import RenkeiError
from middleware.audit import SYSTEM, append_audit
from middleware.clock import iso
from middleware.storage import insert_if_absent
from middleware.tables import staff_session, staff_user

__all__ = [
    "ANONYMOUS",
    "CSRF_TOKEN_BYTES",
    "IDLE_TIMEOUT",
    "LOCKOUT_DURATION",
    "MAX_DISPLAY_NAME_LENGTH",
    "MAX_FAILED_ATTEMPTS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "ROLES",
    "SESSION_TOKEN_BYTES",
    "TOTP_DIGITS",
    "TOTP_INTERVAL",
    "TOTP_REQUIRED_ROLES",
    "TOTP_VALID_WINDOW",
    "Session",
    "StaffUser",
    "add_user",
    "authenticate",
    "check_csrf",
    "check_name",
    "check_password_strength",
    "disable_user",
    "get_user",
    "hash_password",
    "list_users",
    "logout",
    "match_totp",
    "new_session_token",
    "new_totp_secret",
    "parse_roles",
    "require_role",
    "reset_password",
    "reset_totp",
    "resume_session",
    "session_token_hash",
    "session_user",
    "set_roles",
    "totp_code",
    "totp_counter",
    "totp_provisioning_uri",
    "totp_required",
    "verify_password",
]

ROLES = frozenset({"operator", "approver", "auditor", "admin"})
TOTP_REQUIRED_ROLES = frozenset({"approver", "admin"})

MAX_FAILED_ATTEMPTS = 5
LOCKOUT_DURATION = timedelta(minutes=15)
IDLE_TIMEOUT = timedelta(minutes=15)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

TOTP_INTERVAL = 30
TOTP_DIGITS = 6
TOTP_VALID_WINDOW = 1
"""Time steps accepted either side of the current one, for clock drift between devices."""

SESSION_TOKEN_BYTES = 32
CSRF_TOKEN_BYTES = 32

ANONYMOUS = "anonymous"
"""The audit actor of a failed login under a name that is no staff user."""

RESERVED_NAMES = frozenset({SYSTEM, ANONYMOUS})
NAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
MAX_DISPLAY_NAME_LENGTH = 200


@dataclass(frozen=True)
class StaffUser:
    """A staff user as the console sees it: never the password hash or the TOTP secret."""

    name: str
    display_name: str
    roles: frozenset[str]
    totp_enabled: bool
    disabled: bool
    failed_attempts: int
    locked_until: datetime | None
    created_at: datetime
    password_changed_at: datetime

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def as_dict(self) -> dict[str, Any]:
        """Plain values for listings (roles sorted)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "roles": sorted(self.roles),
            "totp_enabled": self.totp_enabled,
            "disabled": self.disabled,
            "failed_attempts": self.failed_attempts,
            "locked_until": self.locked_until,
            "created_at": self.created_at,
            "password_changed_at": self.password_changed_at,
        }


@dataclass(frozen=True)
class Session:
    """A logged-in staff member's session.

    ``token`` goes to the browser in a secure, HTTP-only cookie; ``csrf_token`` goes into
    every form (and back through ``check_csrf``). Neither is shown by ``repr``.
    """

    token: str = field(repr=False)
    csrf_token: str = field(repr=False)
    user: StaffUser
    created_at: datetime
    last_seen_at: datetime

    @property
    def expires_at(self) -> datetime:
        """When the session ends unless it is used again before."""
        return self.last_seen_at + IDLE_TIMEOUT


# -- pure logic ---------------------------------------------------------------------------

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` in PHC string form, with a fresh salt."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users, so that they take as long as known ones."""
    return _hasher.hash(secrets.token_urlsafe(16))


def check_password_strength(password: str) -> None:
    """Raise ``WeakPassword`` unless the password has an acceptable length."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise RenkeiError(
            errors.WEAK_PASSWORD, minimum=MIN_PASSWORD_LENGTH, maximum=MAX_PASSWORD_LENGTH
        )


def check_name(name: str) -> None:
    """Raise ``InvalidStaffName`` unless ``name`` can name a staff user."""
    if NAME_PATTERN.fullmatch(name) is None or name in RESERVED_NAMES:
        raise RenkeiError(errors.INVALID_STAFF_NAME, name=name)


def parse_roles(roles: Iterable[str] | str) -> frozenset[str]:
    """Roles given as names or as one space-separated string; at least one, all known."""
    names = roles.split() if isinstance(roles, str) else list(roles)
    for role in names:
        if role not in ROLES:
            raise RenkeiError(errors.UNKNOWN_ROLE, role=role, roles=", ".join(sorted(ROLES)))
    if not names:
        raise RenkeiError(errors.BAD_REQUEST, detail="a staff user needs at least one role")
    return frozenset(names)


def totp_required(roles: Iterable[str]) -> bool:
    """Whether holding ``roles`` requires a TOTP second factor."""
    return not TOTP_REQUIRED_ROLES.isdisjoint(roles)


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32()


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)


def totp_counter(at: datetime) -> int:
    """The TOTP time step that ``at`` falls in."""
    return int(at.timestamp()) // TOTP_INTERVAL


def totp_code(secret: str, at: datetime) -> str:
    """The code an authenticator shows at ``at`` (for set-up checks, demos and tests)."""
    return _totp(secret).generate_otp(totp_counter(at))


def totp_provisioning_uri(name: str, secret: str, issuer: str = "renkei") -> str:
    """The ``otpauth://`` URI to load ``secret`` into an authenticator app."""
    return _totp(secret).provisioning_uri(name=name, issuer_name=issuer)


def match_totp(secret: str, code: str, at: datetime, last_counter: int | None) -> int | None:
    """The time step whose code is ``code``, or None.

    Steps up to ``TOTP_VALID_WINDOW`` either side of ``at`` are accepted, but never one at
    or before ``last_counter`` (the step of the last accepted code): a code works once.
    """
    code = code.replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = _totp(secret)
    current = totp_counter(at)
    for counter in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if last_counter is not None and counter <= last_counter:
            continue
        if hmac.compare_digest(totp.generate_otp(counter), code):
            return counter
    return None


def new_session_token() -> str:
    """A random session token (32 bytes, URL-safe base64)."""
    return secrets.token_urlsafe(SESSION_TOKEN_BYTES)


def session_token_hash(token: str) -> str:
    """What is stored of a session token: its SHA-256, hexadecimal."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_csrf(session: Session, submitted_token: str | None) -> None:
    """Raise ``CsrfRejected`` unless ``submitted_token`` is the session's CSRF token."""
    if not submitted_token or not hmac.compare_digest(
        submitted_token.encode(), session.csrf_token.encode()
    ):
        raise RenkeiError(errors.CSRF_REJECTED)


def require_role(user: StaffUser, role: str, *others: str) -> None:
    """Raise ``RoleForbidden`` (403) unless ``user`` holds ``role`` or one of ``others``."""
    wanted = (role, *others)
    for name in wanted:
        if name not in ROLES:
            raise RenkeiError(errors.UNKNOWN_ROLE, role=name, roles=", ".join(sorted(ROLES)))
    if user.disabled or not any(name in user.roles for name in wanted):
        raise RenkeiError(errors.ROLE_FORBIDDEN, role=" / ".join(wanted))


# -- units of work ------------------------------------------------------------------------


def _user_from_row(row: Row[Any]) -> StaffUser:
    return StaffUser(
        name=row.name,
        display_name=row.display_name,
        roles=frozenset(row.roles.split()),
        totp_enabled=row.totp_secret is not None,
        disabled=bool(row.disabled),
        failed_attempts=row.failed_attempts,
        locked_until=row.locked_until,
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
    )


def _user_row(connection: Connection, name: str, *, lock: bool = False) -> Row[Any]:
    statement = select(staff_user).where(staff_user.c.name == name)
    if lock:
        statement = statement.with_for_update()
    row = connection.execute(statement).first()
    if row is None:
        raise RenkeiError(errors.UNKNOWN_STAFF_USER, name=name)
    return row


def _end_sessions(connection: Connection, name: str) -> int:
    result = connection.execute(delete(staff_session).where(staff_session.c.user_name == name))
    return int(result.rowcount)


def _commit_and_raise(connection: Connection, error: RenkeiError) -> NoReturn:
    """Keep what was written (failure count, audit entry), then refuse."""
    connection.commit()
    raise error


def add_user(
    connection: Connection,
    now: datetime,
    name: str,
    display_name: str,
    password: str,
    roles: Iterable[str] | str,
    *,
    actor: str,
    with_totp: bool = False,
) -> str | None:
    """Create a staff user; the TOTP secret to provision when it has one, else None.

    A TOTP secret is made when the roles require one (approver, admin) or ``with_totp``.
    Refuses a malformed or reserved name (``InvalidStaffName``), a taken one
    (``StaffUserExists``), a short password (``WeakPassword``) and unknown roles
    (``UnknownRole``).
    """
    check_name(name)
    display_name = display_name.strip()
    if not display_name or len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise RenkeiError(
            errors.BAD_REQUEST,
            detail=f"the display name must have 1 to {MAX_DISPLAY_NAME_LENGTH} characters",
        )
    check_password_strength(password)
    role_set = parse_roles(roles)
    secret = new_totp_secret() if with_totp or totp_required(role_set) else None
    inserted = insert_if_absent(
        connection,
        staff_user,
        name=name,
        display_name=display_name,
        password_hash=hash_password(password),
        roles=" ".join(sorted(role_set)),
        totp_secret=secret,
        totp_last_counter=None,
        disabled=False,
        failed_attempts=0,
        locked_until=None,
        created_at=now,
        password_changed_at=now,
    )
    if not inserted:
        raise RenkeiError(errors.STAFF_USER_EXISTS, name=name)
    append_audit(
        connection,
        now,
        actor,
        "user_add",
        target=name,
        detail={"roles": sorted(role_set), "totp": secret is not None},
    )
    return secret


def get_user(connection: Connection, name: str) -> StaffUser:
    """One staff user; ``UnknownStaffUser`` when there is none of that name."""
    return _user_from_row(_user_row(connection, name))


def list_users(connection: Connection) -> list[dict[str, Any]]:
    """Every staff user by name, as plain dictionaries (see ``StaffUser.as_dict``)."""
    rows = connection.execute(select(staff_user).order_by(staff_user.c.name))
    return [_user_from_row(row).as_dict() for row in rows]


def disable_user(connection: Connection, now: datetime, name: str, *, actor: str) -> None:
    """Disable a staff user for good and end its live sessions."""
    _user_row(connection, name, lock=True)
    connection.execute(update(staff_user).where(staff_user.c.name == name).values(disabled=True))
    ended = _end_sessions(connection, name)
    append_audit(
        connection, now, actor, "user_disable", target=name, detail={"sessions_ended": ended}
    )


def reset_password(
    connection: Connection, now: datetime, name: str, new_password: str, *, actor: str
) -> None:
    """Set a new password, clear any lockout and end the user's live sessions."""
    check_password_strength(new_password)
    _user_row(connection, name, lock=True)
    connection.execute(
        update(staff_user)
        .where(staff_user.c.name == name)
        .values(
            password_hash=hash_password(new_password),
            password_changed_at=now,
            failed_attempts=0,
            locked_until=None,
        )
    )
    ended = _end_sessions(connection, name)
    append_audit(
        connection, now, actor, "password_reset", target=name, detail={"sessions_ended": ended}
    )


def set_roles(
    connection: Connection, now: datetime, name: str, roles: Iterable[str] | str, *, actor: str
) -> str | None:
    """Replace a user's roles; the new TOTP secret when the roles now require one it lacks."""
    role_set = parse_roles(roles)
    row = _user_row(connection, name, lock=True)
    old_roles = sorted(row.roles.split())
    secret = new_totp_secret() if totp_required(role_set) and row.totp_secret is None else None
    values: dict[str, Any] = {"roles": " ".join(sorted(role_set))}
    if secret is not None:
        values.update(totp_secret=secret, totp_last_counter=None)
    connection.execute(update(staff_user).where(staff_user.c.name == name).values(**values))
    append_audit(
        connection,
        now,
        actor,
        "role_change",
        target=name,
        detail={"from": old_roles, "to": sorted(role_set), "totp_enrolled": secret is not None},
    )
    return secret


def reset_totp(connection: Connection, now: datetime, name: str, *, actor: str) -> str:
    """Give a user a new TOTP secret (a lost authenticator) and end its live sessions."""
    _user_row(connection, name, lock=True)
    secret = new_totp_secret()
    connection.execute(
        update(staff_user)
        .where(staff_user.c.name == name)
        .values(totp_secret=secret, totp_last_counter=None)
    )
    ended = _end_sessions(connection, name)
    append_audit(
        connection, now, actor, "totp_reset", target=name, detail={"sessions_ended": ended}
    )
    return secret


def authenticate(
    connection: Connection, now: datetime, name: str, password: str, totp_code: str | None
) -> Session:
    """Log a staff member in: a new session, or ``LoginFailed`` / ``AccountLocked``.

    Every refusal for a wrong password, a wrong, reused or missing TOTP code, an unknown or
    a disabled user is the same ``LoginFailed``; the audit entry records the real reason.
    ``MAX_FAILED_ATTEMPTS`` consecutive failures lock the account for ``LOCKOUT_DURATION``,
    during which every attempt gets ``AccountLocked`` without its password being checked.
    Failures are committed before the error is raised.
    """
    target = name[:64]
    row = connection.execute(
        select(staff_user).where(staff_user.c.name == name).with_for_update()
    ).first()
    if row is None:
        verify_password(_dummy_hash(), password)
        append_audit(connection, now, ANONYMOUS, "login_failed", target, {"reason": "unknown_user"})
        _commit_and_raise(connection, RenkeiError(errors.LOGIN_FAILED))

    if row.locked_until is not None and now < row.locked_until:
        append_audit(connection, now, row.name, "login_failed", target, {"reason": "locked"})
        _commit_and_raise(connection, RenkeiError(errors.ACCOUNT_LOCKED, until=row.locked_until))
    # A lock that has run out gives a fresh count.
    failed = 0 if row.locked_until is not None else row.failed_attempts

    reason: str | None = None
    counter: int | None = None
    if not verify_password(row.password_hash, password):
        reason = "bad_password"
    elif row.disabled:
        reason = "disabled"
    elif row.totp_secret is None:
        if totp_required(row.roles.split()):
            reason = "totp_not_enrolled"
    elif not totp_code:
        reason = "totp_missing"
    else:
        counter = match_totp(row.totp_secret, totp_code, now, row.totp_last_counter)
        if counter is None:
            reason = "bad_totp"

    if reason is not None:
        failed += 1
        locked_until = now + LOCKOUT_DURATION if failed >= MAX_FAILED_ATTEMPTS else None
        connection.execute(
            update(staff_user)
            .where(staff_user.c.name == row.name)
            .values(failed_attempts=failed, locked_until=locked_until)
        )
        detail: dict[str, Any] = {"reason": reason, "failed_attempts": failed}
        if locked_until is not None:
            detail["locked_until"] = iso(locked_until)
        append_audit(connection, now, row.name, "login_failed", target, detail)
        _commit_and_raise(connection, RenkeiError(errors.LOGIN_FAILED))

    values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None}
    if counter is not None:
        values["totp_last_counter"] = counter
    if _hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = hash_password(password)
    connection.execute(update(staff_user).where(staff_user.c.name == row.name).values(**values))

    token = new_session_token()
    digest = session_token_hash(token)
    csrf_token = secrets.token_urlsafe(CSRF_TOKEN_BYTES)
    connection.execute(
        staff_session.insert().values(
            token_hash=digest,
            user_name=row.name,
            created_at=now,
            last_seen_at=now,
            csrf_token=csrf_token,
        )
    )
    append_audit(connection, now, row.name, "login", target, {"session": digest[:16]})
    user = _user_from_row(_user_row(connection, row.name))
    return Session(token=token, csrf_token=csrf_token, user=user, created_at=now, last_seen_at=now)


def resume_session(
    connection: Connection,
    now: datetime,
    token: str | None,
    idle_timeout: timedelta = IDLE_TIMEOUT,
) -> Session:
    """The live session of ``token``, its idle timer restarted; else ``SessionExpired``.

    A session idle for longer than ``idle_timeout`` (at most ``IDLE_TIMEOUT``: a console
    may set a shorter one), or of a disabled user, is ended (and the ending committed)
    before ``SessionExpired`` is raised.
    """
    idle_timeout = min(idle_timeout, IDLE_TIMEOUT)
    if not token:
        raise RenkeiError(errors.SESSION_EXPIRED)
    digest = session_token_hash(token)
    session_row = connection.execute(
        select(staff_session).where(staff_session.c.token_hash == digest)
    ).first()
    if session_row is None:
        raise RenkeiError(errors.SESSION_EXPIRED)
    user = _user_from_row(_user_row(connection, session_row.user_name))
    reason = None
    if user.disabled:
        reason = "disabled"
    elif now - session_row.last_seen_at > idle_timeout:
        reason = "idle"
    if reason is not None:
        connection.execute(delete(staff_session).where(staff_session.c.token_hash == digest))
        append_audit(
            connection,
            now,
            user.name,
            "session_expired",
            user.name,
            {"session": digest[:16], "reason": reason},
        )
        _commit_and_raise(connection, RenkeiError(errors.SESSION_EXPIRED))
    last_seen_at = max(now, session_row.last_seen_at)
    connection.execute(
        update(staff_session)
        .where(staff_session.c.token_hash == digest)
        .values(last_seen_at=last_seen_at)
    )
    return Session(
        token=token,
        csrf_token=session_row.csrf_token,
        user=user,
        created_at=session_row.created_at,
        last_seen_at=last_seen_at,
    )


def session_user(connection: Connection, now: datetime, token: str | None) -> StaffUser:
    """The staff member logged in with ``token`` (see ``resume_session``)."""
    return resume_session(connection, now, token).user


def logout(connection: Connection, now: datetime, token: str | None) -> None:
    """End the session of ``token``; nothing happens when there is none."""
    if not token:
        return
    digest = session_token_hash(token)
    row = connection.execute(
        select(staff_session.c.user_name).where(staff_session.c.token_hash == digest)
    ).first()
    if row is None:
        return
    connection.execute(delete(staff_session).where(staff_session.c.token_hash == digest))
    append_audit(connection, now, row.user_name, "logout", row.user_name, {"session": digest[:16]})
