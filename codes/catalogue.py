"""データ標準レイアウト (data standard layout): information names, data sets, items, procedures.

The catalogue is data (``codes/data/catalogue.json``), loaded once and checked on load. It is
versioned: ``versions`` names each version and the date it comes into force (it ends when the
next one starts), and any entry may carry ``since`` (the first version that has it) and
``until`` (the first version that no longer has it); :func:`parse_catalogues` builds every
version, :func:`in_force` picks the one of a day. What is public and what is this project's
emulation is marked in the data itself:

- ``emulated: true`` on an information name, data set, item or procedure means its code (and
  for items also type and length) is designed by this project, not taken from the real system;
- ``name_inferred: true`` on an information name means its code is public but its name is an
  inference (TM00000000000002, 地方税関係情報).

Item codes follow the public ``TK`` + 14 digits format, whose 6 digits after ``TK`` carry the
information name's number. The remaining 8 digits are ours: the 4-digit data set code and a
4-digit serial (TK000004 0101 0001 = 被保険者番号 of data set 0101 of TM00000000000004).

Item value types, checked by :meth:`Item.validate_value` and :meth:`Catalogue.validate_record`:

- ``string``: any text of at most ``max_length`` characters without control characters;
- ``code``: 1 to ``max_length`` ASCII letters or digits;
- ``integer``: an optional ``-`` and ASCII digits, at most ``max_length`` characters in all;
- ``date``: ``YYYY-MM-DD``, a real calendar date.

An item absent from a record is simply left out of its mapping; there is no "empty" value.

A data set may say which of its items place a record in time (``period``), so that a query's
conditions (fiscal year, start and end dates) can select records: ``{"from": TK, "to": TK}``
(dates: the record is valid from … to, either end may be absent from a record and is then
open), ``{"fiscal_year": TK}`` (an integer item: the record is of that fiscal year, 年度,
1 April to 31 March), or ``{"month": TK}`` (a code item ``YYYYMM``: the record is of that
month). Which items do so is this project's emulation, like the item codes themselves.

What a person may see of their own information (自己情報提供, through マイナポータル) is said
per data set and per item: ``"self_information": false`` on a data set or an item keeps it
out of what the intermediate server provides to the person (both default to true); which
ones are kept out is this project's emulation. The procedure under which マイナポータル asks
(`SELF_INFORMATION_PROCEDURE`, of affair `SELF_INFORMATION_AFFAIR`) is an emulated entry of
``procedures``, like every JM9…/JT9… code.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TypeVar

from codes import errors
from codes.errors import RenkeiError
from codes.typed import (
    AffairCode,
    DataSetCode,
    InformationNameCode,
    ItemCode,
    ProcedureCode,
    information_name_of_item,
    validate_affair_code,
    validate_data_set_code,
    validate_information_name_code,
    validate_item_code,
    validate_procedure_code,
)

__all__ = [
    "PACKAGED_CATALOGUE",
    "SELF_INFORMATION_AFFAIR",
    "SELF_INFORMATION_PROCEDURE",
    "Catalogue",
    "CatalogueError",
    "DataSet",
    "InformationName",
    "Item",
    "ItemType",
    "Period",
    "Procedure",
    "default_catalogue",
    "in_force",
    "load_catalogue",
    "load_catalogues",
    "parse_catalogue",
    "parse_catalogues",
]

PACKAGED_CATALOGUE = "data/catalogue.json"

# 自己情報提供: the (emulated) affair and procedure under which マイナポータル asks an
# institution for a person's own information; every party records the exchange under them.
SELF_INFORMATION_AFFAIR = "JM90000000009000"
SELF_INFORMATION_PROCEDURE = "JT90090000000001"


class CatalogueError(ValueError):
    """The catalogue file is malformed or inconsistent (a deployment error, not a refusal)."""


class ItemType(StrEnum):
    """The type of an item's value."""

    STRING = "string"
    CODE = "code"
    INTEGER = "integer"
    DATE = "date"

    @property
    def label_ja(self) -> str:
        """Japanese name of the type, for messages."""
        return _TYPE_LABELS_JA[self]


_TYPE_LABELS_JA: dict[ItemType, str] = {
    ItemType.STRING: "文字列",
    ItemType.CODE: "コード",
    ItemType.INTEGER: "整数",
    ItemType.DATE: "日付(YYYY-MM-DD)",
}

_CODE_VALUE = re.compile(r"[0-9A-Za-z]+")
_INTEGER_VALUE = re.compile(r"-?[0-9]+")
_DATE_VALUE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_LENGTH = 10


def _fits(item_type: ItemType, value: str, max_length: int) -> bool:
    if len(value) > max_length:
        return False
    if item_type is ItemType.STRING:
        return not any(unicodedata.category(ch) == "Cc" for ch in value)
    if item_type is ItemType.CODE:
        return _CODE_VALUE.fullmatch(value) is not None
    if item_type is ItemType.INTEGER:
        return _INTEGER_VALUE.fullmatch(value) is not None
    if _DATE_VALUE.fullmatch(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Item:
    """An item (項目) of a data set."""

    code: ItemCode
    name: str
    name_en: str
    type: ItemType
    max_length: int
    emulated: bool
    information_name: InformationNameCode
    data_set: DataSetCode
    # Provided to the person through マイナポータル (自己情報提供); emulated.
    self_information: bool = True

    def validate_value(self, value: str) -> None:
        """Raise RenkeiError(INVALID_ITEM_VALUE) unless `value` fits this item's type and length.

        The value itself is left out of the error: it is personal information.
        """
        if not isinstance(value, str) or not _fits(self.type, value, self.max_length):
            raise RenkeiError(
                errors.INVALID_ITEM_VALUE,
                item=self.code,
                name=self.name_en,
                name_ja=self.name,
                type=self.type.value,
                type_ja=self.type.label_ja,
                max_length=self.max_length,
                code=self.information_name,
                data_set=self.data_set,
            )


@dataclass(frozen=True)
class Period:
    """Which items of a data set place a record in time (see the module docstring): exactly
    one of ``fiscal_year`` and ``month``, or one or both of ``starts`` and ``ends``."""

    starts: ItemCode | None = None
    ends: ItemCode | None = None
    fiscal_year: ItemCode | None = None
    month: ItemCode | None = None


@dataclass(frozen=True)
class DataSet:
    """A data set (データセット) of an information name: a group of items."""

    code: DataSetCode
    name: str
    name_en: str
    emulated: bool
    information_name: InformationNameCode
    items: tuple[Item, ...]
    period: Period | None = None
    # Provided to the person through マイナポータル (自己情報提供); emulated.
    self_information: bool = True
    _by_code: dict[str, Item] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {item.code: item for item in self.items})

    def item(self, code: str) -> Item:
        """Return the item `code`; raise RenkeiError(UNKNOWN_ITEM) if it is not in this set."""
        try:
            return self._by_code[code]
        except (KeyError, TypeError):
            raise RenkeiError(
                errors.UNKNOWN_ITEM, item=code, data_set=self.code, code=self.information_name
            ) from None


@dataclass(frozen=True)
class InformationName:
    """An information name (特定個人情報名) and its data sets."""

    code: InformationNameCode
    name: str
    name_en: str
    emulated: bool
    name_inferred: bool
    data_sets: tuple[DataSet, ...]
    _by_code: dict[str, DataSet] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {ds.code: ds for ds in self.data_sets})

    def data_set(self, code: str) -> DataSet:
        """Return the data set `code`; raise RenkeiError(UNKNOWN_DATA_SET) if absent."""
        try:
            return self._by_code[code]
        except (KeyError, TypeError):
            raise RenkeiError(errors.UNKNOWN_DATA_SET, code=self.code, data_set=code) from None

    def items(self) -> tuple[Item, ...]:
        """Return every item of every data set, in catalogue order."""
        return tuple(item for ds in self.data_sets for item in ds.items)

    def for_person(
        self, data_set: str, items: Mapping[str, str]
    ) -> tuple[tuple[str, str], ...] | None:
        """What a person may see of one record of ``data_set`` (自己情報提供): its items
        without those kept from the person, by code; None when the whole data set is kept
        from them (or the catalogue does not know it, or it has nothing left to show)."""
        found = self._by_code.get(data_set)
        if found is None or not found.self_information:
            return None
        shown = tuple(
            (code, value)
            for code, value in sorted(items.items())
            if code in found._by_code and found._by_code[code].self_information
        )
        return shown or None


@dataclass(frozen=True)
class Procedure:
    """A procedure (事務手続) and the affair (事務) it belongs to."""

    affair: AffairCode
    affair_name: str
    affair_name_en: str
    code: ProcedureCode
    name: str
    name_en: str
    emulated: bool


@dataclass(frozen=True)
class Catalogue:
    """One version of the data standard layout plus the procedures known to the network,
    in force from ``valid_from`` until ``valid_until`` (exclusive; None: still in force)."""

    version: str
    valid_from: date
    valid_until: date | None
    information_names: tuple[InformationName, ...]
    procedures: tuple[Procedure, ...]
    _names: dict[str, InformationName] = field(init=False, repr=False, compare=False)
    _procedures: dict[str, Procedure] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", {n.code: n for n in self.information_names})
        object.__setattr__(self, "_procedures", {p.code: p for p in self.procedures})

    def information_name(self, code: str) -> InformationName:
        """Return the information name `code`; raise RenkeiError(UNKNOWN_INFORMATION_NAME)."""
        try:
            return self._names[code]
        except (KeyError, TypeError):
            raise RenkeiError(errors.UNKNOWN_INFORMATION_NAME, code=code) from None

    def procedure(self, code: str) -> Procedure:
        """Return the procedure `code`; raise RenkeiError(UNKNOWN_PROCEDURE) if unknown."""
        try:
            return self._procedures[code]
        except (KeyError, TypeError):
            raise RenkeiError(errors.UNKNOWN_PROCEDURE, code=code) from None

    def validate_record(
        self, information_name: str, data_set: str, items: Mapping[str, str]
    ) -> None:
        """Check a record of `data_set` of `information_name`: item codes and values.

        Raises RenkeiError with UNKNOWN_INFORMATION_NAME, UNKNOWN_DATA_SET, UNKNOWN_ITEM (an
        item code not in the data set) or INVALID_ITEM_VALUE (a value that does not fit its
        item's type or length). Items may be left out; none is required.
        """
        ds = self.information_name(information_name).data_set(data_set)
        for code, value in items.items():
            ds.item(code).validate_value(value)


# Loading -----------------------------------------------------------------------------------

_T = TypeVar("_T")

_TOP_KEYS = {"versions", "information_names", "procedures"}
_VERSION_KEYS = {"version", "valid_from"}
_NAME_KEYS = {"code", "name", "name_en", "emulated", "data_sets"}
_DATA_SET_KEYS = {"code", "name", "name_en", "emulated", "items"}
# Optional on data sets and items: whether a person may see it (自己情報提供).
_SELF_INFORMATION = frozenset({"self_information"})
_PERIOD_KEYS = frozenset({"from", "to", "fiscal_year", "month"})
# The type and length an item needs to play each part of a period.
_PERIOD_ITEM_TYPES = {
    "from": (ItemType.DATE, None),
    "to": (ItemType.DATE, None),
    "fiscal_year": (ItemType.INTEGER, 4),
    "month": (ItemType.CODE, 6),
}
_ITEM_KEYS = {"code", "name", "name_en", "type", "max_length", "emulated"}
_PROCEDURE_KEYS = {"affair", "affair_name", "affair_name_en", "code", "name", "name_en", "emulated"}
# Any entry may say in which version it first appears and from which one it is gone.
_LIFE = frozenset({"since", "until"})


class _Reader:
    """Typed access to the parsed JSON, with errors naming the file and the place, building
    the catalogue of one version (``versions``: every version name in order; ``index``: the
    one being built)."""

    def __init__(self, source: str, versions: list[str], index: int) -> None:
        self.source = source
        self.versions = versions
        self.index = index

    def present(self, d: dict[str, object], where: str) -> bool:
        """Whether an entry with optional ``since`` / ``until`` is part of this version."""
        since = self.versions.index(self.known(d.get("since", self.versions[0]), where))
        until = (
            self.versions.index(self.known(d["until"], where))
            if "until" in d
            else len(self.versions)
        )
        if until <= since:
            raise self.fail(where, "until must be a later version than since")
        return since <= self.index < until

    def known(self, value: object, where: str) -> str:
        if value not in self.versions:
            raise self.fail(where, f"unknown version {value!r}")
        return str(value)

    def fail(self, where: str, problem: str) -> CatalogueError:
        return CatalogueError(f"{self.source}: {where}: {problem}")

    def obj(
        self, value: object, where: str, required: set[str], optional: frozenset[str] = frozenset()
    ) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(where, "expected an object")
        missing = required - value.keys()
        if missing:
            raise self.fail(where, f"missing keys {sorted(missing)}")
        unknown = value.keys() - required - optional
        if unknown:
            raise self.fail(where, f"unknown keys {sorted(unknown)}")
        return value

    def seq(self, value: object, where: str) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty string")
        return value

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "expected true or false")
        return value

    def positive(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(where, "expected a positive integer")
        return value

    def code(self, validate: Callable[[str], _T], value: object, where: str) -> _T:
        try:
            return validate(self.text(value, where))
        except RenkeiError as exc:
            raise self.fail(where, exc.message_en) from None

    def unique(self, codes: list[str], where: str) -> None:
        seen: set[str] = set()
        for code in codes:
            if code in seen:
                raise self.fail(where, f"duplicate code {code}")
            seen.add(code)


def _item(
    r: _Reader, raw: object, where: str, tm: InformationNameCode, ds: DataSetCode
) -> Item | None:
    d = r.obj(raw, where, _ITEM_KEYS, _LIFE | _SELF_INFORMATION)
    if not r.present(d, where):
        return None
    code = r.code(validate_item_code, d["code"], f"{where}.code")
    if information_name_of_item(code) != tm:
        raise r.fail(f"{where}.code", f"item {code} does not carry the number of {tm}")
    type_name = r.text(d["type"], f"{where}.type")
    try:
        item_type = ItemType(type_name)
    except ValueError:
        raise r.fail(f"{where}.type", f"unknown type {type_name!r}") from None
    max_length = r.positive(d["max_length"], f"{where}.max_length")
    if item_type is ItemType.DATE and max_length != _DATE_LENGTH:
        raise r.fail(f"{where}.max_length", f"a date item has max_length {_DATE_LENGTH}")
    return Item(
        code=code,
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        type=item_type,
        max_length=max_length,
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
        information_name=tm,
        data_set=ds,
        self_information=r.flag(d.get("self_information", True), f"{where}.self_information"),
    )


def _data_set(r: _Reader, raw: object, where: str, tm: InformationNameCode) -> DataSet | None:
    d = r.obj(raw, where, _DATA_SET_KEYS, _LIFE | {"period"} | _SELF_INFORMATION)
    if not r.present(d, where):
        return None
    code = r.code(validate_data_set_code, d["code"], f"{where}.code")
    raw_items = r.seq(d["items"], f"{where}.items")
    items = _present(
        _item(r, raw_item, f"{where}.items[{i}]", tm, code) for i, raw_item in enumerate(raw_items)
    )
    if not items:
        raise r.fail(f"{where}.items", "a data set has at least one item")
    return DataSet(
        code=code,
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
        information_name=tm,
        items=items,
        period=_period(r, d["period"], f"{where}.period", items) if "period" in d else None,
        self_information=r.flag(d.get("self_information", True), f"{where}.self_information"),
    )


def _period(r: _Reader, raw: object, where: str, items: tuple[Item, ...]) -> Period:
    d = r.obj(raw, where, set(), _PERIOD_KEYS)
    if not d:
        raise r.fail(where, "a period names at least one item")
    if ("fiscal_year" in d or "month" in d) and len(d) > 1:
        raise r.fail(where, "fiscal_year and month each stand alone")
    by_code = {item.code: item for item in items}
    codes: dict[str, ItemCode] = {}
    for part, raw_code in d.items():
        code = r.code(validate_item_code, raw_code, f"{where}.{part}")
        item = by_code.get(code)
        if item is None:
            raise r.fail(f"{where}.{part}", f"{code} is not an item of this data set")
        item_type, length = _PERIOD_ITEM_TYPES[part]
        if item.type is not item_type or (length is not None and item.max_length != length):
            wanted = item_type.value + ("" if length is None else f" of length {length}")
            raise r.fail(f"{where}.{part}", f"{code} must be a {wanted} item")
        codes[part] = code
    return Period(
        starts=codes.get("from"),
        ends=codes.get("to"),
        fiscal_year=codes.get("fiscal_year"),
        month=codes.get("month"),
    )


def _information_name(r: _Reader, raw: object, where: str) -> InformationName | None:
    d = r.obj(raw, where, _NAME_KEYS, frozenset({"name_inferred"}) | _LIFE)
    if not r.present(d, where):
        return None
    code = r.code(validate_information_name_code, d["code"], f"{where}.code")
    raw_sets = r.seq(d["data_sets"], f"{where}.data_sets")
    data_sets = _present(
        _data_set(r, raw_set, f"{where}.data_sets[{i}]", code) for i, raw_set in enumerate(raw_sets)
    )
    r.unique([ds.code for ds in data_sets], f"{where}.data_sets")
    r.unique([item.code for ds in data_sets for item in ds.items], f"{where} items")
    return InformationName(
        code=code,
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
        name_inferred=r.flag(d.get("name_inferred", False), f"{where}.name_inferred"),
        data_sets=data_sets,
    )


def _procedure(r: _Reader, raw: object, where: str) -> Procedure | None:
    d = r.obj(raw, where, _PROCEDURE_KEYS, _LIFE)
    if not r.present(d, where):
        return None
    return Procedure(
        affair=r.code(validate_affair_code, d["affair"], f"{where}.affair"),
        affair_name=r.text(d["affair_name"], f"{where}.affair_name"),
        affair_name_en=r.text(d["affair_name_en"], f"{where}.affair_name_en"),
        code=r.code(validate_procedure_code, d["code"], f"{where}.code"),
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
    )


def _present(entries: Iterable[_T | None]) -> tuple[_T, ...]:
    return tuple(entry for entry in entries if entry is not None)


def parse_catalogues(text: str, source: str = "<catalogue>") -> tuple[Catalogue, ...]:
    """Build every version of the catalogue from the JSON text of a catalogue file, oldest
    first; each version is in force until the next one's ``valid_from``.

    Raises CatalogueError (a ValueError) naming `source` and the place of the first problem:
    bad JSON, missing or unknown keys, malformed or duplicate codes, an item code that does not
    carry its information name's number, an unknown item type, versions out of order, an
    unknown version in ``since`` / ``until``.
    """
    r = _Reader(source, [], 0)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise r.fail("document", f"not JSON: {exc}") from None
    d = r.obj(raw, "document", _TOP_KEYS, frozenset({"notes"}))
    raw_versions = r.seq(d["versions"], "versions")
    if not raw_versions:
        raise r.fail("versions", "at least one version is needed")
    names: list[str] = []
    starts: list[date] = []
    for i, raw_version in enumerate(raw_versions):
        where = f"versions[{i}]"
        v = r.obj(raw_version, where, _VERSION_KEYS)
        names.append(r.text(v["version"], f"{where}.version"))
        try:
            starts.append(date.fromisoformat(r.text(v["valid_from"], f"{where}.valid_from")))
        except ValueError:
            raise r.fail(f"{where}.valid_from", "expected a date YYYY-MM-DD") from None
        if i and starts[i] <= starts[i - 1]:
            raise r.fail(f"{where}.valid_from", "versions must start in increasing order")
    r.unique(names, "versions")
    return tuple(
        _version(
            _Reader(source, names, i), d, starts[i], starts[i + 1] if i + 1 < len(names) else None
        )
        for i in range(len(names))
    )


def _version(
    r: _Reader, d: dict[str, object], valid_from: date, valid_until: date | None
) -> Catalogue:
    raw_names = r.seq(d["information_names"], "information_names")
    names = _present(
        _information_name(r, raw_name, f"information_names[{i}]")
        for i, raw_name in enumerate(raw_names)
    )
    r.unique([n.code for n in names], "information_names")
    raw_procedures = r.seq(d["procedures"], "procedures")
    procedures = _present(
        _procedure(r, raw_p, f"procedures[{i}]") for i, raw_p in enumerate(raw_procedures)
    )
    r.unique([p.code for p in procedures], "procedures")
    affair_names: dict[str, tuple[str, str]] = {}
    for p in procedures:
        if affair_names.setdefault(p.affair, (p.affair_name, p.affair_name_en)) != (
            p.affair_name,
            p.affair_name_en,
        ):
            raise r.fail("procedures", f"affair {p.affair} is given two different names")
    return Catalogue(
        version=r.versions[r.index],
        valid_from=valid_from,
        valid_until=valid_until,
        information_names=names,
        procedures=procedures,
    )


def in_force(catalogues: tuple[Catalogue, ...], day: date) -> Catalogue:
    """The version in force on ``day`` (the oldest one before the first version starts)."""
    current = catalogues[0]
    for catalogue in catalogues:
        if catalogue.valid_from <= day:
            current = catalogue
    return current


def parse_catalogue(text: str, source: str = "<catalogue>", on: date | None = None) -> Catalogue:
    """The version of a catalogue file in force on ``on`` (default: the newest version)."""
    catalogues = parse_catalogues(text, source)
    return catalogues[-1] if on is None else in_force(catalogues, on)


def load_catalogues(path: Path | None = None) -> tuple[Catalogue, ...]:
    """Every version of a catalogue file; without `path`, of the packaged one
    (codes/data/catalogue.json). Raises CatalogueError if the file is malformed or
    inconsistent, OSError if unreadable."""
    if path is None:
        resource = resources.files("codes").joinpath(PACKAGED_CATALOGUE)
        return parse_catalogues(resource.read_text(encoding="utf-8"), f"codes/{PACKAGED_CATALOGUE}")
    return parse_catalogues(path.read_text(encoding="utf-8"), str(path))


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The newest version of a catalogue file (see load_catalogues)."""
    return load_catalogues(path)[-1]


@functools.cache
def default_catalogue() -> Catalogue:
    """The newest version of the packaged catalogue, loaded once per process."""
    return load_catalogue()
