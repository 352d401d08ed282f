"""業務統計 in a running box: every outcome counted at each institution and the hub, a
provision held across a month's end moved by the network's clock, the console's page for
each role, its CSV, and the summary equal to a count over the records after many flows."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from middleware import messages
from middleware.business_statistics import (
    PROVISION,
    QUERY,
    Figure,
    as_summary,
    month_of,
    recount,
    summary_counts,
    summary_of,
)
from middleware.clock import VirtualClock, utc_now
from middleware.network import HUB
from middleware.network import PROVISION as PROVISION_OPERATION
from middleware.tables import hub_records, node_records
from simulators.back_office import BackOfficeClient
from tests.network import (
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    LOCAL_TAX,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
    write_config,
)
from tests.test_console import PASSWORD, Browser, add_users, code_for
from tests.test_flow import ask_tax
from tests.test_held import (
    CERTIFICATION,
    FLAGGED_RECORD,
    TARO_SETAGAYA,
    SetagayaAsks,
    held_item,
    wait_for_state,
)
from tests.test_refusals import refused_code, send

TARO_MEGURO = "000000000010002"
# 世田谷 太郎's local tax record at Setagaya, flagged: a query for it is held there.
FLAGGED_TAX_RECORD = {
    "record_id": "SET-TAX-2026-DV01",
    "integrated_address_number": TARO_SETAGAYA,
    "information_name": TAX_INFORMATION,
    "data_set": "0101",
    "items": {"TK00000201010001": "2026", "TK00000201010002": "1"},
    "auto_response_suppressed": True,
}


def client_of(box: Any, party: str, system: str) -> BackOfficeClient:
    from twisted.internet import reactor

    return BackOfficeClient(reactor, box.config, box.config.institution(party), system)


async def figures_of(box: Any, party: str, group: str, month: str | None = None) -> list[Figure]:
    month = month or month_of(utc_now(box.clock))
    found: list[Figure] = await box.nodes[party].store.business_statistics.figures(
        month, month, group
    )
    return found


def outcomes(found: list[Figure]) -> dict[tuple[str, str], int]:
    return {(figure.side, figure.outcome): figure.count for figure in found}


def assert_summaries_match_their_records(box: Any) -> None:
    """At the hub and at every node, the summary (its cells and its totals) is what a count
    over the records gives."""
    parties = [(box.hub.database, hub_records)]
    parties += [(node.database, node_records) for node in box.nodes.values()]
    for database, records in parties:
        kept = database.run_blocking(summary_counts, summary_of(records))
        assert kept == as_summary(database.run_blocking(recount, records)), database.url


@pytest_twisted.async_yield_fixture
async def offices(box: Any) -> AsyncIterator[dict[str, BackOfficeClient]]:
    """The back offices of the box: Meguro's care insurance, Setagaya's local tax and care
    insurance."""
    clients = {
        "meguro": client_of(box, "meguro", CARE_INSURANCE),
        "setagaya-tax": client_of(box, "setagaya", LOCAL_TAX),
        "setagaya-care": client_of(box, "setagaya", CARE_INSURANCE),
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


async def forge_an_unreadable_result(box: Any, query_id: str, number: str) -> None:
    """A provision for Meguro's query whose payload no one can open, as if the hub relayed
    a broken one: Meguro refuses it (PayloadUnreadable) and its query ends in error."""
    forged = messages.encode(
        messages.Provision(
            message_id=str(uuid.uuid4()),
            transaction_number=number,
            status="provided",
            query_message_id=query_id,
            encrypted_payload=b"not a CMS envelope",
        )
    )
    code = await refused_code(
        send(box, HUB, MEGURO, PROVISION_OPERATION, forged, messages.ProvisionAck)
    )
    assert code == "PayloadUnreadable"


async def every_outcome(box: Any, offices: dict[str, BackOfficeClient]) -> None:
    """Meguro asks Setagaya: provided, no data, refused by the provider, and one held there
    that ends in error at Meguro (its result unreadable); Setagaya asks Meguro for a flagged
    record: held, then approved."""
    meguro, setagaya_care = offices["meguro"], offices["setagaya-care"]
    for person, state in ((HANAKO_MEGURO, "provided"), (TARO_MEGURO, "no_data")):
        submitted = await ask_tax(meguro, person=person)
        assert (await meguro.wait_for_result(submitted["query_id"]))["state"] == state
    submitted = await ask_tax(meguro, person=ICHIRO_MEGURO)  # Setagaya does not know him
    status = await meguro.wait_for_result(submitted["query_id"])
    assert (status["state"], status["error"]["code"]) == ("refused", "FugoUnknown")

    await offices["setagaya-tax"].register_replica_record(FLAGGED_TAX_RECORD)
    submitted = await ask_tax(meguro, person=TARO_MEGURO)
    held = await wait_for_state(meguro, submitted["query_id"], "held")
    await forge_an_unreadable_result(box, submitted["query_id"], held["transaction_number"])
    assert (await meguro.query_status(submitted["query_id"]))["state"] == "error"

    await meguro.register_replica_record(FLAGGED_RECORD)
    asked = await SetagayaAsks(setagaya_care).ask()
    await wait_for_state(setagaya_care, asked, "held")
    item = await held_item(box.nodes["meguro"])
    await box.nodes["meguro"].held.approve(item.transaction_number, "approver1")
    assert (await setagaya_care.wait_for_result(asked))["state"] == "provided"


@pytest_twisted.ensureDeferred
async def test_every_outcome_is_counted_at_each_institution_and_the_hub(
    box: Any, offices: dict[str, BackOfficeClient]
) -> None:
    """After flows that end provided, no data, refused, in error and held then approved,
    each node counts its queries and provisions under their outcomes now (the approved one
    provided, not held), by counterpart and procedure too; the hub's and every node's
    summary equal a count over their records."""
    await every_outcome(box, offices)

    assert outcomes(await figures_of(box, "meguro", "outcome")) == {
        (QUERY, "provided"): 1,
        (QUERY, "no_data"): 1,
        (QUERY, "refused"): 1,
        (QUERY, "error"): 1,
        (PROVISION, "provided"): 1,
    }
    assert outcomes(await figures_of(box, "setagaya", "outcome")) == {
        (QUERY, "provided"): 1,
        (PROVISION, "provided"): 1,
        (PROVISION, "no_data"): 1,
        (PROVISION, "refused"): 1,
        (PROVISION, "held"): 1,  # its requester's query ended in error meanwhile
    }
    by_counterpart = await figures_of(box, "meguro", "counterpart")
    assert {(f.side, f.value) for f in by_counterpart} == {(QUERY, SETAGAYA), (PROVISION, SETAGAYA)}
    by_procedure = await figures_of(box, "setagaya", "procedure")
    assert {(f.side, f.value) for f in by_procedure} == {
        (QUERY, CERTIFICATION),
        (PROVISION, PREMIUM_ASSESSMENT),
    }
    assert await figures_of(box, "meguro", "outcome", "2000-01") == []
    assert_summaries_match_their_records(box)


# -- across a month's end ------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def box_at_a_months_end(tmp_path: Path, network_pki: Path) -> AsyncIterator[Any]:
    """A box whose network clock starts at 23:50 on 31 January 2027, Japan time."""
    from twisted.internet import reactor

    from renkei.service import Box

    clock = VirtualClock(reactor)
    clock.set(datetime.fromisoformat("2027-01-31T23:50:00+09:00").timestamp())
    running = Box(write_config(tmp_path, network_pki), reactor, clock=clock)
    await running.start()
    try:
        yield running
    finally:
        await running.stopService()


@pytest_twisted.ensureDeferred
async def test_a_provision_held_over_a_months_end_counts_in_the_month_it_was_asked(
    box_at_a_months_end: Any,
) -> None:
    """Held at 23:5x on 31 January (Japan), approved once the network's clock has passed
    midnight: January's provision and query, provided; a query asked after midnight is
    February's."""
    box = box_at_a_months_end
    meguro = client_of(box, "meguro", CARE_INSURANCE)
    setagaya = client_of(box, "setagaya", CARE_INSURANCE)
    try:
        await meguro.register_replica_record(FLAGGED_RECORD)
        asked = await SetagayaAsks(setagaya).ask()
        await wait_for_state(setagaya, asked, "held")
        assert month_of(utc_now(box.clock)) == "2027-01"
        box.clock.advance(15 * 60)
        assert month_of(utc_now(box.clock)) == "2027-02"
        item = await held_item(box.nodes["meguro"])
        await box.nodes["meguro"].held.approve(item.transaction_number, "approver1")
        assert (await setagaya.wait_for_result(asked))["state"] == "provided"
        submitted = await ask_tax(meguro)
        assert (await meguro.wait_for_result(submitted["query_id"]))["state"] == "provided"
    finally:
        await meguro.close()
        await setagaya.close()

    def by_month(party: str) -> Any:
        return box.nodes[party].store.business_statistics.figures("2027-01", "2027-02", "month")

    assert await by_month("meguro") == [
        Figure(PROVISION, "2027-01", "provided", 1),
        Figure(QUERY, "2027-02", "provided", 1),
    ]
    assert await by_month("setagaya") == [
        Figure(PROVISION, "2027-02", "provided", 1),
        Figure(QUERY, "2027-01", "provided", 1),
    ]
    assert_summaries_match_their_records(box)


# -- many flows ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_summary_matches_a_count_over_the_records_after_many_flows(
    box: Any, offices: dict[str, BackOfficeClient]
) -> None:
    """Sixty queries at once in both directions (provided, no data, refused, held and then
    approved, refused or left waiting): at every party the summary kept while they ran is
    exactly what counting every record again gives, and each query is counted once."""
    from twisted.internet import defer

    meguro, setagaya_care = offices["meguro"], offices["setagaya-care"]
    await meguro.register_replica_record(FLAGGED_RECORD)

    async def meguro_asks(person: str) -> str:
        submitted = await ask_tax(meguro, person=person)
        return str((await meguro.wait_for_result(submitted["query_id"]))["state"])

    async def setagaya_asks() -> str:
        asked = await SetagayaAsks(setagaya_care).ask()
        return str((await wait_for_state(setagaya_care, asked, "held"))["state"])

    persons = [HANAKO_MEGURO, TARO_MEGURO, ICHIRO_MEGURO] * 16
    ended = await defer.gatherResults(
        [defer.ensureDeferred(meguro_asks(person)) for person in persons]
        + [defer.ensureDeferred(setagaya_asks()) for _ in range(12)]
    )
    assert sorted(set(ended)) == ["held", "no_data", "provided", "refused"]
    meguro_node = box.nodes["meguro"]
    waiting = await meguro_node.held.items()
    assert len(waiting) == 12
    for index, item in enumerate(waiting[:8]):
        if index % 2:
            await meguro_node.held.approve(item.transaction_number, "approver1")
        else:
            await meguro_node.held.refuse(item.transaction_number, "approver1", "DV")

    async def setagaya_has_the_decisions() -> bool:
        found = outcomes(await figures_of(box, "setagaya", "outcome"))
        return found.get((QUERY, "provided"), 0) + found.get((QUERY, "refused"), 0) == 8

    await wait_for(setagaya_has_the_decisions)  # the decisions are relayed to Setagaya
    assert outcomes(await figures_of(box, "meguro", "outcome")) == {
        (QUERY, "provided"): 16,
        (QUERY, "no_data"): 16,
        (QUERY, "refused"): 16,
        (PROVISION, "provided"): 4,
        (PROVISION, "refused"): 4,
        (PROVISION, "held"): 4,
    }
    assert_summaries_match_their_records(box)


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("condition not reached")


# -- the console's page ----------------------------------------------------------------------


async def browser_of(box: Any, name: str, secrets: dict[str, str | None]) -> Browser:
    browser = Browser(box)
    code, body, _ = await browser.login(
        name, PASSWORD, totp=code_for(box.nodes["meguro"], secrets[name])
    )
    assert code == 302, body
    return browser


@pytest_twisted.ensureDeferred
async def test_the_statistics_page_shows_named_tables_and_a_chart_to_the_roles_that_may(
    box: Any, offices: dict[str, BackOfficeClient]
) -> None:
    """Operators, auditors and admins see 業務統計 (its link in the navigation, each side's
    table with institution, procedure and information names and a server-drawn SVG chart,
    months in Japan's calendar); an approver gets RoleForbidden."""
    await every_outcome(box, offices)
    secrets = await add_users(box.nodes["meguro"])
    month = month_of(utc_now(box.clock))
    label = f"{int(month[:4])}年{int(month[5:])}月"
    for name in ("op", "au", "ad"):
        browser = await browser_of(box, name, secrets)
        code, body, _ = await browser.get("/")
        assert 'href="/statistics"' in body
        code, body, _ = await browser.get("/statistics")
        assert code == 200, body
        assert "業務統計" in body and label in body
        assert 'id="side-query"' in body and 'id="side-provision"' in body
        assert body.count("<svg") == 2 and "<rect" in body and "<script" not in body
        code, body, _ = await browser.get(f"/statistics?from={month}&to={month}&group=counterpart")
        assert code == 200 and "世田谷区" in body and SETAGAYA in body
        code, body, _ = await browser.get(f"/statistics?from={month}&to={month}&group=procedure")
        assert "保険料の賦課" in body and "要介護認定" in body
        code, body, _ = await browser.get(
            f"/statistics?from={month}&to={month}&group=information_name&lang=en"
        )
        assert "Business statistics" in body and "Provisions given" in body
    approver = await browser_of(box, "ap", secrets)
    code, body, _ = await approver.get("/")
    assert 'href="/statistics"' not in body
    code, body, _ = await approver.get("/statistics")
    assert code == 403 and "RoleForbidden" in body


@pytest_twisted.ensureDeferred
async def test_the_statistics_csv_is_for_excel_with_names_and_japanese_months(
    box: Any, offices: dict[str, BackOfficeClient]
) -> None:
    """The CSV export is UTF-8 with a BOM, one line per side and month with its name
    (2026年12月), a column per outcome and the total, as the page counts them."""
    await every_outcome(box, offices)
    secrets = await add_users(box.nodes["meguro"])
    browser = await browser_of(box, "op", secrets)
    month = month_of(utc_now(box.clock))
    code, body, headers = await browser.request(
        "GET", f"/statistics/export.csv?from={month}&to={month}&group=month"
    )
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
    (disposition,) = headers.getRawHeaders(b"content-disposition")
    assert f"business-statistics-{month}-{month}-by-month.csv".encode() in disposition
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body.removeprefix("\ufeff"))))
    header, *lines = rows
    assert header[:3] == ["区分", "年月", "年月(名称)"] and header[-1] == "合計"
    label = f"{int(month[:4])}年{int(month[5:])}月"
    by_side = {line[0]: dict(zip(header, line, strict=True)) for line in lines}
    assert by_side["照会"]["年月(名称)"] == label
    assert (by_side["照会"]["提供"], by_side["照会"]["エラー"], by_side["照会"]["合計"]) == (
        "1",
        "1",
        "4",
    )
    assert (by_side["提供"]["提供"], by_side["提供"]["合計"]) == ("1", "1")


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13",
        "to=December",
        "from=2027-02&to=2027-01",
        "from=2010-01&to=2026-12",
        "group=person",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_malformed_period_or_grouping_is_refused_with_its_code(
    box: Any, query: str
) -> None:
    """A month that is no month, a period ending before it starts or longer than ten years,
    or an unknown grouping: 400 BadRequest, on the page and for the CSV."""
    secrets = await add_users(box.nodes["meguro"])
    browser = await browser_of(box, "au", secrets)
    for path in ("/statistics", "/statistics/export.csv"):
        code, body, _ = await browser.get(f"{path}?{query}")
        assert code == 400 and "BadRequest" in body, (path, query)


# -- the hub's figures, through the CLI ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_renkei_records_statistics_prints_the_hubs_figures_and_refuses_a_bad_month(
    box: Any, offices: dict[str, BackOfficeClient]
) -> None:
    """The hub has no console: `renkei records statistics --party hub` prints its queries
    received (permitted) and the answers it relayed, by outcome; a month that is no month
    is refused with BadRequest and a non-zero exit."""
    from click.testing import CliRunner

    from renkei.cli import main

    await every_outcome(box, offices)
    config = str(box.config.path)
    done = CliRunner().invoke(
        main, ["records", "statistics", "-c", config, "--party", "hub", "--by", "outcome"]
    )
    assert done.exit_code == 0, done.output
    heading, *lines = done.output.splitlines()
    assert heading.startswith("hub: ") and heading.endswith("by outcome")
    counted = {(side, outcome): int(count) for side, _, outcome, count in map(str.split, lines)}
    assert counted == {
        (QUERY, "permitted"): 5,
        (PROVISION, "provided"): 2,
        (PROVISION, "no_data"): 1,
        (PROVISION, "error"): 1,  # Setagaya refused the request (FugoUnknown)
        (PROVISION, "held"): 1,
    }
    refused = CliRunner().invoke(main, ["records", "statistics", "-c", config, "--from", "2026-13"])
    assert refused.exit_code != 0 and "BadRequest" in refused.output
