"""Query conditions: which replica records a fiscal year or a period selects."""

from __future__ import annotations

import json
from datetime import date

import pytest

from codes.catalogue import CatalogueError, default_catalogue, parse_catalogues
from middleware.conditions import Span, fiscal_year_span, meets, span_of_record
from middleware.messages import QueryConditions

CATALOGUE = default_catalogue()
TAX = CATALOGUE.information_name("TM00000000000002").data_set("0101")
INSURED = CATALOGUE.information_name("TM00000000000004").data_set("0101")
CERTIFICATION = CATALOGUE.information_name("TM00000000000004").data_set("0201")
BENEFIT = CATALOGUE.information_name("TM00000000000004").data_set("0300")
PENSION = CATALOGUE.information_name("TM00000000900002").data_set("0101")


def tax_record(year: str) -> dict[str, str]:
    """A local-tax record of one fiscal year (課税年度)."""
    return {"TK00000201010001": year, "TK00000201010003": "3500"}


def certification(start: str, end: str | None) -> dict[str, str]:
    """A care-need certification valid from ``start`` to ``end``."""
    items = {"TK00000402010002": "22", "TK00000402010005": start}
    if end is not None:
        items["TK00000402010006"] = end
    return items


def by_year(year: int) -> QueryConditions:
    return QueryConditions(fiscal_year=year)


def by_period(start: date | None, end: date | None) -> QueryConditions:
    return QueryConditions(period_start=start, period_end=end)


def test_fiscal_year_runs_from_april_to_march() -> None:
    """年度 2025 is 1 April 2025 to 31 March 2026."""
    assert fiscal_year_span(2025) == Span(date(2025, 4, 1), date(2026, 3, 31))


def test_no_condition_selects_every_record() -> None:
    """Without conditions (or with empty ones) every record is asked for."""
    assert meets(None, TAX, tax_record("2019"))
    assert meets(QueryConditions(), TAX, tax_record("2019"))
    assert meets(None, None, {})


def test_fiscal_year_condition_selects_the_tax_record_of_that_year_only() -> None:
    """A fiscal-year condition meets the tax record of that 課税年度 and no other."""
    assert meets(by_year(2025), TAX, tax_record("2025"))
    assert not meets(by_year(2025), TAX, tax_record("2026"))
    assert not meets(by_year(2025), TAX, tax_record("2024"))


def test_period_condition_selects_tax_records_whose_fiscal_year_overlaps_it() -> None:
    """A period from March to April 2026 overlaps fiscal years 2025 and 2026."""
    period = by_period(date(2026, 3, 1), date(2026, 4, 30))
    assert meets(period, TAX, tax_record("2025"))
    assert meets(period, TAX, tax_record("2026"))
    assert not meets(period, TAX, tax_record("2024"))


def test_period_condition_selects_certifications_whose_validity_overlaps_it() -> None:
    """A certification valid 2024-10-01..2025-09-30 meets a period touching either end."""
    record = certification("2024-10-01", "2025-09-30")
    assert meets(by_period(date(2025, 9, 30), date(2025, 12, 31)), CERTIFICATION, record)
    assert meets(by_period(date(2024, 1, 1), date(2024, 10, 1)), CERTIFICATION, record)
    assert not meets(by_period(date(2025, 10, 1), None), CERTIFICATION, record)
    assert not meets(by_period(None, date(2024, 9, 30)), CERTIFICATION, record)


def test_fiscal_year_condition_selects_certifications_valid_during_that_year() -> None:
    """A certification that ended in September 2025 meets 年度 2025 but not 2026."""
    record = certification("2023-10-01", "2025-09-30")
    assert meets(by_year(2025), CERTIFICATION, record)
    assert not meets(by_year(2026), CERTIFICATION, record)


def test_record_without_an_end_is_open_ended() -> None:
    """An insured person who has not lost eligibility meets every later period."""
    record = {"TK00000401010001": "0001310501", "TK00000401010003": "2024-04-01"}
    assert meets(by_period(date(2030, 1, 1), date(2030, 1, 31)), INSURED, record)
    assert not meets(by_period(date(2023, 1, 1), date(2024, 3, 31)), INSURED, record)
    assert meets(by_year(2040), PENSION, {"TK90000201010002": "2020-06-15"})


def test_record_of_a_month_meets_the_periods_that_touch_that_month() -> None:
    """A benefit of サービス提供年月 202602 meets February 2026, and fiscal year 2025."""
    record = {"TK00000403000002": "202602", "TK00000403000003": "12000"}
    assert meets(by_period(date(2026, 2, 28), date(2026, 3, 5)), BENEFIT, record)
    assert not meets(by_period(date(2026, 3, 1), None), BENEFIT, record)
    assert meets(by_year(2025), BENEFIT, record)
    assert not meets(by_year(2026), BENEFIT, record)


def test_both_conditions_must_hold() -> None:
    """Fiscal year and period together select only records meeting both."""
    both = QueryConditions(
        fiscal_year=2025, period_start=date(2026, 1, 1), period_end=date(2026, 12, 31)
    )
    assert meets(both, TAX, tax_record("2025"))
    assert not meets(both, TAX, tax_record("2026"))  # in the period, not of the year
    assert not meets(both, CERTIFICATION, certification("2025-04-01", "2025-12-31"))


def test_record_that_cannot_be_placed_in_time_does_not_meet_a_condition() -> None:
    """Missing or malformed period items, or a data set the catalogue lost, are not provided
    to a query with conditions."""
    assert not meets(by_year(2025), TAX, {"TK00000201010003": "3500"})
    assert not meets(by_year(2025), CERTIFICATION, {"TK00000402010002": "22"})
    assert not meets(by_year(2025), BENEFIT, {"TK00000403000002": "202613"})
    assert not meets(by_year(2025), None, tax_record("2025"))
    assert span_of_record(CERTIFICATION, certification("2025-02-30", None)) is None


def test_every_data_set_of_the_catalogue_says_how_its_records_are_placed_in_time() -> None:
    """The packaged catalogue gives each data set a period."""
    for name in CATALOGUE.information_names:
        for data_set in name.data_sets:
            assert data_set.period is not None, (name.code, data_set.code)


@pytest.mark.parametrize(
    ("period", "problem"),
    [
        ({}, "at least one item"),
        ({"fiscal_year": "TK00000201010001", "from": "TK00000201010001"}, "stand alone"),
        ({"fiscal_year": "TK00000201010003"}, "integer of length 4"),
        ({"from": "TK00000201010001"}, "must be a date"),
        ({"month": "TK00000401010001"}, "not an item of this data set"),
        ({"since": "TK00000201010001"}, "unknown keys"),
    ],
)
def test_catalogue_refuses_a_period_that_cannot_place_records(
    period: dict[str, str], problem: str
) -> None:
    """A period naming missing items, items of the wrong type or unknown parts is refused."""
    from importlib import resources

    from codes.catalogue import PACKAGED_CATALOGUE

    raw = json.loads(resources.files("codes").joinpath(PACKAGED_CATALOGUE).read_text("utf-8"))
    tax = next(n for n in raw["information_names"] if n["code"] == "TM00000000000002")
    tax["data_sets"][0]["period"] = period
    with pytest.raises(CatalogueError, match=problem):
        parse_catalogues(json.dumps(raw))
