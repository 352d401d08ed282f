"""Tests for codes.catalogue: the data standard layout, its loading and record validation."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from codes import errors
from codes.catalogue import (
    Catalogue,
    CatalogueError,
    ItemType,
    default_catalogue,
    in_force,
    load_catalogue,
    load_catalogues,
    parse_catalogue,
    parse_catalogues,
)
from codes.errors import RenkeiError
from codes.typed import (
    information_name_of_item,
    validate_affair_code,
    validate_data_set_code,
    validate_information_name_code,
    validate_item_code,
    validate_procedure_code,
)

CARE = "TM00000000000004"
TAX = "TM00000000000002"
PACKAGED = Path(__file__).resolve().parent.parent / "codes" / "data" / "catalogue.json"


@pytest.fixture
def catalogue() -> Catalogue:
    return default_catalogue()


@pytest.fixture
def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PACKAGED.read_text(encoding="utf-8"))
    return data


def item_code(catalogue: Catalogue, information_name: str, data_set: str, name: str) -> str:
    for item in catalogue.information_name(information_name).data_set(data_set).items:
        if item.name == name:
            return item.code
    raise AssertionError(f"no item {name} in {information_name}/{data_set}")


# Loading ------------------------------------------------------------------------------------


def test_default_catalogue_is_loaded_once() -> None:
    """default_catalogue returns the same object on every call."""
    assert default_catalogue() is default_catalogue()


def test_packaged_catalogue_has_version_2026_1(catalogue: Catalogue) -> None:
    """The packaged data standard layout is version 2026.1."""
    assert catalogue.version == "2026.1"


def test_versions_are_in_force_one_after_another() -> None:
    """Each version is in force from its valid_from until the next one starts, and an entry
    marked since a version is absent before it."""
    versions = load_catalogues()
    assert [(c.version, c.valid_from, c.valid_until) for c in versions] == [
        ("2025.1", date(2025, 6, 1), date(2026, 6, 1)),
        ("2026.1", date(2026, 6, 1), None),
    ]
    assert in_force(versions, date(2026, 5, 31)).version == "2025.1"
    assert in_force(versions, date(2026, 6, 1)).version == "2026.1"
    assert in_force(versions, date(2020, 1, 1)).version == "2025.1"
    resident = "TM00000000900003"
    assert versions[1].information_name(resident).name == "住民票関係情報"
    with pytest.raises(RenkeiError) as info:
        versions[0].information_name(resident)
    assert info.value.kind is errors.UNKNOWN_INFORMATION_NAME


def test_an_entry_until_a_version_is_gone_from_it(raw: dict[str, Any]) -> None:
    """An item with until is part of the versions before that one only."""
    raw["versions"].append({"version": "2027.1", "valid_from": "2027-06-01"})
    raw["information_names"][0]["data_sets"][0]["items"][5]["until"] = "2027.1"
    text = json.dumps(raw, ensure_ascii=False)
    old, _, new = parse_catalogues(text, "test.json")
    assert len(old.information_name(CARE).data_set("0101").items) == 6
    assert len(new.information_name(CARE).data_set("0101").items) == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(versions=[]), "at least one version"),
        (lambda raw: raw["versions"][1].update(valid_from="2024-01-01"), "increasing order"),
        (lambda raw: raw["versions"][0].update(valid_from="June"), "YYYY-MM-DD"),
        (lambda raw: raw["information_names"][0].update(since="1999.9"), "unknown version"),
        (
            lambda raw: raw["information_names"][0].update(since="2026.1", until="2025.1"),
            "later version",
        ),
    ],
)
def test_bad_versions_are_rejected_on_load(
    raw: dict[str, Any], change: Callable[[dict[str, Any]], None], message: str
) -> None:
    """Missing, unordered or malformed versions and unknown since/until are load errors."""
    change(raw)
    with pytest.raises(CatalogueError) as info:
        parse(raw)
    assert message in str(info.value)


def test_load_catalogue_from_path_equals_packaged(catalogue: Catalogue) -> None:
    """Loading the file by path gives the same catalogue as the packaged resource."""
    assert load_catalogue(PACKAGED) == catalogue


def test_care_insurance_information_name_is_public_not_emulated(catalogue: Catalogue) -> None:
    """TM00000000000004 carries its public name and is not marked emulated."""
    care = catalogue.information_name(CARE)
    assert care.name == "介護保険法における保険給付の支給若しくは保険料の徴収に関する情報"
    assert not care.emulated
    assert not care.name_inferred


def test_care_insurance_data_sets_are_the_public_ones(catalogue: Catalogue) -> None:
    """TM00000000000004 has exactly the six public data sets, none marked emulated."""
    care = catalogue.information_name(CARE)
    assert [(ds.code, ds.name) for ds in care.data_sets] == [
        ("0101", "被保険者情報"),
        ("0102", "住所地特例"),
        ("0201", "受給者基本情報"),
        ("0202", "負担割合"),
        ("0300", "給付情報"),
        ("0400", "総合事業"),
    ]
    assert not any(ds.emulated for ds in care.data_sets)


def test_care_insurance_items_include_the_publicly_seen_ones(catalogue: Catalogue) -> None:
    """The items named in public vendor code are present in TM00000000000004."""
    names = {item.name for item in catalogue.information_name(CARE).items()}
    for name in [
        "被保険者番号",
        "保険者番号",
        "資格取得年月日",
        "資格喪失年月日",
        "資格異動事由",
        "被保険者区分",
        "要介護状態区分",
        "認定申請年月日",
        "区分支給限度基準額",
        "負担割合",
    ]:
        assert name in names


def test_local_tax_name_is_marked_inferred(catalogue: Catalogue) -> None:
    """TM00000000000002's name 地方税関係情報 is an inference and is marked so."""
    tax = catalogue.information_name(TAX)
    assert tax.name == "地方税関係情報"
    assert tax.name_inferred
    names = {item.name for item in tax.items()}
    assert {"市町村民税均等割額", "市町村民税所得割額", "合計所得金額"} <= names


def test_invented_information_names_are_marked_emulated(catalogue: Catalogue) -> None:
    """Public assistance and pension information names exist and are marked emulated."""
    by_name = {n.name: n for n in catalogue.information_names}
    for name in ["生活保護関係情報", "年金給付関係情報"]:
        assert by_name[name].emulated
        assert all(ds.emulated for ds in by_name[name].data_sets)


def test_every_item_code_carries_its_information_name_number(catalogue: Catalogue) -> None:
    """Every item code validates and its 6 digits after TK are its information name's number."""
    count = 0
    for name in catalogue.information_names:
        for ds in name.data_sets:
            assert ds.items
            for item in ds.items:
                assert validate_item_code(item.code) == item.code
                assert information_name_of_item(item.code) == name.code
                assert item.information_name == name.code
                assert item.data_set == ds.code
                count += 1
    assert count > 0


def test_every_code_in_the_catalogue_validates(catalogue: Catalogue) -> None:
    """Information name, data set, affair and procedure codes all have the right format."""
    for name in catalogue.information_names:
        validate_information_name_code(name.code)
        for ds in name.data_sets:
            validate_data_set_code(ds.code)
    for procedure in catalogue.procedures:
        validate_affair_code(procedure.affair)
        validate_procedure_code(procedure.code)


def test_item_codes_are_unique_across_the_catalogue(catalogue: Catalogue) -> None:
    """No item code appears twice, even across data sets."""
    codes = [item.code for n in catalogue.information_names for item in n.items()]
    assert len(codes) == len(set(codes))


def test_every_item_code_is_marked_emulated(catalogue: Catalogue) -> None:
    """Item codes are not public, so every item is marked emulated."""
    assert all(item.emulated for n in catalogue.information_names for item in n.items())


def test_procedures_cover_care_insurance_and_local_tax(catalogue: Catalogue) -> None:
    """The care-insurance affair has its three procedures and local tax has 住民税の賦課."""
    by_affair: dict[str, set[str]] = {}
    for p in catalogue.procedures:
        assert p.emulated
        by_affair.setdefault(p.affair_name, set()).add(p.name)
    assert by_affair["介護保険法による保険給付の支給又は保険料の徴収に関する事務"] == {
        "保険料の賦課",
        "要介護認定",
        "保険給付の支給",
    }
    assert by_affair["地方税の賦課徴収に関する事務"] == {"住民税の賦課"}


# Lookups ------------------------------------------------------------------------------------


def test_procedure_lookup_returns_the_procedure(catalogue: Catalogue) -> None:
    """Catalogue.procedure finds each listed procedure by its code."""
    for p in catalogue.procedures:
        assert catalogue.procedure(p.code) is p


def test_unknown_information_name_is_refused(catalogue: Catalogue) -> None:
    """Looking up an information name not in the catalogue raises UnknownInformationName."""
    with pytest.raises(RenkeiError) as info:
        catalogue.information_name("TM00000000000099")
    assert info.value.kind is errors.UNKNOWN_INFORMATION_NAME
    assert info.value.params == {"code": "TM00000000000099"}


def test_unknown_data_set_is_refused(catalogue: Catalogue) -> None:
    """Looking up a data set not in the information name raises UnknownDataSet."""
    with pytest.raises(RenkeiError) as info:
        catalogue.information_name(CARE).data_set("0999")
    assert info.value.kind is errors.UNKNOWN_DATA_SET
    assert info.value.params == {"code": CARE, "data_set": "0999"}


def test_unknown_item_is_refused(catalogue: Catalogue) -> None:
    """Looking up an item of another data set raises UnknownItem naming both codes."""
    other = item_code(catalogue, CARE, "0202", "負担割合")
    with pytest.raises(RenkeiError) as info:
        catalogue.information_name(CARE).data_set("0101").item(other)
    assert info.value.kind is errors.UNKNOWN_ITEM
    assert info.value.params == {"item": other, "data_set": "0101", "code": CARE}


def test_unknown_procedure_is_refused(catalogue: Catalogue) -> None:
    """Looking up an unlisted procedure raises UnknownProcedure with both messages."""
    with pytest.raises(RenkeiError) as info:
        catalogue.procedure("JT00000000000000")
    assert info.value.kind is errors.UNKNOWN_PROCEDURE
    assert info.value.code == "UnknownProcedure"
    assert "JT00000000000000" in info.value.message_en
    assert "JT00000000000000" in info.value.message_ja


# Record validation --------------------------------------------------------------------------


def insured_record(catalogue: Catalogue) -> dict[str, str]:
    def code(name: str) -> str:
        return item_code(catalogue, CARE, "0101", name)

    return {
        code("被保険者番号"): "0000012345",
        code("保険者番号"): "131102",
        code("資格取得年月日"): "2024-04-01",
        code("資格異動事由"): "01",
        code("被保険者区分"): "1",
    }


def test_valid_record_is_accepted(catalogue: Catalogue) -> None:
    """A record whose items belong to the data set and fit their types passes."""
    catalogue.validate_record(CARE, "0101", insured_record(catalogue))


def test_empty_record_is_accepted(catalogue: Catalogue) -> None:
    """No item is required: an empty record passes."""
    catalogue.validate_record(CARE, "0101", {})


def test_record_of_unknown_information_name_is_refused(catalogue: Catalogue) -> None:
    """A record for an unknown information name raises UnknownInformationName."""
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record("TM00000000000099", "0101", {})
    assert info.value.kind is errors.UNKNOWN_INFORMATION_NAME


def test_record_of_unknown_data_set_is_refused(catalogue: Catalogue) -> None:
    """A record for a data set not in the information name raises UnknownDataSet."""
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(CARE, "0500", {})
    assert info.value.kind is errors.UNKNOWN_DATA_SET


def test_record_with_item_of_another_data_set_is_refused(catalogue: Catalogue) -> None:
    """An item of another data set in a record raises UnknownItem."""
    record = insured_record(catalogue)
    record[item_code(catalogue, CARE, "0201", "要介護状態区分")] = "21"
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(CARE, "0101", record)
    assert info.value.kind is errors.UNKNOWN_ITEM


def test_record_with_item_of_another_information_name_is_refused(catalogue: Catalogue) -> None:
    """An item of another information name raises UnknownItem even with the same data set code."""
    record = {item_code(catalogue, TAX, "0101", "課税年度"): "2025"}
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(CARE, "0101", record)
    assert info.value.kind is errors.UNKNOWN_ITEM


@pytest.mark.parametrize(
    "value",
    ["2024-04-01", "2024-02-29", "1900-01-01", "9999-12-31"],
)
def test_real_dates_are_accepted(catalogue: Catalogue, value: str) -> None:
    """Date items accept YYYY-MM-DD calendar dates, including 29 February of a leap year."""
    code = item_code(catalogue, CARE, "0101", "資格取得年月日")
    catalogue.validate_record(CARE, "0101", {code: value})


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2024-4-1",
        "20240401",
        "2024/04/01",
        "2023-02-29",
        "2024-13-01",
        "2024-04-01T00:00",
        "２０２４-04-01",
        "2024-04-01 ",
    ],
)
def test_malformed_dates_are_refused(catalogue: Catalogue, value: str) -> None:
    """Date items refuse anything but a real YYYY-MM-DD date."""
    code = item_code(catalogue, CARE, "0101", "資格取得年月日")
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(CARE, "0101", {code: value})
    assert info.value.kind is errors.INVALID_ITEM_VALUE
    assert info.value.params["item"] == code
    assert info.value.params["type"] == "date"


@pytest.mark.parametrize("value", ["0", "123456789012", "-1", "-12345678901"])
def test_integers_within_length_are_accepted(catalogue: Catalogue, value: str) -> None:
    """Integer items accept an optional minus sign and digits up to max_length characters."""
    code = item_code(catalogue, TAX, "0101", "合計所得金額")
    catalogue.validate_record(TAX, "0101", {code: value})


@pytest.mark.parametrize("value", ["", "-", "+1", "1.5", "1,000", "1234567890123", "１"])
def test_malformed_or_long_integers_are_refused(catalogue: Catalogue, value: str) -> None:
    """Integer items refuse signs other than minus, separators, non-ASCII digits, and overlength."""
    code = item_code(catalogue, TAX, "0101", "合計所得金額")
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(TAX, "0101", {code: value})
    assert info.value.kind is errors.INVALID_ITEM_VALUE


def test_code_value_at_max_length_is_accepted_and_one_more_refused(catalogue: Catalogue) -> None:
    """A code item accepts exactly max_length characters and refuses max_length + 1."""
    ds = catalogue.information_name(CARE).data_set("0101")
    item = ds.item(item_code(catalogue, CARE, "0101", "被保険者番号"))
    assert item.type is ItemType.CODE
    item.validate_value("1" * item.max_length)
    with pytest.raises(RenkeiError) as info:
        item.validate_value("1" * (item.max_length + 1))
    assert info.value.params["max_length"] == item.max_length


@pytest.mark.parametrize("value", ["", "01 ", "0-1", "一"])
def test_code_values_of_other_characters_are_refused(catalogue: Catalogue, value: str) -> None:
    """A code item refuses empty values and anything but ASCII letters and digits."""
    code = item_code(catalogue, CARE, "0101", "資格異動事由")
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(CARE, "0101", {code: value})
    assert info.value.kind is errors.INVALID_ITEM_VALUE


def test_string_value_length_is_counted_in_characters(catalogue: Catalogue) -> None:
    """A string item accepts max_length Japanese characters and refuses one more."""
    ds = catalogue.information_name(CARE).data_set("0102")
    item = ds.item(item_code(catalogue, CARE, "0102", "住所地特例対象施設名"))
    assert item.type is ItemType.STRING
    item.validate_value("特" * item.max_length)
    with pytest.raises(RenkeiError):
        item.validate_value("特" * (item.max_length + 1))


def test_string_value_with_control_character_is_refused(catalogue: Catalogue) -> None:
    """A string item refuses control characters such as NUL or newline."""
    item = (
        catalogue.information_name(CARE)
        .data_set("0102")
        .item(item_code(catalogue, CARE, "0102", "住所地特例対象施設名"))
    )
    for value in ["特別養護老人ホーム\x00", "特別養護\n老人ホーム"]:
        with pytest.raises(RenkeiError):
            item.validate_value(value)


def test_invalid_item_value_error_does_not_reveal_the_value(catalogue: Catalogue) -> None:
    """The InvalidItemValue refusal names the item, never the (personal) value."""
    code = item_code(catalogue, TAX, "0101", "合計所得金額")
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(TAX, "0101", {code: "9876543210987"})
    error = info.value
    assert "9876543210987" not in error.message_en
    assert "9876543210987" not in error.message_ja
    assert "9876543210987" not in repr(error.params)
    assert code in error.message_en
    assert "合計所得金額" in error.message_ja


def test_non_string_value_is_refused(catalogue: Catalogue) -> None:
    """A value that is not a string is refused with InvalidItemValue, not a TypeError."""
    code = item_code(catalogue, TAX, "0101", "扶養親族数")
    with pytest.raises(RenkeiError) as info:
        catalogue.validate_record(TAX, "0101", {code: 2})  # type: ignore[dict-item]
    assert info.value.kind is errors.INVALID_ITEM_VALUE


# Malformed catalogue files ------------------------------------------------------------------


def parse(data: dict[str, Any]) -> Catalogue:
    return parse_catalogue(json.dumps(data, ensure_ascii=False), "test.json")


def test_copy_of_packaged_data_parses(raw: dict[str, Any]) -> None:
    """The JSON round trip of the packaged data parses into the packaged catalogue."""
    assert parse(raw) == default_catalogue()


def test_load_catalogue_from_other_path(tmp_path: Path, raw: dict[str, Any]) -> None:
    """load_catalogue reads another file when given its path."""
    raw["versions"].append({"version": "2027.1", "valid_from": "2027-06-01"})
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    assert load_catalogue(path).version == "2027.1"


def test_item_code_of_another_information_name_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """An item code not carrying its information name's number makes the catalogue invalid."""
    raw["information_names"][0]["data_sets"][0]["items"][0]["code"] = "TK00000201010001"
    with pytest.raises(CatalogueError, match="does not carry"):
        parse(raw)


def test_duplicate_item_code_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """Two items with the same code in one information name make the catalogue invalid."""
    items = raw["information_names"][0]["data_sets"][0]["items"]
    items.append(copy.deepcopy(items[0]))
    with pytest.raises(CatalogueError, match="duplicate"):
        parse(raw)


def test_duplicate_information_name_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """Two information names with the same code make the catalogue invalid."""
    raw["information_names"].append(copy.deepcopy(raw["information_names"][0]))
    with pytest.raises(CatalogueError, match="duplicate"):
        parse(raw)


def test_unknown_item_type_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """An item type other than string, code, integer and date makes the catalogue invalid."""
    raw["information_names"][0]["data_sets"][0]["items"][0]["type"] = "float"
    with pytest.raises(CatalogueError, match="unknown type"):
        parse(raw)


def test_misspelt_key_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """An unknown key (such as a misspelt flag) makes the catalogue invalid."""
    item = raw["information_names"][0]["data_sets"][0]["items"][0]
    item["emulatd"] = item.pop("emulated")
    with pytest.raises(CatalogueError, match=re.escape("items[0]")):
        parse(raw)


def test_malformed_procedure_code_is_rejected_on_load(raw: dict[str, Any]) -> None:
    """A procedure code not in the JT + 14 digits format makes the catalogue invalid."""
    raw["procedures"][0]["code"] = "JT123"
    with pytest.raises(CatalogueError, match=re.escape("procedures[0].code")):
        parse(raw)


def test_non_json_is_rejected_on_load() -> None:
    """Text that is not JSON raises CatalogueError naming the source."""
    with pytest.raises(CatalogueError, match=re.escape("test.json")):
        parse_catalogue("{", "test.json")


# 自己情報提供: what a person may see ---------------------------------------------------------


def test_a_person_sees_their_record_without_the_items_kept_from_persons(
    catalogue: Catalogue,
) -> None:
    """for_person leaves out the items the catalogue keeps from persons (区分支給限度基準額 of
    0201) and keeps the others, by code."""
    limit = item_code(catalogue, CARE, "0201", "区分支給限度基準額")
    level = item_code(catalogue, CARE, "0201", "要介護状態区分")
    shown = catalogue.information_name(CARE).for_person("0201", {limit: "19705", level: "22"})
    assert shown == ((level, "22"),)


def test_a_data_set_kept_from_persons_shows_nothing(raw: dict[str, Any]) -> None:
    """A data set marked self_information false gives a person nothing (None), and so does a
    record left with no item to show."""
    raw["information_names"][0]["data_sets"][0]["self_information"] = False
    care = parse_catalogue(json.dumps(raw, ensure_ascii=False)).information_name(CARE)
    assert care.for_person("0101", {"TK00000401010001": "0001310501"}) is None
    assert care.for_person("0201", {"TK00000402010007": "19705"}) is None
    assert care.for_person("9999", {"TK00000401010001": "x"}) is None


def test_a_self_information_flag_that_is_not_a_boolean_is_refused(raw: dict[str, Any]) -> None:
    """self_information must be true or false where it is given."""
    raw["information_names"][0]["data_sets"][0]["items"][0]["self_information"] = "no"
    with pytest.raises(CatalogueError, match="self_information"):
        parse_catalogue(json.dumps(raw, ensure_ascii=False))


def test_the_self_information_procedure_is_an_emulated_entry(catalogue: Catalogue) -> None:
    """マイナポータル asks under a procedure of the catalogue, marked emulated."""
    from codes.catalogue import SELF_INFORMATION_AFFAIR, SELF_INFORMATION_PROCEDURE

    procedure = catalogue.procedure(SELF_INFORMATION_PROCEDURE)
    assert procedure.affair == SELF_INFORMATION_AFFAIR
    assert procedure.emulated and procedure.name == "自己情報提供"
