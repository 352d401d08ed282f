"""The console's names of codes and its times, without a network: coded item values,
institutions, procedures, roles, audit details and coded messages in Japan time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.console.i18n import WORDS, translator
from adapters.console.naming import Naming, japan_date, japan_month, japan_time
from codes import errors
from codes.catalogue import default_catalogue
from codes.errors import RenkeiError
from codes.item_values import ITEM_VALUES, value_name

SETAGAYA = "1131121000000000"
# 2026-12-01 18:05 UTC is 2026-12-02 03:05 in Japan: the day a person reads is the 2nd.
LATE = datetime(2026, 12, 1, 18, 5, tzinfo=UTC)


def naming(lang: str = "ja") -> Naming:
    return Naming(
        default_catalogue(), {SETAGAYA: "世田谷区"}, lang, translator(lang), WORDS.__contains__
    )


def test_a_time_is_read_in_japan_on_its_japanese_day() -> None:
    assert japan_time(LATE) == "2026年12月2日 03:05:00"
    assert japan_time(LATE, "en") == "2026-12-02 03:05:00 JST"
    assert japan_date(LATE) == "2026年12月2日" and japan_month(LATE) == "2026年12月"
    assert japan_time(None) == ""


def test_coded_values_institutions_procedures_and_roles_have_names() -> None:
    names = naming()
    assert names.value("TK00000401010005", "21") == "21 転出"  # 資格異動事由
    assert names.value("TK00000402010002", "23") == "23 要介護3"
    assert names.value("TK00000401010005", "99") == "99"  # not in the list: as it is
    assert names.value("TK00000201010004", "51000") == "51000"  # not a coded item
    assert names.institution(SETAGAYA) == "世田谷区"
    assert names.institution("9999999999999999") == "9999999999999999"
    assert names.procedure("JT90010000000002") == "要介護認定"
    assert names.affair("JT90010000000002").startswith("介護保険法")
    assert names.information_name("TM00000000000002") == "地方税関係情報"
    assert names.roles(["operator", "approver"]) == "承認者、運用担当者"
    assert names.word("state", "held") == "保留中"
    assert names.word("action", "view_held_content") == "保留の提供内容の閲覧"
    assert names.word("action", "something_new") == "something_new"
    assert naming("en").procedure("JT90010000000002") != "要介護認定"


def test_every_coded_item_of_a_list_is_a_coded_item_of_the_catalogue() -> None:
    """The code lists name items the catalogue has, of its ``code`` type."""
    items: dict[str, Any] = {
        item.code: item for name in default_catalogue().information_names for item in name.items()
    }
    for code, values in ITEM_VALUES.items():
        assert items[code].type.value == "code", code
        assert all(len(value) <= items[code].max_length for value in values), code
    assert value_name("TK00000401010005", "21") == "転出"


def test_an_audit_detail_reads_as_labelled_lines_not_json() -> None:
    names = naming()
    lines = names.detail(
        {
            "roles": ["admin", "approver"],
            "totp": True,
            "reason": "bad_totp",
            "locked_until": "2026-12-01T18:20:00+00:00",
            "filters": {"counterpart": SETAGAYA, "status": "held"},
        }
    )
    text = "\n".join(f"{label}: {value}" for label, value in lines)
    assert "権限: 管理者、承認者" in text and "二要素: はい" in text
    assert "理由: ワンタイムパスワード誤り" in text
    assert "ロック期限: 2026年12月2日 03:20:00" in text
    assert "相手機関: 世田谷区" in text and "状態: held" not in text
    assert "{" not in text
    assert names.detail(None) == []


def test_coded_messages_give_their_times_in_japan_time() -> None:
    """The lockout's end as a person in Japan reads it, in each language."""
    locked = RenkeiError(errors.ACCOUNT_LOCKED, until=LATE)
    assert "2026年12月2日 03:05以降" in locked.message_ja
    assert "after 2026-12-02 03:05 JST" in locked.message_en
    ended = RenkeiError(errors.HOLD_EXPIRED, expires_at=LATE)
    assert "2026年12月2日 03:05" in ended.message_ja
