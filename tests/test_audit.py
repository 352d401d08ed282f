"""Unit tests for middleware.audit: the append-only, hash-chained staff audit log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, delete, select, text, update
from twisted.internet.interfaces import IReactorThreads

from middleware import staff as _staff  # noqa: F401  (registers the staff tables too)
from middleware.audit import (
    append_audit,
    audit_entries,
    audit_hash,
    count_audit,
    verify_audit,
)
from middleware.chain import GENESIS
from middleware.storage import Database
from middleware.tables import audit_head, audit_record, node_metadata

START = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A node database in a SQLite file with every table, used through run_blocking only."""
    database = Database(cast(IReactorThreads, object()), f"sqlite:///{tmp_path / 'node.sqlite'}")
    node_metadata.create_all(database.engine)
    yield database
    database.stop()


def _append(db: Database, seconds: int, actor: str, action: str, **kwargs: Any) -> int:
    return db.run_blocking(
        append_audit, START + timedelta(seconds=seconds), actor, action, **kwargs
    )


def _execute(db: Database, statement: Any) -> None:
    def work(connection: Connection) -> None:
        connection.execute(statement)

    db.run_blocking(work)


@pytest.fixture
def five(db: Database) -> Database:
    """A log of five entries by two actors."""
    _append(db, 0, "alice", "login", target="alice", detail={"session": "abc"})
    _append(db, 1, "alice", "view_held_content", target="20260101000000000001")
    _append(db, 2, "alice", "approve", target="20260101000000000001", detail={"n": 1})
    _append(db, 3, "bob", "login_failed", target="bob", detail={"reason": "bad_password"})
    _append(db, 4, "system", "user_add", target="carol", detail={"roles": ["operator"]})
    return db


def test_empty_log_verifies(db: Database) -> None:
    """A node with no audit entries has a whole (empty) chain."""
    assert db.run_blocking(verify_audit) is None
    assert db.run_blocking(count_audit) == 0


def test_appended_entries_verify_and_link(five: Database) -> None:
    """Appended entries get gap-free seqs, link to their predecessor and verify."""

    def rows(connection: Connection) -> list[Any]:
        return list(connection.execute(select(audit_record).order_by(audit_record.c.seq)))

    chain = five.run_blocking(rows)
    assert [row.seq for row in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(chain))
    first = chain[0]
    assert first.hash == audit_hash(
        GENESIS, 1, START, "alice", "login", "alice", '{"session":"abc"}'
    )
    assert five.run_blocking(verify_audit) is None


def test_append_returns_the_new_seq(db: Database) -> None:
    """append_audit returns the sequence number it wrote."""
    assert _append(db, 0, "system", "export") == 1
    assert _append(db, 1, "system", "export") == 2


def test_entries_are_listed_newest_first_with_detail_decoded(five: Database) -> None:
    """audit_entries pages newest first and gives actor, action, time, target and detail."""
    page = five.run_blocking(audit_entries, limit=2)
    assert [entry["seq"] for entry in page] == [5, 4]
    assert page[0] == {
        "seq": 5,
        "recorded_at": START + timedelta(seconds=4),
        "actor": "system",
        "action": "user_add",
        "target": "carol",
        "detail": {"roles": ["operator"]},
    }
    second = five.run_blocking(audit_entries, limit=2, offset=2)
    assert [entry["seq"] for entry in second] == [3, 2]
    assert second[1]["detail"] is None


def test_entries_filter_by_actor_and_action(five: Database) -> None:
    """Filtering by actor and by action selects only matching entries, also when counting."""
    alice = five.run_blocking(audit_entries, limit=10, actor="alice")
    assert [entry["seq"] for entry in alice] == [3, 2, 1]
    logins = five.run_blocking(audit_entries, limit=10, actor="alice", action="login")
    assert [entry["seq"] for entry in logins] == [1]
    assert five.run_blocking(count_audit, actor="alice") == 3
    assert five.run_blocking(count_audit, action="login_failed") == 1
    assert five.run_blocking(count_audit) == 5


def test_naive_time_is_refused(db: Database) -> None:
    """An audit time without a time zone is refused."""
    with pytest.raises(ValueError):
        db.run_blocking(append_audit, datetime(2026, 1, 1), "system", "export")


def test_editing_an_entry_is_detected(five: Database) -> None:
    """Changing the actor of entry 2 breaks the chain at seq 2."""
    _execute(five, update(audit_record).where(audit_record.c.seq == 2).values(actor="mallory"))
    assert five.run_blocking(verify_audit) == 2


def test_editing_a_detail_with_raw_sql_is_detected(five: Database) -> None:
    """A raw SQL UPDATE of entry 4's detail is detected at seq 4."""
    _execute(five, text("UPDATE audit_record SET detail = '{}' WHERE seq = 4"))
    assert five.run_blocking(verify_audit) == 4


def test_changing_an_entry_time_is_detected(five: Database) -> None:
    """Moving entry 1's time by a second breaks the chain at seq 1."""
    _execute(
        five,
        update(audit_record)
        .where(audit_record.c.seq == 1)
        .values(recorded_at=START + timedelta(seconds=1)),
    )
    assert five.run_blocking(verify_audit) == 1


def test_removing_a_middle_entry_is_detected(five: Database) -> None:
    """Deleting entry 3 breaks the chain at seq 3."""
    _execute(five, delete(audit_record).where(audit_record.c.seq == 3))
    assert five.run_blocking(verify_audit) == 3


def test_removing_the_last_entry_is_detected_by_the_head(five: Database) -> None:
    """Deleting the newest entry leaves the head row pointing past the end: seq 5 breaks."""
    _execute(five, delete(audit_record).where(audit_record.c.seq == 5))
    assert five.run_blocking(verify_audit) == 5


def test_removing_every_entry_is_detected_by_the_head(five: Database) -> None:
    """An emptied log with its head row left behind breaks at seq 1."""
    _execute(five, delete(audit_record))
    assert five.run_blocking(verify_audit) == 1


def test_removing_the_head_row_is_detected(five: Database) -> None:
    """Deleting the head row of a non-empty log is reported past the last entry."""
    _execute(five, delete(audit_head))
    assert five.run_blocking(verify_audit) == 6


def test_rewriting_the_whole_tail_with_a_stale_head_is_detected(five: Database) -> None:
    """Recomputing entry 5's hash after an edit still disagrees with the head row."""

    def forge(connection: Connection) -> None:
        row = connection.execute(select(audit_record).where(audit_record.c.seq == 5)).one()
        forged = audit_hash(
            row.prev_hash, 5, row.recorded_at, "mallory", row.action, row.target, row.detail
        )
        connection.execute(
            update(audit_record).where(audit_record.c.seq == 5).values(actor="mallory", hash=forged)
        )

    five.run_blocking(forge)
    assert five.run_blocking(verify_audit) == 6
