"""Backup and restore of a party's database: `renkei backup` while queries run, `renkei
restore` refused over a running party and for a backup that is not the party's or does not
verify, the restored copy verified and put in place, the scheduled backup job, and the same
on PostgreSQL with pg_dump."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted

from middleware.audit import audit_entries
from middleware.records import RecordEntry, append_records
from middleware.storage import Database, migrate
from middleware.tables import node_record_head, node_records
from tests.conftest import running_box
from tests.network import MEGURO, REPOSITORY, write_config
from tests.test_flow import ask_tax, count

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def renkei(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "renkei"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def refused(done: subprocess.CompletedProcess[str], code: str) -> str:
    """The one line of an expected failure, with its code; the command exited 1."""
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and code in lines[0], done.stderr
    return lines[0]


def manifest_of(backup: Path) -> dict[str, Any]:
    return dict(json.loads((backup / "manifest.json").read_text(encoding="utf-8")))


@pytest_twisted.ensureDeferred
async def test_a_backup_taken_while_queries_run_is_restored_once_the_party_stops(
    box: Any, meguro_care: Any, tmp_path: Path
) -> None:
    """`renkei backup` copies Meguro's database while twenty queries run; `renkei restore`
    is refused while Meguro runs and changes nothing; once Meguro is stopped it restores the
    copy, verified, keeps the database it replaced, and Meguro starts again on it."""
    from twisted.internet.threads import deferToThread

    conf = str(box.config.path)
    destination = tmp_path / "backups" / "meguro-1"
    queries = [ask_tax(meguro_care) for _ in range(20)]
    backup = deferToThread(renkei, "backup", "-c", conf, "-i", "meguro", str(destination))
    submitted = [await query for query in queries]
    done = await backup
    assert done.returncode == 0, done.stderr
    assert f"meguro: backed up into {destination} (database.sqlite" in done.stdout
    for query in submitted:
        assert (await meguro_care.wait_for_result(query["query_id"]))["state"] == "provided"

    manifest = manifest_of(destination)
    assert (manifest["party"], manifest["code"], manifest["database"]) == (
        "meguro",
        MEGURO,
        "sqlite",
    )
    newest = max(
        path.name[:4] for path in (REPOSITORY / "middleware/migrations/versions").glob("0*.py")
    )
    assert manifest["made_at"].endswith("+09:00") and manifest["revision"] == newest
    head = manifest["chains"]["provision_record"]
    assert head["seq"] >= 1 and len(head["hash"]) == 64 and head["checkpoint"] is None
    assert "audit_record" in manifest["chains"]

    database = box.config.path.parent / "meguro.sqlite"
    records = count(box, "meguro", node_records)
    line = refused(renkei("restore", "-c", conf, "-i", "meguro", str(destination)), "PartyRunning")
    assert "stop it before restoring" in line
    assert count(box, "meguro", node_records) == records
    assert not list(database.parent.glob("meguro.sqlite.re*"))

    await box.stop_party("meguro")
    done = renkei("restore", "-c", conf, "-i", "meguro", str(destination))
    assert done.returncode == 0, done.stderr
    assert f"meguro: restored from {destination}" in done.stdout
    assert "every chain intact" in done.stdout
    (replaced,) = database.parent.glob("meguro.sqlite.replaced-*")
    assert f"kept as {replaced}" in done.stdout
    assert not list(database.parent.glob("meguro.sqlite.restoring*"))
    with sqlite3.connect(database) as connection:
        (seq,) = connection.execute("SELECT seq FROM provision_record_head").fetchone()
    assert seq == head["seq"]
    with sqlite3.connect(replaced) as connection:
        (newer,) = connection.execute("SELECT seq FROM provision_record_head").fetchone()
    assert newer >= seq

    meguro = await box.start_party("meguro")
    (restore,) = meguro.database.run_blocking(audit_entries, limit=1, action="restore")
    assert restore["actor"] == "system" and restore["target"] == str(destination)
    again = await ask_tax(meguro_care)
    assert (await meguro_care.wait_for_result(again["query_id"]))["state"] == "provided"
    verified = renkei("records", "verify", "-c", conf)
    assert verified.returncode == 0 and "meguro: " in verified.stdout, verified.stdout

    # The hub the same way (its records only: it keeps no audit log).
    hub_backup = tmp_path / "backups" / "hub-1"
    done = renkei("backup", "-c", conf, "--hub", str(hub_backup))
    assert done.returncode == 0 and "hub: backed up into" in done.stdout, done.stderr
    assert manifest_of(hub_backup)["chains"].keys() == {"provision_record"}
    refused(renkei("restore", "-c", conf, "--hub", str(hub_backup)), "PartyRunning")
    await box.stop_party("hub")
    done = renkei("restore", "-c", conf, "--hub", str(hub_backup))
    assert done.returncode == 0 and "hub: restored from" in done.stdout, done.stderr
    await box.start_party("hub")
    last = await ask_tax(meguro_care)
    assert (await meguro_care.wait_for_result(last["query_id"]))["state"] == "provided"


def add_records(url: str, count: int) -> None:
    """``count`` provision records in a (migrated) node database."""
    database = Database(None, url)  # type: ignore[arg-type]
    try:
        for number in range(count):
            database.run_blocking(
                append_records,
                node_records,
                node_record_head,
                datetime(2026, 12, 2, tzinfo=UTC),
                [RecordEntry(event="query", status="accepted", transaction_number=f"T{number}")],
            )
    finally:
        database.stop()


def test_restore_refuses_what_is_not_the_partys_or_does_not_verify(
    tmp_path: Path, network_pki: Path
) -> None:
    """Each expected failure is one line with its code and exit 1, and changes nothing: a
    destination that is not empty, a backup of another party, a file that is not the one
    its manifest describes, a copy whose chain is broken (even with a manifest made to
    match), no backup at all, and no party named."""
    config = write_config(tmp_path, network_pki, demo=False)
    conf = str(config.path)
    meguro_url = config.institution("meguro").database
    migrate(meguro_url, ROOT / "middleware" / "migrations")
    add_records(meguro_url, 3)
    good = tmp_path / "good"
    assert renkei("backup", "-c", conf, "-i", "meguro", str(good)).returncode == 0

    refused(renkei("backup", "-c", conf, "-i", "meguro", str(good)), "BackupDestinationExists")
    line = refused(
        renkei("restore", "-c", conf, "-i", "setagaya", str(good)), "BackupOfAnotherParty"
    )
    assert "is of meguro" in line
    refused(renkei("restore", "-c", conf, "--hub", str(good)), "BackupOfAnotherParty")

    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    data = bytearray((damaged / "database.sqlite").read_bytes())
    data[-100] ^= 0xFF
    (damaged / "database.sqlite").write_bytes(bytes(data))
    line = refused(renkei("restore", "-c", conf, "-i", "meguro", str(damaged)), "BackupInvalid")
    assert "not the file its manifest describes" in line

    # An edited record, and a manifest made to match the edited file: the chain gives it away.
    forged = tmp_path / "forged"
    shutil.copytree(good, forged)
    with sqlite3.connect(forged / "database.sqlite") as connection:
        connection.execute("UPDATE provision_record SET status = 'provided' WHERE seq = 2")
    connection.close()
    manifest = manifest_of(forged)
    manifest["sha256"] = hashlib.sha256((forged / "database.sqlite").read_bytes()).hexdigest()
    manifest["bytes"] = (forged / "database.sqlite").stat().st_size
    (forged / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    before = Path(meguro_url.removeprefix("sqlite:///")).read_bytes()
    line = refused(
        renkei("restore", "-c", conf, "-i", "meguro", str(forged)), "RestoreVerificationFailed"
    )
    assert "the chain provision_record breaks at 2" in line
    assert Path(meguro_url.removeprefix("sqlite:///")).read_bytes() == before
    assert sorted(path.name for path in tmp_path.glob("meguro.sqlite*")) == ["meguro.sqlite"]

    line = refused(
        renkei("restore", "-c", conf, "-i", "meguro", str(tmp_path / "none")), "BackupInvalid"
    )
    assert "no manifest.json" in line
    nobody = renkei("restore", "-c", conf, str(good))
    assert nobody.returncode == 1 and "give one party" in nobody.stderr
    assert len(nobody.stderr.strip().splitlines()) == 1


@pytest_twisted.async_yield_fixture
async def backing_up(tmp_path: Path, network_pki: Path) -> AsyncIterator[Any]:
    """A box whose parties back up into ``tmp_path/backups`` every hour, the newest 2
    kept."""
    config = write_config(
        tmp_path,
        network_pki,
        sections="\n[backup]\ndirectory = backups\ninterval = 3600\nkeep = 2\n",
    )
    running = await running_box(config, in_memory=True)
    try:
        yield running
    finally:
        await running.stopService()


@pytest_twisted.ensureDeferred
async def test_the_backup_job_backs_up_each_party_on_the_network_clock_and_keeps_the_newest(
    backing_up: Any, tmp_path: Path
) -> None:
    """The backup job of each party runs as the network's clock moves, writes a backup named
    by the network's time in Japan, skips one asked for within half its interval, and keeps
    the newest two."""
    box = backing_up
    box.clock.freeze()
    meguro = box.nodes["meguro"]
    folder = tmp_path / "backups" / "meguro"
    made = []
    for hour in range(3):
        if hour:
            box.clock.advance(3600)
        run = await meguro.jobs.run("backup")
        assert run.outcome == "succeeded", run.error
        assert dict(run.counts) == {"backed_up": 1, "deleted": 1 if hour == 2 else 0}
        made.append(datetime.fromtimestamp(box.clock.seconds(), UTC).replace(microsecond=0))
    skipped = await meguro.jobs.run("backup")
    assert dict(skipped.counts) == {"backed_up": 0, "deleted": 0}
    from middleware.period import JAPAN

    names = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    assert names == [moment.astimezone(JAPAN).strftime("%Y%m%d-%H%M%S") for moment in made[1:]]
    newest = manifest_of(folder / names[-1])
    assert datetime.fromisoformat(newest["made_at"]) == made[-1]
    # The hub's job ran as the clock moved, an hour and two after the start (the second run
    # may still be going: this waits for it, the next is skipped).
    await box.hub.jobs.run("backup")
    hub = await box.hub.jobs.run("backup")
    assert dict(hub.counts) == {"backed_up": 0, "deleted": 0}
    hub_backups = sorted((tmp_path / "backups" / "hub").glob("2*"))
    assert [path.name for path in hub_backups] == names
    assert manifest_of(hub_backups[-1])["chains"].keys() == {"provision_record"}


@pytest_twisted.ensureDeferred
async def test_a_postgresql_party_is_backed_up_with_pg_dump_and_restored(
    tmp_path: Path, network_pki: Path, postgresql_database: Any
) -> None:
    """On PostgreSQL, `renkei backup` takes pg_dump's copy and the chains' heads in one
    snapshot; `renkei restore` is refused while Meguro is connected, then restores into a
    database of its own, verified, renamed in place of the old one, which is kept."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    url = postgresql_database()
    config = write_config(tmp_path, network_pki, database={"meguro": url})
    conf = str(config.path)
    box = await running_box(config, in_memory=True)
    client = BackOfficeClient(reactor, config, config.institution("meguro"), "care-insurance")
    replaced = None
    try:
        asked = await ask_tax(client)
        assert (await client.wait_for_result(asked["query_id"]))["state"] == "provided"
        destination = tmp_path / "pg-backup"
        done = renkei("backup", "-c", conf, "-i", "meguro", str(destination))
        assert done.returncode == 0, done.stderr
        manifest = manifest_of(destination)
        assert (manifest["database"], manifest["file"]) == ("postgresql", "database.dump")
        head = manifest["chains"]["provision_record"]["seq"]
        assert head >= 2

        refused(renkei("restore", "-c", conf, "-i", "meguro", str(destination)), "PartyRunning")
        await box.stop_party("meguro")
        done = renkei("restore", "-c", conf, "-i", "meguro", str(destination))
        assert done.returncode == 0, done.stderr
        name = url.rsplit("/", 1)[1]
        replaced = done.stdout.split("kept as ")[1].strip()
        assert replaced.startswith(f"{name}_replaced_")
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT seq FROM provision_record_head").fetchone()
        assert row is not None and row[0] == head
        await box.start_party("meguro")
        status = await client.query_status(asked["query_id"])
        assert status["state"] == "provided"
    finally:
        await client.close()
        await box.stopService()
        if replaced is not None:
            server = url.rsplit("/", 1)[0]
            with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{replaced}" WITH (FORCE)')


@pytest.mark.parametrize("option", [["--hub"], ["-i", "meguro"]])
def test_a_backup_of_a_database_that_is_not_there_is_one_line(
    tmp_path: Path, network_pki: Path, option: list[str]
) -> None:
    """No database yet (the party never ran): BackupFailed, and no destination left."""
    config = write_config(tmp_path, network_pki)
    destination = tmp_path / "nothing"
    refused(renkei("backup", "-c", str(config.path), *option, str(destination)), "BackupFailed")
    assert not destination.exists()
