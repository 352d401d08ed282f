"""Unit tests for the 業務統計 page's content (adapters.console.statistics) and its chart
(adapters.console.chart): periods, names, rows, the CSV and the bars' geometry."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from adapters.console.chart import LABEL_WIDTH, PLOT_WIDTH, scale_of, stacked_bars
from adapters.console.i18n import translator
from adapters.console.statistics import (
    CHART_ROWS,
    Names,
    Period,
    period_of,
    side_tables,
    statistics_csv,
)
from codes.catalogue import default_catalogue
from codes.errors import RenkeiError
from middleware.business_statistics import PROVISION, QUERY, Figure

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
NOW = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)  # 1 January 2027, 00:30 in Japan


def names(lang: str = "ja") -> Names:
    return Names(default_catalogue(), {SETAGAYA: "世田谷区"}, lang, translator(lang))


def test_the_default_period_is_the_twelve_months_up_to_this_one_in_japan() -> None:
    """At 00:30 on 1 January in Japan (still 31 December in UTC) the default period ends
    with January."""
    period = period_of("", "", NOW)
    assert period == Period("2026-02", "2027-01")
    assert len(period.months()) == 12
    assert period_of("2026-11", "", NOW).months() == ["2026-11", "2026-12", "2027-01"]


@pytest.mark.parametrize(
    ("since", "until"),
    [("2026-00", ""), ("2026-1", "2026-02"), ("", "2027-13"), ("2027-02", "2027-01")],
)
def test_a_malformed_or_backward_period_is_bad_request(since: str, until: str) -> None:
    """A month that is not YYYY-MM of a real month, or a period ending before it starts."""
    with pytest.raises(RenkeiError) as refused:
        period_of(since, until, NOW)
    assert refused.value.code == "BadRequest"


def test_a_period_of_more_than_ten_years_is_bad_request() -> None:
    """120 months are answered; 121 are refused."""
    assert len(period_of("2017-02", "2027-01", NOW).months()) == 120
    with pytest.raises(RenkeiError):
        period_of("2017-01", "2027-01", NOW)


def test_codes_are_shown_with_their_names_and_unknown_ones_as_themselves() -> None:
    """Institutions by the directory, procedures and information names by the catalogue (in
    English too), months in Japan's way; a code nobody names stays a code."""
    assert names().of("counterpart", SETAGAYA) == "世田谷区"
    assert names().of("counterpart", "1139999000000000") == "1139999000000000"
    assert names().of("counterpart", "") == "不明"
    assert names().of("procedure", "JT90010000000001") == "保険料の賦課"
    assert names("en").of("information_name", "TM00000000000002") != "TM00000000000002"
    assert names().of("procedure", "JT99999999999999") == "JT99999999999999"
    assert names().of("month", "2027-01") == "2027年1月"
    assert names().of("outcome", "no_data") == "該当なし"


def test_rows_by_month_cover_the_period_and_other_rows_go_largest_first() -> None:
    """By month every month of the period is a row, in order, empty ones included; by
    counterpart the busiest comes first; totals add up per outcome."""
    found = [
        Figure(QUERY, "2026-12", "provided", 3),
        Figure(QUERY, "2026-12", "refused", 1),
        Figure(PROVISION, "2027-01", "held", 2),
    ]
    period = Period("2026-11", "2027-01")
    query, provision = side_tables(found, period, "month", names(), translator("ja"))
    assert [row.code for row in query.rows] == ["2026-11", "2026-12", "2027-01"]
    assert [row.total for row in query.rows] == [0, 4, 0]
    assert query.totals["provided"] == 3 and query.total == 4
    assert query.outcomes[:4] == ("provided", "no_data", "held", "accepted")
    assert provision.total == 2
    by_counterpart = [
        Figure(QUERY, SETAGAYA, "provided", 1),
        Figure(QUERY, MEGURO, "provided", 5),
    ]
    (query, _) = side_tables(by_counterpart, period, "counterpart", names(), translator("ja"))
    assert [row.code for row in query.rows] == [MEGURO, SETAGAYA]


def test_an_outcome_found_beyond_the_usual_ones_gets_a_column() -> None:
    """An outcome a side does not usually have (the hub's permitted) is shown after them."""
    (query, _) = side_tables(
        [Figure(QUERY, "permitted", "permitted", 2)],
        Period("2027-01", "2027-01"),
        "outcome",
        names(),
        translator("ja"),
    )
    assert query.outcomes[-1] == "permitted"
    assert query.rows[-1].name == "許可" and query.rows[-1].total == 2


def test_the_chart_draws_the_first_rows_and_the_rest_as_one_bar() -> None:
    """Beyond the chart's rows, the smallest counterparts are drawn as one bar, その他."""
    found = [Figure(QUERY, f"{index:016d}", "provided", 100 - index) for index in range(40)]
    (query, _) = side_tables(
        found, Period("2027-01", "2027-01"), "counterpart", names(), translator("ja")
    )
    assert len(query.rows) == 40
    bars = query.chart.bars
    assert len(bars) == CHART_ROWS
    assert bars[-1].label.startswith("その他") and bars[-1].total == sum(
        100 - index for index in range(CHART_ROWS - 1, 40)
    )


def test_the_csv_has_a_bom_japanese_headers_and_a_line_per_side_and_value() -> None:
    """UTF-8 with a BOM and CRLF lines; the group's code and name, every outcome, the total."""
    found = [Figure(QUERY, "2027-01", "provided", 2), Figure(PROVISION, "2027-01", "held", 1)]
    period = Period("2027-01", "2027-01")
    t = translator("ja")
    tables = side_tables(found, period, "month", names(), t)
    data = statistics_csv(tables, "month", names(), t)
    assert data.startswith("\ufeff".encode()) and b"\r\n" in data
    header, *lines = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    assert header[:4] == ["区分", "年月", "年月(名称)", "提供"] and header[-1] == "合計"
    assert lines[0][:4] == ["照会", "2027-01", "2027年1月", "2"]
    assert lines[1][0] == "提供" and lines[1][header.index("保留中")] == "1"


def test_bars_are_scaled_to_a_round_end_with_gridlines_at_each_step() -> None:
    """The largest bar of 1,234 ends at 1,234/1,500 of the plot; gridlines every 500; the
    segments of a bar follow one another in the series' order."""
    assert scale_of(0) == (1, 1)
    assert scale_of(4) == (4, 1)
    assert scale_of(9) == (10, 5)
    assert scale_of(1234) == (1500, 500)
    chart = stacked_bars(
        [("a", {"provided": 1000, "refused": 234}), ("b", {"refused": 10})],
        [("provided", "提供", "#009E73"), ("refused", "提供不可", "#D55E00")],
        "test",
    )
    assert [tick.value for tick in chart.ticks] == [0, 500, 1000, 1500]
    first, second = chart.bars
    assert first.segments[0].x == LABEL_WIDTH
    assert first.segments[1].x == pytest.approx(LABEL_WIDTH + PLOT_WIDTH * 1000 / 1500)
    assert sum(s.width for s in first.segments) == pytest.approx(PLOT_WIDTH * 1234 / 1500)
    assert [s.colour for s in second.segments] == ["#D55E00"]
    assert first.total == 1234 and chart.width > chart.bars[0].total_x


def test_a_long_label_is_cut_and_kept_whole_in_its_title() -> None:
    """A label wider than its room ends with an ellipsis; the bar's title keeps it all."""
    long = "介護保険法による保険給付の支給に関する事務手続の名称"
    chart = stacked_bars([(long, {"x": 1})], [("x", "x", "#000")], "test")
    (bar,) = chart.bars
    assert bar.label.endswith("…") and len(bar.label) < len(long)
    assert bar.title == long
