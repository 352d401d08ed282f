"""The 業務統計 page's content: a period of months, the figures by side as tables with their
names, their charts and their CSV (no I/O: the route in ``adapters.console.app`` reads the
figures through ``node.store.business_statistics``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from adapters.console.chart import Chart, stacked_bars
from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from middleware.business_statistics import JAPAN, PROVISION, QUERY, Figure

__all__ = [
    "CHART_ROWS",
    "GROUPINGS",
    "OUTCOMES",
    "OUTCOME_COLOURS",
    "PERIOD_MONTHS_MAX",
    "SIDE_OUTCOMES",
    "Names",
    "Period",
    "Row",
    "SideTable",
    "month_label",
    "period_of",
    "side_tables",
    "statistics_csv",
]

GROUPINGS = ("month", "procedure", "counterpart", "information_name", "outcome")
"""What the page groups by (the first is the default)."""

PERIOD_MONTHS_MAX = 120
"""The longest period asked at once: ten years, beyond the seven records are kept."""

CHART_ROWS = 30
"""Bars drawn at most (but by month: every month); the rest are drawn as one, その他."""

# Every outcome in the order columns and segments show them; the colours are the Okabe-Ito
# palette, told apart by colour-blind readers too.
OUTCOMES = ("provided", "no_data", "held", "accepted", "refused", "error", "permitted")
OUTCOME_COLOURS = {
    "provided": "#009E73",
    "no_data": "#56B4E9",
    "held": "#E69F00",
    "accepted": "#999999",
    "refused": "#D55E00",
    "error": "#CC79A7",
    "permitted": "#0072B2",
}
OTHER_COLOUR = "#555555"

SIDE_OUTCOMES = {
    QUERY: ("provided", "no_data", "held", "accepted", "refused", "error"),
    PROVISION: ("provided", "no_data", "held", "refused"),
}
"""The outcome columns a side always shows (any other outcome found is shown after them)."""

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")

Translate = Callable[..., str]


@dataclass(frozen=True)
class Period:
    """The months ``since`` to ``until`` (``YYYY-MM``, Japan time), both included."""

    since: str
    until: str

    def months(self) -> list[str]:
        year, month = int(self.since[:4]), int(self.since[5:])
        found = []
        while f"{year:04d}-{month:02d}" <= self.until:
            found.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return found


def _month(value: str, what: str) -> str:
    if not _MONTH.fullmatch(value):
        raise RenkeiError(errors.BAD_REQUEST, detail=f"{what}: not a month (YYYY-MM): {value[:40]}")
    return value


def period_of(since: str, until: str, now: datetime) -> Period:
    """The period a form asks (empty: the twelve months up to this one, Japan time); refused
    with BadRequest when a month is malformed, the end comes before the start or it spans
    more than `PERIOD_MONTHS_MAX` months."""
    today = now.astimezone(JAPAN)
    until = _month(until, "to") if until else f"{today:%Y-%m}"
    if since:
        since = _month(since, "from")
    else:
        year, month = int(until[:4]), int(until[5:]) - 11
        if month < 1:
            year, month = year - 1, month + 12
        since = f"{year:04d}-{month:02d}"
    if since > until:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"the period ends ({until}) before it starts")
    period = Period(since, until)
    if len(period.months()) > PERIOD_MONTHS_MAX:
        raise RenkeiError(
            errors.BAD_REQUEST, detail=f"a period of at most {PERIOD_MONTHS_MAX} months"
        )
    return period


def month_label(month: str, lang: str) -> str:
    """A month as a person reads it: 2026年12月 (or 2026-12 in English)."""
    return f"{month[:4]}年{int(month[5:])}月" if lang == "ja" else month


class Names:
    """The names of the codes a grouping shows: months, institutions, procedures, information
    names (from the catalogue) and outcomes."""

    def __init__(
        self, catalogue: Catalogue, institutions: Mapping[str, str], lang: str, t: Translate
    ) -> None:
        self._catalogue = catalogue
        self._institutions = institutions
        self._lang = lang
        self._t = t

    def of(self, group: str, code: str) -> str:
        """The name of ``code`` (the code itself when it has none known here)."""
        if code == "":
            return self._t("stat_unknown")
        english = self._lang == "en"
        try:
            if group == "month":
                return month_label(code, self._lang)
            if group == "procedure":
                procedure = self._catalogue.procedure(code)
                return procedure.name_en if english else procedure.name
            if group == "information_name":
                information = self._catalogue.information_name(code)
                return information.name_en if english else information.name
        except RenkeiError:
            return code  # not in the catalogue in force
        if group in ("counterpart", "requester", "provider"):
            return self._institutions.get(code, code)
        if group == "outcome":
            return self.outcome(code)
        return code

    def outcome(self, outcome: str) -> str:
        label = self._t(f"outcome_{outcome}")
        return outcome if label == f"outcome_{outcome}" else label


@dataclass(frozen=True)
class Row:
    """One line of a side's table: a group's value, its name and its counts by outcome."""

    code: str
    name: str
    counts: Mapping[str, int]
    total: int


@dataclass(frozen=True)
class SideTable:
    """The figures of one side (照会 or 提供): columns, rows, totals and the chart."""

    side: str
    outcomes: tuple[str, ...]
    rows: tuple[Row, ...]
    totals: Mapping[str, int]
    total: int
    chart: Chart


def _outcomes_of(side: str, found: Iterable[str]) -> tuple[str, ...]:
    shown = list(SIDE_OUTCOMES.get(side, ()))
    extra = sorted(
        set(found) - set(shown),
        key=lambda o: (OUTCOMES.index(o) if o in OUTCOMES else len(OUTCOMES), o),
    )
    return (*shown, *extra)


def side_tables(
    found: Sequence[Figure], period: Period, group: str, names: Names, t: Translate
) -> list[SideTable]:
    """The table and chart of each side, from the figures of ``period`` by ``group``: rows by
    month in order (every month of the period, none left out), else by count, largest first."""
    tables = []
    for side in (QUERY, PROVISION):
        figures = [figure for figure in found if figure.side == side]
        outcomes = _outcomes_of(side, (figure.outcome for figure in figures))
        counts: dict[str, dict[str, int]] = {}
        if group == "month":
            counts = {month: {} for month in period.months()}
        elif group == "outcome":
            counts = {outcome: {} for outcome in outcomes}
        for figure in figures:
            cell = counts.setdefault(figure.value, {})
            cell[figure.outcome] = cell.get(figure.outcome, 0) + figure.count
        rows = [
            Row(code, names.of(group, code), cells, sum(cells.values()))
            for code, cells in counts.items()
        ]
        if group not in ("month", "outcome"):
            rows.sort(key=lambda row: (-row.total, row.code))
        totals = {outcome: sum(row.counts.get(outcome, 0) for row in rows) for outcome in outcomes}
        series = [(o, names.outcome(o), OUTCOME_COLOURS.get(o, OTHER_COLOUR)) for o in outcomes]
        tables.append(
            SideTable(
                side=side,
                outcomes=outcomes,
                rows=tuple(rows),
                totals=totals,
                total=sum(totals.values()),
                chart=stacked_bars(
                    _charted(rows, group, t),
                    series,
                    f"{t(f'side_{side}')} — {t(f'group_{group}')}",
                ),
            )
        )
    return tables


def _charted(rows: Sequence[Row], group: str, t: Translate) -> list[tuple[str, Mapping[str, int]]]:
    """The bars of a table's rows: every month, else the largest `CHART_ROWS` - 1 and the rest
    as one bar."""
    if group == "month" or len(rows) <= CHART_ROWS:
        return [(row.name, row.counts) for row in rows]
    shown, rest = rows[: CHART_ROWS - 1], rows[CHART_ROWS - 1 :]
    merged: dict[str, int] = {}
    for row in rest:
        for outcome, count in row.counts.items():
            merged[outcome] = merged.get(outcome, 0) + count
    return [(row.name, row.counts) for row in shown] + [(t("stat_others", count=len(rest)), merged)]


def statistics_csv(tables: Sequence[SideTable], group: str, names: Names, t: Translate) -> bytes:
    """The tables as CSV for Excel: UTF-8 with a BOM, one line per side and group value with
    its code, its name (months as 2026年12月), a column per outcome and the total."""
    outcomes: list[str] = []
    for table in tables:
        outcomes += [outcome for outcome in table.outcomes if outcome not in outcomes]
    label = t(f"group_{group}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            t("stat_side"),
            label,
            t("stat_name_of", group=label),
            *(names.outcome(outcome) for outcome in outcomes),
            t("stat_total"),
        ]
    )
    for table in tables:
        for row in table.rows:
            writer.writerow(
                [
                    t(f"side_{table.side}"),
                    row.code,
                    row.name,
                    *(row.counts.get(outcome, 0) for outcome in outcomes),
                    row.total,
                ]
            )
    return out.getvalue().encode("utf-8-sig")
