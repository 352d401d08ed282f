"""データ標準レイアウト (data standard layout): information names, data sets, items, procedures.

The catalogue is data (``codes/data/catalogue.json``), loaded once and checked on load. What is
public and what is this project's emulation is marked in the data itself:

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
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
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

PACKAGED_CATALOGUE = "data/catalogue.json"


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
class DataSet:
    """A data set (データセット) of an information name: a group of items."""

    code: DataSetCode
    name: str
    name_en: str
    emulated: bool
    information_name: InformationNameCode
    items: tuple[Item, ...]
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
    """One version of the data standard layout plus the procedures known to the network."""

    version: str
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

_TOP_KEYS = {"version", "information_names", "procedures"}
_NAME_KEYS = {"code", "name", "name_en", "emulated", "data_sets"}
_DATA_SET_KEYS = {"code", "name", "name_en", "emulated", "items"}
_ITEM_KEYS = {"code", "name", "name_en", "type", "max_length", "emulated"}
_PROCEDURE_KEYS = {"affair", "affair_name", "affair_name_en", "code", "name", "name_en", "emulated"}


class _Reader:
    """Typed access to the parsed JSON, with errors naming the file and the place."""

    def __init__(self, source: str) -> None:
        self.source = source

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


def _item(r: _Reader, raw: object, where: str, tm: InformationNameCode, ds: DataSetCode) -> Item:
    d = r.obj(raw, where, _ITEM_KEYS)
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
    )


def _data_set(r: _Reader, raw: object, where: str, tm: InformationNameCode) -> DataSet:
    d = r.obj(raw, where, _DATA_SET_KEYS)
    code = r.code(validate_data_set_code, d["code"], f"{where}.code")
    raw_items = r.seq(d["items"], f"{where}.items")
    if not raw_items:
        raise r.fail(f"{where}.items", "a data set has at least one item")
    items = tuple(
        _item(r, raw_item, f"{where}.items[{i}]", tm, code) for i, raw_item in enumerate(raw_items)
    )
    return DataSet(
        code=code,
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
        information_name=tm,
        items=items,
    )


def _information_name(r: _Reader, raw: object, where: str) -> InformationName:
    d = r.obj(raw, where, _NAME_KEYS, frozenset({"name_inferred"}))
    code = r.code(validate_information_name_code, d["code"], f"{where}.code")
    raw_sets = r.seq(d["data_sets"], f"{where}.data_sets")
    data_sets = tuple(
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


def _procedure(r: _Reader, raw: object, where: str) -> Procedure:
    d = r.obj(raw, where, _PROCEDURE_KEYS)
    return Procedure(
        affair=r.code(validate_affair_code, d["affair"], f"{where}.affair"),
        affair_name=r.text(d["affair_name"], f"{where}.affair_name"),
        affair_name_en=r.text(d["affair_name_en"], f"{where}.affair_name_en"),
        code=r.code(validate_procedure_code, d["code"], f"{where}.code"),
        name=r.text(d["name"], f"{where}.name"),
        name_en=r.text(d["name_en"], f"{where}.name_en"),
        emulated=r.flag(d["emulated"], f"{where}.emulated"),
    )


def parse_catalogue(text: str, source: str = "<catalogue>") -> Catalogue:
    """Build a Catalogue from the JSON text of a catalogue file.

    Raises CatalogueError (a ValueError) naming `source` and the place of the first problem:
    bad JSON, missing or unknown keys, malformed or duplicate codes, an item code that does not
    carry its information name's number, an unknown item type.
    """
    r = _Reader(source)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise r.fail("document", f"not JSON: {exc}") from None
    d = r.obj(raw, "document", _TOP_KEYS, frozenset({"notes"}))
    raw_names = r.seq(d["information_names"], "information_names")
    names = tuple(
        _information_name(r, raw_name, f"information_names[{i}]")
        for i, raw_name in enumerate(raw_names)
    )
    r.unique([n.code for n in names], "information_names")
    raw_procedures = r.seq(d["procedures"], "procedures")
    procedures = tuple(
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
        version=r.text(d["version"], "version"),
        information_names=names,
        procedures=procedures,
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load a catalogue file; without `path`, the one packaged in codes/data/catalogue.json.

    Raises CatalogueError if the file is malformed or inconsistent, OSError if unreadable.
    """
    if path is None:
        resource = resources.files("codes").joinpath(PACKAGED_CATALOGUE)
        return parse_catalogue(resource.read_text(encoding="utf-8"), f"codes/{PACKAGED_CATALOGUE}")
    return parse_catalogue(path.read_text(encoding="utf-8"), str(path))


@functools.cache
def default_catalogue() -> Catalogue:
    """Return the packaged catalogue, loaded once per process."""
    return load_catalogue()
