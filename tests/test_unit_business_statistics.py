"""Unit tests for middleware.business_statistics: what an item is, and the summary kept while
records are appended, equal to a count over the records."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection
from twisted.internet.interfaces import IReactorThreads

from middleware.business_statistics import (
    PROVISION,
    QUERY,
    Figure,
    Key,
    Tally,
    as_summary,
    figures,
    month_of,
    rebuild,
    recount,
    summary_counts,
    summary_of,
)
from middleware.records import RecordEntry, append_records, record_chain
from middleware.storage import Database, migrate
from middleware.tables import node_record_head, node_records

ROOT = Path(__file__).resolve().parents[1]
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

SUMMARY = summary_of(node_records)

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
SHIBUYA = "1131130000000000"
PREMIUM = "JT90010000000001"
CERTIFICATION = "JT90010000000002"
TAX = "TM00000000000002"
CARE = "TM00000000000004"
JST_MIDNIGHT_FEB_1 = datetime(2027, 1, 31, 15, 0, tzinfo=UTC)  # 2027-02-01 00:00 in Japan


def record(
    event: str,
    status: str,
    at: datetime,
    number: str | None = "20270131000000000001",
    *,
    seq: int = 0,
    requester: str = MEGURO,
    provider: str = SETAGAYA,
    error_code: str | None = None,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "recorded_at": at,
        "event": event,
        "status": status,
        "transaction_number": number,
        "requester": requester,
        "provider": provider,
        "procedure": PREMIUM,
        "information_name": TAX,
        "error_code": error_code,
    }


def key(month: str, side: str, outcome: str, **changes: str) -> Key:
    values = {
        "month": month,
        "side": side,
        "requester": MEGURO,
        "provider": SETAGAYA,
        "procedure": PREMIUM,
        "information_name": TAX,
        "outcome": outcome,
    }
    values.update(changes)
    return Key(**values)


def counted(*records: dict[str, Any]) -> Counter[Key]:
    return +Tally().add_all(records).counts


def test_a_month_is_a_month_in_japan() -> None:
    """15:30 UTC on 31 December is already January in Japan."""
    assert month_of(datetime(2026, 12, 31, 15, 30, tzinfo=UTC)) == "2027-01"
    assert month_of(datetime(2026, 12, 31, 14, 59, tzinfo=UTC)) == "2026-12"


def test_a_query_answered_counts_once_under_its_answer() -> None:
    """A query accepted, then provided, is one query, provided (not one accepted as well)."""
    at = datetime(2027, 1, 10, tzinfo=UTC)
    assert counted(record("query", "accepted", at), record("result", "provided", at)) == {
        key("2027-01", QUERY, "provided"): 1
    }
    assert counted(record("query", "accepted", at)) == {key("2027-01", QUERY, "accepted"): 1}


def test_a_held_provision_decided_next_month_counts_in_the_month_it_was_asked() -> None:
    """Held at 23:50 on 31 January (Japan), approved after midnight: one provision of
    January, provided."""
    held = record("provision", "held", JST_MIDNIGHT_FEB_1 - timedelta(minutes=10))
    approved = record("provision", "provided", JST_MIDNIGHT_FEB_1 + timedelta(minutes=5))
    assert counted(held) == {key("2027-01", PROVISION, "held"): 1}
    assert counted(held, approved) == {key("2027-01", PROVISION, "provided"): 1}


def test_a_refused_request_is_an_item_of_its_own_even_on_a_held_one() -> None:
    """A replayed permit refused while its provision is held counts as a refused request
    of its own; the staff's decision still ends the held one."""
    at = datetime(2027, 3, 1, tzinfo=UTC)
    assert counted(
        record("provision", "held", at),
        record("provision", "refused", at, error_code="PermitReplayed"),
        record("provision", "refused", at, error_code="ProvisionRefused"),
    ) == {key("2027-03", PROVISION, "refused"): 2}
    assert counted(
        record("provision", "held", at),
        record("provision", "refused", at, error_code="PermitReplayed"),
    ) == {key("2027-03", PROVISION, "held"): 1, key("2027-03", PROVISION, "refused"): 1}


def test_records_without_a_transaction_number_each_count_and_deletions_do_not() -> None:
    """Two requests refused before their permit was read are two items; a deleted result
    is none."""
    at = datetime(2027, 3, 1, tzinfo=UTC)
    unread = record("provision", "refused", at, None, requester="", error_code="XmlInvalid")
    assert counted(unread, unread) == {key("2027-03", PROVISION, "refused", requester=""): 2}
    assert counted(
        record("query", "accepted", at),
        record("result", "no_data", at),
        record("result_deleted", "no_data", at + timedelta(days=40)),
    ) == {key("2027-03", QUERY, "no_data"): 1}


def test_the_same_transaction_asked_and_provided_here_is_a_query_and_a_provision() -> None:
    """An institution asking itself keeps a query and a provision of one 処理通番."""
    at = datetime(2027, 3, 1, tzinfo=UTC)
    assert counted(
        record("query", "accepted", at, provider=MEGURO),
        record("provision", "provided", at, provider=MEGURO),
        record("result", "provided", at, provider=MEGURO),
    ) == {
        key("2027-03", QUERY, "provided", provider=MEGURO): 1,
        key("2027-03", PROVISION, "provided", provider=MEGURO): 1,
    }


# -- the summary in a database -----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def node_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated node database, in a SQLite file and then on PostgreSQL (whose upsert is
    its own), used through run_blocking only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    else:
        url = request.getfixturevalue("postgresql_database")()
    migrate(url, NODE_MIGRATIONS)
    database = Database(cast(IReactorThreads, object()), url)
    yield database
    database.stop()


def entry(event: str, status: str, number: str | None, **changes: Any) -> RecordEntry:
    fields: dict[str, Any] = {
        "event": event,
        "status": status,
        "transaction_number": number,
        "requester": MEGURO,
        "provider": SETAGAYA,
        "affair": "JM90000000001000",
        "procedure": PREMIUM,
        "information_name": TAX,
        "person": "000000000010001",
    }
    fields.update(changes)
    return RecordEntry(**fields)


# The life of one item as the parties write it: the records of each step, appended one step
# (one transaction) at a time, and the outcome it ends with.
REQUESTER_LIVES = [
    ([["query/accepted"], ["result/provided"]], "provided"),
    ([["query/accepted"], ["result/no_data"]], "no_data"),
    ([["query/accepted", "result/provided"]], "provided"),  # the result overtook the answer
    ([["query/accepted"], ["result/held"], ["result/provided"]], "provided"),
    ([["query/accepted"], ["result/held"], ["result/refused:ProvisionRefused"]], "refused"),
    ([["query/accepted"], ["result/refused:FugoUnknown"]], "refused"),
    ([["query/accepted"], ["result/error:PayloadUnreadable"]], "error"),
    ([["query/refused:NotPermitted"]], "refused"),
    ([["query/accepted"]], "accepted"),
    ([["query/accepted"], ["result/held"]], "held"),
]
PROVIDER_LIVES = [
    ([["provision/provided"]], "provided"),
    ([["provision/no_data"]], "no_data"),
    ([["provision/held"], ["provision/provided"]], "provided"),
    ([["provision/held"], ["provision/refused:ProvisionRefused"]], "refused"),
    ([["provision/held"], ["provision/refused:HoldExpired"]], "refused"),
    ([["provision/held"]], "held"),
    ([["provision/refused:FugoUnknown"]], "refused"),
]


def flows(rng: random.Random, count: int) -> tuple[list[tuple[datetime, list[RecordEntry]]], Any]:
    """``count`` items of random lives, their steps interleaved over four months (Japan
    time), as (time, entries) appends in time order; and the counts expected of them."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    steps: list[tuple[datetime, int, list[RecordEntry]]] = []
    expected: Counter[Key] = Counter()
    for index in range(count):
        number = f"2026112000{index:010d}"
        asks = rng.random() < 0.5
        lives = REQUESTER_LIVES if asks else PROVIDER_LIVES
        life, outcome = rng.choice(lives)
        counterpart = rng.choice([SETAGAYA, SHIBUYA])
        procedure, information = rng.choice([(PREMIUM, TAX), (CERTIFICATION, CARE)])
        requester, provider = (MEGURO, counterpart) if asks else (counterpart, MEGURO)
        at = start + timedelta(minutes=rng.randrange(0, 120 * 24 * 60))
        first = at
        for step in life:
            entries = []
            for written in step:
                event_status, _, code = written.partition(":")
                event, status = event_status.split("/")
                entries.append(
                    entry(
                        event,
                        status,
                        number,
                        requester=requester,
                        provider=provider,
                        procedure=procedure,
                        information_name=information,
                        error_code=code or None,
                    )
                )
            steps.append((at, index, entries))
            at += timedelta(hours=rng.choice([0, 1, 30, 24 * 20]))
        expected[
            Key(
                month_of(first),
                QUERY if asks else PROVISION,
                requester,
                provider,
                procedure,
                information,
                outcome,
            )
        ] += 1
        if not asks and rng.random() < 0.1:  # a replayed permit refused, after the answer
            steps.append(
                (
                    at,
                    index,
                    [
                        entry(
                            "provision",
                            "refused",
                            number,
                            **{
                                "requester": requester,
                                "provider": provider,
                                "procedure": procedure,
                                "information_name": information,
                                "error_code": "PermitReplayed",
                            },
                        )
                    ],
                )
            )
            expected[
                Key(month_of(at), PROVISION, requester, provider, procedure, information, "refused")
            ] += 1
    steps.sort(key=lambda step: (step[0], step[1]))
    return [(at, entries) for at, _, entries in steps], expected


def test_the_summary_kept_while_appending_matches_a_count_over_the_records(
    node_db: Database,
) -> None:
    """After 600 items' records are appended step by step, interleaved over four months, the
    summary holds exactly each item once, in its first month, under its last outcome; the
    same as counting every record again, and as a rebuilt summary."""
    appends, expected = flows(random.Random(13), 600)
    for at, entries in appends:
        node_db.run_blocking(append_records, node_records, node_record_head, at, entries)
    kept = node_db.run_blocking(summary_counts, SUMMARY)
    assert kept == as_summary(expected)
    assert node_db.run_blocking(recount, node_records) == expected
    outcomes = {(k.side, k.outcome) for k in expected}
    assert outcomes >= {(QUERY, o) for o in ("provided", "no_data", "held", "accepted")}
    assert outcomes >= {(QUERY, "refused"), (QUERY, "error"), (PROVISION, "refused")}
    assert {k.month for k in expected} == {"2026-11", "2026-12", "2027-01", "2027-02", "2027-03"}
    assert node_db.run_blocking(rebuild, node_records, SUMMARY) == sum(expected.values())
    assert node_db.run_blocking(summary_counts, SUMMARY) == as_summary(expected)


def test_figures_group_by_counterpart_month_and_outcome_within_the_period(
    node_db: Database,
) -> None:
    """The counterpart of a query is its provider, of a provision its requester; months
    outside the period are left out, both ends are in."""
    december = datetime(2026, 12, 5, tzinfo=UTC)
    january = datetime(2027, 1, 5, tzinfo=UTC)
    march = datetime(2027, 3, 5, tzinfo=UTC)
    appends = [
        (december, [entry("query", "accepted", "1"), entry("result", "provided", "1")]),
        (january, [entry("query", "refused", "2", provider=SHIBUYA, error_code="NotPermitted")]),
        (january, [entry("provision", "no_data", "3", requester=SHIBUYA, provider=MEGURO)]),
        (march, [entry("provision", "provided", "4", requester=SHIBUYA, provider=MEGURO)]),
    ]
    for at, entries in appends:
        node_db.run_blocking(append_records, node_records, node_record_head, at, entries)

    def asked(group: str, since: str = "2026-12", until: str = "2027-01") -> list[Figure]:
        return node_db.run_blocking(figures, SUMMARY, since, until, group)

    assert asked("counterpart") == [
        Figure(PROVISION, SHIBUYA, "no_data", 1),
        Figure(QUERY, SETAGAYA, "provided", 1),
        Figure(QUERY, SHIBUYA, "refused", 1),
    ]
    assert asked("month") == [
        Figure(PROVISION, "2027-01", "no_data", 1),
        Figure(QUERY, "2026-12", "provided", 1),
        Figure(QUERY, "2027-01", "refused", 1),
    ]
    assert asked("outcome", "2027-01", "2027-03") == [
        Figure(PROVISION, "no_data", "no_data", 1),
        Figure(PROVISION, "provided", "provided", 1),
        Figure(QUERY, "refused", "refused", 1),
    ]
    assert asked("procedure", "2027-02", "2027-02") == []


def test_the_migration_fills_the_summary_from_the_records_kept_before_it(tmp_path: Path) -> None:
    """Records written before revision 0017 are counted by its migration, as a recount
    would count them."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    config = AlembicConfig()
    config.set_main_option("script_location", str(NODE_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0016")
    database = Database(cast(IReactorThreads, object()), url)
    try:
        appends, expected = flows(random.Random(7), 200)

        def write_chain_only(connection: Connection, at: datetime, entries: Any) -> None:
            rows = [{"recorded_at": at, **e.as_row()} for e in entries]
            record_chain(node_records, node_record_head).append(connection, rows)

        for at, entries in appends:
            database.run_blocking(write_chain_only, at, entries)
        command.upgrade(config, "head")
        assert database.run_blocking(summary_counts, SUMMARY) == as_summary(expected)
    finally:
        database.stop()
