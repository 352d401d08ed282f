"""Business events in each party's log: one line each, the 処理通番 first, institutions by
name, no person and no item value."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import pytest_twisted

from codes.errors import RenkeiError
from middleware import messages
from middleware.events import BusinessLog
from middleware.queries import QuerySubmission
from tests.logs import LogRecorder
from tests.network import (
    CARE_INFORMATION,
    DEMO_INDIVIDUAL_NUMBERS,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    INHABITANT_TAX,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_AFFAIR,
    TAX_INFORMATION,
)
from tests.test_flow import ask_tax, wait_until
from tests.test_held import held_item, setagaya_asks, wait_for_state

__all__ = ["setagaya_asks"]  # the fixture, shared with tests/test_held.py

PARTIES = ("hub", "meguro", "setagaya")


def business_lines(log: LogRecorder) -> dict[str, list[str]]:
    """The business events each party logged, as their lines."""
    return {party: log.lines(party) for party in PARTIES}


def no_person_in(log: LogRecorder, *values: str) -> None:
    """No line and no field of the events logged names a person or an item value."""
    for event in log.events:
        if event.get("log_namespace") not in PARTIES:
            continue
        text = " ".join(str(value) for value in event.values())
        for value in (*DEMO_INDIVIDUAL_NUMBERS, *values):
            assert value not in text, (value, text)


@pytest_twisted.ensureDeferred
async def test_a_provided_query_is_one_line_at_each_party(box: Any, meguro_care: Any) -> None:
    """Meguro logs the query submitted and provided, the hub the permit and the relay,
    Setagaya the provision given: one line each, under the 処理通番, naming 目黒区 and
    世田谷区, and nowhere the person or the values provided."""
    with LogRecorder() as log:
        submitted = await ask_tax(meguro_care)
        status = await meguro_care.wait_for_result(submitted["query_id"])
        await wait_until(lambda: len(log.lines("hub")) == 2)
    number, query_id = status["transaction_number"], submitted["query_id"]
    assert status["state"] == "provided"
    lines = business_lines(log)
    assert lines["meguro"] == [
        f"query {query_id} submitted by care-insurance: {TAX_INFORMATION} of 世田谷区 for "
        f"{PREMIUM_ASSESSMENT}",
        f"処理通番 {number}: query {query_id} to 世田谷区 provided, {TAX_INFORMATION}",
    ]
    assert lines["hub"] == [
        f"処理通番 {number}: query 目黒区 → 世田谷区 permitted, {TAX_INFORMATION} for "
        f"{PREMIUM_ASSESSMENT}",
        f"処理通番 {number}: provision 世田谷区 → 目黒区 relayed: provided",
    ]
    assert lines["setagaya"] == [
        f"処理通番 {number}: provision to 目黒区 given, {TAX_INFORMATION} for {PREMIUM_ASSESSMENT}"
    ]
    no_person_in(log, HANAKO_MEGURO, "84200")


@pytest_twisted.ensureDeferred
async def test_a_refused_request_is_one_line_at_the_provider_the_hub_and_the_requester(
    box: Any, meguro_care: Any
) -> None:
    """A person Setagaya does not know: Setagaya logs the request refused (FugoUnknown), the
    hub the refusal relayed, Meguro the query refused, each once."""
    with LogRecorder() as log:
        submitted = await ask_tax(meguro_care, person=ICHIRO_MEGURO)
        status = await meguro_care.wait_for_result(submitted["query_id"])
    number = status["transaction_number"]
    lines = business_lines(log)
    assert lines["setagaya"] == [
        f"処理通番 {number}: provision request of 目黒区 refused (FugoUnknown)"
    ]
    relayed = "relayed: refused by the provider (FugoUnknown)"
    assert f"処理通番 {number}: provision 世田谷区 → 目黒区 {relayed}" in lines["hub"]
    assert lines["meguro"][-1] == (
        f"処理通番 {number}: query {submitted['query_id']} to 世田谷区 refused (FugoUnknown), "
        f"{TAX_INFORMATION}"
    )
    no_person_in(log, ICHIRO_MEGURO)


@pytest_twisted.ensureDeferred
async def test_a_query_the_network_refuses_is_one_line_at_the_hub_once(box: Any) -> None:
    """A query the permitted-query list does not allow (local-tax affairs asking care
    information) is refused by the hub: one line with its 処理通番 and code, and none more
    when the requester sends the same query again."""
    asked = messages.QueryRequest(
        message_id=str(uuid.uuid4()),
        requester_fugo="not looked at before the list",
        affair=TAX_AFFAIR,
        procedure=INHABITANT_TAX,
        information_name=CARE_INFORMATION,
        provider=SETAGAYA,
    )
    with LogRecorder() as log:
        for _ in range(2):  # the requester's retry gets the same answer
            with pytest.raises(RenkeiError) as refused:
                await box.hub.receive_query(MEGURO, asked)
            assert refused.value.code == "NotPermitted"
    number = refused.value.params["transaction_number"]
    assert log.lines("hub") == [
        f"処理通番 {number}: query 目黒区 → 世田谷区 refused (NotPermitted), {CARE_INFORMATION} "
        f"for {INHABITANT_TAX}"
    ]


@pytest_twisted.ensureDeferred
async def test_held_approved_refused_and_expired_provisions_are_one_line_each(
    box: Any, setagaya_asks: Any
) -> None:
    """A provision held (until when, in Japan time), then approved by its approver; another
    refused; a third expired undecided when the clock passes its hold: one line each at the
    provider, and the requester's query held, then ended."""
    meguro = box.nodes["meguro"]
    with LogRecorder() as log:
        decided = []
        for decide in ("approve", "refuse", "expire"):
            query_id = await setagaya_asks.ask()
            await wait_for_state(setagaya_asks, query_id, "held")
            item = await held_item(meguro)
            if decide == "approve":
                await meguro.held.approve(item.transaction_number, "approver1")
            elif decide == "refuse":
                await meguro.held.refuse(item.transaction_number, "approver1", "DV")
            else:
                box.clock.advance(72 * 3600 + 1)
                assert await meguro.held.expire() == 1
            decided.append(item.transaction_number)
    lines = log.lines("meguro")
    approved, refused, expired = decided
    held = [line for line in lines if "held (自動応答不可)" in line]
    assert len(held) == 3 and all(" JST" in line and "保留一覧" in line for line in held)
    assert f"処理通番 {approved}: held provision to 世田谷区 approved by approver1: given" in lines
    assert (
        f"処理通番 {refused}: held provision to 世田谷区 refused by approver1: refused "
        "(ProvisionRefused)" in lines
    )
    assert (
        f"処理通番 {expired}: held provision to 世田谷区 expired undecided: refused "
        "(HoldExpired)" in lines
    )
    counted = Counter(line.split(":")[0] for line in lines)
    assert all(counted[f"処理通番 {number}"] == 2 for number in decided)  # held, decided
    held_at_requester = [line for line in log.lines("setagaya") if "held by the provider" in line]
    assert len(held_at_requester) == 3
    no_person_in(log, "0001310599", "000000000010002", "000000000020002")


@pytest_twisted.ensureDeferred
async def test_results_deleted_at_the_end_of_their_retention_are_one_line(
    box: Any, meguro_care: Any
) -> None:
    """When the retention of a query's result ends, its deletion is one line with how many
    were deleted and up to when; a purge that deletes nothing logs nothing."""
    submitted = await ask_tax(meguro_care)
    await meguro_care.wait_for_result(submitted["query_id"])
    meguro = box.nodes["meguro"]
    with LogRecorder() as log:
        await meguro.jobs.run("purge")
        box.clock.advance(box.config.retention.query_results.seconds + 1)
        await meguro.jobs.run("purge")
    (line,) = log.lines("meguro")
    assert line.startswith("query results deleted: 1 (kept "), line


def test_an_institution_the_network_does_not_know_is_named_by_its_code() -> None:
    """A code that is no member's is shown as it is; a member's by its name."""
    log = BusinessLog("meguro", [("1131121000000000", "世田谷区")])
    assert log.name("1131121000000000") == "世田谷区"
    assert log.name("9999999999999999") == "9999999999999999"


@pytest_twisted.ensureDeferred
async def test_the_lines_of_a_bundle_are_one_line_per_event_at_each_party(box: Any) -> None:
    """Queries submitted together (a bulk query's lines) go as a bundle: each party logs one
    line for all of them per event, with their 処理通番 (lowest, highest) and the count of
    each outcome (each line is in the provision records), not a line per query."""
    meguro = box.nodes["meguro"]
    asked = [
        (
            QuerySubmission(
                integrated_address_number=HANAKO_MEGURO,
                procedure=PREMIUM_ASSESSMENT,
                information_name=TAX_INFORMATION,
                provider=SETAGAYA,
            ),
            None,
        )
    ] * 3
    with LogRecorder() as log:
        query_ids = await meguro.requester.submit_queries(asked, "care-insurance")
        for query_id in query_ids:
            await meguro.requester.wait_for_end(query_id, 30.0, "care-insurance")
        await wait_until(lambda: len(log.lines("hub")) == 2)
    statuses = [await meguro.requester.query_status(q, "care-insurance") for q in query_ids]
    assert [status.state for status in statuses] == ["provided"] * 3
    numbers = sorted(str(status.transaction_number) for status in statuses)
    head = f"処理通番 {numbers[0]} to {numbers[-1]}: 3"
    asked_of = f"{TAX_INFORMATION} for {PREMIUM_ASSESSMENT}"
    lines = business_lines(log)
    assert lines["meguro"] == [
        f"3 queries submitted together by care-insurance: {TAX_INFORMATION} of 世田谷区 for "
        f"{PREMIUM_ASSESSMENT}",
        f"{head} queries to 世田谷区 ended, {TAX_INFORMATION}: provided 3",
    ]
    assert lines["hub"] == [
        f"{head} queries 目黒区 → 世田谷区 permitted, {asked_of}",
        f"{head} provisions 世田谷区 → 目黒区 relayed: provided 3",
    ]
    assert lines["setagaya"] == [f"{head} provisions to 目黒区: given 3, {asked_of}"]
    no_person_in(log, HANAKO_MEGURO, "84200")
