"""Every code the console shows, with its name: institutions (from the network's directory,
the permitted-query list in force, else the configuration), 事務 and 事務手続, 特定個人情報名,
data sets and items (the catalogue), coded item values (``codes.item_values``), and the
console's own words for states, events, audit actions and roles (``i18n.WORDS``).

No I/O: the console builds one `Naming` per page from what its node already holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from codes.item_values import value_name

__all__ = [
    "JST",
    "ROLE_LISTS",
    "Naming",
    "japan_date",
    "japan_month",
    "japan_time",
]

Translate = Callable[..., str]

JST = ZoneInfo("Asia/Tokyo")

ROLE_LISTS = ("roles", "from", "to")
"""The audit details' keys whose value is a list of roles."""


def japan_time(moment: datetime | None, lang: str = "ja") -> str:
    """A time as a person in Japan reads it: Japan time, 2026年12月2日 03:05:00 (in English
    2026-12-02 03:05:00 JST); nothing for no time."""
    if moment is None:
        return ""
    local = moment.astimezone(JST)
    if lang == "en":
        return local.strftime("%Y-%m-%d %H:%M:%S JST")
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M:%S}"


def japan_date(moment: datetime, lang: str = "ja") -> str:
    """A day in Japan's calendar: 2026年12月2日 (2026-12-02)."""
    local = moment.astimezone(JST)
    return f"{local.year}年{local.month}月{local.day}日" if lang == "ja" else f"{local:%Y-%m-%d}"


def japan_month(moment: datetime, lang: str = "ja") -> str:
    """A month in Japan's calendar: 2026年12月 (2026-12)."""
    local = moment.astimezone(JST)
    return f"{local.year}年{local.month}月" if lang == "ja" else f"{local:%Y-%m}"


def _moment(text: str) -> datetime | None:
    """An ISO time with its offset (as audit details keep them), else None."""
    if len(text) < 19 or text[4:5] != "-" or "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True)
class Naming:
    """The names of the codes of one page, in its language (``ja`` or ``en``)."""

    catalogue: Catalogue
    institutions: Mapping[str, str]
    lang: str
    t: Translate
    known: Callable[[str], bool]

    @property
    def english(self) -> bool:
        return self.lang == "en"

    def institution(self, code: str | None) -> str:
        """An institution's name (渋谷区), the code itself when unknown here."""
        if not code:
            return ""
        return self.institutions.get(code, code)

    def procedure(self, code: str | None) -> str:
        """A 事務手続's name."""
        if not code:
            return ""
        try:
            found = self.catalogue.procedure(code)
        except RenkeiError:
            return code
        return found.name_en if self.english else found.name

    def affair(self, procedure: str | None) -> str:
        """The name of the 事務 a 事務手続 belongs to."""
        if not procedure:
            return ""
        try:
            found = self.catalogue.procedure(procedure)
        except RenkeiError:
            return ""
        return found.affair_name_en if self.english else found.affair_name

    def information_name(self, code: str | None) -> str:
        """A 特定個人情報名's name."""
        if not code:
            return ""
        try:
            found = self.catalogue.information_name(code)
        except RenkeiError:
            return code
        return found.name_en if self.english else found.name

    def data_set(self, information_name: str, code: str) -> str:
        try:
            found = self.catalogue.information_name(information_name).data_set(code)
        except RenkeiError:
            return code
        return found.name_en if self.english else found.name

    def item(self, information_name: str, data_set: str, code: str) -> str:
        try:
            found = self.catalogue.information_name(information_name).data_set(data_set)
            item = found.item(code)
        except RenkeiError:
            return code
        return item.name_en if self.english else item.name

    def value(self, item: str, value: str) -> str:
        """A coded item value with its name (``21 転出``); other values as they are."""
        name = value_name(item, value)
        return f"{value} {name}" if name else value

    def word(self, kind: str, code: str | None) -> str:
        """The console's word for a code of ``kind`` (state, event, action, role, …)."""
        if not code:
            return ""
        key = f"{kind}_{code}"
        return self.t(key) if self.known(key) else code

    def roles(self, roles: Iterable[str]) -> str:
        """Roles by name (承認者、運用担当者)."""
        return "、".join(self.word("role", role) for role in sorted(roles))

    def detail(self, detail: Mapping[str, Any] | None) -> list[tuple[str, str]]:
        """An audit entry's detail as labelled lines, not JSON."""
        if not detail:
            return []
        lines = []
        for key, value in sorted(detail.items()):
            label = self.t(f"detail_{key}") if self.known(f"detail_{key}") else key
            lines.append((label, self._detail_value(key, value)))
        return lines

    def time(self, moment: datetime | str | None) -> str:
        """A time in Japan time; an ISO text (with its offset) is read first, any other text
        is shown as it is."""
        if isinstance(moment, str):
            found = _moment(moment)
            return japan_time(found, self.lang) if found is not None else moment
        return japan_time(moment, self.lang)

    def _detail_value(self, key: str, value: Any) -> str:
        if isinstance(value, bool):
            return self.t("yes_word") if value else self.t("no_word")
        if key in ROLE_LISTS and isinstance(value, list):
            return self.roles(value) or self.t("none")
        if key == "reason" and isinstance(value, str):
            return self.word("login_reason", value)
        if isinstance(value, str) and (moment := _moment(value)) is not None:
            return self.time(moment)
        if isinstance(value, Mapping):
            return ", ".join(
                f"{self.t(k) if self.known(k) else k}: {self._named(k, v)}"
                for k, v in sorted(value.items())
            )
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        if value is None:
            return ""
        return str(value) if isinstance(value, str | int | float) else json.dumps(value)

    def _named(self, key: str, value: Any) -> str:
        text = str(value)
        if key == "counterpart":
            return self.institution(text)
        if key == "procedure":
            return self.procedure(text)
        if key == "information_name":
            return self.information_name(text)
        if key in ("event", "status", "direction"):
            return self.word(key, text) if key != "direction" else self.t(text)
        return text
