"""The four care-insurance use cases end to end, on the default twistd.conf's network (three
wards, a welfare office, a pension-office institution) with the small generated population
loaded through the back-office APIs (simulators/use_cases.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from simulators import use_cases
from tests.network import init_network_pki, write_network_config


@pytest_twisted.async_yield_fixture(scope="module")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """The default network in a box with the small population, shared by this module."""
    from twisted.internet import reactor

    from renkei.service import Box

    directory: Path = tmp_path_factory.mktemp("use-cases")
    config = write_network_config(directory)
    init_network_pki(config)
    running = Box(config, reactor)
    await running.start()
    try:
        yield running
    finally:
        await running.stopService()


@pytest.fixture(scope="module")
def persons(network: Any) -> dict[str, Any]:
    return use_cases.population_of(network.config)


def _records(status: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Provided records as (data set code, {item name: value}), in the order provided."""
    return [
        (record["data_set"]["code"], {item["name"]: item["value"] for item in record["items"]})
        for record in status["result"]["records"]
    ]


def _items(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Provided records as {data set code: {item name: value}} (one record per data set)."""
    records = _records(status)
    by_data_set = dict(records)
    assert len(by_data_set) == len(records), "a data set was provided twice"
    return by_data_set


@pytest_twisted.ensureDeferred
async def test_premium_assessment_bulk_queries_local_tax_of_movers_in(
    network: Any, persons: dict[str, Any]
) -> None:
    """Use case 1: Meguro's bulk query of its movers-in's local tax, each line asked of the
    ward they lived in on 1 January for the fiscal year assessed, ends with a normal end and
    that year's tax figures per line (one record, although the ward keeps the year before
    too), except for DV-protected persons, whose former ward holds the provision (保留中)."""
    from twisted.internet import reactor

    movers = use_cases.movers_in_to_meguro(persons)
    protected = [p for p in movers if p.dv_protected]
    assert len(movers) - len(protected) >= 2
    outcome = await use_cases.premium_assessment(reactor, network.config, persons)
    progress = outcome.statuses[-1]
    assert progress["state"] == "ended"
    expected = {"normal_end": len(movers) - len(protected), "held": len(protected)}
    assert progress["by_state"] == {state: n for state, n in expected.items() if n}
    assert outcome.result_file is not None
    rows = list(csv.reader(io.StringIO(outcome.result_file.decode(outcome.result_encoding))))
    header, body = rows[0], rows[1:]
    count, provided = header.index("提供件数"), header.index("提供情報")
    assert [row[2] for row in body] == [p.integrated_address_number for p in movers]
    for person, row in zip(movers, body, strict=True):
        if person.dv_protected:
            assert (row[4], row[5]) == ("10", "保留中")
        else:
            assert row[4] == "09"
            assert row[count] == "1"
            (record,) = json.loads(row[provided])
            assert record["items"]["TK00000201010001"] == str(use_cases.PREMIUM_TAX_YEAR)
            assert "TK00000201010004" in record["items"]  # 市町村民税所得割額


@pytest_twisted.ensureDeferred
async def test_a_mover_from_setagaya_gets_setagayas_certification(
    network: Any, persons: dict[str, Any]
) -> None:
    """Use case 2: Meguro asks Setagaya about a person who moved in, as of the move;
    Setagaya's 副本 about them is provided, with the certification valid since the move
    (0201) when Setagaya certified them, and none that ended before the move."""
    from twisted.internet import reactor

    person = use_cases.mover_from_setagaya(persons)
    outcome = await use_cases.move_from_setagaya(reactor, network.config, persons)
    (status,) = outcome.statuses
    assert status["state"] == "provided"
    records = _records(status)
    provided = dict(records)
    assert "0101" in provided
    origin = next(p for p in persons["setagaya"] if p.individual_number == person.individual_number)
    assert origin.care is not None
    assert provided["0101"]["被保険者番号"] == origin.care.insured_number
    assert person.moved_in_on is not None
    certified = [items for code, items in records if code == "0201"]
    for items in certified:
        assert items["認定有効期間終了年月日"] >= person.moved_in_on.isoformat()
    if origin.care.care_level is not None:
        assert origin.care.certified_from is not None
        current = {items["認定有効期間開始年月日"]: items for items in certified}
        valid_now = current[origin.care.certified_from.isoformat()]
        assert valid_now["要介護状態区分"] == origin.care.care_level


@pytest_twisted.ensureDeferred
async def test_a_mover_to_shibuya_is_provided_and_a_dv_protected_one_is_held(
    network: Any, persons: dict[str, Any]
) -> None:
    """Use case 3: Shibuya asks Meguro about two persons who moved there; the first is
    provided, the DV-protected one is held (保留中) and waits in Meguro's held queue."""
    from twisted.internet import reactor

    outcome = await use_cases.move_to_shibuya(reactor, network.config, persons)
    plain, shielded = outcome.statuses
    assert plain["state"] == "provided"
    assert shielded["state"] == "held"
    held = await network.nodes["meguro"].held.items()
    assert shielded["transaction_number"] in {item.transaction_number for item in held}


@pytest_twisted.ensureDeferred
async def test_premium_stage_check_asks_welfare_and_pension(
    network: Any, persons: dict[str, Any]
) -> None:
    """Use case 4: Meguro asks the welfare office and the pension-office institution about
    an insured resident on public assistance with a pension; both answer with their data."""
    from twisted.internet import reactor

    outcome = await use_cases.premium_stage_check(reactor, network.config, persons)
    welfare, pension = outcome.statuses
    assert welfare["state"] == "provided" and pension["state"] == "provided"
    assert "保護受給区分" in _items(welfare)["0101"]
    assert "年金支給年額" in _items(pension)["0101"]


@pytest_twisted.ensureDeferred
async def test_a_bulk_query_is_visible_to_the_system_that_posted_it_only(network: Any) -> None:
    """Setagaya's local-tax system cannot read the progress or result of a bulk query its
    care-insurance system posted: to it the bulk query is unknown."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient, BackOfficeError

    setagaya = network.config.institution("setagaya")
    care = BackOfficeClient(reactor, network.config, setagaya, "care-insurance")
    tax = BackOfficeClient(reactor, network.config, setagaya, "local-tax")
    try:
        accepted = json.loads(
            await care.send_file("/bulk-queries", b"not,a,valid,line\r\n", "text/csv")
        )
        bulk_query_id = accepted["bulk_query_id"]
        assert (await care.request("GET", f"/bulk-queries/{bulk_query_id}"))["lines"] == 1
        for path in (f"/bulk-queries/{bulk_query_id}", f"/bulk-queries/{bulk_query_id}/result"):
            with pytest.raises(BackOfficeError) as refused:
                await tax.request("GET", path)
            assert refused.value.code == "UnknownBulkQuery"
    finally:
        await care.close()
        await tax.close()
