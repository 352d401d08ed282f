"""Unit tests for the record search (middleware.record_search, with the console's form parsing):
filters, the two directions of a counterpart search, newest-first keyset paging and the export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection
from twisted.internet.interfaces import IReactorThreads

from adapters.console import app as console
from middleware import record_search
from middleware.records import RecordEntry, append_records
from middleware.storage import Database, migrate
from middleware.tables import node_record_head, node_records

ROOT = Path(__file__).resolve().parents[1]
MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
SHIBUYA = "1131130000000000"
START = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def searched(tmp_path: Path) -> Iterator[Database]:
    """Meguro's records: 120 alternating asked-of-Setagaya, provided-to-Setagaya and
    provided-to-Shibuya, one second apart (seq 1..120)."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, ROOT / "middleware" / "migrations")
    database = Database(cast(IReactorThreads, object()), url)
    for number in range(120):
        requester, provider = [
            (MEGURO, SETAGAYA),
            (SETAGAYA, MEGURO),
            (SHIBUYA, MEGURO),
        ][number % 3]
        entry = RecordEntry(
            event="provision",
            status="provided" if number % 2 else "refused",
            transaction_number=f"{number:020d}",
            requester=requester,
            provider=provider,
            affair="JM90000000001000",
            procedure="JT90010000000001",
            information_name="TM00000000000002",
            person=f"{number:015d}",
        )
        database.run_blocking(
            append_records,
            node_records,
            node_record_head,
            START + timedelta(seconds=number),
            [entry],
        )
    yield database
    database.stop()


def _page(database: Database, values: dict[str, str], before: int | None = None) -> list[Any]:
    """A console page of the search the form ``values`` describe (one row more than a page)."""
    search = console.record_filter(values)
    statement = record_search.page_statement(
        record_search.record_branches(search, MEGURO), console.PAGE_SIZE + 1, before
    )

    def read(connection: Connection) -> list[Any]:
        return list(connection.execute(statement))

    return database.run_blocking(read)


def test_no_filter_pages_newest_first_with_one_extra_row(searched: Database) -> None:
    """Without filters a page is the newest records plus one, and the next page starts below it."""
    rows = _page(searched, {})
    assert [r.seq for r in rows] == list(range(120, 120 - console.PAGE_SIZE - 1, -1))
    following = _page(searched, {}, before=rows[console.PAGE_SIZE - 1].seq)
    assert following[0].seq == rows[console.PAGE_SIZE].seq


def test_counterpart_search_covers_both_directions_newest_first(searched: Database) -> None:
    """A counterpart search returns both directions merged newest first and pages on across them."""
    rows = _page(searched, {"counterpart": SETAGAYA})
    expected = [seq for seq in range(120, 0, -1) if (seq - 1) % 3 != 2]
    assert [r.seq for r in rows] == expected[: console.PAGE_SIZE + 1]
    assert {(r.requester, r.provider) for r in rows} == {(MEGURO, SETAGAYA), (SETAGAYA, MEGURO)}
    rest = _page(searched, {"counterpart": SETAGAYA}, before=rows[-2].seq)
    assert [r.seq for r in rest] == expected[console.PAGE_SIZE :]


def test_counterpart_with_direction_and_status_is_one_direction(searched: Database) -> None:
    """A counterpart with a direction and a status keeps to that one direction and status."""
    rows = _page(searched, {"counterpart": SETAGAYA, "direction": "incoming", "status": "refused"})
    assert rows
    assert all((r.requester, r.provider, r.status) == (SETAGAYA, MEGURO, "refused") for r in rows)


def test_unknown_counterpart_finds_nothing(searched: Database) -> None:
    """A counterpart with no records finds nothing."""
    assert _page(searched, {"counterpart": "1132012000000000"}) == []


def test_date_range_is_a_seq_range(searched: Database) -> None:
    """A date range finds the records of those days and nothing after them."""
    day = START.strftime("%Y-%m-%d")
    assert len(_page(searched, {"date_from": day, "date_to": day})) == console.PAGE_SIZE + 1
    assert _page(searched, {"date_from": "2026-01-02"}) == []


def test_export_uses_the_same_branches(searched: Database) -> None:
    """The export returns every record of the search newest first, with the CSV header."""
    statement = record_search.export_statement(
        record_search.record_branches(console.record_filter({"counterpart": SHIBUYA}), MEGURO),
        console.EXPORT_LIMIT,
    )

    def read(connection: Connection) -> list[Any]:
        return list(connection.execute(statement))

    rows = searched.run_blocking(read)
    assert [r.seq for r in rows] == [seq for seq in range(120, 0, -1) if (seq - 1) % 3 == 2]
    text = console.records_csv(record_search.EXPORT_COLUMNS, rows)
    assert text.splitlines()[0].split(",") == record_search.EXPORT_COLUMNS
    assert len(text.splitlines()) == 41


def test_the_form_dates_are_days_in_japan_both_included() -> None:
    """A day of the form runs from 00:00 Japan time to the next day's 00:00 (UTC 15:00)."""
    search = console.record_filter({"date_from": "2026-01-01", "date_to": "2026-01-01"})
    assert search.since == datetime(2025, 12, 31, 15, 0, tzinfo=UTC)
    assert search.until == datetime(2026, 1, 1, 15, 0, tzinfo=UTC)
    assert console.record_filter({}) == record_search.RecordFilter()
