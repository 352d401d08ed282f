"""Bulk queries (一括照会): the 18-field CSV, its validation, the driver and the result file."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from click.testing import CliRunner
from sqlalchemy import func, select
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from adapters.care_insurance.bulk_query import (
    FIELDS,
    MAX_LINES,
    BulkQueries,
    parse_bulk_query_file,
    result_header,
    result_lines,
)
from codes.catalogue import default_catalogue
from codes.errors import RenkeiError
from middleware import messages
from middleware.bulk_queries import claim
from middleware.hardened_xml import serialize
from middleware.tables import bulk_query, bulk_query_line, query
from renkei.cli import main
from simulators.back_office import BackOfficeClient, BackOfficeError
from tests.network import (
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    LOCAL_TAX,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
    register,
)

REPOSITORY = Path(__file__).resolve().parent.parent
CARE_AFFAIR = "JM90000000001000"
CERTIFICATION = "JT90010000000002"  # 要介護認定: not permitted to query tax information
TARO_MEGURO = "000000000010002"  # known to Setagaya, which holds no tax record of him
TARO_SETAGAYA = "000000000020002"
UNKNOWN = "000000000099999"
CATALOGUE = default_catalogue()


def line(**changes: str) -> str:
    """One valid line (Meguro asks Setagaya for 花子's tax information), with changes by
    field name, e.g. ``line(統合宛名番号="000000000010002")``."""
    values = {
        "番号体系": "01",
        "宛名番号": "000000000000101",
        "統合宛名番号": HANAKO_MEGURO,
        "照会依頼日時": "20260401093000123",
        "情報照会者部署コード": "KAIGO01",
        "情報照会者ユーザーID": "user01",
        "情報照会者機関コード": MEGURO,
        "照会側不開示コード": "0",
        "事務コード": CARE_AFFAIR,
        "事務手続コード": PREMIUM_ASSESSMENT,
        "照会者機関コード(委任元)": "",
        "提供者機関コード(委任元)": "",
        "情報提供者機関コード又は転入元": SETAGAYA,
        "特定個人情報名コード": TAX_INFORMATION,
        "照会条件区分": "",
        "照会年度区分": "",
        "照会開始日付": "",
        "照会終了日付": "",
    }
    assert set(changes) <= set(values), set(changes) - set(values)
    values.update(changes)
    return ",".join(values[field.name] for field in FIELDS)


def period(start: str, end: str) -> str:
    return line(照会条件区分="2", 照会開始日付=start, 照会終了日付=end)


PROVIDER_FIELD = "情報提供者機関コード又は転入元"


def parse(text: str, encoding: str = "utf-8", **options: Any) -> Any:
    return parse_bulk_query_file(text.encode(encoding), MEGURO, CATALOGUE, **options)


def only_refusal(text: str) -> Any:
    (parsed,) = parse(text + "\n").lines
    assert parsed.submission is None
    return parsed.refusal


# -- the file (pure) ------------------------------------------------------------------------


def test_utf8_file_gives_one_query_per_line() -> None:
    """Each line of a UTF-8 file becomes the query it describes, numbered by its line."""
    parsed = parse(line() + "\n" + line(統合宛名番号=TARO_MEGURO) + "\n")
    assert parsed.encoding == "utf-8" and not parsed.header
    assert [entry.number for entry in parsed.lines] == [1, 2]
    first, second = (entry.submission for entry in parsed.lines)
    assert (first.integrated_address_number, first.procedure) == (HANAKO_MEGURO, PREMIUM_ASSESSMENT)
    assert (first.information_name, first.provider) == (TAX_INFORMATION, SETAGAYA)
    assert first.conditions is None
    assert second.integrated_address_number == TARO_MEGURO


def test_utf8_byte_order_mark_is_recognised_and_remembered() -> None:
    """A UTF-8 file with a BOM is read, and its result file starts with a BOM too."""
    parsed = parse_bulk_query_file(b"\xef\xbb\xbf" + line().encode() + b"\n", MEGURO, CATALOGUE)
    assert parsed.encoding == "utf-8-sig"
    assert parsed.lines[0].submission is not None
    assert result_header("utf-8-sig").startswith(b"\xef\xbb\xbf" + "行番号".encode())


def test_shift_jis_file_with_kanji_is_decoded() -> None:
    """A file that is not UTF-8 is read as Shift_JIS (cp932), kanji included."""
    text = line(情報照会者部署コード="介護保険課") + "\r\n"
    parsed = parse(text, "cp932")
    assert parsed.encoding == "cp932"
    assert parsed.lines[0].raw.split(",")[4] == "介護保険課"
    assert parsed.lines[0].submission is not None


def test_crlf_and_lf_files_read_the_same() -> None:
    """CRLF and LF line ends give the same lines; blank lines are skipped but counted."""
    body = [line(), "", line(統合宛名番号=TARO_MEGURO)]
    lf = parse("\n".join(body) + "\n")
    crlf = parse("\r\n".join(body) + "\r\n")
    assert [(e.number, e.raw, e.submission) for e in lf.lines] == [
        (e.number, e.raw, e.submission) for e in crlf.lines
    ]
    assert [e.number for e in crlf.lines] == [1, 3]


def test_optional_header_line_is_skipped() -> None:
    """A first line starting with 番号体系 is a header, not a query."""
    header = ",".join(field.name for field in FIELDS)
    parsed = parse(header + "\n" + line() + "\n")
    assert parsed.header
    assert [entry.number for entry in parsed.lines] == [2]


def test_transfer_origin_municipality_code_names_its_institution() -> None:
    """A 6-digit municipality code as provider (転入元) means that municipality's institution."""
    (parsed,) = parse(line(情報提供者機関コード又は転入元="131121") + "\n").lines
    assert parsed.submission.provider == SETAGAYA


def test_delegation_non_disclosure_and_address_number_are_carried_into_the_line() -> None:
    """委任元 codes, 照会側不開示 1 and 番号体系 02 with a 宛名番号 are kept with the line's
    query: whether the delegation exists is the list's to say at submission."""
    values = line(
        番号体系="02",
        統合宛名番号="",
        照会側不開示コード="1",
        **{"照会者機関コード(委任元)": SETAGAYA},
    )
    (parsed,) = parse(values + "\n").lines
    assert parsed.refusal is None
    assert parsed.address_number == "000000000000101"
    assert parsed.submission.integrated_address_number == ""
    assert parsed.submission.delegating_requester == SETAGAYA
    assert parsed.submission.non_disclosure is True


def test_conditions_by_fiscal_year_and_period() -> None:
    """照会条件区分 3 carries the fiscal year and the period into the query's conditions."""
    text = line(
        照会条件区分="3", 照会年度区分="2026", 照会開始日付="20260401", 照会終了日付="20270331"
    )
    (parsed,) = parse(text + "\n").lines
    assert parsed.submission.conditions == messages.QueryConditions(
        fiscal_year=2026, period_start=date(2026, 4, 1), period_end=date(2027, 3, 31)
    )


def test_quoted_fields_and_delegation_to_itself_are_accepted() -> None:
    """Fields may be double-quoted and padded with spaces; 委任元 codes equal to the parties
    themselves are accepted."""
    values = line(**{"照会者機関コード(委任元)": MEGURO, "提供者機関コード(委任元)": SETAGAYA})
    quoted = ",".join(f'" {value} "' for value in values.split(","))
    (parsed,) = parse(quoted + "\n").lines
    assert parsed.refusal is None
    assert parsed.submission.provider == SETAGAYA


@pytest.mark.parametrize(
    ("raw", "field", "detail"),
    [
        ("01,2,3", "項目数", "18項目が必要ですが、3項目です"),
        (line(番号体系="03"), "番号体系", "01(団体内統合宛名番号)又は02(宛名番号)"),
        (line(番号体系=""), "番号体系", "必須項目です"),
        (line(番号体系="02", 宛名番号=""), "宛名番号", "必須項目です"),
        (line(宛名番号="1234567890123456"), "宛名番号", "15文字以内"),
        (line(統合宛名番号=""), "統合宛名番号", "必須項目です"),
        (line(統合宛名番号="00000000001000A"), "統合宛名番号", "数字で指定してください"),
        (line(統合宛名番号="０００１"), "統合宛名番号", "数字で指定してください"),
        (line(照会依頼日時="2026040109300012"), "照会依頼日時", "17桁"),
        (line(照会依頼日時="20260231093000123"), "照会依頼日時", "存在しない日時です"),
        (line(情報照会者部署コード="a\tb"), "情報照会者部署コード", "制御文字"),
        (line(情報照会者機関コード="113110500000000X"), "情報照会者機関コード", "機関コード"),
        (line(情報照会者機関コード=SETAGAYA), "情報照会者機関コード", MEGURO),
        (line(照会側不開示コード="2"), "照会側不開示コード", "0、1又は空欄"),
        (line(事務コード="JX90000000001000"), "事務コード", "事務コード"),
        (line(事務コード="JM90000000002000"), "事務コード", "の事務はJM90000000001000であり"),
        (line(事務手続コード="JT99999999999999"), "事務手続コード", "カタログに存在しません"),
        (line(**{"照会者機関コード(委任元)": "1131105"}), "照会者機関コード(委任元)", "機関コード"),
        (line(情報提供者機関コード又は転入元="131122"), PROVIDER_FIELD, "全国地方公共団体コード"),
        (line(情報提供者機関コード又は転入元="12345"), PROVIDER_FIELD, "機関コード"),
        (line(特定個人情報名コード="TM00000000000099"), "特定個人情報名コード", "存在しません"),
        (line(照会条件区分="4"), "照会条件区分", "0、1、2、3又は空欄"),
        (line(照会条件区分="1"), "照会年度区分", "必須です"),
        (line(照会年度区分="2026"), "照会年度区分", "空欄にしてください"),
        (line(照会条件区分="1", 照会年度区分="26"), "照会年度区分", "西暦4桁"),
        (period("20260230", "20260301"), "照会開始日付", "YYYYMMDD"),
        (period("20260401", "20260331"), "照会終了日付", "より前"),
        ('01,"unterminated', "行", "CSVの行ではありません"),
    ],
)  # fmt: skip
def test_each_kind_of_invalid_field_refuses_its_line(raw: str, field: str, detail: str) -> None:
    """A line with a bad field is refused with BulkQueryLineInvalid naming that field."""
    refusal = only_refusal(raw)
    assert refusal.field == field
    assert detail in refusal.detail_ja
    error = refusal.error(1)
    assert error.code == "BulkQueryLineInvalid"
    assert error.message_en.startswith(f"Line 1, field {field}: ")


def test_invalid_line_does_not_stop_the_others() -> None:
    """Only the bad line is refused; the lines around it stay valid."""
    parsed = parse("\n".join([line(), line(番号体系="99"), line()]) + "\n")
    assert [entry.refusal is None for entry in parsed.lines] == [True, False, True]
    assert parsed.invalid == 1


def test_undecodable_file_is_refused() -> None:
    """Bytes that are neither UTF-8 nor Shift_JIS refuse the whole file."""
    with pytest.raises(RenkeiError) as refused:
        parse_bulk_query_file(line().encode() + b"\x81\x7f\n", MEGURO, CATALOGUE)
    assert refused.value.code == "BulkQueryFileInvalid"
    assert "neither UTF-8 nor Shift_JIS" in refused.value.message_en


@pytest.mark.parametrize("text", ["", "\r\n\n", ",".join(f.name for f in FIELDS) + "\n"])
def test_empty_file_is_refused(text: str) -> None:
    """A file without a single query line (empty, blank or a header alone) is refused."""
    with pytest.raises(RenkeiError) as refused:
        parse(text)
    assert refused.value.code == "BulkQueryFileInvalid"


def test_too_many_lines_are_refused() -> None:
    """A file with more lines than the limit is refused as a whole."""
    assert MAX_LINES == 100_000
    with pytest.raises(RenkeiError) as refused:
        parse((line() + "\n") * 4, max_lines=3)
    assert refused.value.code == "BulkQueryFileInvalid"
    assert "4 lines; at most 3" in refused.value.message_en
    assert len(parse((line() + "\n") * 3, max_lines=3).lines) == 3


def test_shift_jis_result_escapes_what_shift_jis_cannot_carry() -> None:
    """Provided values outside Shift_JIS travel as JSON escapes in a Shift_JIS result file."""
    payload = messages.ProvisionPayload(
        transaction_number="20260401000000000001",
        information_name=TAX_INFORMATION,
        provider=SETAGAYA,
        requester=MEGURO,
        created_at=datetime(2026, 4, 1, tzinfo=UTC),
        records=(
            messages.PayloadRecord(
                data_set="0101", record_id="R1", items=(("TK00000201010002", "𠮷野"),)
            ),
        ),
    )
    row = {
        "line_number": 1,
        "raw": line(),
        "state": "normal_end",
        "transaction_number": "20260401000000000001",
        "query_id": "q",
        "error_code": None,
        "result": serialize(messages.to_element(payload)),
    }
    text = result_lines([row], "cp932").decode("cp932")
    (fields,) = csv.reader(io.StringIO(text))
    assert fields[4:7] == ["09", "正常終了", "01"]
    assert json.loads(fields[12]) == [
        {"data_set": "0101", "record_id": "R1", "items": {"TK00000201010002": "𠮷野"}}
    ]
    assert "\\ud842\\udfb7野" in fields[12]


def test_cli_help_describes_the_command() -> None:
    """`renkei bulk-query --help` says what it sends, how, and what it saves."""
    result = CliRunner().invoke(main, ["bulk-query", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "18-field bulk-query CSV" in text
    assert "mutual TLS" in text and "--no-wait" in text and "FILE.result.csv" in text


# -- in a running network -------------------------------------------------------------------


def bulk(box: Any) -> BulkQueries:
    return box.back_offices["meguro"].bulk_queries


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def until_ended(box: Any, bulk_query_id: str, timeout: float = 60.0) -> dict[str, Any]:
    waited = 0.0
    while True:
        progress = await bulk(box).progress(bulk_query_id)
        if progress["state"] == "ended":
            return progress
        assert waited < timeout, f"bulk query still running: {progress}"
        await sleep(0.1)
        waited += 0.1


async def result_rows(box: Any, bulk_query_id: str) -> list[dict[str, str]]:
    content, content_type = await bulk(box).result_file(bulk_query_id)
    assert content_type == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def count(box: Any, table: Any, *conditions: Any) -> int:
    return int(
        box.nodes["meguro"].database.run_blocking(
            lambda connection: connection.execute(
                select(func.count()).select_from(table).where(*conditions)
            ).scalar_one()
        )
    )


def file_of(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest_twisted.ensureDeferred
async def test_bulk_query_of_demo_persons_ends_normally_with_the_provided_items(
    box: Any,
) -> None:
    """Demo persons asked of Setagaya end normally ('09'/'01'), with 処理通番 and the
    provided items in the result file, and the bulk query goes from running to ended."""
    accepted = await bulk(box).submit(
        file_of(line(), line(統合宛名番号=TARO_MEGURO, 宛名番号="000000000000102")),
        "care-insurance",
    )
    assert accepted["state"] == "running"
    assert (accepted["lines"], accepted["invalid"]) == (2, 0)
    first = await bulk(box).progress(accepted["bulk_query_id"])
    assert first["state"] == "running" and first["ended_at"] is None
    progress = await until_ended(box, accepted["bulk_query_id"])
    assert (progress["lines"], progress["ended"]) == (2, 2)
    assert progress["by_state"] == {"normal_end": 2}
    assert progress["ended_at"] is not None

    hanako, taro = await result_rows(box, accepted["bulk_query_id"])
    assert (hanako["行番号"], hanako["宛名番号"], hanako["統合宛名番号"]) == (
        "1",
        "000000000000101",
        HANAKO_MEGURO,
    )
    assert hanako["特定個人情報名コード"] == TAX_INFORMATION
    assert (hanako["処理結果コード"], hanako["処理結果"]) == ("09", "正常終了")
    assert hanako["特定個人情報名単位結果コード"] == "01"
    assert len(hanako["処理通番"]) == 20 and hanako["エラーコード"] == ""
    assert hanako["提供件数"] == "1"
    (record,) = json.loads(hanako["提供情報"])
    assert record["record_id"] == "SET-TAX-2026-0001"
    assert record["items"]["TK00000201010004"] == "84200"  # 市町村民税所得割額
    assert (taro["処理結果コード"], taro["提供件数"], taro["提供情報"]) == ("09", "0", "[]")
    status = await box.nodes["meguro"].requester.query_status(hanako["照会ID"], "care-insurance")
    assert status.transaction_number == hanako["処理通番"]


@pytest_twisted.ensureDeferred
async def test_unknown_person_missing_fugo_not_permitted_and_invalid_lines_get_their_states(
    box: Any,
) -> None:
    """Lines for an unknown person, a person without 符号, a procedure not permitted and a
    bad field end with their own states and messages; the valid line still ends normally."""
    meguro = box.nodes["meguro"]
    await meguro.database.run(register, "000000000019999", meguro.now())
    accepted = await bulk(box).submit(
        file_of(
            line(統合宛名番号=UNKNOWN),
            line(統合宛名番号="000000000019999"),
            line(事務手続コード=CERTIFICATION),
            line(照会依頼日時="x"),
            line(),
        ),
        "care-insurance",
    )
    assert (accepted["lines"], accepted["invalid"]) == (5, 1)
    progress = await until_ended(box, accepted["bulk_query_id"])
    assert progress["by_state"] == {
        "fugo_not_acquired": 1,
        "invalid": 1,
        "normal_end": 1,
        "not_permitted": 1,
        "unknown_person": 1,
    }
    rows = await result_rows(box, accepted["bulk_query_id"])
    summary = [(r["処理結果コード"], r["処理結果"], r["エラーコード"]) for r in rows]
    assert summary == [
        ("22", "対象者未登録", "UnknownPerson"),
        ("21", "符号未取得", "FugoNotAcquired"),
        ("20", "照会不許可", "NotPermitted"),
        ("80", "入力不備", "BulkQueryLineInvalid"),
        ("09", "正常終了", ""),
    ]
    assert rows[1]["エラーメッセージ"] == "000000000019999は符号が未取得です"
    assert (
        rows[2]["エラーメッセージ"] == f"特定個人情報名{TAX_INFORMATION}の照会は許可されていません"
    )
    assert rows[3]["エラーメッセージ"].startswith("4行目 項目「照会依頼日時」: ")
    assert all(r["処理通番"] == "" for r in rows[:4])
    # Refused before any query was made: only the valid line reached the network.
    assert count(box, query) == 1


@pytest_twisted.ensureDeferred
async def test_result_before_the_end_is_refused_with_bulk_query_not_ended(box: Any) -> None:
    """Until every line has ended the result file is refused (BulkQueryNotEnded), also over
    the back-office API; then it is served."""
    from twisted.internet import reactor

    await bulk(box).stop()
    accepted = await bulk(box).submit(file_of(line(), line()), "care-insurance")
    with pytest.raises(RenkeiError) as refused:
        await bulk(box).result_file(accepted["bulk_query_id"])
    assert refused.value.code == "BulkQueryNotEnded"
    assert "0 of 2 lines" in refused.value.message_en
    client = BackOfficeClient(
        reactor, box.config, box.config.institution("meguro"), "care-insurance"
    )
    try:
        progress = await client.request("GET", f"/bulk-queries/{accepted['bulk_query_id']}")
        assert (progress["state"], progress["ended"], progress["by_state"]) == (
            "running",
            0,
            {"pending": 2},
        )
        with pytest.raises(BackOfficeError) as over_http:
            await client.request("GET", f"/bulk-queries/{accepted['bulk_query_id']}/result")
        assert (over_http.value.status, over_http.value.code) == (409, "BulkQueryNotEnded")
        with pytest.raises(BackOfficeError) as unknown:
            await client.request("GET", "/bulk-queries/no-such-id")
        assert (unknown.value.status, unknown.value.code) == (404, "UnknownBulkQuery")
    finally:
        await client.close()
    await bulk(box).start()
    await until_ended(box, accepted["bulk_query_id"])
    assert len(await result_rows(box, accepted["bulk_query_id"])) == 2


@pytest_twisted.ensureDeferred
async def test_restart_of_the_driver_resumes_without_duplicate_queries(box: Any) -> None:
    """Stopping the driver while a bulk query runs leaves no line half-written; the next start
    finishes it and every line has exactly one query."""
    lines = 150
    # A window below the file's lines and small bundles, so that the stop finds lines taken,
    # lines in flight and lines not yet taken.
    bulk(box).window, bulk(box).bundle = 64, 8
    accepted = await bulk(box).submit(file_of(*[line()] * lines), "care-insurance")
    bulk_query_id = accepted["bulk_query_id"]
    for _ in range(400):  # until the driver has taken lines and submits them
        progress = await bulk(box).progress(bulk_query_id)
        if progress["by_state"].get("pending", lines) < lines:
            break
        await sleep(0.01)
    await sleep(0.05)
    await bulk(box).stop()
    stopped = await bulk(box).progress(bulk_query_id)
    assert "submitting" not in stopped["by_state"]
    assert stopped["state"] == "running", "stopped too late to test a resume"
    assert 0 < stopped["by_state"]["pending"] < lines
    await sleep(0.3)
    assert (await bulk(box).progress(bulk_query_id))["by_state"] == stopped["by_state"]
    await bulk(box).start()
    progress = await until_ended(box, bulk_query_id)
    assert progress["by_state"] == {"normal_end": lines}
    assert count(box, query) == lines
    linked = count(box, bulk_query_line, bulk_query_line.c.query_id.is_not(None))
    distinct = box.nodes["meguro"].database.run_blocking(
        lambda connection: connection.execute(
            select(func.count(func.distinct(bulk_query_line.c.query_id)))
        ).scalar_one()
    )
    assert linked == distinct == lines


@pytest_twisted.ensureDeferred
async def test_crash_between_submission_and_recording_re_links_the_query(box: Any) -> None:
    """A line whose query was created but whose id was never recorded (a crash in between)
    is linked to that query at the next start instead of being submitted again."""
    meguro = box.nodes["meguro"]
    await bulk(box).stop()
    accepted = await bulk(box).submit(file_of(line(), line()), "care-insurance")
    # A process that has died since (its owner never beat) took a line…
    claimed = await meguro.database.run(claim, 1, meguro.now(), "a-process-that-died")
    (taken,) = claimed
    # …and died once the line's query existed:
    query_id = await meguro.requester.submit_query(
        taken.submission, taken.system, taken.idempotency_key
    )
    await bulk(box).start()
    await until_ended(box, accepted["bulk_query_id"])
    assert count(box, query) == 2
    rows = await result_rows(box, accepted["bulk_query_id"])
    assert rows[taken.line_number - 1]["照会ID"] == query_id
    assert {r["処理結果コード"] for r in rows} == {"09"}


@pytest_twisted.ensureDeferred
async def test_held_line_is_final_once_every_other_line_has_ended(box: Any) -> None:
    """A line the provider holds for review does not keep the bulk query running once every
    other line has ended: the result shows it as 保留中 with its 処理通番."""
    from twisted.internet import reactor

    setagaya = BackOfficeClient(reactor, box.config, box.config.institution("setagaya"), LOCAL_TAX)
    try:
        await setagaya.register_replica_record(
            {
                "record_id": "SET-TAX-2026-DV01",
                "integrated_address_number": TARO_SETAGAYA,
                "information_name": TAX_INFORMATION,
                "data_set": "0101",
                "items": {"TK00000201010001": "2026"},
                "auto_response_suppressed": True,
            }
        )
    finally:
        await setagaya.close()
    accepted = await bulk(box).submit(
        file_of(line(), line(統合宛名番号=TARO_MEGURO)), "care-insurance"
    )
    progress = await until_ended(box, accepted["bulk_query_id"])
    assert progress["by_state"] == {"held": 1, "normal_end": 1}
    assert progress["ended"] == 2
    _, taro = await result_rows(box, accepted["bulk_query_id"])
    assert (taro["処理結果コード"], taro["処理結果"]) == ("10", "保留中")
    assert len(taro["処理通番"]) == 20 and taro["提供情報"] == ""


@pytest_twisted.ensureDeferred
async def test_cli_sends_the_file_shows_progress_and_saves_the_result(
    box: Any, tmp_path: Path
) -> None:
    """`renkei bulk-query` posts a Shift_JIS file with the system's certificate, waits for the
    end and saves a Shift_JIS result; a file the node refuses fails with its code."""
    from twisted.internet.utils import getProcessOutputAndValue

    source = tmp_path / "照会.csv"
    source.write_bytes(
        (line(情報照会者部署コード="介護保険課") + "\r\n" + line(番号体系="99") + "\r\n").encode(
            "cp932"
        )
    )

    async def renkei(*args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", "from renkei.cli import main; main()", *args],
            env=dict(os.environ),
            path=str(REPOSITORY),
        )
        return out.decode(), err.decode(), code

    common = ["-c", str(box.config.path), "--institution", "meguro", "--system", "care-insurance"]
    out, err, code = await renkei("bulk-query", str(source), *common, "--interval", "0.2")
    assert code == 0, err + out
    assert "2 lines, 1 invalid" in out
    target = tmp_path / "照会.csv.result.csv"
    assert f"result file: {target}" in out
    rows = list(csv.reader(io.StringIO(target.read_bytes().decode("cp932"))))
    assert rows[0][:6] == [
        "行番号",
        "宛名番号",
        "統合宛名番号",
        "特定個人情報名コード",
        "処理結果コード",
        "処理結果",
    ]
    assert [row[4] for row in rows[1:]] == ["09", "80"]
    assert "84200" in rows[1][12]

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"")
    out, err, code = await renkei("bulk-query", str(bad), *common)
    assert code == 1
    assert "BulkQueryFileInvalid" in err


class CliRun(ProcessProtocol):
    """The CLI run in a process of its own, its standard error watched as it comes (the box
    runs in this process's reactor): `said` fires once a text has appeared in it, `ended`
    with (out, err, exit code)."""

    def __init__(self, *args: str) -> None:
        from twisted.internet import reactor as installed

        reactor: Any = installed
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._waiting: list[tuple[str, Deferred[None]]] = []
        self.ended: Deferred[tuple[str, str, int]] = Deferred()
        command = [sys.executable, "-c", "from renkei.cli import main; main()", *args]
        reactor.spawnProcess(
            self, sys.executable, command, env=dict(os.environ), path=str(REPOSITORY)
        )

    def said(self, text: str) -> Deferred[None]:
        heard: Deferred[None] = Deferred()
        self._waiting.append((text, heard))
        self.errReceived(b"")
        return heard

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)
        err = b"".join(self._err).decode(errors="replace")
        for text, heard in list(self._waiting):
            if text in err:
                self._waiting.remove((text, heard))
                heard.callback(None)

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if isinstance(reason.value, ProcessTerminated) else 0
        out, err = (b"".join(part).decode(errors="replace") for part in (self._out, self._err))
        for text, heard in self._waiting:
            heard.errback(AssertionError(f"the CLI ended without saying {text!r}: {err}"))
        self.ended.callback((out, err, code or 0))


@pytest_twisted.ensureDeferred
async def test_the_cli_rides_out_a_node_restart_and_resumes_a_bulk_query(
    box: Any, tmp_path: Path
) -> None:
    """`renkei bulk-query` keeps trying while the node is down, sends its file once (one
    Idempotency-Key per run) and saves the result; `--resume ID` follows the same bulk query
    to the same result file."""
    from tests.test_populate_cli import renkei

    source = tmp_path / "ikkatsu.csv"
    source.write_bytes(file_of(line(), line(統合宛名番号=ICHIRO_MEGURO)))
    common = ("-c", str(box.config.path), "-i", "meguro", "-s", CARE_INSURANCE)
    await box.stop_party("meguro")
    sent = CliRun("bulk-query", str(source), *common, "--interval", "0.2")
    await sent.said("did not answer")  # the node is down: the CLI keeps trying
    await box.start_party("meguro")
    out, err, code = await sent.ended
    stored = box.nodes["meguro"].database.run_blocking(
        lambda connection: connection.execute(select(bulk_query.c.bulk_query_id)).scalars().all()
    )
    assert len(stored) == 1
    first = (tmp_path / "ikkatsu.csv.result.csv").read_bytes()
    assert first.count(b"\r\n") == 3  # the header and two lines
    again = tmp_path / "again.csv"
    out, err, code = await renkei("bulk-query", *common, "--resume", stored[0], "-o", str(again))
    assert code == 0, out + err
    assert again.read_bytes() == first
    out, err, code = await renkei("bulk-query", *common)
    assert code == 2 and "--resume" in err


@pytest_twisted.ensureDeferred
async def test_the_cli_keeps_a_result_file_unless_forced_and_fails_a_file_of_invalid_lines(
    box: Any, tmp_path: Path
) -> None:
    """A file whose every line is invalid asks nothing and fails (its result file saved); run
    again, its existing result file is kept and nothing is sent; with --force a file with
    one invalid line of two replaces it and says how many lines were refused."""
    from tests.test_populate_cli import renkei

    source = tmp_path / "ikkatsu.csv"
    source.write_bytes(file_of(line(番号体系="99"), line(番号体系="98")))
    target = tmp_path / "ikkatsu.csv.result.csv"
    common = ("-c", str(box.config.path), "-i", "meguro", "-s", CARE_INSURANCE)
    out, err, code = await renkei("bulk-query", str(source), *common, "--interval", "0.2")
    assert code == 1, out + err
    assert err.startswith("error: BulkQueryLineInvalid: every line of ") and "(2)" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert target.read_bytes().count(b"\r\n") == 3  # the header and the two lines, why each
    assert count(box, query) == 0
    first = target.read_bytes()

    source.write_bytes(file_of(line(), line(番号体系="99")))
    out, err, code = await renkei("bulk-query", str(source), *common)
    assert code == 1 and err.startswith("error: ResultFileExists: "), out + err
    assert "--force" in err and target.read_bytes() == first
    assert count(box, bulk_query) == 1  # nothing was sent

    out, err, code = await renkei(
        "bulk-query", str(source), *common, "--force", "--interval", "0.2"
    )
    assert code == 0, out + err
    assert "1 of 2 lines refused as invalid (BulkQueryLineInvalid)" in out
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [row[4] for row in rows[1:]] == ["09", "80"]
