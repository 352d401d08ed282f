"""The console's record searches over a node database of 1 M provision records.

``.venv/bin/python bench/records.py`` builds, in a temporary directory, the SQLite database of
one intermediate server (Meguro, 1131105000000000) migrated with the project's Alembic
migrations, fills it with ``--records`` provision records (default 1,000,000; ``--quick``:
100,000) forming a valid hash chain (``middleware.records.chain_hash``, head row written),
then times the console's typical searches with the very statements the console runs
(``middleware.record_search``'s ``record_branches``, ``page_statement`` and
``export_statement``, from the console's form by ``adapters.console.app.record_filter``, and
the console's ``records_csv``). Then 業務統計: it fills the summary as the migration that made
it does (``middleware.business_statistics.rebuild``), times the statistics page's questions
(``figures`` and the page's tables and CSV from ``adapters.console.statistics``), the cost the
summary adds to each append of records, and checks the summary against a count over every
record. ``--url postgresql://...`` uses an (empty) PostgreSQL database instead. What the
figures mean and a real run's figures are in docs/performance.md ("Record search",
"Business statistics"). Nothing here asserts a timing.
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
from adapters.console.i18n import translator  # noqa: E402
from adapters.console.statistics import (  # noqa: E402
    GROUPINGS,
    Names,
    Period,
    period_of,
    side_tables,
    statistics_csv,
)
from codes.catalogue import default_catalogue  # noqa: E402
from middleware.business_statistics import (  # noqa: E402
    as_summary,
    count_appended,
    figures,
    rebuild,
    recount,
    summary_counts,
    summary_of,
)
from middleware.record_search import (  # noqa: E402
    EXPORT_COLUMNS,
    export_statement,
    page_statement,
    record_branches,
)
from middleware.records import GENESIS, RecordEntry, chain_hash, record_chain  # noqa: E402
from middleware.storage import create_database_engine, migrate  # noqa: E402
from middleware.tables import node_record_head, node_records  # noqa: E402

HERE_CODE = "1131105000000000"  # Meguro, the node whose console is measured
SUMMARY = summary_of(node_records)  # its 業務統計 tables
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


def asked(
    number: str, requester: str, provider: str, what: tuple[str, str, str], person: str
) -> dict[str, Any]:
    """The fields every record of one 処理通番 shares; ``what``: affair, procedure and
    information name."""
    affair, procedure, information = what
    return dict(
        transaction_number=number,
        requester=requester,
        provider=provider,
        affair=affair,
        procedure=procedure,
        information_name=information,
        person=person,
    )


def counterparts(count: int) -> tuple[list[str], list[float]]:
    """The ``count`` counterpart institutions of the data and their weights: the eight above,
    then (``--counterparts`` beyond 8) more, each less busy than the one before (Zipf)."""
    codes = COUNTERPARTS[:count]
    weights: list[float] = list(COUNTERPART_WEIGHTS[:count])
    for rank in range(len(codes), count):
        codes.append(f"2{rank:06d}000000000")
        weights.append(4 * 8 / (rank + 1))
    return codes, weights


def generate(engine: Engine, total: int, seed: int, institutions: int = 8) -> dict[str, Any]:
    """Insert ``total`` chained records in batches; what was written, and how fast."""
    rng = random.Random(seed)
    codes, weights = counterparts(institutions)
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
        counterpart = rng.choices(codes, weights)[0]
        person = rng.choice(persons)
        entries: list[RecordEntry] = []
        if rng.random() < 0.4:  # this node asks: query accepted, then its result
            what = rng.choice(OUTGOING)
            status = rng.choices(RESULT_STATUSES, RESULT_WEIGHTS)[0]
            common = asked(number, HERE_CODE, counterpart, what, person)
            entries.append(RecordEntry(event="query", status="accepted", **common))
            entries.append(
                RecordEntry(
                    event="result", status=status, error_code=ERROR_CODES.get(status), **common
                )
            )
        else:  # this node is asked: one provision record
            what = rng.choice(INCOMING)
            status = rng.choices(PROVISION_STATUSES, PROVISION_WEIGHTS)[0]
            common = asked(number, counterpart, HERE_CODE, what, person)
            entries.append(
                RecordEntry(
                    event="provision", status=status, error_code=ERROR_CODES.get(status), **common
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


def statistics_page(engine: Engine, period: Period, group: str) -> int:
    """The statistics page's work for one question: the figures from the summary (one
    transaction, as the console's read), the tables with their names and charts, the CSV."""
    t = translator("ja")
    names = Names(default_catalogue(), {}, "ja", t)
    with engine.begin() as connection:
        found = figures(connection, SUMMARY, period.since, period.until, group)
    tables = side_tables(found, period, group, names, t)
    statistics_csv(tables, group, names, t)
    return sum(len(table.rows) for table in tables)


def appended_flows(start: datetime, count: int, seed: int) -> list[tuple[datetime, list[Any]]]:
    """``count`` new flows after the data, as their parties append them one step (one
    transaction) at a time: a provision answered (60 %), or a query accepted and then its
    result (40 %); one in a hundred provisions is held first and decided later."""
    rng = random.Random(seed)
    steps: list[tuple[datetime, list[Any]]] = []
    at = start
    for index in range(count):
        number = f"{start.astimezone(JST):%Y%m%d}{900_000_000_000 + index:012d}"
        counterpart = rng.choice(COUNTERPARTS)
        person = f"{10_000 + index:015d}"
        if rng.random() < 0.4:
            common = asked(number, HERE_CODE, counterpart, rng.choice(OUTGOING), person)
            steps.append((at, [RecordEntry(event="query", status="accepted", **common)]))
            steps.append((at, [RecordEntry(event="result", status="provided", **common)]))
        else:
            common = asked(number, counterpart, HERE_CODE, rng.choice(INCOMING), person)
            if rng.random() < 0.01:
                steps.append((at, [RecordEntry(event="provision", status="held", **common)]))
            steps.append((at, [RecordEntry(event="provision", status="provided", **common)]))
        at += timedelta(seconds=1)
    return steps


def business_statistics(engine: Engine, repeat: int, flows: int) -> None:
    """業務統計 over the records generated: the summary filled as its migration fills it, the
    page's questions timed, the summary's cost on each append, and a check against a recount."""
    print("\n業務統計 (business statistics)")
    t0 = time.perf_counter()
    with engine.begin() as connection:
        items = rebuild(connection, node_records, SUMMARY)
        cells_count = connection.execute(
            select(func.count()).select_from(SUMMARY.cells)
        ).scalar_one()
        totals_count = connection.execute(
            select(func.count()).select_from(SUMMARY.totals)
        ).scalar_one()
    filled = time.perf_counter() - t0
    with engine.begin() as connection:
        records = connection.execute(select(func.count()).select_from(node_records)).scalar_one()
    print(
        f"summary filled from {records:,} records (as its migration does): {items:,} items in "
        f"{cells_count:,} cells and {totals_count:,} totals, {filled:.1f} s "
        f"({records / filled:,.0f} records/s)"
    )
    last = (END - timedelta(days=1)).astimezone(JST)  # the data's last month
    until = f"{last:%Y-%m}"
    year = period_of("", until, END)
    since = (
        f"{last.year - 10:04d}-{last.month + 1:02d}" if last.month < 12 else f"{last.year - 9}-01"
    )
    decade = period_of(since, until, END)
    print(
        f"\n{'question (period, grouping)':56} {'rows':>6} {'first ms':>9} {'median ms':>10} "
        f"{'p95 ms':>8}"
    )
    for period, name in ((year, "12 months"), (decade, f"{len(decade.months())} months")):
        for group in GROUPINGS:
            times: list[float] = []
            first = 0.0
            rows = 0
            for attempt in range(repeat + 1):
                t0 = time.perf_counter()
                rows = statistics_page(engine, period, group)
                elapsed = (time.perf_counter() - t0) * 1000
                if attempt == 0:
                    first = elapsed
                else:
                    times.append(elapsed)
            label = f"{name} ({period.since} to {period.until}), by {group}"
            print(
                f"{label:56} {rows:>6,} {first:>9.2f} {statistics.median(times):>10.2f} "
                f"{percentile(times, 0.95):>8.2f}"
            )
    with engine.begin() as connection:
        head = connection.execute(select(func.max(node_records.c.recorded_at))).scalar_one()
    chain = record_chain(node_records, node_record_head)
    appending: list[float] = []
    summarizing: list[float] = []
    for at, entries in appended_flows(head + timedelta(seconds=1), flows, 2):
        rows_of = [{"recorded_at": at, **entry.as_row()} for entry in entries]
        with engine.begin() as connection:
            t0 = time.perf_counter()
            newest = chain.append(connection, rows_of)
            t1 = time.perf_counter()
            first_seq = newest - len(rows_of) + 1
            count_appended(connection, node_records, SUMMARY, first_seq, at, rows_of)
            t2 = time.perf_counter()
        appending.append((t1 - t0) * 1000)
        summarizing.append((t2 - t1) * 1000)
    print(
        f"\n{len(appending):,} appends of {flows:,} new flows, one step per transaction: "
        f"chain append median {statistics.median(appending):.3f} ms (p95 "
        f"{percentile(appending, 0.95):.3f}), summary median "
        f"{statistics.median(summarizing):.3f} ms (p95 {percentile(summarizing, 0.95):.3f})"
    )
    t0 = time.perf_counter()
    with engine.begin() as connection:
        same = summary_counts(connection, SUMMARY) == as_summary(recount(connection, node_records))
    print(
        f"summary against a count over every record: {'equal' if same else 'DIFFERENT'} "
        f"({time.perf_counter() - t0:.1f} s)"
    )


def record_searches(engine: Engine, repeat: int) -> None:
    """The console's record searches, each timed ``repeat`` times after a first run."""
    with engine.begin() as connection:
        cases = searches(connection)
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
        for attempt in range(repeat + 1):
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
    parser.add_argument(
        "--counterparts", type=int, default=8, help="counterpart institutions (default 8)"
    )
    parser.add_argument(
        "--only",
        choices=("search", "statistics"),
        help="measure the record searches only, or the business statistics only",
    )
    parser.add_argument(
        "--flows", type=int, default=2000, help="new flows appended for the summary's cost"
    )
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
            made = generate(engine, total, options.seed, options.counterparts)
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
                revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                print(f"schema revision: {revision.scalar()}")
            if options.only != "statistics":
                record_searches(engine, options.repeat)
            if options.only != "search":
                business_statistics(engine, options.repeat, options.flows)
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
