"""The console's record searches over a node database of 1 M provision records.

``.venv/bin/python bench/records.py`` builds, in a temporary directory, the SQLite database of
one intermediate server (Meguro, 1131105000000000) migrated with the project's Alembic
migrations, fills it with ``--records`` provision records (default 1,000,000; ``--quick``:
100,000) forming a valid hash chain (``middleware.records.chain_hash``, head row written),
then times the console's typical searches with the very statements the console runs
(``middleware.record_search``'s ``record_branches``, ``page_statement`` and
``export_statement``, from the console's form by ``adapters.console.app.record_filter``, and
the console's ``records_csv``). ``--url postgresql://...`` uses an
(empty) PostgreSQL database instead. What the figures mean and a real run's figures are in
docs/performance.md ("Record search"). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from sqlalchemy import Connection, Engine, and_, func, inspect, or_, select, text  # noqa: E402

from adapters.console.app import (  # noqa: E402
    EXPORT_LIMIT,
    JST,
    PAGE_SIZE,
    record_filter,
    records_csv,
)
from middleware.record_search import (  # noqa: E402
    EXPORT_COLUMNS,
    export_statement,
    page_statement,
    record_branches,
)
from middleware.records import GENESIS, RecordEntry, chain_hash  # noqa: E402
from middleware.storage import create_database_engine, migrate  # noqa: E402
from middleware.tables import node_record_head, node_records  # noqa: E402

HERE_CODE = "1131105000000000"  # Meguro, the node whose console is measured
COUNTERPARTS = [  # other institutions (Setagaya first: the busiest counterpart)
    "1131121000000000",
    "1131130000000000",
    "1131148000000000",
    "1131156000000000",
    "1131164000000000",
    "1131172000000000",
    "1132012000000000",
    "1141003000000000",
]
COUNTERPART_WEIGHTS = [40, 15, 12, 10, 8, 6, 5, 4]
# (affair, procedure, information name) the node asks with / is asked with.
OUTGOING = [
    ("JM90000000001000", "JT90010000000001", "TM00000000000002"),
    ("JM90000000001000", "JT90010000000002", "TM00000000000002"),
    ("JM90000000001000", "JT90010000000003", "TM00000000900001"),
]
INCOMING = [
    ("JM90000000002000", "JT90020000000001", "TM00000000000004"),
    ("JM90000000001000", "JT90010000000001", "TM00000000900002"),
]
PROVISION_STATUSES = ["provided", "no_data", "refused", "held", "error"]
PROVISION_WEIGHTS = [86, 8, 2, 1, 3]
RESULT_STATUSES = ["provided", "no_data", "refused", "error"]
RESULT_WEIGHTS = [87, 8, 2, 3]
ERROR_CODES = {"error": "NetworkUnavailable", "refused": "ProvisionRefused"}
PERSONS = 100_000
BATCH = 20_000
END = datetime(2026, 11, 26, tzinfo=JST)  # the records span the year before this day


def generate(engine: Engine, total: int, seed: int) -> dict[str, Any]:
    """Insert ``total`` chained records in batches; what was written, and how fast."""
    rng = random.Random(seed)
    start = (END - timedelta(days=365)).astimezone(UTC)
    step = timedelta(days=365) / total
    persons = [f"{10_000 + i:015d}" for i in range(PERSONS)]
    seq = 0
    prev_hash = GENESIS
    transactions = 0
    hashing = inserting = 0.0
    began = time.perf_counter()
    batch: list[dict[str, Any]] = []

    def flush() -> float:
        t0 = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(node_records.insert(), batch)
        batch.clear()
        return time.perf_counter() - t0

    while seq < total:
        transactions += 1
        moment = start + step * seq
        number = f"{moment.astimezone(JST):%Y%m%d}{transactions:012d}"
        counterpart = rng.choices(COUNTERPARTS, COUNTERPART_WEIGHTS)[0]
        person = rng.choice(persons)
        entries: list[RecordEntry] = []
        if rng.random() < 0.4:  # this node asks: query accepted, then its result
            affair, procedure, information = rng.choice(OUTGOING)
            status = rng.choices(RESULT_STATUSES, RESULT_WEIGHTS)[0]
            common: dict[str, Any] = dict(
                transaction_number=number,
                requester=HERE_CODE,
                provider=counterpart,
                affair=affair,
                procedure=procedure,
                information_name=information,
                person=person,
            )
            entries.append(RecordEntry(event="query", status="accepted", **common))
            entries.append(
                RecordEntry(
                    event="result", status=status, error_code=ERROR_CODES.get(status), **common
                )
            )
        else:  # this node is asked: one provision record
            affair, procedure, information = rng.choice(INCOMING)
            status = rng.choices(PROVISION_STATUSES, PROVISION_WEIGHTS)[0]
            entries.append(
                RecordEntry(
                    event="provision",
                    status=status,
                    transaction_number=number,
                    requester=counterpart,
                    provider=HERE_CODE,
                    affair=affair,
                    procedure=procedure,
                    information_name=information,
                    person=person,
                    error_code=ERROR_CODES.get(status),
                )
            )
        for entry in entries:
            if seq >= total:
                break
            seq += 1
            recorded_at = (start + step * seq).replace(microsecond=0)
            t0 = time.perf_counter()
            digest = chain_hash(prev_hash, seq, recorded_at, entry)
            hashing += time.perf_counter() - t0
            batch.append(
                {
                    "seq": seq,
                    "recorded_at": recorded_at,
                    "prev_hash": prev_hash,
                    "hash": digest,
                    **asdict(entry),
                }
            )
            prev_hash = digest
        if len(batch) >= BATCH:
            inserting += flush()
            print(f"  {seq:,} records", end="\r", flush=True)
    if batch:
        inserting += flush()
    with engine.begin() as connection:
        connection.execute(node_record_head.delete())
        connection.execute(node_record_head.insert().values(id=1, seq=seq, hash=prev_hash))
    elapsed = time.perf_counter() - began
    return {
        "records": seq,
        "transactions": transactions,
        "seconds": elapsed,
        "hashing": hashing,
        "inserting": inserting,
    }


def analyze(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


Search = tuple[str, dict[str, str], int | None, bool]  # name, filters, before, export


def searches(connection: Connection) -> list[Search]:
    """The console's typical searches, with values taken from the data."""
    newest = connection.execute(select(func.max(node_records.c.seq))).scalar_one()
    middle = connection.execute(
        select(node_records.c.transaction_number, node_records.c.person).where(
            node_records.c.seq == newest // 2
        )
    ).one()
    mid_day = (END - timedelta(days=180)).date()
    week_from = mid_day - timedelta(days=6)
    return [
        ("newest page, no filter", {}, None, False),
        ("処理通番", {"transaction_number": middle.transaction_number}, None, False),
        ("integrated address number", {"person": middle.person}, None, False),
        (
            "date range (7 days, mid-year)",
            {"date_from": f"{week_from:%Y-%m-%d}", "date_to": f"{mid_day:%Y-%m-%d}"},
            None,
            False,
        ),
        (
            "date range (90 days, mid-year)",
            {
                "date_from": f"{mid_day - timedelta(days=89):%Y-%m-%d}",
                "date_to": f"{mid_day:%Y-%m-%d}",
            },
            None,
            False,
        ),
        ("counterpart (busiest, 40 %)", {"counterpart": COUNTERPARTS[0]}, None, False),
        ("counterpart (rarest, 4 %)", {"counterpart": COUNTERPARTS[-1]}, None, False),
        (
            "information name + status (refused)",
            {"information_name": "TM00000000000004", "status": "refused"},
            None,
            False,
        ),
        (
            "status only (held, 0.6 %)",
            {"status": "held"},
            None,
            False,
        ),
        (
            "no match: event result + status held",
            {"event": "result", "status": "held"},
            None,
            False,
        ),
        (
            "no match: unknown counterpart",
            {"counterpart": "1139999000000000"},
            None,
            False,
        ),
        ("deep page (mid-table, keyset)", {}, newest // 2, False),
        (
            "counterpart + information name, page 200",
            {"counterpart": COUNTERPARTS[1], "information_name": "TM00000000000002"},
            None,
            False,
        ),
        (
            "CSV export, one day",
            {"date_from": f"{mid_day:%Y-%m-%d}", "date_to": f"{mid_day:%Y-%m-%d}"},
            None,
            True,
        ),
    ]


def branches_of(filters: dict[str, str]) -> list[list[Any]]:
    """The branches of the search the console's form ``filters`` describe."""
    return record_branches(record_filter(filters), HERE_CODE)


def page_of(branches: list[list[Any]], before: int | None) -> Any:
    """The statement of one console page (one row more than a page)."""
    return page_statement(branches, PAGE_SIZE + 1, before)


def run_search(engine: Engine, filters: dict[str, str], before: int | None, export: bool) -> int:
    """One search as the console runs it: statement, one transaction, rows materialized."""
    branches = branches_of(filters)
    if export:
        with engine.begin() as connection:
            rows = list(connection.execute(export_statement(branches, EXPORT_LIMIT)))
        records_csv(EXPORT_COLUMNS, rows).encode("utf-8-sig")
        return len(rows)
    with engine.begin() as connection:
        found = [dict(r._mapping) for r in connection.execute(page_of(branches, before))]
    return len(found)


def paged_before(engine: Engine, filters: dict[str, str], pages: int) -> int | None:
    """The ``before`` of page ``pages`` of a search (following the console's next links)."""
    matches = or_(*[and_(*branch) for branch in branches_of(filters)])
    with engine.begin() as connection:
        seqs = connection.execute(
            select(node_records.c.seq)
            .where(matches)
            .order_by(node_records.c.seq.desc())
            .offset(50 * (pages - 1) - 1)
            .limit(1)
        ).scalar()
    return int(seqs) if seqs is not None else None


def matching(engine: Engine, filters: dict[str, str]) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                select(func.count())
                .select_from(node_records)
                .where(or_(*[and_(*branch) for branch in branches_of(filters)]))
            ).scalar_one()
        )


def plan(engine: Engine, filters: dict[str, str], before: int | None, export: bool) -> str:
    branches = branches_of(filters)
    statement = export_statement(branches, EXPORT_LIMIT) if export else page_of(branches, before)
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            return "; ".join(str(r[-1]) for r in rows)
        rows = connection.exec_driver_sql(f"EXPLAIN {compiled}").all()
        return " / ".join(str(r[0]).strip() for r in rows[:4])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except OSError:
        memory = 0.0
    import sqlalchemy

    return (
        f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, SQLAlchemy "
        f"{sqlalchemy.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 records")
    parser.add_argument("--url", help="a database URL (default: SQLite in a temporary dir)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per search")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args(argv)
    total = 100_000 if options.quick else options.records
    print(f"machine: {machine()}")
    tmp = tempfile.mkdtemp(prefix="renkei-records-")
    try:
        url = options.url or f"sqlite:///{tmp}/node.sqlite"
        if url.startswith("sqlite"):
            import sqlite3

            print(f"database: {url} (SQLite {sqlite3.sqlite_version})")
        else:
            print(f"database: {url.split('@')[-1]}")
        migrate(url, REPOSITORY / "middleware" / "migrations")
        engine = create_database_engine(url, pool_size=1)
        try:
            with engine.begin() as connection:
                if connection.execute(select(func.count()).select_from(node_records)).scalar():
                    print("the database already holds provision records: use an empty one")
                    return 2
            print(f"generating {total:,} records ...")
            made = generate(engine, total, options.seed)
            print()
            t0 = time.perf_counter()
            analyze(engine)
            analyzed = time.perf_counter() - t0
            print(
                f"generated {made['records']:,} records ({made['transactions']:,} 処理通番) in "
                f"{made['seconds']:.1f} s: {made['records'] / made['seconds']:,.0f} records/s "
                f"(hash chain {made['hashing']:.1f} s, inserts {made['inserting']:.1f} s); "
                f"ANALYZE {analyzed:.1f} s"
            )
            if url.startswith("sqlite"):
                size = Path(url.removeprefix("sqlite:///")).stat().st_size
                print(f"database file: {size / 1024 / 1024:,.0f} MiB")
            with engine.begin() as connection:
                cases = searches(connection)
                revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                print(f"schema revision: {revision.scalar()}")
            indexes = sorted(
                f"{index['name']} ({', '.join(str(c) for c in index['column_names'])})"
                for index in inspect(engine).get_indexes("provision_record")
            )
            print(f"provision_record indexes: {', '.join(indexes)}")
            # the "page 200" case follows the next links 199 times: find its before
            resolved: list[Search] = []
            for name, filters, before, export in cases:
                if name.endswith("page 200"):
                    before = paged_before(engine, filters, 200)
                resolved.append((name, filters, before, export))
            print(
                f"\n{'search':42} {'rows':>6} {'matching':>9} {'first ms':>9} "
                f"{'median ms':>10} {'p95 ms':>8}"
            )
            results: list[tuple[str, float, float]] = []
            for name, filters, before, export in resolved:
                times: list[float] = []
                rows = 0
                first = 0.0
                for attempt in range(options.repeat + 1):
                    t0 = time.perf_counter()
                    rows = run_search(engine, filters, before, export)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if attempt == 0:
                        first = elapsed
                    else:
                        times.append(elapsed)
                median = statistics.median(times)
                p95 = percentile(times, 0.95)
                results.append((name, median, p95))
                print(
                    f"{name:42} {rows:>6,} {matching(engine, filters):>9,} {first:>9.2f} "
                    f"{median:>10.2f} {p95:>8.2f}"
                )
                print(f"    plan: {plan(engine, filters, before, export)}")
            slow = [name for name, median, _ in results if median > 100]
            if slow:
                print(f"\nsearches over 100 ms (median): {', '.join(slow)}")
        finally:
            engine.dispose()
    finally:
        if options.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
