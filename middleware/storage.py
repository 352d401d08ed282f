"""The database: SQLAlchemy Core on a dedicated thread pool, never on the reactor.

Follows Buildbot's ``db/pool.py``: each unit of work is a plain function taking a
``Connection`` inside one transaction (``engine.begin()``), run on a thread pool of its own;
no Result object leaves the worker thread. SQLite gets WAL, foreign keys, a busy timeout and
``BEGIN IMMEDIATE`` so that read-then-write transactions never lose updates; PostgreSQL
(psycopg 3) is used by URL, every transaction SERIALIZABLE: several processes of one
institution may share its database (docs/operations.md), and a unit of work that a concurrent
one would make wrong fails with a serialization failure (or a deadlock) and is run again, as
SQLite's "database is locked" is. A unit of work is therefore a pure function of the
database: run again, it does again exactly what it does.

Work that only reads goes through ``Database.read``: on SQLite it runs on reader connections
of its own (``query_only``, a deferred ``BEGIN``: a WAL snapshot that neither takes the write
lock nor waits behind the writer) on a thread pool of its own, so console searches, metrics
and bulk-query progress do not queue behind the node's writes; on PostgreSQL, whose MVCC
readers never wait for writers, on the same pool as the rest.
"""

from __future__ import annotations

import atexit
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from weakref import WeakSet

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = [
    "IN_SLICE",
    "MIGRATION_LOCK",
    "READERS",
    "Database",
    "DatabaseStopped",
    "create_database_engine",
    "in_slices",
    "insert_if_absent",
    "migrate",
    "stop_all",
]

P = ParamSpec("P")
T = TypeVar("T")

_LOCKED_RETRIES = 20
# Reader threads (and connections) of a SQLite database: one per core of this machine.
READERS = 2


def create_database_engine(url: str, pool_size: int, *, reader: bool = False) -> Engine:
    """Build an engine for ``url`` with the settings this project depends on (``reader``:
    SQLite connections that only read, see ``Database.read``)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            poolclass=NullPool if ":memory:" in url else None,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        if reader:
            _configure_sqlite_reader(engine)
        else:
            _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        isolation_level="SERIALIZABLE",
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's
        # deferred BEGIN (which does not begin before a SELECT).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        _begin(connection, "BEGIN IMMEDIATE")


def _begin(connection: Connection, statement: str) -> None:
    """Issue a SQLite ``BEGIN`` straight on the driver's connection, a failure (``database
    is locked``) raised as SQLAlchemy raises it. Through ``exec_driver_sql`` (an execution
    context, its events and result) it cost 1.7 % of a flow's CPU, once per transaction."""
    driver: Any = connection.connection.driver_connection  # a sqlite3.Connection
    try:
        driver.execute(statement)
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error


def _configure_sqlite_reader(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")  # a write through a reader is an error
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Deferred: the first read takes a WAL snapshot, and no lock is taken.
        _begin(connection, "BEGIN")


# Alembic keeps the migration in progress in module-global state (``alembic.context``,
# ``alembic.op``): two migrations at once in one process (several networks in a box started
# together, a scenario runner's) would run in each other's context. One at a time.
_MIGRATING = threading.Lock()


def migrate(url: str, script_location: Path) -> None:
    """Bring the database at ``url`` to the newest Alembic revision in ``script_location``
    (one migration at a time in a process). A SQLite file made afresh is a copy of the
    process's `_template` of those migrations, which is at that revision already: Alembic is
    not run on it again (it would load every migration script to find nothing to do, about
    30 ms a database: 52 s of a box of 1,744 parties)."""
    with _MIGRATING:
        fresh = _fresh_sqlite_file(url)
        if fresh is not None:
            fresh.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_template(script_location), fresh)
            return
        _migrate(url, script_location)


# A process that makes many SQLite databases afresh (a scenario run's networks, a test
# suite's boxes: seven databases each) runs each folder of migrations once, into a template
# file, and copies it: byte for byte what the migrations make, as they insert no rows.
_TEMPLATES: dict[tuple[Path, tuple[tuple[str, int], ...]], Path] = {}


def _fresh_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url`` that does not exist yet (None for another database)."""
    if not url.startswith("sqlite:///") or "?" in url or ":memory:" in url:
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else path


def _template(script_location: Path) -> Path:
    """A SQLite file migrated to the newest revision of ``script_location``, made once
    per process (again when a migration file changes) and removed at the process's exit."""
    versions = sorted((script_location / "versions").glob("*.py"))
    key = (script_location.resolve(), tuple((p.name, p.stat().st_mtime_ns) for p in versions))
    template = _TEMPLATES.get(key)
    if template is None:
        directory = Path(tempfile.mkdtemp(prefix="renkei-schema-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        template = directory / "template.db"
        _migrate(f"sqlite:///{template}", script_location)
        _TEMPLATES[key] = template
    return template


def _migrate(url: str, script_location: Path) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    config = AlembicConfig()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if not url.startswith("postgresql"):
        command.upgrade(config, "head")
        return
    # The processes of one institution start together: one migrates, the others wait for
    # it (a session lock of PostgreSQL's, held on a connection of its own), then find the
    # schema up to date.
    engine = create_database_engine(url, pool_size=1)
    try:
        with engine.connect() as lock:
            lock.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            try:
                command.upgrade(config, "head")
            finally:
                lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
    finally:
        engine.dispose()


def insert_if_absent(connection: Connection, table: Table, **values: Any) -> bool:
    """Insert a row unless one with the same key exists; True when inserted.

    Safe against a concurrent insert of the same key (``ON CONFLICT DO NOTHING``).
    """
    dialect = connection.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = connection.execute(insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount == 1)


# The values of one `IN` list: far below SQLite's 32,766 parameters of a statement (and
# PostgreSQL's 65,535), as large as a bundle's lines (`MAX_BUNDLE_LINES`).
IN_SLICE = 500


def in_slices(values: Sequence[T], size: int = IN_SLICE) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size``, each for one statement's `IN` list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


MIGRATION_LOCK = 0x72656E6B  # the advisory lock the migrations of a database are run under

# A transaction that fails for one of these reasons is run again: SQLite's writer lock,
# PostgreSQL's serialization failure and deadlock.
_RETRYABLE_STATES = ("40001", "40P01")


def _retryable(failure: DBAPIError) -> bool:
    state = getattr(failure.orig, "sqlstate", None)
    return state in _RETRYABLE_STATES or "database is locked" in str(failure)


# Started databases, so that a process can stop every pool before it exits (the pools'
# threads are not daemon threads: one left running keeps the interpreter alive).
_RUNNING: WeakSet[Database] = WeakSet()


def stop_all() -> None:
    """Stop every database still running in this process."""
    for database in list(_RUNNING):
        database.stop()


class DatabaseStopped(Exception):
    """Work was submitted to a database whose service has stopped."""


class _KeptConnections:
    """A SQLAlchemy ``Connection`` kept by each thread of a SQLite database's pool, from one
    transaction to the next: taking one from the engine's pool and giving it back for every
    transaction (a ``Connection`` built, its events joined, a reset on return) cost 2.4 % of
    a flow's CPU. The pool kept the same driver connections open between transactions
    anyway; one that SQLAlchemy invalidated (or closed) is replaced at its next use. Not for
    PostgreSQL, whose pool checks a connection is alive before lending it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Connection] = []

    def connection(self) -> Connection:
        """This thread's connection, opened on first use (or after it was invalidated)."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._local.connection = self._engine.connect()
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        """Close every connection kept (once the pool's threads have stopped)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()


class Database:
    """One institution's (or the hub's) database, used only through ``run``."""

    def __init__(self, reactor: IReactorThreads, url: str, threads: int | None = None) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        # Whether other processes may use the database at once (PostgreSQL); a SQLite one is
        # its party's process's alone (several processes of a party need PostgreSQL).
        self.shared = not sqlite
        if threads is None:
            # SQLite serializes writers anyway: one thread avoids lock contention.
            threads = 1 if sqlite else 4
        self.engine = create_database_engine(url, pool_size=threads)
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name=f"db:{url}")
        # SQLite readers of their own (an in-memory database is one connection's: none).
        self._reader: Engine | None = None
        self._readers: ThreadPool | None = None
        self._kept: _KeptConnections | None = None
        self._kept_readers: _KeptConnections | None = None
        if sqlite and ":memory:" not in url:
            self._reader = create_database_engine(url, pool_size=READERS, reader=True)
            self._readers = ThreadPool(minthreads=0, maxthreads=READERS, name=f"db-read:{url}")
            self._kept = _KeptConnections(self.engine)
            self._kept_readers = _KeptConnections(self._reader)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            if self._readers is not None:
                self._readers.start()
            self._started = True
            _RUNNING.add(self)

    def stop(self) -> None:
        if self._started:
            self._pool.stop()
            if self._readers is not None:
                self._readers.stop()
            self._started = False
            _RUNNING.discard(self)
        for kept in (self._kept, self._kept_readers):
            if kept is not None:
                kept.close()
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()

    def migrate(self, script_location: Path) -> Deferred[None]:
        """Bring the schema up to date, on the pool like every other database call."""
        if not self._started:
            return fail(DatabaseStopped(self.url))
        return deferToThreadPool(self._reactor, self._pool, migrate, self.url, script_location)

    def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``work(connection, *args, **kwargs)`` in one transaction on the pool."""
        if not self._started:
            # A stopped Twisted thread pool drops work silently: fail instead of hanging.
            return fail(DatabaseStopped(self.url))
        return deferToThreadPool(
            self._reactor,
            self._pool,
            self._in_transaction,
            self.engine,
            work,
            args,
            kwargs,
            self._kept,
        )

    def read(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``work(connection, *args, **kwargs)``, which only reads, in one transaction:
        one consistent snapshot, never behind the writer on SQLite (a write is an error)."""
        if self._reader is None or self._readers is None:
            return self.run(work, *args, **kwargs)
        if not self._started:
            return fail(DatabaseStopped(self.url))
        return deferToThreadPool(
            self._reactor,
            self._readers,
            self._in_transaction,
            self._reader,
            work,
            args,
            kwargs,
            self._kept_readers,
        )

    def call_from_thread(self, call: Callable[..., object], *args: Any) -> None:
        """Have the reactor call ``call(*args)`` (from a unit of work, on a database
        thread: what it learnt, for the reactor's side to act on)."""
        self._reactor.callFromThread(call, *args)

    def run_blocking(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a unit of work on the calling thread (CLI tools and migrations only)."""
        return self._in_transaction(self.engine, work, args, kwargs)

    @staticmethod
    def _in_transaction(
        engine: Engine,
        work: Callable[..., T],
        args: Any,
        kwargs: dict[str, Any],
        kept: _KeptConnections | None = None,
    ) -> T:
        for attempt in range(_LOCKED_RETRIES):
            try:
                if kept is None:
                    with engine.begin() as connection:
                        return work(connection, *args, **kwargs)
                connection = kept.connection()
                with connection.begin():
                    return work(connection, *args, **kwargs)
            except DBAPIError as failure:
                if not _retryable(failure) or attempt == _LOCKED_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")
