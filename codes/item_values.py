"""The names of coded item values (コード値): what a person reads for ``21`` in 資格異動事由.

The data standard layout's real code lists are not public; these are the lists this project
generates and documents (docs/population.md, "Code lists"): 要介護状態区分 as in public 介護保険
interface specifications, the others emulated. ``simulators.population`` draws its values
from them, the console shows each value with its name.
"""

from __future__ import annotations

__all__ = [
    "ASSISTANCE_STATUSES",
    "CARE_LEVELS",
    "ELIGIBILITY_CHANGES",
    "ITEM_VALUES",
    "PENSION_KINDS",
    "PROGRAM_CATEGORIES",
    "TAX_CATEGORIES",
    "value_name",
]

# 要介護状態区分 (as in public 介護保険 interface specifications).
CARE_LEVELS: dict[str, str] = {
    "12": "要支援1",
    "13": "要支援2",
    "21": "要介護1",
    "22": "要介護2",
    "23": "要介護3",
    "24": "要介護4",
    "25": "要介護5",
}
# Emulated code lists (docs/population.md).
ELIGIBILITY_CHANGES: dict[str, str] = {
    "01": "65歳到達",
    "02": "転入",
    "03": "制度施行",
    "21": "転出",
}
TAX_CATEGORIES: dict[str, str] = {"1": "課税", "2": "均等割のみ課税", "3": "非課税"}
ASSISTANCE_STATUSES: dict[str, str] = {"1": "受給中", "2": "廃止"}
PENSION_KINDS: dict[str, str] = {
    "01": "老齢基礎年金",
    "02": "老齢厚生年金",
    "03": "障害基礎年金",
    "04": "障害厚生年金",
    "05": "遺族基礎年金",
    "06": "遺族厚生年金",
}
PROGRAM_CATEGORIES: dict[str, str] = {"1": "要支援認定者", "2": "基本チェックリスト該当者"}

ITEM_VALUES: dict[str, dict[str, str]] = {
    "TK00000401010005": ELIGIBILITY_CHANGES,  # 資格異動事由
    "TK00000401010006": {"1": "第1号被保険者"},  # 被保険者区分
    "TK00000402010002": CARE_LEVELS,  # 要介護状態区分
    "TK00000402020002": {"1": "1割", "2": "2割", "3": "3割"},  # 負担割合
    "TK00000404000002": PROGRAM_CATEGORIES,  # 事業対象者区分
    "TK00000201010002": TAX_CATEGORIES,  # 課税区分
    "TK90000101010001": ASSISTANCE_STATUSES,  # 保護受給区分
    "TK90000101010004": {"1": "あり", "0": "なし"},  # 介護扶助有無
    "TK90000201010001": PENSION_KINDS,  # 年金種別
    "TK90000201010004": {"1": "対象", "0": "対象外"},  # 特別徴収対象区分
}
"""The code list of each coded item, by item code."""


def value_name(item: str, value: str) -> str | None:
    """The name of ``value`` of item ``item`` (None when the item has no list or the value is
    not in it)."""
    return ITEM_VALUES.get(item, {}).get(value)
