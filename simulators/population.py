"""Synthetic, seeded populations of the three wards and the replica records held about them.

`generate` builds one ward's list of persons: its current residents (some of whom moved in
during the current fiscal year) and the persons who moved out during the year (the ward's
back offices still hold their records). `world` builds the three lists together; a person
who moved between two of the wards appears in both, with the same individual number.
`replica_records` gives the 副本 records an institution's back office holds about a person
(with the previous year's tax and the previous certification where the ward holds them),
valid against the packaged catalogue. Everything is a pure function of the seed: no clock,
no network, no global random state.

Shares (age pyramid, certification, copayment, movers, public assistance, pensions) are
approximations of public statistics; docs/population.md lists them and what is emulated.
"""

from __future__ import annotations

import bisect
import csv
import functools
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from faker.providers.person.ja_JP import Provider as JapanesePersonProvider

from codes.individual_number import check_digit
from codes.institution import institution_code_for_municipality
from codes.item_values import (
    ASSISTANCE_STATUSES,
    CARE_LEVELS,
    ELIGIBILITY_CHANGES,
    PENSION_KINDS,
    PROGRAM_CATEGORIES,
    TAX_CATEGORIES,
)
from codes.municipality_code import make_municipality_code
from middleware.replica import ReplicaRecord

__all__ = [
    "ASSISTANCE_STATUSES",
    "BENEFIT_CAPS",
    "CARE_LEVELS",
    "CSV_COLUMNS",
    "DEFAULT_SEED",
    "ELIGIBILITY_CHANGES",
    "ELSEWHERE",
    "FISCAL_YEAR_START",
    "INFORMATION_NAMES",
    "MUNICIPALITIES",
    "PENSION_KINDS",
    "PROGRAM_CATEGORIES",
    "REFERENCE_DATE",
    "SCHEME_START",
    "SIZES",
    "TAX_BASE_DATE",
    "TAX_CATEGORIES",
    "TAX_YEAR",
    "Assessment",
    "CareInsurance",
    "Certification",
    "Income",
    "Municipality",
    "PensionDetails",
    "Person",
    "SpecialResidence",
    "Town",
    "assessment",
    "care_insurer_number",
    "generate",
    "income",
    "pension_details",
    "previous_certification",
    "replica_records",
    "taxed_here",
    "world",
    "write_population_csv",
]

DEFAULT_SEED = 20261126
REFERENCE_DATE = date(2026, 11, 26)  # "today" of every generated population
FISCAL_YEAR_START = date(REFERENCE_DATE.year - (REFERENCE_DATE.month < 4), 4, 1)
# 課税年度 of the fiscal year in course, assessed on the previous calendar year's income by the
# ward the person lived in on its 1 January (賦課期日). The ward also keeps the year before's.
TAX_YEAR = FISCAL_YEAR_START.year
TAX_BASE_DATE = date(TAX_YEAR, 1, 1)
SCHEME_START = date(2000, 4, 1)  # 介護保険制度の施行

ELSEWHERE = "elsewhere"  # origin or destination of a move outside the three wards

INFORMATION_NAMES: dict[str, str] = {
    "care-insurance": "TM00000000000004",
    "local-tax": "TM00000000000002",
    "welfare": "TM00000000900001",
    "pension": "TM00000000900002",
}

# The monthly 区分支給限度基準額 of each 要介護状態区分 in units (the amounts in force since
# October 2019); the code lists themselves are codes.item_values'.
BENEFIT_CAPS: dict[str, int] = {
    "12": 5_032,
    "13": 10_531,
    "21": 16_765,
    "22": 19_705,
    "23": 27_048,
    "24": 30_938,
    "25": 36_217,
}

CSV_COLUMNS = (
    "individual_number",
    "integrated_address_number",
    "address_number",
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "sex",
    "birth_date",
    "municipality",
    "address",
    "moved_in_on",
    "moved_in_from",
    "moved_out_on",
    "moved_out_to",
    "care_insured_number",
    "care_level",
    "dv_protected",
    "public_assistance",
    "pension",
)

_DATA = Path(__file__).resolve().parent / "data" / "population"


# The shape of the world --------------------------------------------------------------------


@dataclass(frozen=True)
class Town:
    """A town (町) of a ward; `chome` is its number of 丁目, 0 when it has none."""

    name: str
    chome: int


@dataclass(frozen=True)
class Municipality:
    """One of the three wards: its codes and the towns its addresses are drawn from."""

    key: str
    name: str  # 目黒区
    code: str  # 全国地方公共団体コード, 6 digits
    institution: str  # 機関コード (emulated scheme, codes.institution)
    insurer_number: str  # 介護保険 保険者番号, 6 digits
    record_prefix: str  # first part of the ward's record ids
    towns: tuple[Town, ...]
    prefecture: str = "東京都"


@dataclass(frozen=True)
class SpecialResidence:
    """住所地特例: the insured lives in a facility in another municipality."""

    facility_name: str
    facility_insurer_number: str
    started_on: date


@dataclass(frozen=True)
class CareInsurance:
    """A first-category insured person's (65+) details at one insurer."""

    insured_number: str  # 被保険者番号, 10 digits, unique per insurer
    insurer_number: str  # 保険者番号 of the ward
    acquired_on: date
    care_level: str | None  # a key of CARE_LEVELS, None when not certified
    certified_from: date | None
    certified_to: date | None
    applied_on: date | None
    copayment: int  # 1, 2 or 3 (割)
    special_residence: SpecialResidence | None
    certified_on: date | None = None  # 認定年月日
    lost_on: date | None = None  # 資格喪失年月日 (moved out)
    change_reason: str = "01"  # 資格異動事由 of the latest change, a key of ELIGIBILITY_CHANGES


@dataclass(frozen=True)
class Certification:
    """A 要介護/要支援 certification (認定): the current one of a CareInsurance, or the one
    before it (`previous_certification`)."""

    care_level: str  # a key of CARE_LEVELS
    applied_on: date
    certified_on: date  # 認定年月日
    certified_from: date  # 認定有効期間 (both days included)
    certified_to: date


@dataclass(frozen=True, slots=True)
class Person:
    """A person as one ward's back offices know them.

    `municipality` is the ward whose list this is: where the person lives, or lived until
    moving out (`moved_out_to`); `address` is their (last) address in that ward.
    `moved_in_from` / `moved_out_to` are keys of MUNICIPALITIES or ELSEWHERE (a move from or
    to outside the three wards); None means no move during the current fiscal year.
    """

    individual_number: str
    integrated_address_number: str  # 団体内統合宛名番号, unique within the ward
    address_number: str  # 宛名番号 of the back-office systems
    family_name: str
    given_name: str
    family_name_kana: str
    given_name_kana: str
    sex: str  # "1" male, "2" female
    birth_date: date
    municipality: str
    address: str
    moved_in_on: date | None
    moved_in_from: str | None
    moved_out_to: str | None
    care: CareInsurance | None
    dv_protected: bool
    public_assistance: bool
    pension: bool
    moved_out_on: date | None = None
    # The pension institution's own 統合宛名番号: the same in every list the person is in.
    pension_integrated_address_number: str | None = None

    @property
    def resident(self) -> bool:
        """Whether the person lives in `municipality` on REFERENCE_DATE."""
        return self.moved_out_to is None

    def age(self, on: date = REFERENCE_DATE) -> int:
        """Age in completed years on `on`."""
        return _age(self.birth_date, on)


def care_insurer_number(code5: str) -> str:
    """The 6-digit 介護保険 保険者番号 of a municipality (5-digit code without check digit).

    The check digit follows the public rule of 保険者番号 (厚生労働省 保険者番号設定要領):
    weights 2 and 1 alternately from the last digit, digits of two-digit products summed,
    10 minus the last digit of the sum (0 when that is 0). Meguro 13110 → 131102.
    """
    total = 0
    for position, digit in enumerate(reversed(code5)):
        product = int(digit) * (2 if position % 2 == 0 else 1)
        total += product // 10 + product % 10
    return code5 + str((10 - total % 10) % 10)


def _load(name: str) -> dict[str, object]:
    with (_DATA / name).open(encoding="utf-8") as f:
        loaded: dict[str, object] = json.load(f)
    return loaded


def _municipalities() -> dict[str, Municipality]:
    towns = _load("towns.json")
    wards = (
        ("meguro", "目黒区", "13110", "MEG"),
        ("setagaya", "世田谷区", "13112", "SET"),
        ("shibuya", "渋谷区", "13113", "SHB"),
    )
    result: dict[str, Municipality] = {}
    for key, name, code5, prefix in wards:
        raw = towns[key]
        assert isinstance(raw, list)
        code = make_municipality_code(code5)
        result[key] = Municipality(
            key=key,
            name=name,
            code=code,
            institution=institution_code_for_municipality(code),
            insurer_number=care_insurer_number(code5),
            record_prefix=prefix,
            towns=tuple(Town(str(town), int(chome)) for town, chome in raw),
        )
    return result


MUNICIPALITIES: dict[str, Municipality] = _municipalities()

SIZES: dict[str, dict[str, int]] = {
    "meguro": {"small": 400, "full": 280_000},
    "setagaya": {"small": 300, "full": 940_000},
    "shibuya": {"small": 300, "full": 230_000},
}


@dataclass(frozen=True)
class _Facility:
    name: str
    code5: str
    insurer_number: str


def _facilities() -> tuple[_Facility, ...]:
    raw = _load("facilities.json")["facilities"]
    assert isinstance(raw, list)
    return tuple(_Facility(f["name"], f["code5"], care_insurer_number(f["code5"])) for f in raw)


_FACILITIES = _facilities()


# Shares (docs/population.md) ---------------------------------------------------------------

# Age pyramid of a Tokyo special ward: (first age, age after the band, weight).
_RESIDENT_AGES = (
    (0, 5, 40), (5, 10, 38), (10, 15, 36), (15, 20, 34), (20, 25, 55), (25, 30, 85),
    (30, 35, 85), (35, 40, 80), (40, 45, 78), (45, 50, 82), (50, 55, 80), (55, 60, 65),
    (60, 65, 50), (65, 70, 47), (70, 75, 55), (75, 80, 48), (80, 85, 35), (85, 90, 24),
    (90, 95, 11), (95, 100, 4), (100, 105, 1),
)  # fmt: skip
# Movers are mostly young adults.
_MOVER_AGES = (
    (0, 5, 50), (5, 10, 25), (10, 15, 15), (15, 20, 30), (20, 25, 160), (25, 30, 220),
    (30, 35, 170), (35, 40, 110), (40, 45, 70), (45, 50, 50), (50, 55, 35), (55, 60, 25),
    (60, 65, 18), (65, 70, 14), (70, 75, 12), (75, 80, 10), (80, 85, 8), (85, 90, 6),
    (90, 95, 3), (95, 100, 1),
)  # fmt: skip
_ELDERLY_AGES = tuple(band for band in _RESIDENT_AGES if band[0] >= 65)

# Share of the insured certified, by age (from the first age of the row on).
_CERTIFICATION_RATES = (
    (65, 0.03), (70, 0.06), (75, 0.13), (80, 0.27), (85, 0.50), (90, 0.73), (95, 0.90),
)  # fmt: skip
_LEVEL_CODES = ("12", "13", "21", "22", "23", "24", "25")
_LEVEL_WEIGHTS = (14, 14, 20, 17, 13, 12, 10)
_COPAYMENT_WEIGHTS = ((1, 90), (2, 5), (3, 5))
_FEMALE_UNDER_65 = 0.50
_FEMALE_65_AND_OVER = 0.57
_ASSISTANCE_UNDER_65 = 0.019
_ASSISTANCE_65_AND_OVER = 0.05
_DV_RATE = 0.0005
_MIN_DV = 2
_SPECIAL_RESIDENCE_RATE = 0.01
_PAST_MOVE_IN_RATE = 0.15  # insured stayers who moved into the ward after turning 65
# Moves during the fiscal year so far, per current resident, into and out of each ward.
_MOVE_RATE = 0.035
# Moves between two of the wards: PAIR_RATE × n1·n2/(n1+n2) each way, at least MIN_FLOW.
_PAIR_RATE = 0.012
_MIN_FLOW = 12
_ELDERLY_MOVERS = 4  # the first movers of every stream between wards are 65+
_DV_MOVER = 1  # ... and the second one is DV-protected, for the held-provision scenarios
_BENEFIT_RATE = 0.35  # 要介護 persons with 給付情報 (0300)
_PROGRAM_RATE = 0.40  # 要支援 persons in the 総合事業 (0400)
# The certification before a renewal: its level compared with the current one (one step lower
# most often: levels tend to rise), and whether it was a renewal itself or the first one.
_PREVIOUS_LEVEL_STEPS = ((-1, 50), (0, 35), (1, 15))
_PREVIOUS_RENEWAL_RATE = 0.6
_LONGEST_PERIOD = 48  # months; granted only to a renewal with an unchanged level (2021 on)
# Yearly revision of pension amounts (about 2 % in recent years), for the previous year's tax.
_PENSION_REVISION = 1.019
_EXTRA_FAMILY_WEIGHT = 40_000.0  # weight of names.json surnames next to Faker's counts


def _cumulative(weights: Iterable[float]) -> list[float]:
    total = 0.0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return out


_YEAR_DAYS = 365.2425


@dataclass(frozen=True)
class _AgeSampler:
    """Draws a birth ordinal from an age pyramid (ages on REFERENCE_DATE)."""

    spans: tuple[tuple[int, int], ...]  # day offsets before REFERENCE_DATE
    cum: tuple[float, ...]

    @classmethod
    def of(cls, bands: Sequence[tuple[int, int, int]]) -> _AgeSampler:
        spans = tuple((int(lo * _YEAR_DAYS) + 1, int(hi * _YEAR_DAYS)) for lo, hi, _ in bands)
        return cls(spans, tuple(_cumulative(w for _, _, w in bands)))

    def birth_ordinal(self, rng: random.Random) -> int:
        lo, hi = self.spans[bisect.bisect(self.cum, rng.random() * self.cum[-1])]
        return REFERENCE_DATE.toordinal() - rng.randrange(lo, hi)


_LEVEL_CUM = _cumulative(_LEVEL_WEIGHTS)
_COPAYMENT_CUM = _cumulative(w for _, w in _COPAYMENT_WEIGHTS)
_RESIDENTS = _AgeSampler.of(_RESIDENT_AGES)
_MOVERS = _AgeSampler.of(_MOVER_AGES)
_ELDERLY = _AgeSampler.of(_ELDERLY_AGES)


# Names -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NamePool:
    pairs: tuple[tuple[str, str], ...]
    cum: tuple[float, ...]

    def draw(self, rng: random.Random) -> tuple[str, str]:
        return self.pairs[bisect.bisect(self.cum, rng.random() * self.cum[-1])]


@dataclass(frozen=True)
class _Names:
    family: _NamePool
    given: dict[tuple[str, str], _NamePool]  # (sex, cohort) → pool


def _cohort(birth_year: int) -> str:
    return "old" if birth_year < 1960 else "mid" if birth_year < 1990 else "new"


@functools.cache
def _names() -> _Names:
    """Faker's ja_JP (kanji, katakana) pairs plus names.json, with weights."""
    extra = _load("names.json")
    family: dict[tuple[str, str], float] = {}
    for (kanji, kana, _romaji), count in JapanesePersonProvider.last_name_pairs.items():
        family.setdefault((kanji, kana), float(count))
    extra_family = extra["family"]
    assert isinstance(extra_family, list)
    for kanji, kana in extra_family:
        family.setdefault((kanji, kana), _EXTRA_FAMILY_WEIGHT)
    faker_given = {
        "1": [(k, kana) for k, kana, _ in JapanesePersonProvider.first_name_male_pairs],
        "2": [(k, kana) for k, kana, _ in JapanesePersonProvider.first_name_female_pairs],
    }
    given: dict[tuple[str, str], _NamePool] = {}
    for sex, label in (("1", "male"), ("2", "female")):
        by_cohort = extra[label]
        assert isinstance(by_cohort, dict)
        for cohort in ("old", "mid", "new"):
            pairs = list(dict.fromkeys(faker_given[sex] + [tuple(p) for p in by_cohort[cohort]]))
            given[(sex, cohort)] = _NamePool(tuple(pairs), tuple(_cumulative([1.0] * len(pairs))))
    return _Names(
        _NamePool(tuple(family), tuple(_cumulative(family.values()))),
        given,
    )


# Dates -------------------------------------------------------------------------------------


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _birthday(birth: date, years: int) -> date:
    """The day `birth` + `years` years; 1 March for a 29 February birth in a common year."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def _eve_of_65(birth: date) -> date:
    """The day one turns 65 in law (誕生日の前日): first-category insured from then."""
    return _birthday(birth, 65) - timedelta(days=1)


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _first_of(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _end_of(index: int) -> date:
    return _first_of(index + 1) - timedelta(days=1)


def _between(rng: random.Random, first: date, last: date) -> date:
    """A day in [first, last]; `first` when the range is empty."""
    if last <= first:
        return first
    return date.fromordinal(rng.randint(first.toordinal(), last.toordinal()))


# Persons' identities -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Certification:
    level: str
    applied_on: date
    certified_on: date
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class _Core:
    """What a person is in every list they appear in."""

    serial: int  # unique in the world
    individual_number: str
    sex: str
    birth_date: date
    family_name: str
    family_name_kana: str
    given_name: str
    given_name_kana: str
    dv_protected: bool
    public_assistance: bool
    pension: bool
    copayment: int
    certification: _Certification | None
    moved_on: date | None


class _Numbering:
    """Individual numbers: an affine bijection of the 11-digit bases, keyed by the seed."""

    MODULUS = 10**11

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"renkei-population/{seed}/numbering")
        self.factor = rng.randrange(10**9, 10**10) * 10 + rng.choice((1, 3, 7, 9))
        self.offset = rng.randrange(self.MODULUS)

    def number(self, serial: int) -> str:
        base = f"{(self.factor * serial + self.offset) % self.MODULUS:011d}"
        return base + str(check_digit(base))


def _draw_certification(rng: random.Random, age: int) -> _Certification | None:
    rate = 0.0
    for first_age, share in _CERTIFICATION_RATES:
        if age >= first_age:
            rate = share
    if rng.random() >= rate:
        return None
    level = _LEVEL_CODES[bisect.bisect(_LEVEL_CUM, rng.random() * _LEVEL_CUM[-1])]
    ref = REFERENCE_DATE
    if rng.random() < 0.7:  # a renewal: the period starts on the 1st and covers today
        months = rng.choice((12, 24, 36, 48))
        start_index = _month_index(ref) - rng.randrange(months)
        start = _first_of(start_index)
        end = _end_of(start_index + months - 1)
        applied = start - timedelta(days=rng.randint(20, 60))
        certified = applied + timedelta(days=rng.randint(14, 19))
    else:  # a first certification: the period starts on the day of application
        months = rng.choice((6, 12))
        applied = ref - timedelta(days=rng.randint(35, months * 30 - 5))
        start = applied
        end = _end_of(_month_index(applied) + months - 1)
        certified = applied + timedelta(days=rng.randint(25, 34))
    return _Certification(level, applied, certified, start, end)


def _make_core(
    rng: random.Random,
    serial: int,
    numbering: _Numbering,
    ages: _AgeSampler,
    moved_on: date | None = None,
    dv_protected: bool = False,
) -> _Core:
    """One person's identity; movers may be DV-protected at random (stayers: `_protect`)."""
    birth_ordinal = ages.birth_ordinal(rng)
    if moved_on is not None and birth_ordinal >= moved_on.toordinal():
        birth_ordinal = moved_on.toordinal() - rng.randint(30, 700)  # born before moving
    birth = date.fromordinal(birth_ordinal)
    age = _age(birth, REFERENCE_DATE)
    elderly = age >= 65
    sex = "2" if rng.random() < (_FEMALE_65_AND_OVER if elderly else _FEMALE_UNDER_65) else "1"
    names = _names()
    family, family_kana = names.family.draw(rng)
    given, given_kana = names.given[(sex, _cohort(birth.year))].draw(rng)
    assistance = rng.random() < (_ASSISTANCE_65_AND_OVER if elderly else _ASSISTANCE_UNDER_65)
    if elderly:
        pension = rng.random() < 0.985
    elif age >= 60:
        pension = rng.random() < 0.12
    elif age >= 20:
        pension = rng.random() < 0.015
    else:
        pension = False
    copayment = 1
    certification = None
    if _eve_of_65(birth) <= REFERENCE_DATE:
        pick = rng.random() * _COPAYMENT_CUM[-1]
        copayment = _COPAYMENT_WEIGHTS[bisect.bisect(_COPAYMENT_CUM, pick)][0]
        certification = _draw_certification(rng, age)
    if moved_on is not None and not dv_protected:
        dv_protected = rng.random() < _DV_RATE
    return _Core(
        serial=serial,
        individual_number=numbering.number(serial),
        sex=sex,
        birth_date=birth,
        family_name=family,
        family_name_kana=family_kana,
        given_name=given,
        given_name_kana=given_kana,
        dv_protected=dv_protected,
        public_assistance=assistance,
        pension=pension,
        copayment=copayment,
        certification=certification,
        moved_on=moved_on,
    )


def _stream_names() -> tuple[str, ...]:
    keys = list(MUNICIPALITIES)
    places = [*keys, ELSEWHERE]
    names = [f"stay/{k}" for k in keys]
    names += [f"move/{a}/{b}" for a in places for b in places if a != b]
    return tuple(names)


_STREAMS = {name: index for index, name in enumerate(_stream_names(), start=1)}
_SERIALS_PER_STREAM = 10**8
# 宛名番号 and 統合宛名番号 both end in the person's serial (below 5 × 10**9); the 宛名番号
# adds this so that the two numbers of a person differ.
_ADDRESS_NUMBER_BASE = 5 * 10**9


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"renkei-population/{seed}/{name}")


def _movers(
    seed: int, numbering: _Numbering, origin: str, destination: str, count: int
) -> list[_Core]:
    """The persons who moved from `origin` to `destination`: the same from either side."""
    name = f"move/{origin}/{destination}"
    rng = _stream(seed, name)
    base = _STREAMS[name] * _SERIALS_PER_STREAM
    between_wards = ELSEWHERE not in (origin, destination)
    cores = []
    for k in range(count):
        moved_on = _between(rng, FISCAL_YEAR_START, REFERENCE_DATE)
        elderly = between_wards and k < _ELDERLY_MOVERS
        cores.append(
            _make_core(
                rng,
                base + k,
                numbering,
                _ELDERLY if elderly else _MOVERS,
                moved_on=moved_on,
                dv_protected=between_wards and k == _DV_MOVER,
            )
        )
    return cores


# Sizes and flows ---------------------------------------------------------------------------


def _sizes(municipality: str, size: str | int) -> dict[str, int]:
    """Resident counts of the three wards: named sizes, or the other wards scaled alike."""
    if isinstance(size, str):
        try:
            return {key: SIZES[key][size] for key in MUNICIPALITIES}
        except KeyError:
            raise ValueError(
                f"unknown size {size!r}; one of {sorted(SIZES[municipality])}"
            ) from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a name or a positive integer, not {size!r}")
    scale = size / SIZES[municipality]["full"]
    return {
        key: size if key == municipality else max(1, round(SIZES[key]["full"] * scale))
        for key in MUNICIPALITIES
    }


def _flow(origin: str, destination: str, sizes: dict[str, int]) -> int:
    """Persons who moved from one ward to another during the fiscal year so far."""
    a, b = sizes[origin], sizes[destination]
    least = min(_MIN_FLOW, max(1, min(a, b) // 20))
    return max(least, round(_PAIR_RATE * a * b / (a + b)))


@dataclass(frozen=True)
class _Plan:
    residents: int
    moves_in: tuple[tuple[str, int], ...]  # (origin, count), ELSEWHERE last
    moves_out: tuple[tuple[str, int], ...]  # (destination, count), ELSEWHERE last

    @property
    def stayers(self) -> int:
        return self.residents - sum(n for _, n in self.moves_in)


def _plan(municipality: str, sizes: dict[str, int]) -> _Plan:
    n = sizes[municipality]
    others = [k for k in MUNICIPALITIES if k != municipality]
    moves_in = [(k, _flow(k, municipality, sizes)) for k in others]
    moves_out = [(k, _flow(municipality, k, sizes)) for k in others]
    expected = round(_MOVE_RATE * n)
    moves_in.append((ELSEWHERE, max(0, expected - sum(c for _, c in moves_in))))
    moves_out.append((ELSEWHERE, max(0, expected - sum(c for _, c in moves_out))))
    if sum(c for _, c in moves_in) > n:
        raise ValueError(f"size {n} is too small for {municipality}'s movers")
    return _Plan(n, tuple(moves_in), tuple(moves_out))


# One ward's list ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    core: _Core
    moved_in_from: str | None
    moved_out_to: str | None
    address: str
    care: tuple[date, date | None, str] | None  # acquired_on, lost_on, change_reason
    special_residence: SpecialResidence | None = None


def _care_span(
    rng: random.Random, core: _Core, moved_in: bool, moved_out: bool
) -> tuple[date, date | None, str] | None:
    """When the person was first-category insured in this ward, and the latest change."""
    eve = _eve_of_65(core.birth_date)
    if eve > REFERENCE_DATE:
        return None
    since = max(eve, SCHEME_START)
    reason = "03" if eve < SCHEME_START else "01"
    if moved_in:
        assert core.moved_on is not None
        return (core.moved_on, None, "02") if eve < core.moved_on else (eve, None, "01")
    if moved_out:
        assert core.moved_on is not None
        return (since, core.moved_on, "21") if eve < core.moved_on else None
    if rng.random() < _PAST_MOVE_IN_RATE and since < TAX_BASE_DATE:
        return _between(rng, since, TAX_BASE_DATE - timedelta(days=1)), None, "02"
    return since, None, reason


def _address(rng: random.Random, here: Municipality, cum: Sequence[float]) -> str:
    town = here.towns[bisect.bisect(cum, rng.random() * cum[-1])]
    ban, go = rng.randint(1, 28), rng.randint(1, 25)
    block = f"{rng.randint(1, town.chome)}-{ban}-{go}" if town.chome else f"{ban}-{go}"
    return f"{here.prefecture}{here.name}{town.name}{block}"


def generate(
    municipality: str, size: str | int = "small", seed: int = DEFAULT_SEED
) -> list[Person]:
    """One ward's persons: `size` current residents and, shuffled among them, those who
    moved out during the fiscal year.

    `size` is "small" or "full" (SIZES) or a resident count; with a count, the other wards'
    movers are drawn as if they were scaled alike, so only named sizes (and `world`) promise
    that a mover appears identically on both sides. The same arguments give the same list.
    """
    if municipality not in MUNICIPALITIES:
        raise ValueError(f"unknown municipality {municipality!r}; one of {sorted(MUNICIPALITIES)}")
    here = MUNICIPALITIES[municipality]
    plan = _plan(municipality, _sizes(municipality, size))
    numbering = _Numbering(seed)
    rng = _stream(seed, f"stay/{municipality}")
    places = _stream(seed, f"place/{municipality}")
    town_cum = _cumulative(max(1, town.chome) for town in here.towns)

    entries: list[_Entry] = []
    base = _STREAMS[f"stay/{municipality}"] * _SERIALS_PER_STREAM
    for k in range(plan.stayers):
        core = _make_core(rng, base + k, numbering, _RESIDENTS)
        entries.append(
            _Entry(
                core,
                None,
                None,
                _address(places, here, town_cum),
                _care_span(rng, core, False, False),
            )
        )
    stayers = len(entries)
    for origin, count in plan.moves_in:
        for core in _movers(seed, numbering, origin, municipality, count):
            care = _care_span(rng, core, True, False)
            entries.append(_Entry(core, origin, None, _address(places, here, town_cum), care))
    for destination, count in plan.moves_out:
        for core in _movers(seed, numbering, municipality, destination, count):
            care = _care_span(rng, core, False, True)
            entries.append(_Entry(core, None, destination, _address(places, here, town_cum), care))

    _protect(_stream(seed, f"dv/{municipality}"), entries[:stayers], plan.residents)
    _place_in_facilities(_stream(seed, f"facility/{municipality}"), entries[:stayers], here)
    _stream(seed, f"order/{municipality}").shuffle(entries)
    return _persons(here, entries)


def _protect(rng: random.Random, stayers: list[_Entry], residents: int) -> None:
    """Mark DV-protected stayers: DV_RATE of the residents, at least MIN_DV, one of them 65+."""
    count = max(_MIN_DV, round(_DV_RATE * residents))
    adults = [i for i, e in enumerate(stayers) if _age(e.core.birth_date, TAX_BASE_DATE) >= 16]
    insured = [i for i in adults if stayers[i].care is not None]
    chosen = rng.sample(insured, 1) if insured else []
    taken = set(chosen)
    rest = [i for i in adults if i not in taken]
    chosen += rng.sample(rest, min(len(rest), count - len(chosen)))
    for i in chosen:
        stayers[i].core = replace(stayers[i].core, dv_protected=True)


def _place_in_facilities(rng: random.Random, stayers: list[_Entry], here: Municipality) -> None:
    """住所地特例 for SPECIAL_RESIDENCE_RATE of the insured stayers, at least one."""
    insured = [i for i, e in enumerate(stayers) if e.care is not None]
    if not insured:
        return
    count = max(1, round(_SPECIAL_RESIDENCE_RATE * len(insured)))
    cared = [
        i for i in insured if (c := stayers[i].core.certification) is not None and c.level >= "21"
    ]
    chosen = rng.sample(cared, min(count, len(cared)))
    taken = set(chosen)
    rest = [i for i in insured if i not in taken]
    chosen += rng.sample(rest, min(len(rest), count - len(chosen)))
    facilities = [f for f in _FACILITIES if f.insurer_number != here.insurer_number]
    for i in sorted(chosen):
        entry = stayers[i]
        assert entry.care is not None
        facility = rng.choice(facilities)
        first = max(entry.care[0], REFERENCE_DATE - timedelta(days=8 * 365))
        entry.special_residence = SpecialResidence(
            facility.name,
            facility.insurer_number,
            _between(rng, first, REFERENCE_DATE - timedelta(days=30)),
        )


def _persons(here: Municipality, entries: list[_Entry]) -> list[Person]:
    """Make the persons in the entries' final order (insured numbers follow that order)."""
    persons = []
    insured = 0
    code5 = here.code[:5]
    for e in entries:
        core = e.core
        care = None
        if e.care is not None:
            insured += 1
            acquired, lost, reason = e.care
            cert = core.certification
            care = CareInsurance(
                insured_number=f"{code5[2:]}{insured:07d}",
                insurer_number=here.insurer_number,
                acquired_on=acquired,
                care_level=cert.level if cert else None,
                certified_from=cert.start if cert else None,
                certified_to=cert.end if cert else None,
                applied_on=cert.applied_on if cert else None,
                copayment=core.copayment,
                special_residence=e.special_residence,
                certified_on=cert.certified_on if cert else None,
                lost_on=lost,
                change_reason=reason,
            )
        persons.append(
            Person(
                individual_number=core.individual_number,
                # Numbered by serial, not by position: a person keeps their numbers in every
                # size of the population, so a larger one can be loaded over a smaller one.
                integrated_address_number=f"{code5}{core.serial:010d}",
                address_number=f"{code5}{_ADDRESS_NUMBER_BASE + core.serial:010d}",
                family_name=core.family_name,
                given_name=core.given_name,
                family_name_kana=core.family_name_kana,
                given_name_kana=core.given_name_kana,
                sex=core.sex,
                birth_date=core.birth_date,
                municipality=here.key,
                address=e.address,
                moved_in_on=core.moved_on if e.moved_in_from else None,
                moved_in_from=e.moved_in_from,
                moved_out_to=e.moved_out_to,
                care=care,
                dv_protected=core.dv_protected,
                public_assistance=core.public_assistance,
                pension=core.pension,
                moved_out_on=core.moved_on if e.moved_out_to else None,
                pension_integrated_address_number=f"3{core.serial:014d}" if core.pension else None,
            )
        )
    return persons


def world(size: str = "small", seed: int = DEFAULT_SEED) -> dict[str, list[Person]]:
    """The three wards' lists; a mover between two wards is in both, as the same person."""
    return {key: generate(key, size, seed) for key in MUNICIPALITIES}


# Replica records ---------------------------------------------------------------------------


def _derived(person: Person, purpose: str) -> random.Random:
    """A generator for details derived from the person alone (the same in every list)."""
    return random.Random(f"renkei-population/{person.individual_number}/{purpose}")


@dataclass(frozen=True)
class PensionDetails:
    """What the pension institution records about a pensioner (TM00000000900002)."""

    kind: str  # a key of PENSION_KINDS
    right_on: date  # 受給権発生年月日
    annual_amount: int  # yen per year
    special_collection: bool  # 特別徴収: 65+ with at least 180,000 yen a year


def pension_details(person: Person) -> PensionDetails | None:
    """The person's public pension, or None when `person.pension` is false."""
    if not person.pension:
        return None
    rng = _derived(person, "pension")
    age = person.age()
    copayment = person.care.copayment if person.care else 1
    if age >= 65:
        if rng.random() < 0.3 and copayment == 1:
            kind, amount = "01", rng.randrange(400_000, 816_001, 100)
        else:
            high = copayment == 3
            amount = rng.randrange(
                2_600_000 if high else 1_200_000, 4_000_001 if high else 2_600_001, 100
            )
            kind = "02"
        right_on = max(_eve_of_65(person.birth_date), date(1986, 4, 1))
    elif age >= 60:
        kind, amount = "02", rng.randrange(600_000, 1_800_001, 100)
        right_on = _birthday(person.birth_date, rng.randint(60, age)) - timedelta(days=1)
    else:
        kind = rng.choice(("03", "04", "05", "06"))
        amount = rng.randrange(600_000, 1_500_001, 100)
        right_on = _between(
            rng, _birthday(person.birth_date, 20), REFERENCE_DATE - timedelta(days=60)
        )
    return PensionDetails(kind, right_on, amount, age >= 65 and amount >= 180_000)


@dataclass(frozen=True)
class Income:
    """Income of a calendar year, the base of the next year's inhabitant tax."""

    total: int  # 合計所得金額
    public_pension: int  # 公的年金等収入額
    dependants: int  # 扶養親族数
    wages: int  # 給与収入 (for social-insurance deductions)


def _employment_income(wages: int) -> int:
    """給与所得: wages minus the 給与所得控除 (rules since 2020)."""
    if wages <= 1_625_000:
        deduction = 550_000
    elif wages <= 1_800_000:
        deduction = wages * 40 // 100 - 100_000
    elif wages <= 3_600_000:
        deduction = wages * 30 // 100 + 80_000
    elif wages <= 6_600_000:
        deduction = wages * 20 // 100 + 440_000
    elif wages <= 8_500_000:
        deduction = wages * 10 // 100 + 1_100_000
    else:
        deduction = 1_950_000
    return max(0, wages - deduction)


def _pension_income(amount: int) -> int:
    """雑所得 from public pensions of a person aged 65 or more (公的年金等控除, simplified)."""
    if amount <= 3_300_000:
        return max(0, amount - 1_100_000)
    if amount <= 4_100_000:
        return amount * 75 // 100 - 275_000
    return amount * 85 // 100 - 685_000


def income(person: Person, tax_year: int = TAX_YEAR) -> Income:
    """The person's (synthetic) income of the calendar year before ``tax_year``, the base of
    that year's inhabitant tax: TAX_YEAR (65+ persons' income fits their copayment ratio's
    bracket) or TAX_YEAR - 1 (a year earlier: a little different, docs/population.md)."""
    if tax_year not in (TAX_YEAR, TAX_YEAR - 1):
        raise ValueError(f"tax_year must be {TAX_YEAR} or {TAX_YEAR - 1}, not {tax_year!r}")
    current, previous = _incomes(person, previous=tax_year != TAX_YEAR)
    return current if previous is None else previous


def _incomes(person: Person, previous: bool) -> tuple[Income, Income | None]:
    """This year's income and, when asked, the previous year's (drawn after it, from the
    same generator, so this year's figures do not depend on whether it is asked)."""
    rng = _derived(person, "income")
    pension = pension_details(person)
    current = _current_income(person, rng, pension)
    return current, _previous_income(person, rng, pension, current) if previous else None


def _current_income(person: Person, rng: random.Random, pension: PensionDetails | None) -> Income:
    age = _age(person.birth_date, TAX_BASE_DATE)
    pension_amount = pension.annual_amount if pension else 0
    if person.public_assistance:
        return Income(rng.choice((0, 0, 0, 120_000, 240_000)), pension_amount, 0, 0)
    if age >= 65:
        base = _pension_income(pension_amount)
        copayment = person.care.copayment if person.care else 1
        if copayment == 3:
            total = max(base, rng.randrange(2_200_000, 6_000_001, 1_000))
        elif copayment == 2:
            total = max(base, rng.randrange(1_600_000, 2_200_000, 1_000))
        elif rng.random() < 0.75:
            total = base
        else:
            total = max(base, rng.randrange(base, 1_600_000, 1_000)) if base < 1_600_000 else base
        return Income(total, pension_amount, 0, 0)
    if age < 22:
        wages = 0 if rng.random() < 0.8 else rng.randrange(200_000, 1_300_001, 1_000)
        return Income(_employment_income(wages), pension_amount, 0, wages)
    if rng.random() < 0.10:
        wages = 0
    else:
        wages = min(50_000_000, int(math.exp(rng.gauss(math.log(5_000_000), 0.6))))
    dependants = 0
    if 30 <= age < 60 and wages:
        dependants = (0, 0, 0, 0, 0, 0, 1, 1, 2, 3)[rng.randrange(10)]
    return Income(
        _employment_income(wages) + _pension_income(pension_amount),
        pension_amount,
        dependants,
        wages,
    )


def _pension_received(pension: PensionDetails | None, year: int) -> int:
    """The public pension paid in calendar ``year`` (before TAX_YEAR - 1, whose pension is
    the annual amount): that amount before the yearly revisions since, from the month after
    the right arose (none before), rounded down to 100 yen."""
    if pension is None or pension.right_on.year > year:
        return 0
    months = 12 if pension.right_on.year < year else 12 - pension.right_on.month
    amount = pension.annual_amount / _PENSION_REVISION ** (TAX_YEAR - 1 - year)
    return int(amount * months / 12) // 100 * 100


def _previous_income(
    person: Person, rng: random.Random, pension: PensionDetails | None, current: Income
) -> Income:
    """The income of the year before ``current``'s: the same kind of income, a little
    different; drawn afresh by the younger age's rules for a person who turned 22 or 65."""
    age = _age(person.birth_date, date(TAX_YEAR - 1, 1, 1))
    age_now = _age(person.birth_date, TAX_BASE_DATE)
    received = _pension_received(pension, TAX_YEAR - 2)
    if person.public_assistance:
        return Income(rng.choice((0, 0, 0, 120_000, 240_000)), received, 0, 0)
    if age >= 65:  # pension plus other income (rents, savings, work), which varies
        other = current.total - _pension_income(current.public_pension)
        if other:
            other = int(other * rng.uniform(0.85, 1.15)) // 1_000 * 1_000
        return Income(_pension_income(received) + other, received, 0, 0)
    dependants = 0
    if (age < 22) == (age_now < 22) and age_now < 65:  # wages rose about 2 % since
        wages = int(current.wages * math.exp(rng.gauss(-0.02, 0.08))) // 1_000 * 1_000
        dependants = current.dependants if wages else 0
    elif age < 22:  # a student then, working now
        wages = 0 if rng.random() < 0.8 else rng.randrange(200_000, 1_300_001, 1_000)
    elif rng.random() < 0.4:  # 64 then, 65 now: retired already
        wages = 0
    else:
        wages = min(50_000_000, int(math.exp(rng.gauss(math.log(4_000_000), 0.5))))
    return Income(
        _employment_income(wages) + _pension_income(received), received, dependants, wages
    )


@dataclass(frozen=True)
class Assessment:
    """A year's individual inhabitant tax (個人住民税) of a person."""

    category: str  # a key of TAX_CATEGORIES
    municipal_per_capita: int  # 区市町村民税均等割額
    municipal_income_levy: int  # 所得割額
    prefectural_per_capita: int
    prefectural_income_levy: int


def assessment(person: Person, earned: Income) -> Assessment:
    """Inhabitant tax of a Tokyo special ward, simplified (docs/population.md)."""
    n = earned.dependants
    exempt_limit = 450_000 if n == 0 else 350_000 * (1 + n) + 310_000  # 1級地
    if person.public_assistance or earned.total <= exempt_limit:
        return Assessment("3", 0, 0, 0, 0)
    social_insurance = earned.wages * 15 // 100 if earned.wages else 100_000
    taxable = earned.total - 430_000 - 330_000 * n - social_insurance
    taxable = max(0, taxable // 1000 * 1000)
    municipal = taxable * 6 // 100 // 100 * 100
    prefectural = taxable * 4 // 100 // 100 * 100
    category = "1" if municipal else "2"
    return Assessment(category, 3_000, municipal, 1_000, prefectural)


def _ward_record_id(person: Person, system: str, part: str, seq: int = 0) -> str:
    prefix = MUNICIPALITIES[person.municipality].record_prefix
    return f"{prefix}-{system}-{part}-{person.integrated_address_number[-10:]}{seq:03d}"


def _record(
    person: Person,
    record_id: str,
    institution: str,
    data_set: str,
    items: dict[str, str | None],
    integrated_address_number: str | None = None,
) -> ReplicaRecord:
    return ReplicaRecord(
        record_id=record_id,
        integrated_address_number=integrated_address_number or person.integrated_address_number,
        information_name=INFORMATION_NAMES[institution],
        data_set=data_set,
        items={code: value for code, value in items.items() if value is not None},
        suppressed=person.dv_protected,
    )


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _copayment_period(on: date = REFERENCE_DATE) -> tuple[date, date]:
    """The 負担割合 period (1 August to 31 July) that holds ``on``."""
    year = on.year if on.month >= 8 else on.year - 1
    return date(year, 8, 1), date(year + 1, 7, 31)


def previous_certification(person: Person) -> Certification | None:
    """The certification before the person's current one, as their ward holds it, or None.

    A renewal (更新: applied before its period, which starts on the 1st) follows a previous
    certification that ended the day before; a first certification (its period starts on the
    day of application) has none. The previous one is itself a renewal or the first one, of
    the same level or one step away (lower most often), and the ward holds it only when it
    started while the person was insured there (from 資格取得, up to 資格喪失). Seeded by the
    person, so a mover's is the same in both lists (but each ward's eligibility decides).
    """
    care = person.care
    if care is None or care.care_level is None:
        return None
    current_from, current_to, applied = care.certified_from, care.certified_to, care.applied_on
    assert current_from is not None and current_to is not None and applied is not None
    if applied >= current_from:
        return None  # a first certification
    rng = _derived(person, "previous-certification")
    end = current_from - timedelta(days=1)
    last_month = _month_index(end)
    level = care.care_level
    if _month_index(current_to) - _month_index(current_from) + 1 < _LONGEST_PERIOD:
        steps = [step for step, _ in _PREVIOUS_LEVEL_STEPS]
        (step,) = rng.choices(steps, [weight for _, weight in _PREVIOUS_LEVEL_STEPS])
        index = _LEVEL_CODES.index(level) + step
        level = _LEVEL_CODES[min(max(index, 0), len(_LEVEL_CODES) - 1)]
    if rng.random() < _PREVIOUS_RENEWAL_RATE:
        months = rng.choice((12, 24, 36))
        start = _first_of(last_month - months + 1)
        applied_on = start - timedelta(days=rng.randint(20, 60))
        certified_on = applied_on + timedelta(days=rng.randint(14, 19))
    else:
        months = rng.choice((6, 12))
        first_month = last_month - months + 1
        start = applied_on = _between(rng, _first_of(first_month), _end_of(first_month))
        certified_on = applied_on + timedelta(days=rng.randint(25, 34))
    if start < care.acquired_on or (care.lost_on is not None and start > care.lost_on):
        return None
    return Certification(level, applied_on, certified_on, start, end)


def _certification_record(person: Person, seq: int, cert: Certification) -> ReplicaRecord:
    assert person.care is not None
    return _record(
        person,
        _ward_record_id(person, "KAIGO", "0201", seq),
        "care-insurance",
        "0201",
        {
            "TK00000402010001": person.care.insured_number,
            "TK00000402010002": cert.care_level,
            "TK00000402010003": cert.applied_on.isoformat(),
            "TK00000402010004": cert.certified_on.isoformat(),
            "TK00000402010005": cert.certified_from.isoformat(),
            "TK00000402010006": cert.certified_to.isoformat(),
            "TK00000402010007": str(BENEFIT_CAPS[cert.care_level]),
        },
    )


def _care_records(person: Person) -> list[ReplicaRecord]:
    care = person.care
    if care is None:
        return []
    number = care.insured_number
    records = [
        _record(
            person,
            _ward_record_id(person, "KAIGO", "0101"),
            "care-insurance",
            "0101",
            {
                "TK00000401010001": number,
                "TK00000401010002": care.insurer_number,
                "TK00000401010003": care.acquired_on.isoformat(),
                "TK00000401010004": _iso(care.lost_on),
                "TK00000401010005": care.change_reason,
                "TK00000401010006": "1",  # 第1号被保険者
            },
        )
    ]
    special = care.special_residence
    if special is not None:
        records.append(
            _record(
                person,
                _ward_record_id(person, "KAIGO", "0102"),
                "care-insurance",
                "0102",
                {
                    "TK00000401020001": number,
                    "TK00000401020002": special.facility_name,
                    "TK00000401020003": special.facility_insurer_number,
                    "TK00000401020004": special.started_on.isoformat(),
                },
            )
        )
    level = care.care_level
    if level is None:
        return records
    assert care.applied_on and care.certified_on and care.certified_from and care.certified_to
    current = Certification(
        level, care.applied_on, care.certified_on, care.certified_from, care.certified_to
    )
    records.append(_certification_record(person, 0, current))
    previous = previous_certification(person)
    if previous is not None:
        records.append(_certification_record(person, 1, previous))
    # The period in force on the day of the move for a person who moved out (their ward's
    # ratio ends then), else today's.
    start, end = _copayment_period(care.lost_on or REFERENCE_DATE)
    records.append(
        _record(
            person,
            _ward_record_id(person, "KAIGO", "0202"),
            "care-insurance",
            "0202",
            {
                "TK00000402020001": number,
                "TK00000402020002": str(care.copayment),
                "TK00000402020003": max(start, care.acquired_on).isoformat(),
                "TK00000402020004": (min(end, care.lost_on) if care.lost_on else end).isoformat(),
            },
        )
    )
    if care.lost_on is not None:  # benefits are paid by the current insurer only
        return records
    rng = _derived(person, "benefit")
    if level >= "21" and rng.random() < _BENEFIT_RATE:
        combined_end = date(start.year, 7, 31)  # the last complete August-July period
        for seq in range(rng.randint(1, 3)):
            month = _month_index(REFERENCE_DATE) - 2 - seq
            decided = _between(rng, _first_of(month + 2), min(_end_of(month + 2), REFERENCE_DATE))
            items = {
                "TK00000403000001": number,
                "TK00000403000002": f"{month // 12:04d}{month % 12 + 1:02d}",
                "TK00000403000003": str(rng.randrange(1_000, 60_001, 10)),
                "TK00000403000004": decided.isoformat(),
            }
            if seq == 0 and rng.random() < 1 / 3:
                items |= {
                    "TK00000403000005": date(combined_end.year - 1, 8, 1).isoformat(),
                    "TK00000403000006": combined_end.isoformat(),
                    "TK00000403000007": str(rng.randrange(100_000, 600_001, 10)),
                    "TK00000403000008": str(rng.randrange(10_000, 200_001, 10)),
                }
            records.append(
                _record(
                    person,
                    _ward_record_id(person, "KAIGO", "0300", seq),
                    "care-insurance",
                    "0300",
                    dict(items),
                )
            )
    if level < "21" and rng.random() < _PROGRAM_RATE:
        records.append(
            _record(
                person,
                _ward_record_id(person, "KAIGO", "0400"),
                "care-insurance",
                "0400",
                {
                    "TK00000404000001": number,
                    "TK00000404000002": "1",
                    "TK00000404000004": _iso(care.certified_from),
                },
            )
        )
    return records


def taxed_here(person: Person, tax_year: int = TAX_YEAR) -> bool:
    """Whether the person's ward assessed their inhabitant tax of ``tax_year`` (TAX_YEAR or
    TAX_YEAR - 1).

    That is the ward they lived in on 1 January of that year (賦課期日), aged 16 or more then:
    everyone in the list but those who moved in during the fiscal year and, for the previous
    year, the insured whose eligibility here began with a move-in (転入) after its 1 January.
    Persons who moved out during the fiscal year lived here on both days.
    """
    if tax_year not in (TAX_YEAR, TAX_YEAR - 1):
        raise ValueError(f"tax_year must be {TAX_YEAR} or {TAX_YEAR - 1}, not {tax_year!r}")
    base = date(tax_year, 1, 1)
    if person.moved_in_on is not None or _age(person.birth_date, base) < 16:
        return False
    care = person.care
    return care is None or care.change_reason != "02" or care.acquired_on <= base


def _tax_records(person: Person) -> list[ReplicaRecord]:
    if not taxed_here(person):
        return []
    previous = taxed_here(person, TAX_YEAR - 1)
    current_income, previous_income = _incomes(person, previous)
    years = [(TAX_YEAR, current_income)]
    if previous_income is not None:
        years.insert(0, (TAX_YEAR - 1, previous_income))
    records = []
    for year, earned in years:
        tax = assessment(person, earned)
        records.append(
            _record(
                person,
                _ward_record_id(person, "TAX", str(year)),
                "local-tax",
                "0101",
                {
                    "TK00000201010001": str(year),
                    "TK00000201010002": tax.category,
                    "TK00000201010003": str(tax.municipal_per_capita),
                    "TK00000201010004": str(tax.municipal_income_levy),
                    "TK00000201010005": str(tax.prefectural_per_capita),
                    "TK00000201010006": str(tax.prefectural_income_levy),
                    "TK00000201010007": str(earned.total),
                    "TK00000201010008": str(earned.public_pension),
                    "TK00000201010009": str(earned.dependants),
                },
            )
        )
    return records


def _welfare_records(person: Person) -> list[ReplicaRecord]:
    if not person.public_assistance:
        return []
    rng = _derived(person, "assistance")
    started = _between(rng, REFERENCE_DATE - timedelta(days=10 * 365), FISCAL_YEAR_START)
    if person.moved_in_on is not None:
        started = person.moved_in_on
    cared = person.care is not None and person.care.care_level is not None
    return [
        _record(
            person,
            _ward_record_id(person, "HOGO", "0101"),
            "welfare",
            "0101",
            {
                "TK90000101010001": "2" if person.moved_out_on else "1",
                "TK90000101010002": started.isoformat(),
                "TK90000101010003": _iso(person.moved_out_on),
                "TK90000101010004": "1" if cared else "0",
            },
        )
    ]


def _pension_records(person: Person) -> list[ReplicaRecord]:
    details = pension_details(person)
    number = person.pension_integrated_address_number
    if details is None or number is None:
        return []
    return [
        _record(
            person,
            f"NENKIN-0101-{number[-12:]}",
            "pension",
            "0101",
            {
                "TK90000201010001": details.kind,
                "TK90000201010002": details.right_on.isoformat(),
                "TK90000201010003": str(details.annual_amount),
                "TK90000201010004": "1" if details.special_collection else "0",
            },
            integrated_address_number=number,
        )
    ]


_BUILDERS = {
    "care-insurance": _care_records,
    "local-tax": _tax_records,
    "welfare": _welfare_records,
    "pension": _pension_records,
}


def replica_records(person: Person, institution: str) -> list[ReplicaRecord]:
    """The records `institution`'s back office holds about `person` (possibly none).

    `institution` is "care-insurance", "local-tax" or "welfare" (records of the person's
    ward, under its integrated address number), or "pension" (the pension institution's
    records, under `person.pension_integrated_address_number`: the same records whichever
    ward's list the person is taken from). Records of DV-protected persons are suppressed.
    """
    try:
        build = _BUILDERS[institution]
    except KeyError:
        raise ValueError(
            f"unknown institution {institution!r}; one of {sorted(_BUILDERS)}"
        ) from None
    return build(person)


# Files for the back-office simulators ------------------------------------------------------


def _csv_row(p: Person) -> list[str]:
    def flag(value: bool) -> str:
        return "1" if value else "0"

    return [
        p.individual_number,
        p.integrated_address_number,
        p.address_number,
        p.family_name,
        p.given_name,
        p.family_name_kana,
        p.given_name_kana,
        p.sex,
        p.birth_date.isoformat(),
        p.municipality,
        p.address,
        _iso(p.moved_in_on) or "",
        p.moved_in_from or "",
        _iso(p.moved_out_on) or "",
        p.moved_out_to or "",
        p.care.insured_number if p.care else "",
        (p.care.care_level or "") if p.care else "",
        flag(p.dv_protected),
        flag(p.public_assistance),
        flag(p.pension),
    ]


def write_population_csv(persons: Iterable[Person], path: Path | str) -> int:
    """Write persons as UTF-8 CSV with the header CSV_COLUMNS; the number of rows written."""
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for person in persons:
            writer.writerow(_csv_row(person))
            count += 1
    return count
