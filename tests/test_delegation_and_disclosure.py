"""Delegation (委任元), 照会側不開示 and 宛名番号: carried from the back office to every party.

The test network lists one delegation: Setagaya may act for Meguro (tests/network.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select

from middleware import messages
from middleware.tables import hub_records, node_records
from simulators.back_office import BackOfficeClient, BackOfficeError
from tests.network import (
    CARE_AFFAIR,
    CARE_CERTIFICATION,
    CARE_INFORMATION,
    CARE_INSURANCE,
    HANAKO_INDIVIDUAL_NUMBER,
    HANAKO_MEGURO,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)
from tests.test_bulk_query import bulk, file_of, line, result_rows, until_ended
from tests.test_flow import ask_tax
from tests.test_refusals import post_query_to_hub, refused_code

HANAKO_SETAGAYA = "000000000020001"


def records_of(box: Any, party: str, number: str) -> list[Any]:
    """A party's records of one transaction: event, status, 不開示 and 委任元."""
    database = box.hub.database if party == "hub" else box.nodes[party].database
    table = hub_records if party == "hub" else node_records
    return database.run_blocking(
        lambda connection: connection.execute(
            select(
                table.c.event,
                table.c.status,
                table.c.non_disclosure,
                table.c.delegating_requester,
                table.c.delegating_provider,
            )
            .where(table.c.transaction_number == number)
            .order_by(table.c.seq)
        ).all()
    )


@pytest_twisted.async_yield_fixture
async def setagaya_care(box: Any) -> AsyncIterator[BackOfficeClient]:
    """Setagaya's care-insurance system."""
    from twisted.internet import reactor

    client = BackOfficeClient(
        reactor, box.config, box.config.institution("setagaya"), CARE_INSURANCE
    )
    try:
        yield client
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_query_in_the_name_of_a_delegator_carries_it_to_every_record(
    box: Any, setagaya_care: BackOfficeClient
) -> None:
    """Setagaya, acting for Meguro (a delegation on the list), queries Meguro's care
    information: the query is provided, and the requester's, the hub's and the provider's
    records all name Meguro as 照会者機関コード(委任元)."""
    submitted = await setagaya_care.submit_query(
        integrated_address_number=HANAKO_SETAGAYA,
        procedure=CARE_CERTIFICATION,
        information_name=CARE_INFORMATION,
        provider=MEGURO,
        delegating_requester=MEGURO,
    )
    status = await setagaya_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    number = status["transaction_number"]
    for party in ("setagaya", "hub", "meguro"):
        rows = records_of(box, party, number)
        assert rows and all(row.delegating_requester == MEGURO for row in rows), party
        assert all(row.delegating_provider is None for row in rows), party


@pytest_twisted.ensureDeferred
async def test_answer_in_the_name_of_a_delegator_is_recorded_by_the_provider(
    box: Any, meguro_care: Any
) -> None:
    """Meguro asks Setagaya to answer in Meguro's name (提供者機関コード(委任元)): allowed by
    the same delegation, and recorded as such by the provider."""
    submitted = await ask_tax(meguro_care, delegating_provider=MEGURO)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    rows = records_of(box, "setagaya", status["transaction_number"])
    assert [(row.event, row.delegating_provider) for row in rows] == [("provision", MEGURO)]


@pytest_twisted.ensureDeferred
async def test_delegation_not_on_the_list_is_refused_at_the_requester(
    box: Any, meguro_care: Any
) -> None:
    """Meguro may not act for Setagaya (only the reverse is listed): DelegationNotPermitted,
    before anything is sent."""
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care, delegating_requester=SETAGAYA)
    assert (refused.value.status, refused.value.code) == (403, "DelegationNotPermitted")
    assert "委任" in refused.value.error["message_ja"]


@pytest_twisted.ensureDeferred
async def test_hub_refuses_a_delegation_not_on_its_list_and_records_it(box: Any) -> None:
    """A requester skipping its own check is stopped by the hub, which records the refused
    query with its 委任元."""
    from middleware.persons import fugo_of

    fugo = box.nodes["meguro"].database.run_blocking(fugo_of, HANAKO_MEGURO)
    body = messages.encode(
        messages.QueryRequest(
            message_id=str(uuid.uuid4()),
            requester_fugo=fugo,
            affair=CARE_AFFAIR,
            procedure=PREMIUM_ASSESSMENT,
            information_name=TAX_INFORMATION,
            provider=SETAGAYA,
            delegating_requester=SETAGAYA,
        )
    )
    code = await refused_code(post_query_to_hub(box, body))
    assert code == "DelegationNotPermitted"
    refused = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(hub_records.c.status, hub_records.c.delegating_requester)
        ).all()
    )
    assert [tuple(row) for row in refused] == [("refused", SETAGAYA)]


@pytest_twisted.ensureDeferred
async def test_non_disclosure_is_carried_into_every_partys_records(
    box: Any, meguro_care: Any
) -> None:
    """A query marked 照会側不開示 is recorded as 不開示 by the requester, the hub and the
    provider; a query without the mark is not."""
    hidden = await ask_tax(meguro_care, non_disclosure=True)
    shown = await ask_tax(meguro_care)
    for submitted, expected in ((hidden, True), (shown, False)):
        status = await meguro_care.wait_for_result(submitted["query_id"])
        number = status["transaction_number"]
        for party in ("meguro", "hub", "setagaya"):
            rows = records_of(box, party, number)
            assert rows and {bool(row.non_disclosure) for row in rows} == {expected}, party


@pytest_twisted.ensureDeferred
async def test_bulk_line_by_address_number_is_resolved_and_its_marks_travel(
    box: Any, meguro_care: Any
) -> None:
    """A 番号体系 02 line names Hanako by the 宛名番号 registered with her: it is resolved
    through the integrated-address function and provided; its 照会側不開示 reaches the
    records; an unknown 宛名番号 ends unknown_person (UnknownAddressNumber)."""
    await meguro_care.register_person(
        HANAKO_MEGURO, HANAKO_INDIVIDUAL_NUMBER, address_number="131100500000101"
    )
    accepted = await bulk(box).submit(
        file_of(
            line(
                番号体系="02", 宛名番号="131100500000101", 統合宛名番号="", 照会側不開示コード="1"
            ),
            line(番号体系="02", 宛名番号="131100599999999", 統合宛名番号=""),
        ),
        CARE_INSURANCE,
    )
    progress = await until_ended(box, accepted["bulk_query_id"])
    assert progress["by_state"] == {"normal_end": 1, "unknown_person": 1}
    found, unknown = await result_rows(box, accepted["bulk_query_id"])
    assert (found["処理結果コード"], found["統合宛名番号"]) == ("09", "")
    assert (unknown["処理結果コード"], unknown["エラーコード"]) == ("22", "UnknownAddressNumber")
    rows = records_of(box, "hub", found["処理通番"])
    assert rows and all(row.non_disclosure for row in rows)


@pytest_twisted.ensureDeferred
async def test_address_number_of_another_person_is_a_conflict(meguro_care: Any) -> None:
    """A 宛名番号 already linked to one person cannot be given to another."""
    from tests.network import DEMO_INDIVIDUAL_NUMBERS

    await meguro_care.register_person(
        HANAKO_MEGURO, HANAKO_INDIVIDUAL_NUMBER, address_number="131100500000777"
    )
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.register_person(
            None, DEMO_INDIVIDUAL_NUMBERS[1], address_number="131100500000777"
        )
    assert (refused.value.status, refused.value.code) == (409, "AddressNumberConflict")
