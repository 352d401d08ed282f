"""Tests for simulators.population: the seeded synthetic population and its replica records."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from codes.catalogue import default_catalogue
from codes.individual_number import validate_individual_number
from codes.institution import institution_code_for_municipality
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
    Person,
    generate,
    replica_records,
    taxed_here,
    world,
    write_population_csv,
)

MEDIUM = 20_000
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
    """Only persons who lived in the ward on 1 January, aged 16 or more, have a tax record."""
    for persons in small.values():
        for p in persons:
            records = replica_records(p, "local-tax")
            expected = p.moved_in_on is None and p.age(TAX_BASE_DATE) >= 16
            assert taxed_here(p) is expected
            assert len(records) == (1 if expected else 0)


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
    """A mover aged 16+ on 1 January has this year's tax record at the origin, none here."""
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
            assert len(replica_records(origin, "local-tax")) == 1
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
