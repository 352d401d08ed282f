"""Backup and restore of one party's database (an institution's node, or the hub).

A backup is a directory holding a copy of the database and its manifest:

- ``database.sqlite``: a SQLite database copied by SQLite's online backup API in one step (one
  consistent snapshot while the party goes on writing: in WAL mode a reader never stops the
  writer), then put in rollback-journal mode so that the copy is one file;
- ``database.dump``: a PostgreSQL database as ``pg_dump --format=custom`` writes it, taken in
  the snapshot of a REPEATABLE READ transaction that reads the chains' heads too;
- ``manifest.json``, written last (a directory without it is no backup): what (the party, its
  code, the kind of database, the file, its size and SHA-256), when (Japan time), the schema
  revision, and the head (``seq``, ``hash``) and newest checkpoint of each hash chain in the
  copy.

`restore` refuses a backup of another party or of another kind of database, a file that does
not match its manifest, and a database in use (its party running: another connection holds
the SQLite file, or the PostgreSQL database has sessions); it restores into a staging copy
(a file beside the database, or a database of its own on the server), brings it to the
current schema, checks its chains as ``renkei records verify`` and ``renkei audit verify`` do
(from their checkpoints, signatures checked) and against the manifest's heads, and only then
puts it in place of the database, which is kept aside (``<file>.replaced-<time>``,
``<name>_replaced_<time>``). A node's restored audit log records the restore.

`ScheduledBackup` is the ``backup`` job of ``[backup]``: one backup every ``interval`` seconds
into ``directory/<party>/<Japan time>``, the newest ``keep`` kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, Table, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from codes import errors
from codes.errors import RenkeiError
from middleware.audit import SYSTEM, append_audit, audit_verification
from middleware.checkpoint import AUDIT, RECORDS, ChainTrust, ChainVerification, newest_checkpoint
from middleware.clock import ReactorTime, utc_now
from middleware.config import BackupConfig
from middleware.deferred import deferred
from middleware.period import JAPAN
from middleware.records import verify_records
from middleware.storage import create_database_engine, migrate
from middleware.tables import audit_head

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ChainHead",
    "Manifest",
    "PartyDatabase",
    "Restored",
    "ScheduledBackup",
    "back_up",
    "in_use",
    "read_manifest",
    "restore",
]

FORMAT = "renkei-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
DUMP_FILE = "database.dump"
_STAMP = "%Y%m%d-%H%M%S"  # a scheduled backup's folder: its Japan time
# What a backup or a restore may meet on the way: files, databases, migrations.
_FAILURES = (OSError, sqlite3.Error, SQLAlchemyError, psycopg.Error, CommandError)
_PG_NAME = 63  # PostgreSQL's longest identifier


@dataclass(frozen=True)
class PartyDatabase:
    """What backing up or restoring a party needs: its name (``meguro``, ``hub``), its code
    (the institution code, or ``hub``: the signer of its checkpoints), its database, the
    migrations of its schema, its tables of records and checkpoints, and whether it keeps a
    staff audit log (a node does)."""

    name: str
    code: str
    url: str
    migrations: Path
    records: Table
    head: Table
    checkpoints: Table
    audited: bool

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"


@dataclass(frozen=True)
class ChainHead:
    """A hash chain as a copy holds it: its newest link and its newest checkpoint."""

    seq: int
    hash: str
    checkpoint: int | None = None


@dataclass(frozen=True)
class Manifest:
    """What a backup holds (``manifest.json``)."""

    party: str
    code: str
    database: str
    file: str
    size: int
    sha256: str
    made_at: datetime
    revision: str | None
    chains: dict[str, ChainHead] = field(default_factory=dict)

    def to_json(self) -> str:
        """The manifest as written: times in Japan time."""
        return json.dumps(
            {
                "format": FORMAT,
                "party": self.party,
                "code": self.code,
                "database": self.database,
                "file": self.file,
                "bytes": self.size,
                "sha256": self.sha256,
                "made_at": self.made_at.astimezone(JAPAN).isoformat(timespec="seconds"),
                "revision": self.revision,
                "chains": {
                    name: {"seq": head.seq, "hash": head.hash, "checkpoint": head.checkpoint}
                    for name, head in self.chains.items()
                },
            },
            ensure_ascii=False,
            indent=2,
        )


def read_manifest(source: Path) -> Manifest:
    """The manifest of the backup in ``source``; BackupInvalid when there is none fit."""
    try:
        data = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        return Manifest(
            party=str(data["party"]),
            code=str(data["code"]),
            database=str(data["database"]),
            file=str(data["file"]),
            size=int(data["bytes"]),
            sha256=str(data["sha256"]),
            made_at=datetime.fromisoformat(data["made_at"]),
            revision=data.get("revision"),
            chains={
                name: ChainHead(int(head["seq"]), str(head["hash"]), head.get("checkpoint"))
                for name, head in data["chains"].items()
            },
        )
    except FileNotFoundError:
        raise RenkeiError(
            errors.BACKUP_INVALID, path=str(source), detail=f"no {MANIFEST}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as failure:
        raise RenkeiError(
            errors.BACKUP_INVALID, path=str(source), detail=f"{MANIFEST}: {failure}"
        ) from None


# -- what a copy holds ------------------------------------------------------------------------


def _heads(connection: Connection, party: PartyDatabase) -> dict[str, ChainHead]:
    """Each chain's head and newest checkpoint in the database ``connection`` reads."""
    chains = [(RECORDS, party.head)] + ([(AUDIT, audit_head)] if party.audited else [])
    heads = {}
    for name, head in chains:
        row = connection.execute(select(head.c.seq, head.c.hash)).first()
        checkpoint = newest_checkpoint(connection, party.checkpoints, name)
        heads[name] = ChainHead(
            row.seq if row is not None else 0,
            row.hash if row is not None else "",
            checkpoint.seq if checkpoint is not None else None,
        )
    return heads


def _revision(connection: Connection) -> str | None:
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


@contextlib.contextmanager
def _plain_engine(url: str) -> Iterator[Engine]:
    """An engine that changes nothing of the database it opens (no WAL switch): to read a
    backup's copy as it is."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


# -- backing up -------------------------------------------------------------------------------


def _new_destination(destination: Path) -> None:
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise RenkeiError(errors.BACKUP_DESTINATION_EXISTS, path=str(destination))
    destination.mkdir(parents=True, exist_ok=True)


def _copy_sqlite(party: PartyDatabase, target: Path) -> tuple[str | None, dict[str, ChainHead]]:
    source_path = _sqlite_path(party.url)
    if not source_path.exists():
        raise RenkeiError(errors.BACKUP_FAILED, party=party.name, detail=f"no {source_path}")
    source = sqlite3.connect(source_path, timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # every page in one step: one snapshot of the database
        copy.execute("PRAGMA journal_mode=DELETE")  # the copy is one file
    finally:
        copy.close()
        source.close()
    with _plain_engine(f"sqlite:///{target}") as engine, engine.connect() as connection:
        return _revision(connection), _heads(connection, party)


def _pg_tool(name: str, party: PartyDatabase) -> str:
    """The newest ``pg_dump`` or ``pg_restore``: on the PATH, else of the installed server."""
    found = shutil.which(name)
    if found is None:
        installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        if not installed:
            raise RenkeiError(
                errors.BACKUP_FAILED, party=party.name, detail=f"{name} is not installed"
            )
        found = str(installed[-1])
    return found


def _run_tool(command: list[str], url: str, party: PartyDatabase) -> None:
    """Run pg_dump or pg_restore on the database at ``url``: its password, if any, goes in
    the environment, not on the command line (which other users of the machine can read)."""
    target = make_url(url)
    environment = dict(os.environ)
    if target.password is not None:
        environment["PGPASSWORD"] = str(target.password)
    bare = target.set(password=None).render_as_string(hide_password=False)
    finished = subprocess.run(
        [*command, f"--dbname={bare}"],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    if finished.returncode != 0:
        lines = [line for line in finished.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"{Path(command[0]).name} exited {finished.returncode}"
        raise RenkeiError(errors.BACKUP_FAILED, party=party.name, detail=detail)


def _dump_postgresql(party: PartyDatabase, target: Path) -> tuple[str | None, dict[str, ChainHead]]:
    dump = _pg_tool("pg_dump", party)
    engine = create_database_engine(party.url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                # The dump and the heads read here see the same snapshot.
                snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
                revision, heads = _revision(connection), _heads(connection, party)
                _run_tool(
                    [
                        dump,
                        "--format=custom",
                        "--no-owner",
                        "--no-privileges",
                        f"--snapshot={snapshot}",
                        f"--file={target}",
                    ],
                    party.url,
                    party,
                )
    finally:
        engine.dispose()
    return revision, heads


def back_up(party: PartyDatabase, destination: Path, now: datetime) -> Manifest:
    """Copy ``party``'s database, while it runs, into ``destination`` (a new or empty
    directory) with its manifest; the manifest."""
    _new_destination(destination)
    name = SQLITE_FILE if party.kind == "sqlite" else DUMP_FILE
    target = destination / name
    try:
        if party.kind == "sqlite":
            revision, heads = _copy_sqlite(party, target)
        else:
            revision, heads = _dump_postgresql(party, target)
        manifest = Manifest(
            party=party.name,
            code=party.code,
            database=party.kind,
            file=name,
            size=target.stat().st_size,
            sha256=_digest(target),
            made_at=now,
            revision=revision,
            chains=heads,
        )
        (destination / MANIFEST).write_text(manifest.to_json() + "\n", encoding="utf-8")
    except RenkeiError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except _FAILURES as failure:
        shutil.rmtree(destination, ignore_errors=True)
        raise RenkeiError(errors.BACKUP_FAILED, party=party.name, detail=str(failure)) from None
    return manifest


# -- a database in use ------------------------------------------------------------------------


def _maintenance(url: str) -> str:
    """The URL of the server's maintenance database (to create, rename and look at others)."""
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


def in_use(url: str) -> bool:
    """Whether another connection has the database open (its party runs): a SQLite file
    another connection holds (an exclusive lock is refused), or a PostgreSQL database with
    sessions."""
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if not path.exists():
            return False
        probe = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        try:
            # In WAL mode every open connection holds the shared memory: an exclusive lock
            # is refused while any other connection is open, even idle.
            probe.execute("PRAGMA locking_mode=EXCLUSIVE")
            probe.execute("BEGIN EXCLUSIVE")
            probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
        return False
    name = make_url(url).database
    with psycopg.connect(_maintenance(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return bool(row and row[0])


# -- restoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """A restore done: the backup's manifest, each chain as verified in the restored copy,
    and where the database it replaced was kept (None: there was none)."""

    manifest: Manifest
    chains: dict[str, ChainVerification]
    replaced: str | None


def _check_backup(party: PartyDatabase, source: Path) -> Manifest:
    manifest = read_manifest(source)
    if manifest.code != party.code or manifest.database != party.kind:
        raise RenkeiError(
            errors.BACKUP_OF_ANOTHER_PARTY,
            path=str(source),
            found=f"{manifest.party} ({manifest.code}, {manifest.database})",
            party=f"{party.name} ({party.code}, {party.kind})",
        )
    file = source / manifest.file
    if (
        manifest.file != (SQLITE_FILE if party.kind == "sqlite" else DUMP_FILE)
        or not file.is_file()
    ):
        raise RenkeiError(errors.BACKUP_INVALID, path=str(source), detail=f"no {manifest.file}")
    if file.stat().st_size != manifest.size or _digest(file) != manifest.sha256:
        raise RenkeiError(
            errors.BACKUP_INVALID,
            path=str(source),
            detail=f"{manifest.file} is not the file its manifest describes (size, SHA-256)",
        )
    return manifest


def _verify_copy(
    connection: Connection, party: PartyDatabase, trust: ChainTrust | None, manifest: Manifest
) -> dict[str, ChainVerification]:
    """The copy's chains verified as ``records verify`` and ``audit verify`` do, and found as
    the manifest says; RestoreVerificationFailed otherwise."""
    verified = {
        RECORDS: verify_records(connection, party.records, party.head, party.checkpoints, trust)
    }
    if party.audited:
        verified[AUDIT] = audit_verification(connection, trust)
    for name, result in verified.items():
        if not result.intact:
            why = f": {result.problem}" if result.problem else ""
            raise RenkeiError(
                errors.RESTORE_VERIFICATION_FAILED,
                party=party.name,
                detail=f"the chain {name} breaks at {result.first_broken}{why}",
            )
    heads = _heads(connection, party)
    for name, head in manifest.chains.items():
        if heads.get(name) != head:
            raise RenkeiError(
                errors.RESTORE_VERIFICATION_FAILED,
                party=party.name,
                detail=f"the chain {name} is not what the manifest says ({heads.get(name)})",
            )
    return verified


def _ready(
    url: str,
    party: PartyDatabase,
    source: Path,
    manifest: Manifest,
    trust: ChainTrust | None,
    now: datetime,
) -> dict[str, ChainVerification]:
    """Bring the staging copy at ``url`` to the current schema and verify it; at a node, its
    audit log then records the restore. Each chain as verified."""
    migrate(url, party.migrations)
    engine = create_database_engine(url, pool_size=1)
    try:
        with engine.begin() as connection:
            chains = _verify_copy(connection, party, trust, manifest)
            if party.audited:
                detail = {
                    "made_at": manifest.made_at.isoformat(),
                    "records_seq": manifest.chains[RECORDS].seq
                    if RECORDS in manifest.chains
                    else None,
                }
                append_audit(connection, now, SYSTEM, "restore", str(source)[:500], detail)
    finally:
        engine.dispose()
    return chains


def _sqlite_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _restore_sqlite(
    party: PartyDatabase, source: Path, manifest: Manifest, trust: ChainTrust | None, now: datetime
) -> Restored:
    path = _sqlite_path(party.url)
    staging = path.with_name(path.name + ".restoring")
    for leftover in _sqlite_files(staging):
        leftover.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / manifest.file, staging)
    try:
        chains = _ready(f"sqlite:///{staging}", party, source, manifest, trust, now)
        with contextlib.closing(sqlite3.connect(staging)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if in_use(party.url):
            raise RenkeiError(errors.PARTY_RUNNING, party=party.name)
        replaced = None
        moved: list[tuple[Path, Path]] = []
        try:
            if path.exists():
                stamp = now.astimezone(JAPAN).strftime(_STAMP)
                aside = path.with_name(f"{path.name}.replaced-{stamp}")
                for current, kept in zip(_sqlite_files(path), _sqlite_files(aside), strict=True):
                    if current.exists():
                        current.rename(kept)
                        moved.append((kept, current))
                replaced = str(aside)
            for current, final in zip(_sqlite_files(staging), _sqlite_files(path), strict=True):
                if current.exists():
                    current.rename(final)
        except OSError:
            for kept, current in moved:  # the database as it was
                kept.rename(current)
            raise
    except BaseException:
        for leftover in _sqlite_files(staging):
            leftover.unlink(missing_ok=True)
        raise
    return Restored(manifest, chains, replaced)


def _database_exists(admin: psycopg.Connection[Any], name: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _restore_postgresql(
    party: PartyDatabase, source: Path, manifest: Manifest, trust: ChainTrust | None, now: datetime
) -> Restored:
    tool = _pg_tool("pg_restore", party)
    target = make_url(party.url)
    name = target.database or ""
    staging = f"{name[: _PG_NAME - 10]}_restoring"
    staging_url = target.set(database=staging).render_as_string(hide_password=False)
    with psycopg.connect(_maintenance(party.url), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {_quoted(staging)}")
        admin.execute(f"CREATE DATABASE {_quoted(staging)}")
        try:
            _run_tool(
                [
                    tool,
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    str(source / manifest.file),
                ],
                staging_url,
                party,
            )
            chains = _ready(staging_url, party, source, manifest, trust, now)
            if in_use(party.url):
                raise RenkeiError(errors.PARTY_RUNNING, party=party.name)
            replaced = None
            if _database_exists(admin, name):
                stamp = now.astimezone(JAPAN).strftime("%Y%m%d%H%M%S")
                replaced = f"{name[: _PG_NAME - 24]}_replaced_{stamp}"
                admin.execute(f"ALTER DATABASE {_quoted(name)} RENAME TO {_quoted(replaced)}")
            admin.execute(f"ALTER DATABASE {_quoted(staging)} RENAME TO {_quoted(name)}")
        except BaseException:
            admin.execute(f"DROP DATABASE IF EXISTS {_quoted(staging)}")
            raise
    return Restored(manifest, chains, replaced)


def restore(
    party: PartyDatabase, source: Path, trust: ChainTrust | None, now: datetime
) -> Restored:
    """Put the backup in ``source`` in place of ``party``'s database, once it is checked
    (its manifest, its file, its chains verified with ``trust``) and the database is not
    in use; the database it replaced is kept aside."""
    manifest = _check_backup(party, source)
    try:
        if in_use(party.url):
            raise RenkeiError(errors.PARTY_RUNNING, party=party.name)
        if party.kind == "sqlite":
            return _restore_sqlite(party, source, manifest, trust, now)
        return _restore_postgresql(party, source, manifest, trust, now)
    except _FAILURES as failure:
        raise RenkeiError(errors.RESTORE_FAILED, party=party.name, detail=str(failure)) from None


# -- the scheduled backups ----------------------------------------------------------------


class ScheduledBackup:
    """The ``backup`` job of one party: a backup into ``directory/<party>/<Japan time>``
    each run (on a thread: the copy takes a while), the newest ``keep`` kept. Processes of
    one institution take turns: one backs up while holding the folder's lock, and a backup
    younger than half the interval is enough for the others."""

    log = Logger()

    def __init__(
        self, party: PartyDatabase, config: BackupConfig, clock: ReactorTime, reactor: Any
    ) -> None:
        self._party = party
        self._config = config
        self._clock = clock
        self._reactor = reactor
        self.directory = config.directory / party.name

    @deferred
    async def run(self) -> dict[str, int]:
        """Back up the party's database; the job's counts (``backed_up``, ``deleted``)."""
        now = utc_now(self._clock)
        made: Deferred[dict[str, int]] = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._back_up, now
        )
        return await made

    def _back_up(self, now: datetime) -> dict[str, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return {"backed_up": 0, "deleted": 0}  # another process backs up now
            kept = self.backups()
            recent = now - timedelta(seconds=self._config.interval / 2)
            if kept and kept[-1][1].made_at > recent:
                return {"backed_up": 0, "deleted": 0}
            stamp = now.astimezone(JAPAN).strftime(_STAMP)
            destination = self.directory / stamp
            suffix = 1
            while destination.exists():
                suffix += 1
                destination = self.directory / f"{stamp}-{suffix}"
            manifest = back_up(self._party, destination, now)
            self.log.info(
                "backup of {party}: {path} ({size} bytes, records up to {seq})",
                party=self._party.name,
                path=str(destination),
                size=manifest.size,
                seq=manifest.chains[RECORDS].seq,
            )
            deleted = 0
            for path, _ in self.backups()[: -self._config.keep]:
                shutil.rmtree(path)
                deleted += 1
            return {"backed_up": 1, "deleted": deleted}

    def backups(self) -> list[tuple[Path, Manifest]]:
        """The backups of the party in the folder, oldest first."""
        found = []
        for path in self.directory.iterdir() if self.directory.is_dir() else ():
            if path.is_dir() and (path / MANIFEST).is_file():
                try:
                    found.append((path, read_manifest(path)))
                except RenkeiError:
                    continue
        return sorted(found, key=lambda pair: (pair[1].made_at.astimezone(UTC), pair[0].name))
