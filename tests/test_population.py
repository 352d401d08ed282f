"""Tests for simulators.population: the seeded synthetic population and its replica records."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from codes.catalogue import default_catalogue
from codes.individual_number import validate_individual_number
from codes.institution import institution_code_for_municipality
from middleware import conditions
from middleware.messages import QueryConditions
from middleware.replica import RECORD_ID, ReplicaRecord
from simulators import population
from simulators.population import (
    CARE_LEVELS,
    CSV_COLUMNS,
    ELSEWHERE,
    FISCAL_YEAR_START,
    INFORMATION_NAMES,
    MUNICIPALITIES,
    REFERENCE_DATE,
    SIZES,
    TAX_BASE_DATE,
    TAX_YEAR,
    Person,
    assessment,
    generate,
    income,
    previous_certification,
    replica_records,
    taxed_here,
    world,
    write_population_csv,
)

MEDIUM = 20_000
LAST_TAX_BASE_DATE = date(TAX_YEAR - 1, 1, 1)  # 賦課期日 of the previous year's tax
KATAKANA = re.compile(r"[\u30a1-\u30fcー]+")


@pytest.fixture(scope="module")
def small() -> dict[str, list[Person]]:
    return world("small")


@pytest.fixture(scope="module")
def medium() -> list[Person]:
    return generate("meguro", MEDIUM)


def residents(persons: list[Person]) -> list[Person]:
    return [p for p in persons if p.resident]


def share(part: int, whole: int) -> float:
    return part / whole


# Determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_population() -> None:
    """Two runs with the same seed give equal persons in the same order."""
    assert generate("setagaya", "small", seed=7) == generate("setagaya", "small", seed=7)


def test_different_seed_gives_different_population() -> None:
    """Another seed gives other individual numbers and other names."""
    first = generate("meguro", "small", seed=1)
    second = generate("meguro", "small", seed=2)
    assert {p.individual_number for p in first}.isdisjoint({p.individual_number for p in second})
    assert [p.given_name for p in first] != [p.given_name for p in second]


def test_replica_records_are_deterministic(small: dict[str, list[Person]]) -> None:
    """A person's records are the same on every call, including the derived amounts."""
    for person in small["setagaya"][:50]:
        for institution in INFORMATION_NAMES:
            assert replica_records(person, institution) == replica_records(person, institution)


# Identifiers -------------------------------------------------------------------------------


def test_individual_numbers_are_valid_and_unique_across_the_world(
    small: dict[str, list[Person]],
) -> None:
    """Every individual number has a valid check digit, and one person has one number."""
    people: dict[str, tuple[str, date, str]] = {}
    for persons in small.values():
        for p in persons:
            validate_individual_number(p.individual_number)
            identity = (p.family_name + p.given_name, p.birth_date, p.sex)
            assert people.setdefault(p.individual_number, identity) == identity
    for persons in small.values():
        numbers = [p.individual_number for p in persons]
        assert len(numbers) == len(set(numbers))


def test_individual_numbers_are_unique_in_a_medium_population(medium: list[Person]) -> None:
    """Twenty thousand residents and their movers have twenty thousand-odd distinct numbers."""
    numbers = [p.individual_number for p in medium]
    assert len(set(numbers)) == len(numbers)
    for number in numbers[:2000]:
        validate_individual_number(number)


def test_integrated_address_numbers_are_unique_within_a_ward(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """団体内統合宛名番号 and 宛名番号 are 15 digits and unique within each ward's list."""
    for persons in [*small.values(), medium]:
        for numbers in (
            [p.integrated_address_number for p in persons],
            [p.address_number for p in persons],
        ):
            assert all(re.fullmatch(r"[0-9]{15}", n) for n in numbers)
            assert len(set(numbers)) == len(numbers)


def test_wards_carry_their_public_codes() -> None:
    """Each ward has its municipality code, institution code and 介護保険 insurer number."""
    meguro = MUNICIPALITIES["meguro"]
    assert (meguro.name, meguro.code, meguro.institution, meguro.insurer_number) == (
        "目黒区",
        "131105",
        "1131105000000000",
        "131102",
    )
    assert MUNICIPALITIES["setagaya"].code == "131121"
    assert MUNICIPALITIES["shibuya"].code == "131130"
    for ward in MUNICIPALITIES.values():
        assert ward.institution == institution_code_for_municipality(ward.code)
        assert re.fullmatch(r"13[0-9]{4}", ward.insurer_number)
        assert len(ward.towns) >= 20


def test_insurer_number_check_digit_follows_the_published_example() -> None:
    """The 保険者番号 rule gives the published example's check digit (千葉県警 3312001 → 5)."""
    assert population.care_insurer_number("3312001") == "33120015"


# Shares ------------------------------------------------------------------------------------


def test_age_pyramid_has_a_tokyo_wards_share_of_elderly(medium: list[Person]) -> None:
    """About 21–22 % of the residents are 65 or older, and all of them are insured."""
    people = residents(medium)
    elderly = [p for p in people if p.age() >= 65]
    assert 0.195 <= share(len(elderly), len(people)) <= 0.235
    assert all(p.care is not None for p in elderly)
    assert all(p.care is None for p in people if p.age() < 64)


def test_about_one_insured_in_five_is_certified_over_the_seven_levels(
    medium: list[Person],
) -> None:
    """About 20 % of the insured are certified, spread over 要支援1..要介護5 as documented."""
    insured = [p.care for p in residents(medium) if p.care is not None]
    levels = Counter(c.care_level for c in insured if c.care_level is not None)
    certified = sum(levels.values())
    assert 0.17 <= share(certified, len(insured)) <= 0.23
    expected = {"12": 14, "13": 14, "21": 20, "22": 17, "23": 13, "24": 12, "25": 10}
    assert set(levels) == set(CARE_LEVELS)
    for level, percent in expected.items():
        assert abs(100 * share(levels[level], certified) - percent) <= 4


def test_copayment_is_mostly_one_tenth(medium: list[Person]) -> None:
    """Copayment is 1割 for about 90 %, 2割 and 3割 for about 5 % each."""
    insured = [p.care for p in residents(medium) if p.care is not None]
    ratios = Counter(c.copayment for c in insured)
    assert set(ratios) == {1, 2, 3}
    assert 0.87 <= share(ratios[1], len(insured)) <= 0.93
    assert 0.03 <= share(ratios[2], len(insured)) <= 0.07
    assert 0.03 <= share(ratios[3], len(insured)) <= 0.07


def test_special_residence_is_about_one_percent_of_the_insured(medium: list[Person]) -> None:
    """About 1 % of the insured are 住所地特例 cases, in facilities of other insurers."""
    insured = [p.care for p in medium if p.care is not None and p.care.lost_on is None]
    special = [c.special_residence for c in insured if c.special_residence is not None]
    assert 0.005 <= share(len(special), len(insured)) <= 0.015
    assert all(s.facility_insurer_number != "131102" for s in special)


def test_movers_are_a_few_percent_each_way(medium: list[Person]) -> None:
    """3–4 % of the residents moved in this fiscal year and about as many moved out."""
    people = residents(medium)
    moved_in = [p for p in people if p.moved_in_on is not None]
    moved_out = [p for p in medium if p.moved_out_to is not None]
    assert 0.03 <= share(len(moved_in), len(people)) <= 0.045
    assert 0.03 <= share(len(moved_out), len(people)) <= 0.045
    assert {p.moved_in_from for p in moved_in} == {"setagaya", "shibuya", ELSEWHERE}
    assert {p.moved_out_to for p in moved_out} == {"setagaya", "shibuya", ELSEWHERE}
    for p in moved_in:
        assert p.moved_in_on is not None
        assert FISCAL_YEAR_START <= p.moved_in_on <= REFERENCE_DATE
    for p in moved_out:
        assert p.moved_out_on is not None
        assert FISCAL_YEAR_START <= p.moved_out_on <= REFERENCE_DATE


def test_welfare_dv_and_pension_shares(medium: list[Person]) -> None:
    """Public assistance ≈ 2.5 %, DV protection ≈ 0.05 %, pensions for nearly all 65+."""
    people = residents(medium)
    assert 0.02 <= share(sum(p.public_assistance for p in people), len(people)) <= 0.03
    dv = sum(p.dv_protected for p in people)
    assert 0.0003 * len(people) <= dv <= 0.0012 * len(people)
    elderly = [p for p in people if p.age() >= 65]
    assert share(sum(p.pension for p in elderly), len(elderly)) >= 0.97
    younger = [p for p in people if p.age() < 65]
    assert 0 < sum(p.pension for p in younger) < 0.05 * len(younger)


def test_names_pair_kanji_and_kana_and_fit_the_sex(medium: list[Person]) -> None:
    """Kana are katakana, a given name is only ever used for one sex, and names vary."""
    sexes: dict[tuple[str, str], set[str]] = {}
    for p in medium:
        assert p.sex in ("1", "2")
        assert KATAKANA.fullmatch(p.family_name_kana) and KATAKANA.fullmatch(p.given_name_kana)
        sexes.setdefault((p.given_name, p.given_name_kana), set()).add(p.sex)
    assert all(len(s) == 1 for s in sexes.values())
    assert len({(p.family_name, p.given_name) for p in medium}) > 5_000


# Addresses ---------------------------------------------------------------------------------


def test_addresses_lie_inside_the_ward(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """Every address is 東京都<ward><one of its towns><丁目>-<番>-<号> (or <番>-<号>)."""
    for persons in [*small.values(), medium]:
        for p in persons:
            ward = MUNICIPALITIES[p.municipality]
            prefix = f"東京都{ward.name}"
            assert p.address.startswith(prefix)
            rest = p.address[len(prefix) :]
            towns = [t for t in ward.towns if re.fullmatch(re.escape(t.name) + r"[0-9-]+", rest)]
            assert towns, p.address
            numbers = rest[len(towns[0].name) :].split("-")
            assert len(numbers) == (3 if towns[0].chome else 2)
            if towns[0].chome:
                assert 1 <= int(numbers[0]) <= towns[0].chome


# Care insurance ----------------------------------------------------------------------------


def test_care_insurance_details_are_consistent(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """Insured numbers are unique per ward; certifications are current and well ordered."""
    for persons in [*small.values(), medium]:
        cares = [p.care for p in persons if p.care is not None]
        numbers = [c.insured_number for c in cares]
        assert len(set(numbers)) == len(numbers)
        for p in persons:
            c = p.care
            if c is None:
                continue
            assert re.fullmatch(r"[0-9]{10}", c.insured_number)
            assert c.insurer_number == MUNICIPALITIES[p.municipality].insurer_number
            assert c.acquired_on <= REFERENCE_DATE
            assert (c.lost_on is not None) == (p.moved_out_to is not None)
            if c.care_level is None:
                assert c.certified_from is c.certified_to is c.applied_on is None
                continue
            assert c.care_level in CARE_LEVELS
            assert c.applied_on is not None and c.certified_on is not None
            assert c.certified_from is not None and c.certified_to is not None
            assert c.applied_on <= c.certified_on <= REFERENCE_DATE
            assert c.applied_on <= c.certified_from <= REFERENCE_DATE <= c.certified_to


# Replica records ---------------------------------------------------------------------------


def all_records(persons: list[Person]) -> list[tuple[str, Person, ReplicaRecord]]:
    return [
        (institution, p, record)
        for p in persons
        for institution in INFORMATION_NAMES
        for record in replica_records(p, institution)
    ]


def test_every_replica_record_is_valid_against_the_catalogue(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """Every record has a valid record id and items the catalogue accepts."""
    catalogue = default_catalogue()
    seen: Counter[tuple[str, str]] = Counter()
    for persons in [*small.values(), medium[:5000]]:
        for p in persons:
            for institution, code in INFORMATION_NAMES.items():
                for record in replica_records(p, institution):
                    assert RECORD_ID.fullmatch(record.record_id)
                    assert record.information_name == code
                    catalogue.validate_record(code, record.data_set, record.items)
                    seen[(institution, record.data_set)] += 1
    assert set(seen) == {
        ("care-insurance", "0101"),
        ("care-insurance", "0102"),
        ("care-insurance", "0201"),
        ("care-insurance", "0202"),
        ("care-insurance", "0300"),
        ("care-insurance", "0400"),
        ("local-tax", "0101"),
        ("welfare", "0101"),
        ("pension", "0101"),
    }


def test_record_ids_are_unique_per_institution(small: dict[str, list[Person]]) -> None:
    """A ward's record ids never repeat; a pension record id always means the same record."""
    pension: dict[str, ReplicaRecord] = {}
    for persons in small.values():
        ids = [
            r.record_id
            for p in persons
            for institution in ("care-insurance", "local-tax", "welfare")
            for r in replica_records(p, institution)
        ]
        assert len(ids) == len(set(ids))
        for p in persons:
            for r in replica_records(p, "pension"):
                assert pension.setdefault(r.record_id, r) == r


def test_records_are_filed_under_the_institutions_person_number(
    small: dict[str, list[Person]],
) -> None:
    """Ward records use the ward's integrated address number, pension records the pension one."""
    for institution, p, record in all_records(small["meguro"]):
        expected = (
            p.pension_integrated_address_number
            if institution == "pension"
            else p.integrated_address_number
        )
        assert record.integrated_address_number == expected


def test_dv_protected_persons_have_only_suppressed_records(
    small: dict[str, list[Person]],
) -> None:
    """Records of DV-protected persons carry the suppression flag; nobody else's do."""
    protected = 0
    for persons in small.values():
        assert sum(p.dv_protected for p in persons if p.resident) >= 2
        for _, p, record in all_records(persons):
            assert record.suppressed is p.dv_protected
            protected += p.dv_protected
    assert protected > 0


def test_local_tax_records_are_for_residents_of_1_january_aged_16(
    small: dict[str, list[Person]],
) -> None:
    """Only persons who lived in the ward on 1 January, aged 16 or more, have this year's
    tax record."""
    for persons in small.values():
        for p in persons:
            years = [r.items["TK00000201010001"] for r in replica_records(p, "local-tax")]
            expected = p.moved_in_on is None and p.age(TAX_BASE_DATE) >= 16
            assert taxed_here(p) is expected
            assert (str(TAX_YEAR) in years) is expected


def test_welfare_and_pension_records_follow_the_flags(small: dict[str, list[Person]]) -> None:
    """Welfare records exist for public-assistance persons, pension records for pensioners."""
    for persons in small.values():
        for p in persons:
            assert bool(replica_records(p, "welfare")) is p.public_assistance
            assert bool(replica_records(p, "pension")) is p.pension


def test_unknown_institution_is_refused() -> None:
    """replica_records refuses an institution it does not know."""
    person = generate("meguro", "small")[0]
    with pytest.raises(ValueError, match="unknown institution"):
        replica_records(person, "police")


# Earlier tax years and certifications -----------------------------------------------------


def tax_years(person: Person) -> dict[int, ReplicaRecord]:
    return {int(r.items["TK00000201010001"]): r for r in replica_records(person, "local-tax")}


def certifications(person: Person) -> list[ReplicaRecord]:
    return [r for r in replica_records(person, "care-insurance") if r.data_set == "0201"]


def test_persons_who_lived_in_the_ward_the_year_before_have_two_tax_years(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """A person who lived in the ward on the previous 1 January aged 16+ (stayers and the
    year's movers out) has the tax of TAX_YEAR - 1 and TAX_YEAR, each with its own id."""
    two = movers_out = 0
    for persons in [*small.values(), medium]:
        for p in persons:
            if p.moved_in_on is not None or p.age(LAST_TAX_BASE_DATE) < 16:
                continue
            care = p.care
            if (
                care is not None
                and care.change_reason == "02"
                and care.acquired_on > LAST_TAX_BASE_DATE
            ):
                continue  # moved in during the previous year
            assert taxed_here(p, TAX_YEAR - 1)
            years = tax_years(p)
            assert sorted(years) == [TAX_YEAR - 1, TAX_YEAR]
            assert all(f"-TAX-{year}-" in r.record_id for year, r in years.items())
            two += 1
            movers_out += p.moved_out_to is not None
    assert two > 10_000 and movers_out > 500


def test_persons_who_moved_in_have_one_tax_year_or_none(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """A mover in this year has no tax record here; an insured person who moved in during
    the previous year, or who turned 16 after its 1 January, has this year's only."""
    moved_last_year = turned_16 = 0
    for persons in [*small.values(), medium]:
        for p in persons:
            if p.moved_in_on is not None:
                assert tax_years(p) == {} and not taxed_here(p, TAX_YEAR - 1)
                continue
            care = p.care
            if (
                care is not None
                and care.change_reason == "02"
                and care.acquired_on > LAST_TAX_BASE_DATE
            ):
                assert care.acquired_on < TAX_BASE_DATE
                assert list(tax_years(p)) == [TAX_YEAR]
                moved_last_year += 1
            elif p.age(LAST_TAX_BASE_DATE) < 16 <= p.age(TAX_BASE_DATE):
                assert list(tax_years(p)) == [TAX_YEAR]
                turned_16 += 1
    assert moved_last_year >= 20 and turned_16 >= 100


def test_previous_tax_year_is_plausible_and_assessed_by_the_same_rules(
    medium: list[Person],
) -> None:
    """The previous year's record is the assessment of the previous year's income, which
    stays close to this year's for most (same kind of income, pensions before revision)."""
    close = compared = 0
    for p in medium[:6000]:
        if not taxed_here(p, TAX_YEAR - 1):
            continue
        before, now = income(p, TAX_YEAR - 1), income(p)
        items = tax_years(p)[TAX_YEAR - 1].items
        tax = assessment(p, before)
        assert items["TK00000201010002"] == tax.category
        assert items["TK00000201010004"] == str(tax.municipal_income_levy)
        assert items["TK00000201010007"] == str(before.total)
        assert items["TK00000201010008"] == str(before.public_pension)
        assert before.public_pension <= now.public_pension
        if p.public_assistance:
            assert tax.category == "3"
        if now.total:
            compared += 1
            close += 0.7 <= before.total / now.total <= 1.3
    assert close > 0.9 * compared


def test_earlier_tax_year_is_deterministic_and_leaves_this_years_unchanged(
    small: dict[str, list[Person]],
) -> None:
    """The previous year's income is the same on every call and for a mover in both lists,
    and asking it does not change this year's figures."""
    for p in small["setagaya"][:100]:
        now = income(p)
        assert income(p, TAX_YEAR - 1) == income(p, TAX_YEAR - 1)
        assert income(p) == now
    regenerated = {p.individual_number: p for p in world("small")["setagaya"]}
    for p in small["setagaya"]:
        assert tax_years(regenerated[p.individual_number]) == tax_years(p)
    with pytest.raises(ValueError):
        income(small["meguro"][0], TAX_YEAR - 2)


def test_a_fiscal_year_condition_selects_one_of_the_two_tax_years(
    small: dict[str, list[Person]],
) -> None:
    """A query for fiscal year TAX_YEAR meets this year's tax record and not last year's."""
    data_set = default_catalogue().information_name(INFORMATION_NAMES["local-tax"]).data_sets[0]
    asked = QueryConditions(fiscal_year=TAX_YEAR)
    for p in small["shibuya"]:
        met = [
            r for r in replica_records(p, "local-tax") if conditions.meets(asked, data_set, r.items)
        ]
        assert [r.items["TK00000201010001"] for r in met] == (
            [str(TAX_YEAR)] if taxed_here(p) else []
        )


def test_previous_certifications_end_the_day_before_the_current_one_starts(
    small: dict[str, list[Person]], medium: list[Person]
) -> None:
    """A previous certification ends the day before the current period, never starts
    before the person's acquisition of eligibility, was applied for and decided in order,
    and its level is the current one or a neighbour (the same when the current period is
    the 48-month one); its 0201 record is the second one, with its own id."""
    seen = 0
    for persons in [*small.values(), medium]:
        for p in persons:
            previous = previous_certification(p)
            records = certifications(p)
            if previous is None:
                assert len(records) <= 1
                continue
            care = p.care
            assert care is not None and care.certified_from and care.certified_to
            assert care.applied_on is not None
            assert previous.certified_to == care.certified_from - timedelta(days=1)
            assert care.acquired_on <= previous.certified_from < previous.certified_to
            assert care.lost_on is None or previous.certified_from <= care.lost_on
            assert previous.applied_on <= previous.certified_from
            assert previous.applied_on <= previous.certified_on < care.applied_on
            levels = list(CARE_LEVELS)
            step = levels.index(previous.care_level) - levels.index(str(care.care_level))
            assert abs(step) <= 1
            months = (care.certified_to.year - care.certified_from.year) * 12
            months += care.certified_to.month - care.certified_from.month + 1
            if months == 48:
                assert step == 0
            current, earlier = records
            assert earlier.items["TK00000402010005"] == previous.certified_from.isoformat()
            assert earlier.items["TK00000402010006"] == previous.certified_to.isoformat()
            assert earlier.items["TK00000402010002"] == previous.care_level
            assert current.record_id != earlier.record_id
            assert earlier.suppressed is p.dv_protected
            seen += 1
    assert seen > 500


def test_only_renewals_have_a_previous_certification_in_a_realistic_share(
    medium: list[Person],
) -> None:
    """First certifications (the period starts on the day of application) have none; about
    two certified persons in three have their previous certification, lower more often than
    higher."""
    certified = [p for p in medium if p.care is not None and p.care.care_level is not None]
    previous = {p.individual_number: previous_certification(p) for p in certified}
    for p in certified:
        assert p.care is not None
        if p.care.applied_on == p.care.certified_from:
            assert previous[p.individual_number] is None
    with_previous = [p for p in certified if previous[p.individual_number] is not None]
    assert 0.55 <= share(len(with_previous), len(certified)) <= 0.75
    lower = higher = 0
    for p in with_previous:
        before = previous[p.individual_number]
        assert before is not None and p.care is not None and p.care.care_level is not None
        lower += before.care_level < p.care.care_level
        higher += before.care_level > p.care.care_level
    assert lower > 2 * higher > 0


def test_previous_certifications_are_deterministic(small: dict[str, list[Person]]) -> None:
    """A new generation of the same seed gives the same previous certifications and records."""
    again = world("small")
    for key, persons in small.items():
        for p, q in zip(persons, again[key], strict=True):
            assert previous_certification(p) == previous_certification(q)
            assert certifications(p) == certifications(q)


def test_a_period_condition_of_today_selects_the_current_certification_only(
    medium: list[Person],
) -> None:
    """A query for the certification valid today meets the current 0201 record and not the
    previous one."""
    data_sets = default_catalogue().information_name(INFORMATION_NAMES["care-insurance"]).data_sets
    data_set = next(d for d in data_sets if d.code == "0201")
    today = QueryConditions(period_start=REFERENCE_DATE, period_end=REFERENCE_DATE)
    checked = 0
    for p in medium[:5000]:
        records = certifications(p)
        if len(records) == 2:
            met = [r.record_id for r in records if conditions.meets(today, data_set, r.items)]
            assert met == [records[0].record_id]
            checked += 1
    assert checked > 50


def test_a_mover_outs_copayment_period_ends_on_the_move(medium: list[Person]) -> None:
    """The 負担割合 record of a certified person who moved out is the period in force on the
    day of the move, ending that day."""
    checked = 0
    for p in medium:
        if p.care is None or p.care.lost_on is None or p.care.care_level is None:
            continue
        (record,) = [r for r in replica_records(p, "care-insurance") if r.data_set == "0202"]
        start, end = record.items["TK00000402020003"], record.items["TK00000402020004"]
        assert start <= end == p.care.lost_on.isoformat()
        checked += 1
    assert checked > 5


# The world ---------------------------------------------------------------------------------


def test_every_mover_between_wards_is_in_the_origin_list(small: dict[str, list[Person]]) -> None:
    """A mover into X from Y is in Y's list as moved out to X: same number, name and date."""
    movers = 0
    for key, persons in small.items():
        for p in persons:
            if p.moved_in_from is None or p.moved_in_from == ELSEWHERE:
                continue
            origin = {q.individual_number: q for q in small[p.moved_in_from]}
            q = origin[p.individual_number]
            assert q.moved_out_to == key and q.moved_out_on == p.moved_in_on
            assert (q.family_name, q.given_name, q.birth_date) == (
                p.family_name,
                p.given_name,
                p.birth_date,
            )
            assert q.integrated_address_number != p.integrated_address_number
            movers += 1
    assert movers == sum(
        p.moved_out_to not in (None, ELSEWHERE) for ps in small.values() for p in ps
    )


def test_movers_local_tax_record_is_at_their_origin(small: dict[str, list[Person]]) -> None:
    """A mover aged 16+ on 1 January has this year's tax record at the origin (and last
    year's when 16+ then too), none here."""
    checked = 0
    for persons in small.values():
        for p in persons:
            if p.moved_in_from in (None, ELSEWHERE) or p.age(TAX_BASE_DATE) < 16:
                continue
            assert p.moved_in_from is not None
            assert replica_records(p, "local-tax") == []
            origin = next(
                q for q in small[p.moved_in_from] if q.individual_number == p.individual_number
            )
            years = {r.items["TK00000201010001"] for r in replica_records(origin, "local-tax")}
            expected = {TAX_YEAR, TAX_YEAR - 1} if p.age(LAST_TAX_BASE_DATE) >= 16 else {TAX_YEAR}
            assert years == {str(year) for year in expected}
            checked += 1
    assert checked > 20


def test_small_world_has_movers_and_every_use_case(small: dict[str, list[Person]]) -> None:
    """Small lists have the documented sizes, ≥10 movers per pair of wards, and insured,
    certified, special-residence, public-assistance and DV-protected movers in them."""
    for key, persons in small.items():
        assert len(residents(persons)) == SIZES[key]["small"]
    flows = Counter((p.moved_in_from, k) for k, ps in small.items() for p in ps if p.moved_in_from)
    assert flows[("setagaya", "meguro")] >= 10
    assert flows[("meguro", "shibuya")] >= 10
    meguro = small["meguro"]
    insured_movers = [p for p in meguro if p.moved_in_from == "setagaya" and p.care]
    assert len(insured_movers) >= 3
    assert any(p.dv_protected for p in meguro if p.moved_in_from == "setagaya")
    assert any(p.care and p.care.care_level for p in meguro)
    assert any(p.care and p.care.special_residence for p in meguro)
    assert any(p.public_assistance for p in meguro)


def test_insured_mover_changes_insurer_on_the_day_of_the_move(
    small: dict[str, list[Person]],
) -> None:
    """An insured mover lost eligibility at the origin the day they acquired it here."""
    for p in small["meguro"]:
        if p.moved_in_from != "setagaya" or p.care is None or p.care.change_reason != "02":
            continue
        origin = next(q for q in small["setagaya"] if q.individual_number == p.individual_number)
        assert origin.care is not None
        assert origin.care.lost_on == p.care.acquired_on == p.moved_in_on
        assert origin.care.insurer_number == "131128"
        assert p.care.insurer_number == "131102"


def test_a_resident_count_gives_that_many_residents() -> None:
    """An integer size is the number of current residents; movers out come on top."""
    persons = generate("shibuya", 1234)
    assert len(residents(persons)) == 1234
    assert len(persons) > 1234


def test_unknown_municipality_and_size_are_refused() -> None:
    """generate refuses an unknown ward, an unknown size name and a non-positive count."""
    with pytest.raises(ValueError):
        generate("osaka")
    with pytest.raises(ValueError):
        generate("meguro", "huge")
    with pytest.raises(ValueError):
        generate("meguro", 0)


# CSV ---------------------------------------------------------------------------------------


def test_population_csv_has_the_documented_columns(
    small: dict[str, list[Person]], tmp_path: Path
) -> None:
    """write_population_csv writes a header and one UTF-8 row per person."""
    path = tmp_path / "meguro.csv"
    persons = small["meguro"]
    assert write_population_csv(persons, path) == len(persons)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(persons)
    first = persons[0]
    assert rows[0]["individual_number"] == first.individual_number
    assert rows[0]["family_name_kana"] == first.family_name_kana
    assert rows[0]["birth_date"] == first.birth_date.isoformat()
    assert {r["dv_protected"] for r in rows} == {"0", "1"}


def test_a_person_keeps_their_numbers_in_every_size() -> None:
    """A person in both a small and a larger population of a ward has the same individual,
    integrated address and address numbers in both, so the larger can be loaded over the
    smaller one."""
    small = {p.individual_number: p for p in generate("meguro", "small")}
    larger = {p.individual_number: p for p in generate("meguro", 3000)}
    shared = small.keys() & larger.keys()
    assert len(shared) > len(small) // 2
    for number in shared:
        assert small[number].integrated_address_number == larger[number].integrated_address_number
        assert small[number].address_number == larger[number].address_number
