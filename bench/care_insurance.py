"""Care-insurance data at scale: the 副本 import of Meguro's population and a bulk query.

``make bench-care-insurance`` runs ``.venv/bin/python bench/care_insurance.py`` (9-11 minutes
on 2 cores); ``--quick`` is a smoke run of 70-80 s. What each figure means and a real run's
figures are in docs/performance.md ("Care-insurance data: replica import and bulk query").
Nothing here asserts a timing; the exit status is 1 when an entry, a query or a bulk-query
line did not end as expected (a correctness check), 2 on an error, 130 when interrupted.

Two measurements, each with a baseline from the same run:

1. **副本 import.** Meguro's generated population (``simulators.population.generate``,
   seeded; ``full`` ≈ 290,000 residents) and its holdings (``simulators.seeding.holdings``
   with Meguro's section of a configuration like ``twistd.conf``). The persons are inserted
   directly into the migrated node database (integrated address numbers only: **the 符号
   acquisition is not part of this figure**), then the network in a box in one process (a
   ``twistd -n renkei --single-process`` subprocess: the hub and Meguro; with
   ``--parties-as-processes`` a process per party, as ``make run``) imports every 副本
   record through ``POST /replica-files`` over mutual TLS, in files of 5,000 entries sent one
   after the other (as ``simulators.seeding.register_holdings`` does). Baseline: the same rows
   inserted into a fresh database of the same schema with one SQLAlchemy ``executemany`` per
   5,000 rows.
   The time split comes from the same files run through the import's stages in this process.
2. **Bulk query.** A box with the hub, Meguro and Setagaya; N persons (default 10,000) of
   Meguro's generated population registered at both nodes through ``POST /persons`` (符号
   acquired, 32 at a time), each with one Setagaya local-tax record (``POST /replica-files``).
   Then the questions are asked twice: as individual ``POST /queries``, 32 in flight
   (``adapters.care_insurance.bulk_query.CONCURRENCY``), each awaited with the long poll
   ``GET /queries/<id>?wait=30`` (the baseline: the first ``--individual`` persons, 3,000 by
   default, all of them with --quick), and as one N-line Shift_JIS bulk-query file
   (``POST /bulk-queries``, polled with ``GET /bulk-queries/<id>``, result downloaded and
   checked line by line).

Every process started is stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for _path in (REPOSITORY, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from flows import (  # noqa: E402  (bench/flows.py: process supervision and CPU accounting)
    PROBLEMS,
    CpuWindow,
    Supervisor,
    _kill_with_parent,
    box_command,
    box_log_problems,
    free_port,
    milliseconds,
    party_cores,
    percentile,
    stop_popen,
    with_parties,
)

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
CARE_INSURANCE = "care-insurance"
LOCAL_TAX = "local-tax"
PREMIUM_ASSESSMENT = "JT90010000000001"  # 保険料の賦課
TAX = "TM00000000000002"  # 地方税関係情報
FINISHED = ("provided", "no_data", "refused", "error")
BOX_READY_LINE = "renkei ready"
NODE_MIGRATIONS = REPOSITORY / "middleware" / "migrations"
HUB_MIGRATIONS = REPOSITORY / "simulators" / "network" / "migrations"
# Rows per transaction of the baseline, as the import's batches (replica_file.BATCH).
BASELINE_BATCH = 5_000
FLOW_TIMEOUT = 120.0  # seconds one individual query may take before it counts as an error
BULK_POLL = 0.5  # seconds between two GET /bulk-queries/<id> (the driver's own tick)
# Individual queries of the baseline in a default run: the same questions as the first
# 3,000 lines (a closed loop is steady after a few seconds); all 10,000 would add ~4 minutes.
FULL_INDIVIDUAL = 3_000
TARGET_LINES = 100_000  # the target: a 100,000-person bulk query ...
TARGET_SECONDS = 120.0  # ... in under 2 minutes


@dataclass(frozen=True)
class Settings:
    residents: str | int  # bench 1: Meguro's population size ("full" or a count)
    persons: int  # bench 2: bulk-query lines (and persons)
    individual: int  # bench 2: individual queries of the baseline (the first of the persons)
    concurrency: int  # bench 2: individual queries in flight
    seed: int
    replica: bool
    bulk: bool
    as_processes: bool  # every party in a process of its own (as `make run`), not one box


def parse_arguments(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    from adapters.care_insurance.bulk_query import CONCURRENCY
    from simulators.population import DEFAULT_SEED

    parser = argparse.ArgumentParser(
        prog="bench/care_insurance.py",
        description=(
            "Measure, in one run on this machine: (1) the 副本 import rate of Meguro's "
            "generated population through POST /replica-files of a running box against plain "
            "executemany inserts, and (2) a bulk query of N lines (POST /bulk-queries) against "
            "the same queries sent one by one (POST /queries, 32 in flight). Prints the "
            "machine and every figure. A default run took 9-11 minutes, --quick 70-80 s, on "
            "2 cores."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 residents for the import, 1,000 bulk-query lines",
    )
    parser.add_argument(
        "--residents",
        metavar="N",
        help="Meguro's population for the import: 'full' (default, ~290,000) or a count",
    )
    parser.add_argument(
        "--persons", type=int, metavar="N", help="bulk-query lines (default 10,000, --quick 1,000)"
    )
    parser.add_argument(
        "--individual",
        type=int,
        metavar="N",
        help="individual queries of the baseline, for the first N of the same persons "
        f"(default {FULL_INDIVIDUAL:,} of 10,000, to keep the run under 15 minutes; --quick: "
        "all 1,000); its rate is that of a steady closed loop",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        metavar="N",
        help=f"individual queries in flight in the baseline (default {CONCURRENCY}, "
        "the bulk driver's submissions in flight)",
    )
    parser.add_argument(
        "--only", choices=("replica", "bulk"), help="run one of the two measurements only"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="population seed")
    parser.add_argument(
        "--parties-as-processes",
        action="store_true",
        help="run the box as `make run` does, every party (the hub, Meguro, Setagaya) in a "
        "process of its own under the supervisor, not all in one process; the box's CPU "
        "figures count every process",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the machine and figures as JSON"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (databases, logs)"
    )
    arguments = parser.parse_args(argv)
    residents: str | int = "full"
    if arguments.residents is not None:
        residents = (
            arguments.residents if arguments.residents == "full" else int(arguments.residents)
        )
    elif arguments.quick:
        residents = 20_000
    persons = arguments.persons or (1_000 if arguments.quick else 10_000)
    individual = arguments.individual or (persons if arguments.quick else FULL_INDIVIDUAL)
    settings = Settings(
        residents=residents,
        persons=persons,
        individual=min(individual, persons),
        concurrency=arguments.concurrency,
        seed=arguments.seed,
        replica=arguments.only in (None, "replica"),
        bulk=arguments.only in (None, "bulk"),
        as_processes=arguments.parties_as_processes,
    )
    return settings, arguments


# -- the machine ------------------------------------------------------------------------------


def machine() -> str:
    """What the figures were measured on, in the style of bench/records.py."""
    from importlib.metadata import version

    import sqlalchemy
    from lxml import etree
    from OpenSSL import SSL

    model = "?"
    memory = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except OSError:
        pass
    openssl = getattr(SSL, "OpenSSL_version")(getattr(SSL, "OPENSSL_VERSION")).decode()  # noqa: B009
    libxml2 = ".".join(str(part) for part in etree.LIBXML_VERSION)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPUs ({model}), "
        f"{memory:.0f} GiB, {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}, Twisted {version('twisted')}, SQLAlchemy "
        f"{sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, lxml "
        f"{version('lxml')} (libxml2 {libxml2}), {openssl}; load average at start {load}"
    )


# -- the box ----------------------------------------------------------------------------------


def write_box_config(directory: Path, pki: Path, institutions: Sequence[str]) -> Path:
    """A configuration like twistd.conf: the hub and the named institutions, with their
    sections, their back-office systems' sections and the delivery settings of twistd.conf;
    free ports and SQLite files in
    ``directory``; no console, metrics, 副本 folder, demo or population."""
    import configparser

    source = configparser.ConfigParser(interpolation=None)
    source.read(REPOSITORY / "twistd.conf", encoding="utf-8")
    target = configparser.ConfigParser(interpolation=None)
    hub_port = free_port()
    target["renkei"] = {"pki": str(pki), "hub_address": f"https://127.0.0.1:{hub_port}"}
    target["network"] = dict(source["network"])
    target["network"].update(
        {
            "database": f"sqlite:///{directory / 'hub.sqlite'}",
            "listen": f"tcp:port={hub_port}:interface=127.0.0.1",
            "address": f"https://127.0.0.1:{hub_port}",
            "permitted_list": str(REPOSITORY / source["network"]["permitted_list"]),
            "delegations": str(REPOSITORY / source["network"]["delegations"]),
        }
    )
    for name in institutions:
        for system in source.sections():
            if system.startswith(f"back-office:{name}:"):
                target[system] = dict(source[system])
        section = dict(source[f"institution:{name}"])
        for optional in ("console_listen", "console_address", "metrics_listen", "replica_inbox"):
            section.pop(optional, None)
        network, back_office = free_port(), free_port()
        section.update(
            {
                "database": f"sqlite:///{directory / (name + '.sqlite')}",
                "network_listen": f"tcp:port={network}:interface=127.0.0.1",
                "network_address": f"https://127.0.0.1:{network}",
                "back_office_listen": f"tcp:port={back_office}:interface=127.0.0.1",
                "back_office_address": f"https://127.0.0.1:{back_office}",
            }
        )
        target[f"institution:{name}"] = section
    target["delivery"] = dict(source["delivery"])
    path = directory / "box.conf"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("# Generated by bench/care_insurance.py from twistd.conf.\n")
        target.write(handle)
    return path


def start_box(
    reactor: Any, supervisor: Supervisor, config: Path, log: Path, as_processes: bool
) -> Any:
    """Start ``twistd -n renkei -c config`` (in one process, or with ``as_processes`` a
    process per party under the supervisor); fires with the Popen once it logged it is ready."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import LoopingCall

    popen = subprocess.Popen(
        box_command(config, log, as_processes),
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.with_suffix(".stderr").open("wb"),
        start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the box
        preexec_fn=_kill_with_parent,
    )
    supervisor.popens.append(popen)
    deadline = time.monotonic() + 120
    ready: Deferred[Any] = Deferred()

    def check() -> None:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        problem = None
        if BOX_READY_LINE in text:
            loop.stop()
            ready.callback(popen)
            return
        if "renkei could not start" in text:
            problem = f"the box could not start; see {log}:\n{text[-3000:]}"
        elif popen.poll() is not None:
            problem = f"the box exited with {popen.returncode}; see {log}"
        elif time.monotonic() > deadline:
            problem = "the box was not ready in 120 s"
        if problem is not None:
            loop.stop()
            ready.errback(RuntimeError(problem))

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(0.1)
    return ready


def insert_persons(url: str, numbers: Sequence[str]) -> float:
    """Person rows (integrated address number and registration time only, no 符号), one
    executemany per 5,000; the seconds it took."""
    from middleware.storage import create_database_engine
    from middleware.tables import person

    engine = create_database_engine(url, pool_size=1)
    now = datetime.datetime.now(datetime.UTC)
    began = time.perf_counter()
    try:
        for start in range(0, len(numbers), BASELINE_BATCH):
            rows = [
                {"integrated_address_number": number, "registered_at": now}
                for number in numbers[start : start + BASELINE_BATCH]
            ]
            with engine.begin() as connection:
                connection.execute(person.insert(), rows)
    finally:
        engine.dispose()
    return time.perf_counter() - began


def count_rows(database: Path, table: str) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def cpu_figures(window: CpuWindow) -> dict[str, Any]:
    # The box is a child of this process, and a process's CPU counts its descendants': the
    # client's own share is what remains once the box's is taken off.
    box, tree = window.cores.get("box"), window.cores.get("bench")
    return {
        "box_cores": box,
        "party_cores": party_cores(window),
        "bench_cores": None if box is None or tree is None else round(max(tree - box, 0.0), 2),
        "machine_busy": window.machine_busy,
        "load_average_after": round(os.getloadavg()[0], 2),
    }


# -- 1. the 副本 import -------------------------------------------------------------------------


def replica_import(
    reactor: Any, settings: Settings, directory: Path, supervisor: Supervisor
) -> Any:
    from middleware.deferred import deferred

    @deferred
    async def run() -> dict[str, Any]:
        from adapters.care_insurance.replica_file import build_replica_file, refused_codes
        from middleware import replica
        from middleware.config import load_config
        from middleware.storage import create_database_engine, migrate
        from middleware.tables import replica_record
        from simulators.back_office import BackOfficeClient
        from simulators.population import generate
        from simulators.seeding import ENTRIES_PER_FILE, holdings

        figures: dict[str, Any] = {"residents_setting": settings.residents}
        work = directory / "replica"
        work.mkdir()
        config_path = write_box_config(work, directory / "pki", ["meguro"])
        config = load_config(config_path)
        meguro = config.institution("meguro")

        print(f"1/2 副本 import: generating Meguro's population ({settings.residents}) ...")
        began = time.perf_counter()
        population = generate("meguro", settings.residents, settings.seed)
        figures["population"] = len(population)
        figures["generate_s"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        held = holdings(meguro, {"meguro": population})
        del population
        figures["holdings_s"] = round(time.perf_counter() - began, 1)
        records = [record for holding in held for record in holding.records]
        numbers = [holding.person.integrated_address_number for holding in held]
        del held
        figures["persons"] = len(numbers)
        figures["records"] = len(records)
        by_data_set: dict[str, int] = {}
        for record in records:
            by_data_set[record.data_set] = by_data_set.get(record.data_set, 0) + 1
        figures["records_by_data_set"] = dict(sorted(by_data_set.items()))
        print(
            f"    {figures['population']:,} persons generated in {figures['generate_s']} s; "
            f"Meguro holds {len(numbers):,} of them with {len(records):,} 副本 records "
            f"({figures['holdings_s']} s)",
            flush=True,
        )

        # The node's database: migrated, persons inserted directly (no 符号).
        node_url = f"sqlite:///{work / 'meguro.sqlite'}"
        migrate(node_url, NODE_MIGRATIONS)
        figures["person_insert_s"] = round(insert_persons(node_url, numbers), 2)

        # Baseline: the same rows, executemany per 5,000, into a fresh database.
        print("    baseline: executemany of the same rows into a fresh database ...", flush=True)
        base_url = f"sqlite:///{work / 'baseline.sqlite'}"
        migrate(base_url, NODE_MIGRATIONS)
        insert_persons(base_url, numbers)
        now = datetime.datetime.now(datetime.UTC)
        began = time.perf_counter()
        rows = [replica.row_of(record, now) for record in records]
        figures["baseline_rows_s"] = round(time.perf_counter() - began, 2)
        engine = create_database_engine(base_url, pool_size=1)
        began = time.perf_counter()
        try:
            for start in range(0, len(rows), BASELINE_BATCH):
                with engine.begin() as connection:
                    connection.execute(
                        replica_record.insert(), rows[start : start + BASELINE_BATCH]
                    )
        finally:
            engine.dispose()
        baseline_s = time.perf_counter() - began
        del rows
        figures["baseline_s"] = round(baseline_s, 2)
        figures["baseline_records_per_s"] = round(len(records) / baseline_s)
        print(f"    {figures['baseline_records_per_s']:,} records/s", flush=True)

        # The files a back office sends (not timed as part of the import).
        began = time.perf_counter()
        documents = [
            build_replica_file(
                records[start : start + ENTRIES_PER_FILE],
                f"{meguro.name}-{start // ENTRIES_PER_FILE:06d}",
            )
            for start in range(0, len(records), ENTRIES_PER_FILE)
        ]
        figures["build_files_s"] = round(time.perf_counter() - began, 1)
        figures["files"] = len(documents)
        figures["file_mb"] = round(sum(len(d) for d in documents) / 1_000_000, 1)

        print(
            f"    starting the box (hub + Meguro); importing {len(documents)} files of up to "
            f"{ENTRIES_PER_FILE:,} entries ({figures['file_mb']} MB) ...",
            flush=True,
        )
        log = work / "box.log"
        box = await start_box(reactor, supervisor, config_path, log, settings.as_processes)
        client = BackOfficeClient(reactor, config, meguro, CARE_INSURANCE)
        window = CpuWindow(with_parties({"box": box.pid, "bench": os.getpid()}))
        refused: list[str] = []
        per_file: list[float] = []
        try:
            window.begin()
            began = time.perf_counter()
            for document in documents:
                sent = time.perf_counter()
                result = await client.send_file("/replica-files", document, "application/xml")
                per_file.append(time.perf_counter() - sent)
                refused.extend(refused_codes(result))
            import_s = time.perf_counter() - began
            window.end()
        finally:
            await client.close()
        stop_popen(box)
        figures["import_s"] = round(import_s, 2)
        figures["import_records_per_s"] = round(len(records) / import_s)
        figures["per_file_s"] = {
            "min": round(min(per_file), 2),
            "median": round(sorted(per_file)[len(per_file) // 2], 2),
            "max": round(max(per_file), 2),
        }
        figures["refused"] = len(refused)
        figures["refused_codes"] = sorted(set(refused))
        figures["stored"] = count_rows(work / "meguro.sqlite", "replica_record")
        figures["cpu"] = cpu_figures(window)
        # "0 refused" is how a 副本 file's import reports its entries: not a problem.
        figures["box_log_problems"] = box_log_problems(log, PROBLEMS)
        figures["ratio"] = round(
            figures["import_records_per_s"] / figures["baseline_records_per_s"], 3
        )
        print(f"    {figures['import_records_per_s']:,} records/s", flush=True)

        print("    time split: the same files through the import's stages here ...", flush=True)
        figures["split"] = stage_split(documents, meguro, numbers, work)
        return figures

    return run()


def stage_split(
    documents: Sequence[bytes], institution: Any, numbers: Sequence[str], directory: Path
) -> dict[str, float]:
    """Seconds of each stage of the import for these files, run in this process: parsing and
    schema validation, the per-entry checks, the database batches (``store_batch`` on a fresh
    database), the result file."""
    from adapters.care_insurance.replica_file import (
        STORED,
        EntryResult,
        ImportResult,
        check_registration,
        read_replica_file,
        render_result,
    )
    from codes.catalogue import default_catalogue
    from middleware import replica
    from middleware.storage import create_database_engine, migrate

    catalogue = default_catalogue()
    url = f"sqlite:///{directory / 'split.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    insert_persons(url, numbers)
    engine = create_database_engine(url, pool_size=1)
    now = datetime.datetime.now(datetime.UTC)
    parse = check = database = render = 0.0
    try:
        for document in documents:
            t0 = time.perf_counter()
            read = read_replica_file(document, institution.code)
            t1 = time.perf_counter()
            checked = [check_registration(e, catalogue, institution.provides) for e in read.entries]
            t2 = time.perf_counter()
            with engine.begin() as connection:
                outcomes = replica.store_batch(connection, checked, now)
            t3 = time.perf_counter()
            if any(outcome is not None for outcome in outcomes):
                raise RuntimeError("the split's database stage refused entries")
            render_result(
                ImportResult(
                    read.header,
                    read.segment,
                    [EntryResult(e.number, e.record_id, STORED) for e in read.entries],
                )
            )
            t4 = time.perf_counter()
            parse += t1 - t0
            check += t2 - t1
            database += t3 - t2
            render += t4 - t3
    finally:
        engine.dispose()
    return {
        "parse_and_schema_s": round(parse, 2),
        "entry_checks_s": round(check, 2),
        "database_s": round(database, 2),
        "result_file_s": round(render, 2),
    }


# -- 2. the bulk query --------------------------------------------------------------------------


def tax_record(index: int, number: str) -> Any:
    """Setagaya's local-tax record (地方税関係情報, data set 0101) of person ``index``."""
    from middleware.replica import ReplicaRecord

    return ReplicaRecord(
        record_id=f"SET-TAX-2026-{index:09d}",
        integrated_address_number=number,
        information_name=TAX,
        data_set="0101",
        items={
            "TK00000201010001": "2026",
            "TK00000201010002": "1",
            "TK00000201010003": "3500",
            "TK00000201010004": str(50_000 + index % 400_000),
            "TK00000201010007": "1420000",
            "TK00000201010008": "1980000",
            "TK00000201010009": "0",
        },
    )


def bulk_query(reactor: Any, settings: Settings, directory: Path, supervisor: Supervisor) -> Any:
    from twisted.internet.defer import gatherResults

    from middleware.deferred import deferred

    @deferred
    async def run() -> dict[str, Any]:
        from middleware.config import load_config
        from middleware.storage import create_database_engine, migrate
        from simulators.back_office import BackOfficeClient
        from simulators.network import jukinet
        from simulators.population import generate
        from simulators.seeding import CONCURRENT_REGISTRATIONS, Holding, register_holdings

        n = settings.persons
        figures: dict[str, Any] = {
            "lines": n,
            "individual_queries": settings.individual,
            "concurrency": settings.concurrency,
        }
        work = directory / "bulk"
        work.mkdir()
        config_path = write_box_config(work, directory / "pki", ["meguro", "setagaya"])
        config = load_config(config_path)
        meguro = config.institution("meguro")
        setagaya = config.institution("setagaya")

        print(f"2/2 bulk query of {n:,} lines: generating the persons ...", flush=True)
        persons = [p for p in generate("meguro", n, settings.seed) if p.resident][:n]
        if len(persons) < n:
            raise RuntimeError(f"only {len(persons)} residents generated")
        # The resident registry (住基ネット simulator, the hub's database) learns the
        # individual numbers directly, as the box's population loading does.
        hub_url = f"sqlite:///{work / 'hub.sqlite'}"
        migrate(hub_url, HUB_MIGRATIONS)
        engine = create_database_engine(hub_url, pool_size=1)
        try:
            with engine.begin() as connection:
                jukinet.register_residents(connection, [p.individual_number for p in persons])
        finally:
            engine.dispose()

        log = work / "box.log"
        box = await start_box(reactor, supervisor, config_path, log, settings.as_processes)
        meguro_client = BackOfficeClient(reactor, config, meguro, CARE_INSURANCE)
        try:
            print(
                f"    registering {n:,} persons at Meguro and at Setagaya (POST /persons, "
                f"{CONCURRENT_REGISTRATIONS} at a time per node, 符号 acquired) and "
                f"{n:,} Setagaya local-tax records (POST /replica-files) ...",
                flush=True,
            )
            at_setagaya = [
                Holding(
                    replace(p, integrated_address_number=f"131121{i + 1:09d}"),
                    (tax_record(i, f"131121{i + 1:09d}"),),
                )
                for i, p in enumerate(persons)
            ]
            began = time.perf_counter()
            stored = await gatherResults(
                [
                    register_holdings(reactor, config, meguro, [Holding(p, ()) for p in persons]),
                    register_holdings(reactor, config, setagaya, at_setagaya),
                ],
                consumeErrors=True,
            )
            figures["registration_s"] = round(time.perf_counter() - began, 1)
            figures["records_stored"] = stored[1]
            print(f"    registered in {figures['registration_s']} s", flush=True)

            print(
                f"    baseline: {settings.individual:,} individual queries (the first persons), "
                f"{settings.concurrency} in flight ...",
                flush=True,
            )
            figures["individual"] = await individual_queries(
                reactor,
                meguro_client,
                persons[: settings.individual],
                settings.concurrency,
                box.pid,
            )
            individual = figures["individual"]
            print(f"    {individual['flows_per_s']} flows/s", flush=True)

            print(f"    one bulk-query file of {n:,} lines ...", flush=True)
            figures["bulk"] = await one_bulk_query(reactor, meguro_client, persons, box.pid)
            print(f"    {figures['bulk']['lines_per_s']} lines/s", flush=True)
        finally:
            await meguro_client.close()
        stop_popen(box)
        with sqlite3.connect(f"file:{work / 'meguro.sqlite'}?mode=ro", uri=True) as db:
            figures["meguro_query_states"] = dict(
                db.execute("SELECT state, count(*) FROM query GROUP BY state").fetchall()
            )
        # "0 refused" is how a 副本 file's import reports its entries: not a problem.
        figures["box_log_problems"] = box_log_problems(log, PROBLEMS)
        bulk = figures["bulk"]
        figures["ratio"] = (
            round(bulk["lines_per_s"] / individual["flows_per_s"], 3)
            if individual["flows_per_s"]
            else None
        )
        return figures

    return run()


def individual_queries(
    reactor: Any, client: Any, persons: Sequence[Any], concurrency: int, box_pid: int
) -> Any:
    """The baseline: each person's query as POST /queries, awaited with the long poll."""
    from twisted.internet.defer import gatherResults

    from middleware.deferred import deferred

    latencies: list[float] = []
    errors: list[str] = []
    states: dict[str, int] = {}
    queue = iter(persons)

    @deferred
    async def worker() -> None:
        for person in queue:
            began = time.perf_counter()
            try:
                accepted = await client.submit_query(
                    integrated_address_number=person.integrated_address_number,
                    procedure=PREMIUM_ASSESSMENT,
                    information_name=TAX,
                    provider=SETAGAYA,
                )
                while True:
                    status = await client.query_status(accepted["query_id"], wait=30)
                    state = status["state"]
                    if state in FINISHED:
                        break
                    if time.perf_counter() - began > FLOW_TIMEOUT:
                        state = f"still {state}"
                        break
            except Exception as failure:
                errors.append(repr(failure))
                continue
            states[state] = states.get(state, 0) + 1
            records = (status.get("result") or {}).get("records") or []
            if state != "provided" or len(records) != 1:
                errors.append(f"query {accepted['query_id']}: {state}, {len(records)} records")
            else:
                latencies.append(time.perf_counter() - began)

    @deferred
    async def run() -> dict[str, Any]:
        window = CpuWindow(with_parties({"box": box_pid, "bench": os.getpid()}))
        window.begin()
        began = time.perf_counter()
        await gatherResults([worker() for _ in range(concurrency)], consumeErrors=True)
        elapsed = time.perf_counter() - began
        window.end()
        return {
            "seconds": round(elapsed, 1),
            "flows_per_s": round(len(latencies) / elapsed, 1),
            "provided": len(latencies),
            "errors": len(errors),
            "error_samples": errors[:5],
            "states": states,
            "p50_ms": milliseconds(percentile(latencies, 0.50)),
            "p99_ms": milliseconds(percentile(latencies, 0.99)),
            "cpu": cpu_figures(window),
        }

    return run()


def one_bulk_query(reactor: Any, client: Any, persons: Sequence[Any], box_pid: int) -> Any:
    """Post the N-line file, poll its progress until it ended, download and check the result."""
    from twisted.internet.task import deferLater

    from middleware.deferred import deferred
    from simulators.use_cases import bulk_query_line

    @deferred
    async def run() -> dict[str, Any]:
        asked_at = datetime.datetime(2026, 11, 26, 9, 0, 0)
        lines = [bulk_query_line(p, MEGURO, SETAGAYA, asked_at) for p in persons]
        body = ("\r\n".join(lines) + "\r\n").encode("cp932")
        window = CpuWindow(with_parties({"box": box_pid, "bench": os.getpid()}))
        window.begin()
        began = time.perf_counter()
        answer = await client.send_file("/bulk-queries", body, "text/csv")
        accepted = json.loads(answer)
        accepted_s = time.perf_counter() - began
        bulk_id = accepted["bulk_query_id"]
        samples: list[tuple[float, int]] = []
        while True:
            progress = await client.request("GET", f"/bulk-queries/{bulk_id}")
            samples.append((time.perf_counter() - began, int(progress["ended"])))
            if progress["state"] == "ended":
                break
            await deferLater(reactor, BULK_POLL, lambda: None)
        ended_s = time.perf_counter() - began
        result = await client.send("GET", f"/bulk-queries/{bulk_id}/result", None)
        elapsed = time.perf_counter() - began
        window.end()
        encoding = "cp932" if "shift_jis" in result.content_type else "utf-8-sig"
        rows = list(csv.reader(io.StringIO(result.body.decode(encoding))))
        header, data = rows[0], rows[1:]
        code = header.index("処理結果コード")
        unit = header.index("特定個人情報名単位結果コード")
        count = header.index("提供件数")
        abnormal = [row for row in data if (row[code], row[unit], row[count]) != ("09", "01", "1")]
        lines_n = len(persons)
        # The driver's steady rate: from 10 % to 90 % of the lines ended (poll samples).
        steady = None
        low = next((s for s in samples if s[1] >= lines_n * 0.1), None)
        high = next((s for s in samples if s[1] >= lines_n * 0.9), None)
        if low is not None and high is not None and high[0] > low[0]:
            steady = round((high[1] - low[1]) / (high[0] - low[0]), 1)
        # Lines/s in each quarter of the lines (does the rate fall as the run goes on?).
        quarters: list[float | None] = []
        previous = (0.0, 0)
        for share in (0.25, 0.5, 0.75, 1.0):
            reached = next((s for s in samples if s[1] >= lines_n * share), None)
            if reached is None or reached[0] <= previous[0]:
                quarters.append(None)
                continue
            quarters.append(round((reached[1] - previous[1]) / (reached[0] - previous[0]), 1))
            previous = reached
        return {
            "file_bytes": len(body),
            "accepted_s": round(accepted_s, 2),
            "ended_s": round(ended_s, 1),
            "seconds": round(elapsed, 1),
            "result_download_s": round(elapsed - ended_s, 2),
            "result_bytes": len(result.body),
            "result_status": result.status,
            "lines_per_s": round(lines_n / elapsed, 1),
            "steady_lines_per_s": steady,
            "lines_per_s_by_quarter": quarters,
            "by_state": progress["by_state"],
            "result_lines": len(data),
            "abnormal_lines": len(abnormal) + max(0, lines_n - len(data)),
            "abnormal_samples": [",".join(row[:12]) for row in abnormal[:5]],
            "cpu": cpu_figures(window),
        }

    return run()


# -- printing -----------------------------------------------------------------------------------


def show(label: str, value: Any) -> None:
    print(f"  {label:<52} {value}")


def cores(cpu: dict[str, Any]) -> str:
    parties = ", ".join(f"{name} {used}" for name, used in cpu.get("party_cores", {}).items())
    return (
        f"box {cpu['box_cores']} cores{f' ({parties})' if parties else ''}, "
        f"this process (client) {cpu['bench_cores']} cores, "
        f"machine {cpu['machine_busy'] * 100:.0f} % busy (load average "
        f"{cpu['load_average_after']} after)"
    )


def print_report(report: dict[str, Any]) -> None:
    print(f"\nmachine: {report['machine']}")
    shape = "a process per party" if report["settings"]["as_processes"] else "one process"
    print(f"box: {shape}")
    r = report.get("replica")
    if r:
        print(f"\n1. 副本 import of Meguro's population ({r['residents_setting']})")
        show("population generated", f"{r['population']:,} persons in {r['generate_s']} s")
        show(
            "Meguro's holdings",
            f"{r['persons']:,} persons, {r['records']:,} records {r['records_by_data_set']}",
        )
        show(
            "persons inserted directly (not timed)",
            f"{r['persons']:,} in {r['person_insert_s']} s; 符号 NOT acquired: the 符号 "
            "acquisition is not part of this figure",
        )
        show(
            "files (built client-side, not timed)",
            f"{r['files']} of up to 5,000 entries, {r['file_mb']} MB, built in "
            f"{r['build_files_s']} s",
        )
        show(
            "baseline: executemany per 5,000 rows",
            f"{r['baseline_records_per_s']:,} records/s ({r['baseline_s']} s; rows prepared "
            f"in {r['baseline_rows_s']} s, not timed)",
        )
        show(
            "import: POST /replica-files, one file at a time",
            f"{r['import_records_per_s']:,} records/s ({r['import_s']} s)",
        )
        show("ratio import / baseline", r["ratio"])
        show("seconds per file (min / median / max)", r["per_file_s"])
        show("CPU during the import", cores(r["cpu"]))
        s = r["split"]
        total = sum(s.values())
        show(
            "split (same files, stages run in this process)",
            f"parse + schema {s['parse_and_schema_s']} s, entry checks {s['entry_checks_s']} s, "
            f"database {s['database_s']} s, result file {s['result_file_s']} s "
            f"(sum {total:.1f} s against the box's {r['import_s']} s, which adds HTTP, "
            "TLS and thread hand-offs)",
        )
        show(
            "entries refused / records stored",
            f"{r['refused']} {r['refused_codes'] or ''} / {r['stored']:,}",
        )
        show("box log lines with problems", r["box_log_problems"])
    b = report.get("bulk")
    if b:
        i, q = b["individual"], b["bulk"]
        print(f"\n2. bulk query of {b['lines']:,} lines (Meguro asks Setagaya's local tax)")
        show(
            "registration (not part of the figures)",
            f"{b['lines']:,} persons at each node, 符号 acquired, {b['records_stored']:,} "
            f"Setagaya records: {b['registration_s']} s",
        )
        show(
            f"baseline: individual queries, {b['concurrency']} in flight",
            f"{i['flows_per_s']} flows/s ({i['provided']:,} provided in {i['seconds']} s; "
            f"p50 {i['p50_ms']} ms, p99 {i['p99_ms']} ms; {i['errors']} errors)",
        )
        show("CPU during the individual queries", cores(i["cpu"]))
        show(
            "bulk query: time to result",
            f"{q['seconds']} s (accepted after {q['accepted_s']} s, ended after "
            f"{q['ended_s']} s, result file {q['result_bytes'] / 1e6:.1f} MB in "
            f"{q['result_download_s']} s)",
        )
        show(
            "bulk query: lines/s",
            f"{q['lines_per_s']} (steady, 10 % to 90 % of lines ended: "
            f"{q['steady_lines_per_s']}; by quarter of the lines: {q['lines_per_s_by_quarter']})",
        )
        show("ratio bulk / individual", b["ratio"])
        show("CPU during the bulk query", cores(q["cpu"]))
        show("lines by state", q["by_state"])
        show("result lines not 09/01 with 1 record", q["abnormal_lines"])
        for sample in q["abnormal_samples"]:
            print(f"    {sample}")
        for sample in i["error_samples"]:
            print(f"    individual error: {sample}")
        show("Meguro's queries by state (database)", b["meguro_query_states"])
        show("box log lines with problems", b["box_log_problems"])
        rate = q["lines_per_s"]
        if rate:
            show(
                f"target: {TARGET_LINES:,} lines in {TARGET_SECONDS:.0f} s",
                f"needs {TARGET_LINES / TARGET_SECONDS:.0f} lines/s; at {rate} lines/s "
                f"{TARGET_LINES:,} lines take about {TARGET_LINES / rate / 60:.0f} min",
            )


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    settings, arguments = parse_arguments(argv)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from twisted.internet import reactor as installed

    from crypto.pki import InstitutionEntry, init_pki
    from middleware.deferred import deferred

    reactor: Any = installed
    began = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="renkei-bench-care-"))
    supervisor = Supervisor()
    report: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}
    print(f"bench/care_insurance.py: temporary directory {directory}")
    print(f"machine: {report['machine']}", flush=True)
    outcome: dict[str, Any] = {}

    @deferred
    async def run() -> None:
        init_pki(
            directory / "pki",
            [
                InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
                InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            ],
        )
        if settings.replica:
            report["replica"] = await replica_import(reactor, settings, directory, supervisor)
        if settings.bulk:
            report["bulk"] = await bulk_query(reactor, settings, directory, supervisor)

    def go() -> None:
        finished = run()
        finished.addCallbacks(
            lambda _: outcome.setdefault("done", True),
            lambda failure: outcome.setdefault("failure", failure),
        )
        finished.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    try:
        reactor.run()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop_all()
        if arguments.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if "failure" in outcome:
        failure = outcome["failure"]
        print("".join(traceback.format_exception(failure.value)), file=sys.stderr)
        return 2
    if "done" not in outcome:
        print("\ninterrupted: every process stopped", file=sys.stderr)
        return 130
    report["elapsed_s"] = round(time.monotonic() - began, 1)
    print_report(report)
    print(f"\nelapsed {report['elapsed_s']} s")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {arguments.json}")
    problems = 0
    if "replica" in report:
        r = report["replica"]
        problems += r["refused"] + (r["records"] - r["stored"])
    if "bulk" in report:
        b = report["bulk"]
        problems += b["individual"]["errors"] + b["bulk"]["abnormal_lines"]
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
