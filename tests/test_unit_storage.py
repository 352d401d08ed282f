"""Unit tests for middleware.storage: SQLite settings, transactions through run_blocking and
reads on SQLite's WAL readers."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from sqlalchemy import Column, Connection, Integer, MetaData, Table, inspect, select, update
from sqlalchemy.exc import OperationalError
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThread

from middleware.storage import Database, migrate

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

metadata = MetaData()
counter = Table(
    "unit_counter",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", Integer, nullable=False),
)

INCREMENTS = 200


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A SQLite file database holding a counter table at zero."""
    db = Database(cast(IReactorThreads, object()), f"sqlite:///{tmp_path / 'unit.sqlite'}")
    metadata.create_all(db.engine)

    def seed(connection: Connection) -> None:
        connection.execute(counter.insert().values(id=1, value=0))

    db.run_blocking(seed)
    yield db
    db.stop()


def _read(connection: Connection) -> int:
    return int(connection.execute(select(counter.c.value).where(counter.c.id == 1)).scalar_one())


def _increment(connection: Connection) -> None:
    value = _read(connection)
    time.sleep(0)  # let the other thread run between the read and the write
    connection.execute(update(counter).where(counter.c.id == 1).values(value=value + 1))


def test_concurrent_read_then_write_increments_lose_no_update(database: Database) -> None:
    """Two threads incrementing one counter 200 times each end at exactly 400."""
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(INCREMENTS):
                database.run_blocking(_increment)
        except BaseException as failure:
            failures.append(failure)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert database.run_blocking(_read) == 2 * INCREMENTS


def test_sqlite_runs_in_wal_mode(database: Database) -> None:
    """The SQLite journal mode is WAL."""

    def journal_mode(connection: Connection) -> str:
        return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar_one())

    assert database.run_blocking(journal_mode).lower() == "wal"


def test_sqlite_enforces_foreign_keys(database: Database) -> None:
    """Foreign key enforcement is switched on for every connection."""

    def foreign_keys(connection: Connection) -> int:
        return int(connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one())

    assert database.run_blocking(foreign_keys) == 1


def test_run_blocking_returns_the_work_result_and_passes_arguments(database: Database) -> None:
    """run_blocking calls work(connection, *args, **kwargs) and gives back its value."""

    def work(connection: Connection, a: int, *, b: int) -> tuple[int, int]:
        return _read(connection) + a, b

    assert database.run_blocking(work, 5, b=7) == (5, 7)


def test_a_transaction_kept_from_the_write_lock_fails_as_sqlalchemy_says(
    database: Database, tmp_path: Path
) -> None:
    """While another connection holds SQLite's write lock, a unit of work cannot begin: it
    fails with SQLAlchemy's OperationalError ("database is locked", the error the retries
    look for), not the driver's own; once the lock is released the same database works."""
    raw = database.engine.raw_connection()  # the pool's connection: wait for no lock
    raw.cursor().execute("PRAGMA busy_timeout=0")
    raw.close()
    holder = sqlite3.connect(tmp_path / "unit.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"):
            database.run_blocking(_increment)
    finally:
        holder.close()
    database.run_blocking(_increment)
    assert database.run_blocking(_read) == 1


def test_run_blocking_rolls_back_when_the_work_fails(database: Database) -> None:
    """A unit of work that raises leaves nothing of its writes behind."""

    def failing(connection: Connection) -> None:
        _increment(connection)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        database.run_blocking(failing)
    assert database.run_blocking(_read) == 0


def test_migrate_creates_the_node_schema(tmp_path: Path) -> None:
    """Migrating an empty file creates the node tables and can be run again harmlessly."""
    path = tmp_path / "sub" / "node.sqlite"
    url = f"sqlite:///{path}"
    migrate(url, NODE_MIGRATIONS)
    migrate(url, NODE_MIGRATIONS)
    db = Database(cast(IReactorThreads, object()), url)
    try:
        names = set(inspect(db.engine).get_table_names())
    finally:
        db.stop()
    assert {
        "person",
        "replica_record",
        "query",
        "provision",
        "outbox",
        "provision_record",
        "provision_record_head",
        "permitted_list_version",
    } <= names


@pytest_twisted.ensureDeferred
async def test_a_read_neither_waits_for_nor_sees_an_open_write(tmp_path: Path) -> None:
    """While the writer holds an open write transaction, a read answers at once with the last
    committed value; once the write commits, the next read sees it."""
    from twisted.internet import reactor

    db = Database(reactor, f"sqlite:///{tmp_path / 'unit.sqlite'}")
    metadata.create_all(db.engine)
    db.run_blocking(lambda connection: connection.execute(counter.insert().values(id=1, value=0)))
    db.start()
    writing, release = threading.Event(), threading.Event()

    def hold_write(connection: Connection) -> None:
        connection.execute(update(counter).where(counter.c.id == 1).values(value=99))
        writing.set()
        release.wait(10)

    try:
        held = db.run(hold_write)
        await deferToThread(writing.wait, 10)
        assert await db.read(_read).addTimeout(5, reactor) == 0
        release.set()
        await held
        assert await db.read(_read) == 99
    finally:
        release.set()
        db.stop()


@pytest_twisted.ensureDeferred
async def test_a_read_cannot_write(tmp_path: Path) -> None:
    """Work given to ``read`` that writes fails (the reader connections are query-only)."""
    from twisted.internet import reactor

    db = Database(reactor, f"sqlite:///{tmp_path / 'unit.sqlite'}")
    metadata.create_all(db.engine)
    db.start()
    try:
        with pytest.raises(OperationalError, match="readonly"):
            await db.read(
                lambda connection: connection.execute(counter.insert().values(id=1, value=0))
            )
    finally:
        db.stop()


@pytest_twisted.ensureDeferred
async def test_units_of_work_on_the_pool_follow_each_other_whole(tmp_path: Path) -> None:
    """On the pool's thread one unit of work after another: one that fails leaves nothing
    behind for the next, one refused by the write lock is run again once it is free, and
    each read sees the writes committed before it."""
    from twisted.internet import reactor

    db = Database(reactor, f"sqlite:///{tmp_path / 'unit.sqlite'}")
    metadata.create_all(db.engine)
    db.run_blocking(lambda connection: connection.execute(counter.insert().values(id=1, value=0)))
    db.start()

    def failing(connection: Connection) -> None:
        _increment(connection)
        raise RuntimeError("boom")

    try:
        for expected in range(1, 4):
            with pytest.raises(RuntimeError, match="boom"):
                await db.run(failing)
            await db.run(_increment)
            assert await db.run(_read) == expected
            assert await db.read(_read) == expected
        holder = sqlite3.connect(tmp_path / "unit.sqlite", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            waiting = db.run(_increment)
        finally:
            cast(Any, reactor).callLater(0.2, holder.close)
        await waiting
        assert await db.read(_read) == 4
    finally:
        db.stop()
