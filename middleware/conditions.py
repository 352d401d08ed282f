"""Query conditions (照会条件): which replica records a query asks for.

A query may narrow what it asks by a fiscal year (照会年度, 年度: 1 April to 31 March of the
next calendar year) and by a period (照会開始日付 … 照会終了日付, both days included, either
one may be left open). The provider answers with the records that meet every condition given;
a query without conditions asks for every record. The catalogue says for each data set which
items place a record in time (`codes.catalogue.Period`):

- a record **of a fiscal year** (課税年度 of local tax) meets a fiscal-year condition when it
  is of that year, and a period condition when its fiscal year overlaps the period;
- a record **valid from … to** (資格取得 … 喪失, 認定有効期間, 負担割合の適用期間, …) meets a
  condition when its validity overlaps the condition's span; a missing end is open;
- a record **of a month** (サービス提供年月) meets it when that month overlaps the span.

A record that cannot be placed in time (its data set has no period, or the items are missing)
does not meet a condition: nothing outside what was asked is provided. These rules are this
project's emulation: the real system's condition codes and semantics are not public.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from codes.catalogue import DataSet
from middleware.messages import QueryConditions

__all__ = ["Span", "fiscal_year_span", "meets", "span_of_conditions", "span_of_record"]


@dataclass(frozen=True)
class Span:
    """Days from ``first`` to ``last``, both included; None leaves that side open."""

    first: date | None
    last: date | None

    def overlaps(self, other: Span) -> bool:
        """Whether the two spans share at least one day."""
        return (self.first is None or other.last is None or self.first <= other.last) and (
            other.first is None or self.last is None or other.first <= self.last
        )


def fiscal_year_span(year: int) -> Span:
    """年度 ``year``: 1 April ``year`` to 31 March ``year + 1``."""
    return Span(date(year, 4, 1), date(year + 1, 3, 31))


def _month_span(text: str) -> Span | None:
    if len(text) != 6 or not text.isascii() or not text.isdigit():
        return None
    year, month = int(text[:4]), int(text[4:])
    if not 1 <= month <= 12 or year < 1:
        return None
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return Span(date(year, month, 1), date.fromordinal(following.toordinal() - 1))


def _day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def span_of_record(data_set: DataSet, items: Mapping[str, str]) -> Span | None:
    """The days a record is about, by its data set's period; None when it cannot be placed."""
    period = data_set.period
    if period is None:
        return None
    if period.fiscal_year is not None:
        year = items.get(period.fiscal_year, "")
        if len(year) != 4 or not year.isascii() or not year.isdigit() or year == "0000":
            return None
        return fiscal_year_span(int(year))
    if period.month is not None:
        return _month_span(items.get(period.month, ""))
    starts = _day(items.get(period.starts)) if period.starts is not None else None
    ends = _day(items.get(period.ends)) if period.ends is not None else None
    if starts is None and ends is None:
        return None
    return Span(starts, ends)


def _fiscal_year_of(data_set: DataSet, items: Mapping[str, str]) -> int | None:
    period = data_set.period
    if period is None or period.fiscal_year is None:
        return None
    year = items.get(period.fiscal_year, "")
    return int(year) if len(year) == 4 and year.isascii() and year.isdigit() else None


def span_of_conditions(conditions: QueryConditions | None) -> tuple[Span, ...]:
    """The spans a record must overlap, one per condition given (none: no condition)."""
    if conditions is None:
        return ()
    spans = []
    if conditions.fiscal_year is not None:
        spans.append(fiscal_year_span(conditions.fiscal_year))
    if conditions.period_start is not None or conditions.period_end is not None:
        spans.append(Span(conditions.period_start, conditions.period_end))
    return tuple(spans)


def meets(
    conditions: QueryConditions | None, data_set: DataSet | None, items: Mapping[str, str]
) -> bool:
    """Whether a record (of ``data_set``, None when the catalogue no longer has it) meets
    every condition of a query."""
    spans = span_of_conditions(conditions)
    if not spans:
        return True
    if data_set is None:
        return False
    assert conditions is not None
    if conditions.fiscal_year is not None:
        year = _fiscal_year_of(data_set, items)
        if year is not None and year != conditions.fiscal_year:
            return False  # a record of a fiscal year meets only that year
    record = span_of_record(data_set, items)
    return record is not None and all(record.overlaps(span) for span in spans)
