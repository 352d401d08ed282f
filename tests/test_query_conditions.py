"""Query conditions honoured end to end: the provider gives only the records asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from simulators.back_office import BackOfficeError
from tests.network import (
    HANAKO_MEGURO,
    LOCAL_TAX,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)

HANAKO_SETAGAYA = "000000000020001"
# The demo population's tax record of Hanako at Setagaya is of 課税年度 2026.
TAX_2026 = "SET-TAX-2026-0001"
TAX_2025 = "SET-TAX-2025-0001"


@pytest_twisted.async_yield_fixture
async def two_tax_years(box: Any) -> AsyncIterator[Any]:
    """Setagaya's local-tax office also holds Hanako's tax of fiscal year 2025."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    client = BackOfficeClient(reactor, box.config, box.config.institution("setagaya"), LOCAL_TAX)
    try:
        await client.register_replica_record(
            {
                "record_id": TAX_2025,
                "integrated_address_number": HANAKO_SETAGAYA,
                "information_name": TAX_INFORMATION,
                "data_set": "0101",
                "items": {"TK00000201010001": "2025", "TK00000201010004": "79100"},
            }
        )
        yield box
    finally:
        await client.close()


async def provided_records(client: Any, conditions: dict[str, Any] | None) -> tuple[str, list]:
    """Meguro asks Setagaya for Hanako's local tax with ``conditions``: the query's end state
    and the record ids provided."""
    body: dict[str, Any] = {
        "integrated_address_number": HANAKO_MEGURO,
        "procedure": PREMIUM_ASSESSMENT,
        "information_name": TAX_INFORMATION,
        "provider": SETAGAYA,
    }
    if conditions is not None:
        body["conditions"] = conditions
    submitted = await client.submit_query(**body)
    status = await client.wait_for_result(submitted["query_id"])
    return status["state"], [record["record_id"] for record in status["result"]["records"]]


@pytest_twisted.ensureDeferred
async def test_query_without_conditions_is_given_every_year(
    two_tax_years: Any, meguro_care: Any
) -> None:
    """With no condition the provider gives both tax years."""
    assert await provided_records(meguro_care, None) == ("provided", [TAX_2025, TAX_2026])


@pytest_twisted.ensureDeferred
async def test_fiscal_year_condition_is_given_that_year_only(
    two_tax_years: Any, meguro_care: Any
) -> None:
    """A query for fiscal year 2025 is given the 2025 record, not the 2026 one."""
    assert await provided_records(meguro_care, {"fiscal_year": 2025}) == ("provided", [TAX_2025])
    assert await provided_records(meguro_care, {"fiscal_year": 2026}) == ("provided", [TAX_2026])


@pytest_twisted.ensureDeferred
async def test_period_condition_is_given_the_years_it_overlaps(
    two_tax_years: Any, meguro_care: Any
) -> None:
    """A period within fiscal year 2026 selects the 2026 record; one across March 2026 both."""
    inside = {"period_start": "2026-05-01", "period_end": "2026-06-30"}
    across = {"period_start": "2026-03-01", "period_end": "2026-04-30"}
    assert await provided_records(meguro_care, inside) == ("provided", [TAX_2026])
    assert await provided_records(meguro_care, across) == ("provided", [TAX_2025, TAX_2026])


@pytest_twisted.ensureDeferred
async def test_conditions_matching_nothing_end_in_no_data(
    two_tax_years: Any, meguro_care: Any
) -> None:
    """A year with no record, or a year and a period that exclude each other, is no_data."""
    assert await provided_records(meguro_care, {"fiscal_year": 2019}) == ("no_data", [])
    both = {"fiscal_year": 2025, "period_start": "2026-05-01", "period_end": "2026-06-30"}
    assert await provided_records(meguro_care, both) == ("no_data", [])


@pytest.mark.parametrize(
    ("conditions", "detail"),
    [
        ({"period_start": "2026-05-01", "period_end": "2026-04-30"}, "before period_start"),
        ({"fiscal_year": 19}, "fiscal_year"),
        ({"fiscal_year": "2025"}, "fiscal_year"),
        ({"period_start": "2026-13-01"}, "period_start"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_conditions_are_refused_before_anything_is_sent(
    box: Any, meguro_care: Any, conditions: dict[str, Any], detail: str
) -> None:
    """An end before the start, a year that is not YYYY or a date that is not one is
    BadRequest at the requester."""
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.submit_query(
            integrated_address_number=HANAKO_MEGURO,
            procedure=PREMIUM_ASSESSMENT,
            information_name=TAX_INFORMATION,
            provider=SETAGAYA,
            conditions=conditions,
        )
    assert refused.value.code == "BadRequest"
    assert detail in refused.value.error["message_en"]
