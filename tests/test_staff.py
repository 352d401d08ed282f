"""Unit tests for middleware.staff: staff users, login, lockout, sessions, CSRF and roles."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, select
from twisted.internet.interfaces import IReactorThreads

from codes import errors
from codes.errors import RenkeiError
from middleware import staff
from middleware.audit import SYSTEM, audit_entries, verify_audit
from middleware.staff import (
    IDLE_TIMEOUT,
    LOCKOUT_DURATION,
    MAX_FAILED_ATTEMPTS,
    ROLES,
    Session,
    StaffUser,
    add_user,
    authenticate,
    check_csrf,
    disable_user,
    get_user,
    list_users,
    logout,
    require_role,
    reset_password,
    reset_totp,
    resume_session,
    session_user,
    set_roles,
    totp_code,
)
from middleware.storage import Database
from middleware.tables import node_metadata, staff_session, staff_user

START = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
OTHER_PASSWORD = "another long passphrase"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A node database in a SQLite file with every table, used through run_blocking only."""
    database = Database(cast(IReactorThreads, object()), f"sqlite:///{tmp_path / 'node.sqlite'}")
    node_metadata.create_all(database.engine)
    yield database
    database.stop()


def _add(db: Database, name: str, roles: str, **kwargs: Any) -> str | None:
    return db.run_blocking(
        add_user, START, name, name.title(), PASSWORD, roles, actor=SYSTEM, **kwargs
    )


def _login(
    db: Database,
    name: str,
    password: str = PASSWORD,
    *,
    at: datetime = START,
    secret: str | None = None,
    code: str | None = None,
) -> Session:
    if code is None and secret is not None:
        code = totp_code(secret, at)
    return db.run_blocking(authenticate, at, name, password, code)


def _refusal(db: Database, name: str, password: str, **kwargs: Any) -> RenkeiError:
    with pytest.raises(RenkeiError) as caught:
        _login(db, name, password, **kwargs)
    return caught.value


def _user_row(db: Database, name: str) -> Any:
    def work(connection: Connection) -> Any:
        return connection.execute(select(staff_user).where(staff_user.c.name == name)).one()

    return db.run_blocking(work)


def _session_count(db: Database, name: str) -> int:
    def work(connection: Connection) -> int:
        rows = connection.execute(select(staff_session).where(staff_session.c.user_name == name))
        return len(rows.all())

    return db.run_blocking(work)


def _actions(db: Database) -> list[tuple[str, str]]:
    entries = db.run_blocking(audit_entries, limit=1000)
    return [(entry["actor"], entry["action"]) for entry in reversed(entries)]


def _roles(db: Database, name: str) -> frozenset[str]:
    return db.run_blocking(get_user, name).roles


@pytest.fixture
def approver(db: Database) -> str:
    """An approver's TOTP secret (user "aki")."""
    secret = _add(db, "aki", "approver")
    assert secret is not None
    return secret


# -- users and passwords ---------------------------------------------------------------------


def test_password_is_stored_as_argon2id_and_never_in_clear(db: Database) -> None:
    """The stored password is an argon2id hash, and no column or listing holds it in clear."""
    _add(db, "oda", "operator")
    row = _user_row(db, "oda")
    assert row.password_hash.startswith("$argon2id$")
    assert all(PASSWORD not in str(value) for value in row)
    listed = db.run_blocking(list_users)
    assert len(listed) == 1
    assert "password_hash" not in listed[0]
    assert "totp_secret" not in listed[0]
    assert PASSWORD not in repr(listed)


def test_two_users_with_the_same_password_get_different_hashes(db: Database) -> None:
    """Each password hash has its own salt."""
    _add(db, "oda", "operator")
    _add(db, "ono", "operator")
    assert _user_row(db, "oda").password_hash != _user_row(db, "ono").password_hash


def test_list_users_gives_names_roles_and_state(db: Database) -> None:
    """list_users returns every user by name with roles, TOTP and lock state, no secrets."""
    _add(db, "oda", "operator auditor")
    _add(db, "aki", "approver")
    listed = db.run_blocking(list_users)
    assert [user["name"] for user in listed] == ["aki", "oda"]
    assert listed[1]["roles"] == ["auditor", "operator"]
    assert listed[0]["totp_enabled"] is True
    assert listed[1]["totp_enabled"] is False
    assert listed[1]["disabled"] is False
    assert listed[1]["created_at"] == START


def test_totp_secret_is_returned_only_when_required_or_asked(db: Database) -> None:
    """Approvers and admins get a TOTP secret; an operator only when asked for one."""
    assert _add(db, "aki", "approver") is not None
    assert _add(db, "ada", "admin") is not None
    assert _add(db, "oda", "operator") is None
    assert _add(db, "ono", "operator", with_totp=True) is not None


def test_duplicate_name_is_refused(db: Database) -> None:
    """A second user with a taken name is refused with StaffUserExists (409)."""
    _add(db, "oda", "operator")
    with pytest.raises(RenkeiError) as caught:
        _add(db, "oda", "auditor")
    assert caught.value.kind is errors.STAFF_USER_EXISTS
    assert caught.value.status == 409
    assert _roles(db, "oda") == frozenset({"operator"})


@pytest.mark.parametrize("password", ["", "short", "elevenchars"])
def test_short_password_is_refused(db: Database, password: str) -> None:
    """A password shorter than 12 characters is refused with WeakPassword."""
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(add_user, START, "oda", "Oda", password, "operator", actor=SYSTEM)
    assert caught.value.kind is errors.WEAK_PASSWORD
    assert db.run_blocking(list_users) == []


@pytest.mark.parametrize("roles", ["operator superuser", "", []])
def test_unknown_or_missing_role_is_refused(db: Database, roles: Any) -> None:
    """Unknown roles are refused with UnknownRole, an empty role set with BadRequest."""
    with pytest.raises(RenkeiError) as caught:
        _add(db, "oda", roles)
    assert caught.value.kind in (errors.UNKNOWN_ROLE, errors.BAD_REQUEST)
    assert caught.value.status == 400


@pytest.mark.parametrize("name", ["system", "anonymous", "Oda", "", "1oda", "o da", "x" * 65])
def test_malformed_or_reserved_name_is_refused(db: Database, name: str) -> None:
    """Reserved, upper-case, empty, too long or oddly formed names are refused."""
    with pytest.raises(RenkeiError) as caught:
        _add(db, name, "operator")
    assert caught.value.kind is errors.INVALID_STAFF_NAME


def test_unknown_user_operations_are_refused(db: Database) -> None:
    """Managing a user that does not exist raises UnknownStaffUser (404)."""
    attempts: list[tuple[Any, tuple[Any, ...]]] = [
        (disable_user, ()),
        (reset_password, (OTHER_PASSWORD,)),
        (set_roles, ("auditor",)),
        (reset_totp, ()),
    ]
    for work, args in attempts:
        with pytest.raises(RenkeiError) as caught:
            db.run_blocking(work, START, "ghost", *args, actor=SYSTEM)
        assert caught.value.kind is errors.UNKNOWN_STAFF_USER
        assert caught.value.status == 404


# -- logging in ------------------------------------------------------------------------------


def test_login_with_password_and_totp_opens_a_session(db: Database, approver: str) -> None:
    """The right password and TOTP code give a session whose token is stored only hashed."""
    session = _login(db, "aki", secret=approver)
    assert session.user.name == "aki"
    assert session.user.roles == frozenset({"approver"})
    assert session.expires_at == START + IDLE_TIMEOUT
    assert len(session.token) >= 43 and len(session.csrf_token) >= 43
    assert session.token not in repr(session)

    def rows(connection: Connection) -> list[Any]:
        return list(connection.execute(select(staff_session)))

    [row] = db.run_blocking(rows)
    assert row.token_hash == hashlib.sha256(session.token.encode()).hexdigest()
    assert session.token not in [str(value) for value in row]
    assert db.run_blocking(session_user, START, session.token).name == "aki"


def test_operator_logs_in_without_totp(db: Database) -> None:
    """An operator without a TOTP secret logs in with the password alone."""
    _add(db, "oda", "operator")
    assert _login(db, "oda").user.name == "oda"


def test_operator_with_totp_must_give_it(db: Database) -> None:
    """An operator who enrolled a TOTP must give a right code too."""
    secret = _add(db, "oda", "operator", with_totp=True)
    assert secret is not None
    assert _refusal(db, "oda", PASSWORD).kind is errors.LOGIN_FAILED
    assert _login(db, "oda", secret=secret).user.name == "oda"


def test_each_login_gets_its_own_tokens(db: Database) -> None:
    """Two logins of one user get different session and CSRF tokens."""
    _add(db, "oda", "operator")
    first = _login(db, "oda")
    second = _login(db, "oda", at=START + timedelta(seconds=1))
    assert first.token != second.token
    assert first.csrf_token != second.csrf_token


def test_wrong_password_wrong_totp_and_unknown_user_look_the_same(
    db: Database, approver: str
) -> None:
    """Wrong password, wrong TOTP and an unknown user all raise the same LoginFailed (401)."""
    good_code = totp_code(approver, START)
    wrong_code = f"{(int(good_code) + 1) % 1_000_000:06d}"
    refusals = [
        _refusal(db, "aki", OTHER_PASSWORD, secret=approver),
        _refusal(db, "aki", PASSWORD, code=wrong_code),
        _refusal(db, "nobody", PASSWORD, code=good_code),
        _refusal(db, "nobody", PASSWORD),
    ]
    for refusal in refusals:
        assert refusal.kind is errors.LOGIN_FAILED
        assert refusal.status == 401
        assert (refusal.message_en, refusal.message_ja) == (
            refusals[0].message_en,
            refusals[0].message_ja,
        )
        assert refusal.params == {}


@pytest.mark.parametrize("role", ["approver", "admin"])
def test_approver_and_admin_without_totp_code_are_refused(db: Database, role: str) -> None:
    """A user holding approver or admin cannot log in with the password alone."""
    secret = _add(db, "kim", role)
    assert secret is not None
    assert _refusal(db, "kim", PASSWORD).kind is errors.LOGIN_FAILED
    assert _refusal(db, "kim", PASSWORD, code="").kind is errors.LOGIN_FAILED
    assert _login(db, "kim", secret=secret).user.has_role(role)


def test_totp_code_of_the_neighbouring_step_is_accepted(db: Database, approver: str) -> None:
    """A code from the previous 30 s step is still accepted (clock drift)."""
    earlier = totp_code(approver, START - timedelta(seconds=30))
    assert _login(db, "aki", code=earlier).user.name == "aki"


def test_stale_totp_code_is_refused(db: Database, approver: str) -> None:
    """A code from two minutes ago is refused."""
    stale = totp_code(approver, START - timedelta(minutes=2))
    assert stale != totp_code(approver, START)
    assert _refusal(db, "aki", PASSWORD, code=stale).kind is errors.LOGIN_FAILED


def test_totp_code_cannot_be_replayed(db: Database, approver: str) -> None:
    """A TOTP code that logged in once is refused the second time."""
    code = totp_code(approver, START)
    _login(db, "aki", code=code)
    later = START + timedelta(seconds=5)
    assert _refusal(db, "aki", PASSWORD, code=code, at=later).kind is errors.LOGIN_FAILED


def test_failures_are_kept_although_the_login_is_refused(db: Database) -> None:
    """A refused login's failure count and audit entry survive the error's rollback."""
    _add(db, "oda", "operator")
    _refusal(db, "oda", OTHER_PASSWORD)
    assert _user_row(db, "oda").failed_attempts == 1
    assert _actions(db)[-1] == ("oda", "login_failed")


def test_lockout_after_five_failures_and_unlock_after_fifteen_minutes(db: Database) -> None:
    """Five failures lock the account for 15 minutes, even for the right password."""
    _add(db, "oda", "operator")
    for attempt in range(MAX_FAILED_ATTEMPTS):
        at = START + timedelta(seconds=attempt)
        assert _refusal(db, "oda", OTHER_PASSWORD, at=at).kind is errors.LOGIN_FAILED
    locked_at = START + timedelta(seconds=MAX_FAILED_ATTEMPTS - 1)
    assert _user_row(db, "oda").locked_until == locked_at + LOCKOUT_DURATION
    for at in (locked_at, locked_at + LOCKOUT_DURATION - timedelta(seconds=1)):
        refusal = _refusal(db, "oda", PASSWORD, at=at)
        assert refusal.kind is errors.ACCOUNT_LOCKED
        assert refusal.status == 423
    session = _login(db, "oda", at=locked_at + LOCKOUT_DURATION)
    assert session.user.failed_attempts == 0
    assert session.user.locked_until is None


def test_four_failures_do_not_lock(db: Database) -> None:
    """Four failures leave the account open."""
    _add(db, "oda", "operator")
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        _refusal(db, "oda", OTHER_PASSWORD)
    assert _login(db, "oda").user.name == "oda"


def test_success_resets_the_failure_count(db: Database) -> None:
    """Failures before a successful login do not count towards the next lockout."""
    _add(db, "oda", "operator")
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        _refusal(db, "oda", OTHER_PASSWORD)
    _login(db, "oda")
    assert _user_row(db, "oda").failed_attempts == 0
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        _refusal(db, "oda", OTHER_PASSWORD)
    assert _login(db, "oda").user.name == "oda"


def test_an_expired_lock_gives_a_fresh_count(db: Database) -> None:
    """After a lock runs out, one more failure does not lock the account again."""
    _add(db, "oda", "operator")
    for _ in range(MAX_FAILED_ATTEMPTS):
        _refusal(db, "oda", OTHER_PASSWORD)
    after = START + LOCKOUT_DURATION
    assert _refusal(db, "oda", OTHER_PASSWORD, at=after).kind is errors.LOGIN_FAILED
    assert _user_row(db, "oda").failed_attempts == 1
    assert _login(db, "oda", at=after).user.name == "oda"


def test_reset_password_clears_lockout(db: Database) -> None:
    """Resetting the password unlocks the account at once, with the new password only."""
    _add(db, "oda", "operator")
    for _ in range(MAX_FAILED_ATTEMPTS):
        _refusal(db, "oda", OTHER_PASSWORD)
    assert _refusal(db, "oda", PASSWORD).kind is errors.ACCOUNT_LOCKED
    db.run_blocking(reset_password, START, "oda", OTHER_PASSWORD, actor="ada")
    row = _user_row(db, "oda")
    assert (row.failed_attempts, row.locked_until) == (0, None)
    assert _refusal(db, "oda", PASSWORD).kind is errors.LOGIN_FAILED
    assert _login(db, "oda", OTHER_PASSWORD).user.name == "oda"


def test_reset_password_refuses_a_weak_password(db: Database) -> None:
    """reset_password refuses a short password and keeps the old one."""
    _add(db, "oda", "operator")
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(reset_password, START, "oda", "short", actor="ada")
    assert caught.value.kind is errors.WEAK_PASSWORD
    assert _login(db, "oda").user.name == "oda"


def test_reset_password_ends_live_sessions(db: Database) -> None:
    """A password reset ends the sessions opened with the old password."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    db.run_blocking(reset_password, START, "oda", OTHER_PASSWORD, actor="ada")
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(session_user, START, session.token)
    assert caught.value.kind is errors.SESSION_EXPIRED


def test_disabled_user_cannot_log_in_and_loses_live_sessions(db: Database) -> None:
    """Disabling a user ends its sessions, and its next login gets the uniform LoginFailed."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    db.run_blocking(disable_user, START + timedelta(minutes=1), "oda", actor="ada")
    assert _session_count(db, "oda") == 0
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(session_user, START + timedelta(minutes=2), session.token)
    assert caught.value.kind is errors.SESSION_EXPIRED
    assert _refusal(db, "oda", PASSWORD).kind is errors.LOGIN_FAILED
    assert db.run_blocking(get_user, "oda").disabled


def test_set_roles_to_approver_enrolls_totp(db: Database) -> None:
    """Promoting an operator to approver creates a TOTP secret, then required at login."""
    _add(db, "oda", "operator")
    secret = db.run_blocking(set_roles, START, "oda", ["operator", "approver"], actor="ada")
    assert secret is not None
    assert db.run_blocking(get_user, "oda").roles == frozenset({"operator", "approver"})
    assert _refusal(db, "oda", PASSWORD).kind is errors.LOGIN_FAILED
    assert _login(db, "oda", secret=secret).user.has_role("approver")
    assert db.run_blocking(set_roles, START, "oda", "auditor", actor="ada") is None


def test_reset_totp_replaces_the_secret(db: Database, approver: str) -> None:
    """After a TOTP reset only the new secret's codes work."""
    new_secret = db.run_blocking(reset_totp, START, "aki", actor="ada")
    assert new_secret != approver
    old_code = totp_code(approver, START)
    if old_code != totp_code(new_secret, START):
        assert _refusal(db, "aki", PASSWORD, code=old_code).kind is errors.LOGIN_FAILED
    assert _login(db, "aki", secret=new_secret).user.name == "aki"


# -- sessions -----------------------------------------------------------------------------------


def test_idle_session_expires_after_fifteen_minutes_and_one_second(db: Database) -> None:
    """A session unused for 15 min is still valid; unused for 15 min + 1 s it has expired."""
    _add(db, "oda", "operator")
    first = _login(db, "oda")
    assert db.run_blocking(session_user, START + IDLE_TIMEOUT, first.token).name == "oda"
    second = _login(db, "oda", at=START + timedelta(seconds=1))
    late = START + timedelta(seconds=1) + IDLE_TIMEOUT + timedelta(seconds=1)
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(session_user, late, second.token)
    assert caught.value.kind is errors.SESSION_EXPIRED
    assert caught.value.status == 401


def test_expired_session_is_removed(db: Database) -> None:
    """An expired session is deleted, so it fails afterwards whatever time is given."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    with pytest.raises(RenkeiError):
        db.run_blocking(session_user, START + timedelta(hours=1), session.token)
    assert _session_count(db, "oda") == 0
    with pytest.raises(RenkeiError):
        db.run_blocking(session_user, START, session.token)
    assert _actions(db)[-1] == ("oda", "session_expired")


def test_sliding_refresh_keeps_a_session_alive(db: Database) -> None:
    """Using a session every 10 minutes keeps it alive well past 15 minutes."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    at = START
    for _ in range(6):
        at += timedelta(minutes=10)
        resumed = db.run_blocking(resume_session, at, session.token)
        assert resumed.last_seen_at == at
        assert resumed.expires_at == at + IDLE_TIMEOUT
        assert resumed.csrf_token == session.csrf_token
    with pytest.raises(RenkeiError):
        db.run_blocking(session_user, at + IDLE_TIMEOUT + timedelta(seconds=1), session.token)


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_missing_or_unknown_token_is_refused(db: Database, token: str | None) -> None:
    """No token or an unknown token raises SessionExpired."""
    with pytest.raises(RenkeiError) as caught:
        db.run_blocking(session_user, START, token)
    assert caught.value.kind is errors.SESSION_EXPIRED


def test_logout_ends_the_session(db: Database) -> None:
    """After logout the token no longer opens a session, and a second logout is harmless."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    db.run_blocking(logout, START + timedelta(minutes=1), session.token)
    with pytest.raises(RenkeiError):
        db.run_blocking(session_user, START + timedelta(minutes=1), session.token)
    db.run_blocking(logout, START + timedelta(minutes=2), session.token)
    assert [action for _, action in _actions(db)].count("logout") == 1


# -- CSRF and roles ----------------------------------------------------------------------------


def test_csrf_token_must_match_the_session(db: Database) -> None:
    """The session's own CSRF token passes; a missing, wrong or other session's one is refused."""
    _add(db, "oda", "operator")
    session = _login(db, "oda")
    other = _login(db, "oda", at=START + timedelta(seconds=1))
    check_csrf(session, session.csrf_token)
    for submitted in (None, "", session.csrf_token[:-1], other.csrf_token, "x" * 200):
        with pytest.raises(RenkeiError) as caught:
            check_csrf(session, submitted)
        assert caught.value.kind is errors.CSRF_REJECTED
        assert caught.value.status == 403


def _user(*roles: str, disabled: bool = False) -> StaffUser:
    return StaffUser(
        name="kim",
        display_name="Kim",
        roles=frozenset(roles),
        totp_enabled=True,
        disabled=disabled,
        failed_attempts=0,
        locked_until=None,
        created_at=START,
        password_changed_at=START,
    )


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_grants_only_itself(role: str) -> None:
    """A user with one role passes that role's check and gets RoleForbidden (403) for the rest."""
    user = _user(role)
    require_role(user, role)
    for other in ROLES - {role}:
        with pytest.raises(RenkeiError) as caught:
            require_role(user, other)
        assert caught.value.kind is errors.ROLE_FORBIDDEN
        assert caught.value.status == 403


def test_require_role_accepts_any_of_several() -> None:
    """require_role with several roles passes when the user holds one of them."""
    require_role(_user("auditor"), "operator", "auditor")
    with pytest.raises(RenkeiError):
        require_role(_user("approver"), "operator", "auditor")


def test_admin_does_not_imply_other_roles() -> None:
    """An admin holds no other role implicitly (separation of duties)."""
    with pytest.raises(RenkeiError):
        require_role(_user("admin"), "approver")


def test_disabled_user_holds_no_role() -> None:
    """A disabled user fails every role check."""
    with pytest.raises(RenkeiError):
        require_role(_user("admin", disabled=True), "admin")


def test_checking_an_unknown_role_is_an_error() -> None:
    """Asking for a role that does not exist raises UnknownRole rather than passing."""
    with pytest.raises(RenkeiError) as caught:
        require_role(_user("admin"), "root")
    assert caught.value.kind is errors.UNKNOWN_ROLE


# -- audit --------------------------------------------------------------------------------------


def test_every_operation_is_audited_with_actor_action_and_time(db: Database) -> None:
    """Each staff operation leaves one audit entry with who, what and when, and the chain holds."""
    times = [START + timedelta(minutes=minute) for minute in range(20)]
    secret = db.run_blocking(add_user, times[0], "ada", "Ada", PASSWORD, "admin", actor=SYSTEM)
    assert secret is not None
    db.run_blocking(add_user, times[1], "oda", "Oda", PASSWORD, "operator", actor="ada")
    session = _login(db, "ada", at=times[2], secret=secret)
    _refusal(db, "oda", OTHER_PASSWORD, at=times[3])
    _refusal(db, "nobody", PASSWORD, at=times[4])
    db.run_blocking(set_roles, times[5], "oda", "operator auditor", actor="ada")
    db.run_blocking(reset_password, times[6], "oda", OTHER_PASSWORD, actor="ada")
    oda_secret = db.run_blocking(reset_totp, times[7], "oda", actor="ada")
    oda = _login(db, "oda", OTHER_PASSWORD, at=times[8], secret=oda_secret)
    db.run_blocking(logout, times[9], oda.token)
    db.run_blocking(disable_user, times[10], "oda", actor=SYSTEM)
    for _ in range(MAX_FAILED_ATTEMPTS):
        _refusal(db, "oda", OTHER_PASSWORD, at=times[11])
    db.run_blocking(reset_password, times[12], "oda", PASSWORD, actor=SYSTEM)
    with pytest.raises(RenkeiError):
        _login(db, "oda", at=times[13])
    with pytest.raises(RenkeiError):
        db.run_blocking(session_user, times[18], session.token)

    entries = list(reversed(db.run_blocking(audit_entries, limit=100)))
    summary = [(e["recorded_at"], e["actor"], e["action"], e["target"]) for e in entries]
    failed_oda = [(times[11], "oda", "login_failed", "oda")] * MAX_FAILED_ATTEMPTS
    assert summary == [
        (times[0], SYSTEM, "user_add", "ada"),
        (times[1], "ada", "user_add", "oda"),
        (times[2], "ada", "login", "ada"),
        (times[3], "oda", "login_failed", "oda"),
        (times[4], "anonymous", "login_failed", "nobody"),
        (times[5], "ada", "role_change", "oda"),
        (times[6], "ada", "password_reset", "oda"),
        (times[7], "ada", "totp_reset", "oda"),
        (times[8], "oda", "login", "oda"),
        (times[9], "oda", "logout", "oda"),
        (times[10], SYSTEM, "user_disable", "oda"),
        *failed_oda,
        (times[12], SYSTEM, "password_reset", "oda"),
        (times[13], "oda", "login_failed", "oda"),
        (times[18], "ada", "session_expired", "ada"),
    ]
    reasons = [e["detail"]["reason"] for e in entries if e["action"] == "login_failed"]
    assert reasons == ["bad_password", "unknown_user", *["disabled"] * 5, "disabled"]
    assert entries[5]["detail"] == {
        "from": ["operator"],
        "to": ["auditor", "operator"],
        "totp_enrolled": False,
    }
    assert db.run_blocking(verify_audit) is None


def test_audit_entries_hold_no_secrets(db: Database, approver: str) -> None:
    """No audit entry contains a password, TOTP secret or session token."""
    session = _login(db, "aki", secret=approver)
    _refusal(db, "aki", OTHER_PASSWORD, at=START + timedelta(minutes=1))
    db.run_blocking(logout, START + timedelta(minutes=2), session.token)
    text = repr(db.run_blocking(audit_entries, limit=100))
    for secret in (PASSWORD, OTHER_PASSWORD, approver, session.token, session.csrf_token):
        assert secret not in text


def test_new_error_kinds_have_both_messages() -> None:
    """Each staff error kind has its code, HTTP status and English and Japanese messages."""
    expected = {
        "LoginFailed": 401,
        "AccountLocked": 423,
        "SessionExpired": 401,
        "CsrfRejected": 403,
        "RoleForbidden": 403,
        "UnknownStaffUser": 404,
        "StaffUserExists": 409,
        "WeakPassword": 400,
        "UnknownRole": 400,
        "InvalidStaffName": 400,
    }
    for code, status in expected.items():
        kind = errors.ALL[code]
        assert kind.status == status
        assert kind.en and kind.ja and kind.en != kind.ja


def test_module_constants_match_the_policy() -> None:
    """The lockout, idle timeout and TOTP settings are the published ones."""
    assert staff.MAX_FAILED_ATTEMPTS == 5
    assert staff.LOCKOUT_DURATION.total_seconds() == 15 * 60
    assert staff.IDLE_TIMEOUT.total_seconds() == 15 * 60
    assert (staff.TOTP_INTERVAL, staff.TOTP_DIGITS) == (30, 6)
    assert staff.MIN_PASSWORD_LENGTH == 12
    assert frozenset({"operator", "approver", "auditor", "admin"}) == ROLES
