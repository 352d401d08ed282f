"""Unit tests for middleware.persons: the node's 符号 ↔ 団体内統合宛名番号 pairs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, select
from twisted.internet.interfaces import IReactorThreads

from codes.errors import RenkeiError
from middleware.persons import (
    enrol,
    fugo_of,
    link,
    person_key,
    person_of,
    person_state,
    record_failure,
)
from middleware.storage import Database, migrate
from middleware.tables import person
from tests.network import register

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

NOW = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ALICE = "000000000000001"
BOB = "000000000000002"
FUGO_A = "0123456789ABCDEF0123456789ABCDEF"
FUGO_B = "FEDCBA9876543210FEDCBA9876543210"


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database in a SQLite file, used through run_blocking only."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    database = Database(cast(IReactorThreads, object()), url)
    yield database
    database.stop()


def _person_row(connection: Connection, number: str) -> Any:
    return connection.execute(
        select(person).where(person.c.integrated_address_number == number)
    ).one()


def _refusal(database: Database, work: Any, *args: Any) -> RenkeiError:
    with pytest.raises(RenkeiError) as caught:
        database.run_blocking(work, *args)
    return caught.value


def test_register_then_link_pairs_the_person_with_the_fugo(node_db: Database) -> None:
    """A registered person linked to a 符号 is found both ways and keeps both times."""
    node_db.run_blocking(register, ALICE, NOW)
    assert node_db.run_blocking(link, ALICE, FUGO_A, LATER) is True
    assert node_db.run_blocking(fugo_of, ALICE) == FUGO_A
    assert node_db.run_blocking(person_of, FUGO_A) == ALICE
    row = node_db.run_blocking(_person_row, ALICE)
    assert (row.registered_at, row.fugo_acquired_at) == (NOW, LATER)


def test_register_is_idempotent(node_db: Database) -> None:
    """Registering a person twice keeps the first registration time."""
    node_db.run_blocking(register, ALICE, NOW)
    node_db.run_blocking(register, ALICE, LATER)
    row = node_db.run_blocking(_person_row, ALICE)
    assert row.registered_at == NOW
    assert row.fugo is None


def test_link_without_registration_registers_the_person(node_db: Database) -> None:
    """Linking a person never registered creates the pair directly."""
    assert node_db.run_blocking(link, BOB, FUGO_B, NOW) is True
    assert node_db.run_blocking(fugo_of, BOB) == FUGO_B


def test_linking_the_same_pair_again_is_idempotent(node_db: Database) -> None:
    """A second link of the same pair changes nothing and reports it as not new."""
    node_db.run_blocking(register, ALICE, NOW)
    node_db.run_blocking(link, ALICE, FUGO_A, NOW)
    assert node_db.run_blocking(link, ALICE, FUGO_A, LATER) is False
    assert node_db.run_blocking(_person_row, ALICE).fugo_acquired_at == NOW


def test_linking_another_fugo_to_a_linked_person_is_refused(node_db: Database) -> None:
    """A person already paired keeps their 符号; a different one is PersonConflict."""
    node_db.run_blocking(link, ALICE, FUGO_A, NOW)
    refusal = _refusal(node_db, link, ALICE, FUGO_B, LATER)
    assert refusal.code == "PersonConflict"
    assert ALICE in refusal.message_ja
    assert node_db.run_blocking(fugo_of, ALICE) == FUGO_A


def test_linking_a_used_fugo_to_another_person_is_refused(node_db: Database) -> None:
    """A 符号 already paired with one person cannot be paired with another: PersonConflict."""
    node_db.run_blocking(link, ALICE, FUGO_A, NOW)
    node_db.run_blocking(register, BOB, NOW)
    refusal = _refusal(node_db, link, BOB, FUGO_A, LATER)
    assert refusal.code == "PersonConflict"
    assert node_db.run_blocking(person_of, FUGO_A) == ALICE
    assert node_db.run_blocking(_person_row, BOB).fugo is None


def test_linking_a_used_fugo_to_an_unregistered_person_is_refused(node_db: Database) -> None:
    """The 符号 uniqueness holds even when the other person was never registered."""
    node_db.run_blocking(link, ALICE, FUGO_A, NOW)
    assert _refusal(node_db, link, BOB, FUGO_A, LATER).code == "PersonConflict"


def test_fugo_of_an_unregistered_person_is_not_acquired(node_db: Database) -> None:
    """Nobody registered: FugoNotAcquired, 「<number>は符号が未取得です」."""
    refusal = _refusal(node_db, fugo_of, ALICE)
    assert refusal.code == "FugoNotAcquired"
    assert refusal.status == 409
    assert refusal.message_ja == f"{ALICE}は符号が未取得です"


def test_fugo_of_a_registered_person_without_fugo_is_not_acquired(node_db: Database) -> None:
    """Registered but not yet linked: FugoNotAcquired with the same Japanese message."""
    node_db.run_blocking(register, ALICE, NOW)
    refusal = _refusal(node_db, fugo_of, ALICE)
    assert refusal.code == "FugoNotAcquired"
    assert refusal.message_ja == "000000000000001は符号が未取得です"


def test_person_of_an_unknown_fugo_is_refused(node_db: Database) -> None:
    """A 符号 paired with nobody here gives FugoUnknown."""
    node_db.run_blocking(link, ALICE, FUGO_A, NOW)
    refusal = _refusal(node_db, person_of, FUGO_B)
    assert refusal.code == "FugoUnknown"
    assert refusal.status == 404


SECRET = bytes(range(32))
KEY_A = person_key(SECRET, "123456789018")
KEY_B = person_key(SECRET, "234567890121")


def test_person_key_is_keyed_and_never_the_number() -> None:
    """The person key depends on the secret and does not contain the individual number."""
    assert person_key(bytes(32), "123456789018") != KEY_A
    assert "123456789018" not in KEY_A and len(KEY_A) == 64


def test_enrol_allocates_numbers_and_finds_the_same_person_again(node_db: Database) -> None:
    """Without a proposed number the next 15-digit one is allocated; enrolling the same
    person again returns the same number and the 符号 once acquired."""
    assert node_db.run_blocking(enrol, KEY_A, None, NOW) == ("000000000000001", None)
    assert node_db.run_blocking(enrol, KEY_B, None, NOW) == ("000000000000002", None)
    node_db.run_blocking(link, "000000000000001", FUGO_A, LATER)
    assert node_db.run_blocking(enrol, KEY_A, None, LATER) == ("000000000000001", FUGO_A)


def test_enrol_keeps_a_proposed_number_and_refuses_conflicts(node_db: Database) -> None:
    """A proposed number is kept; proposing another person's number, or another number for
    a known person, is PersonConflict and changes nothing."""
    assert node_db.run_blocking(enrol, KEY_A, ALICE, NOW) == (ALICE, None)
    assert _refusal(node_db, enrol, KEY_B, ALICE, NOW).code == "PersonConflict"
    assert _refusal(node_db, enrol, KEY_A, BOB, NOW).code == "PersonConflict"
    assert node_db.run_blocking(enrol, KEY_B, BOB, NOW) == (BOB, None)


def test_person_state_reports_pending_failed_and_acquired(node_db: Database) -> None:
    """A person is pending until the 符号 is linked, failed with the code after a failed
    acquisition, and acquired once linked (which clears the failure)."""
    node_db.run_blocking(enrol, KEY_A, ALICE, NOW)
    assert node_db.run_blocking(person_state, ALICE)["fugo_state"] == "pending"
    node_db.run_blocking(record_failure, ALICE, "NetworkUnavailable")
    failed = node_db.run_blocking(person_state, ALICE)
    assert (failed["fugo_state"], failed["error"]) == ("failed", "NetworkUnavailable")
    node_db.run_blocking(link, ALICE, FUGO_A, LATER)
    acquired = node_db.run_blocking(person_state, ALICE)
    assert (acquired["fugo_state"], acquired["error"]) == ("acquired", None)
    assert "fugo" not in acquired
    assert _refusal(node_db, person_state, BOB).code == "UnknownPerson"
