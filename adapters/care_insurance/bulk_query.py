"""Bulk queries (一括照会): a back office's 18-field CSV file, run as one query per line.

A back office posts a file (``POST /bulk-queries``). `parse_bulk_query_file` decodes it
(UTF-8 with or without BOM, else Shift_JIS/cp932) and validates each line on its own: an
invalid line is refused (``BulkQueryLineInvalid``) without stopping the others; a file that
cannot be decoded, is empty or has more than `MAX_LINES` lines is refused as a whole
(``BulkQueryFileInvalid``) and nothing is stored. `BulkQueries.submit` stores the bulk query
and every line in one transaction and answers at once; the driver of `BulkQueries` then
submits the valid lines to the node, up to `BUNDLE` together (the node sends those of one
shape to the network as one query bundle), at most `CONCURRENCY` submissions at a time and at
most `WINDOW` lines submitted and not yet ended, and watches their ends with one batch query every
`POLL_INTERVAL` seconds. The result file is available once every line has ended.

File format, states, the result file and what is emulated: docs/bulk-query.md.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from codes.institution import institution_code_for_municipality, validate_institution_code
from codes.typed import (
    validate_affair_code,
    validate_information_name_code,
    validate_procedure_code,
)
from middleware import messages
from middleware.bulk_queries import (
    ENDED,
    ERROR,
    FUGO_NOT_ACQUIRED,
    HELD,
    INVALID,
    NORMAL_END,
    NOT_PERMITTED,
    PENDING,
    REFUSED,
    RUNNING,
    SUBMITTED,
    UNKNOWN_PERSON,
    ClaimedLine,
    NewLine,
    Outcome,
)
from middleware.clock import periodic
from middleware.deferred import deferred
from middleware.hardened_xml import parse_xml
from middleware.node import IntermediateServer
from middleware.outbox import STALE
from middleware.queries import QuerySubmission
from middleware.storage import DatabaseStopped

__all__ = [
    "ADDRESS_NUMBER",
    "ADDRESS_NUMBER_SYSTEM",
    "AFFAIR",
    "BUNDLE",
    "CLAIM_BATCH",
    "CONCURRENCY",
    "CONDITION_KIND",
    "CONDITION_KINDS",
    "CONTENT_TYPES",
    "DELEGATING_PROVIDER",
    "DELEGATING_REQUESTER",
    "DEPARTMENT",
    "FIELDS",
    "FISCAL_YEAR",
    "HEADER_MARKER",
    "INFORMATION_NAME",
    "INFORMATION_NAME_NORMAL",
    "INTEGRATED_ADDRESS_NUMBER",
    "INTEGRATED_NUMBER_SYSTEM",
    "MAX_LINES",
    "NON_DISCLOSURE",
    "NUMBER_SYSTEM",
    "PERIOD_END",
    "PERIOD_START",
    "POLL_INTERVAL",
    "PROCEDURE",
    "PROVIDER",
    "REQUESTED_AT",
    "REQUESTER",
    "RESULT_HEADER",
    "RESULT_PAGE",
    "RETRY_PAUSE",
    "STATE_CODES",
    "USER_ID",
    "WINDOW",
    "BulkQueries",
    "BulkQueryFile",
    "BulkQueryLine",
    "Field",
    "LineRefusal",
    "decode_file",
    "invalid_line_message_ja",
    "lines_to_store",
    "parse_bulk_query_file",
    "result_header",
    "result_lines",
    "split_fields",
]

MAX_LINES = 100_000
CONCURRENCY = 32  # submissions to the node in flight at once
BUNDLE = 50  # lines of one submission at most (sent to the network as one bundle)
WINDOW = 500  # lines submitted (or being submitted) and not yet ended, per node
POLL_INTERVAL = 0.5  # seconds between two batch polls of the lines' queries
CLAIM_BATCH = 500  # lines taken from the database at most per poll
RETRY_PAUSE = 5.0  # seconds without submissions after a transient refusal (HTTP 503)
RESULT_PAGE = 2_000  # lines read per database call when writing the result file

# The result file's 処理結果コード and 処理結果. '09' is the real system's normal end
# (SOURCES.md); every other code is this emulation's.
STATE_CODES: dict[str, tuple[str, str]] = {
    NORMAL_END: ("09", "正常終了"),
    HELD: ("10", "保留中"),
    NOT_PERMITTED: ("20", "照会不許可"),
    FUGO_NOT_ACQUIRED: ("21", "符号未取得"),
    UNKNOWN_PERSON: ("22", "対象者未登録"),
    REFUSED: ("30", "提供不可"),
    INVALID: ("80", "入力不備"),
    ERROR: ("90", "エラー"),
}
# 特定個人情報名単位の結果: '01' with '09' is a normal end (SOURCES.md).
INFORMATION_NAME_NORMAL = "01"


CONTENT_TYPES = {
    "utf-8": "text/csv; charset=utf-8",
    "utf-8-sig": "text/csv; charset=utf-8",
    "cp932": "text/csv; charset=shift_jis",
}

RESULT_HEADER = (
    "行番号",
    "宛名番号",
    "統合宛名番号",
    "特定個人情報名コード",
    "処理結果コード",
    "処理結果",
    "特定個人情報名単位結果コード",
    "処理通番",
    "照会ID",
    "エラーコード",
    "エラーメッセージ",
    "提供件数",
    "提供情報",
)


# -- the input file (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One of the 18 fields of a line: its name and its width in characters."""

    name: str
    width: int


FIELDS = (
    Field("番号体系", 2),
    Field("宛名番号", 15),
    Field("統合宛名番号", 15),
    Field("照会依頼日時", 17),
    Field("情報照会者部署コード", 20),
    Field("情報照会者ユーザーID", 20),
    Field("情報照会者機関コード", 16),
    Field("照会側不開示コード", 1),
    Field("事務コード", 16),
    Field("事務手続コード", 16),
    Field("照会者機関コード(委任元)", 16),
    Field("提供者機関コード(委任元)", 16),
    Field("情報提供者機関コード又は転入元", 16),
    Field("特定個人情報名コード", 16),
    Field("照会条件区分", 1),
    Field("照会年度区分", 4),
    Field("照会開始日付", 8),
    Field("照会終了日付", 8),
)
(
    NUMBER_SYSTEM,
    ADDRESS_NUMBER,
    INTEGRATED_ADDRESS_NUMBER,
    REQUESTED_AT,
    DEPARTMENT,
    USER_ID,
    REQUESTER,
    NON_DISCLOSURE,
    AFFAIR,
    PROCEDURE,
    DELEGATING_REQUESTER,
    DELEGATING_PROVIDER,
    PROVIDER,
    INFORMATION_NAME,
    CONDITION_KIND,
    FISCAL_YEAR,
    PERIOD_START,
    PERIOD_END,
) = range(len(FIELDS))

HEADER_MARKER = FIELDS[NUMBER_SYSTEM].name
INTEGRATED_NUMBER_SYSTEM = "01"  # 番号体系 01: the line names the person by 統合宛名番号
ADDRESS_NUMBER_SYSTEM = (
    "02"  # 番号体系 02: by 宛名番号, resolved by the integrated-address function
)
CONDITION_KINDS = {"": (False, False), "0": (False, False), "1": (True, False)}
CONDITION_KINDS |= {"2": (False, True), "3": (True, True)}

_DIGITS = re.compile(r"[0-9]+")
_WIDTHS = tuple(field.width for field in FIELDS)
_TIMESTAMP_PARTS = ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


@dataclass(frozen=True)
class LineRefusal:
    """Why one line was refused: the field and the detail in English and Japanese."""

    field: str
    detail_en: str
    detail_ja: str

    def params(self, line: int) -> dict[str, Any]:
        """The template values of ``BulkQueryLineInvalid`` (both details kept)."""
        return {
            "line": line,
            "field": self.field,
            "detail": self.detail_en,
            "detail_ja": self.detail_ja,
        }

    def error(self, line: int) -> RenkeiError:
        """The refusal as a coded error (English detail; see `invalid_line_message_ja`)."""
        return RenkeiError(errors.BULK_QUERY_LINE_INVALID, **self.params(line))


def invalid_line_message_ja(params: dict[str, Any]) -> str:
    """The Japanese message of an invalid line, with the Japanese detail."""
    values = {**params, "detail": params.get("detail_ja", params.get("detail", ""))}
    return RenkeiError(errors.BULK_QUERY_LINE_INVALID, **values).message_ja


class _Refused(Exception):
    def __init__(self, field: int | str, detail_en: str, detail_ja: str) -> None:
        super().__init__(detail_en)
        name = FIELDS[field].name if isinstance(field, int) else field
        self.refusal = LineRefusal(name, detail_en, detail_ja)


@dataclass(frozen=True)
class BulkQueryLine:
    """One line of the file: its number, text and either the query it asks or its refusal.

    A line of 番号体系 02 names its person by ``address_number`` (宛名番号): its submission's
    integrated address number is empty until the driver resolves it.
    """

    number: int
    raw: str
    submission: QuerySubmission | None
    refusal: LineRefusal | None
    address_number: str | None = None


@dataclass(frozen=True)
class BulkQueryFile:
    """A decoded and validated bulk-query file."""

    encoding: str  # "utf-8", "utf-8-sig" or "cp932"
    header: bool
    lines: tuple[BulkQueryLine, ...]

    @property
    def invalid(self) -> int:
        return sum(1 for line in self.lines if line.refusal is not None)


def decode_file(data: bytes) -> tuple[str, str]:
    """The text of a file and its encoding: UTF-8 (a BOM is noted) if valid, else cp932."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            raise _file_invalid("it starts with a UTF-8 byte order mark but is not UTF-8") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932"), "cp932"
    except UnicodeDecodeError:
        raise _file_invalid("it is neither UTF-8 nor Shift_JIS (cp932)") from None


def _file_invalid(detail: str) -> RenkeiError:
    return RenkeiError(errors.BULK_QUERY_FILE_INVALID, detail=detail)


def parse_bulk_query_file(
    data: bytes, requester: str, catalogue: Catalogue, max_lines: int = MAX_LINES
) -> BulkQueryFile:
    """Decode and validate a bulk-query file of institution ``requester``.

    Raises RenkeiError(BULK_QUERY_FILE_INVALID) when the file cannot be decoded, holds no
    line or more than ``max_lines`` lines; invalid lines are returned with their refusal.
    """
    text, encoding = decode_file(data)
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the last line's terminator
    numbered = [
        (number, line.removesuffix("\r"))
        for number, line in enumerate(physical, start=1)
        if line.strip(" \r") != ""
    ]
    header = bool(numbered) and numbered[0][1].lstrip(' "').startswith(HEADER_MARKER)
    if header:
        numbered = numbered[1:]
    if not numbered:
        raise _file_invalid("it holds no line")
    if len(numbered) > max_lines:
        raise _file_invalid(f"it holds {len(numbered)} lines; at most {max_lines} are accepted")
    lines = tuple(_parse_line(number, raw, requester, catalogue) for number, raw in numbered)
    return BulkQueryFile(encoding=encoding, header=header, lines=lines)


def split_fields(raw: str) -> list[str]:
    """The fields of one line (CSV; double quotes allowed), stripped of surrounding spaces."""
    return [value.strip(" ") for value in next(csv.reader([raw], strict=True))]


def _parse_line(number: int, raw: str, requester: str, catalogue: Catalogue) -> BulkQueryLine:
    try:
        submission, address_number = _submission(raw, requester, catalogue)
    except _Refused as refused:
        return BulkQueryLine(number, raw, None, refused.refusal)
    return BulkQueryLine(number, raw, submission, None, address_number)


def _submission(
    raw: str, requester: str, catalogue: Catalogue
) -> tuple[QuerySubmission, str | None]:
    try:
        values = split_fields(raw)
    except csv.Error as failure:
        raise _Refused(
            "行", f"not a CSV line ({failure})", f"CSVの行ではありません({failure})"
        ) from None
    if len(values) != len(FIELDS):
        raise _Refused(
            "項目数",
            f"{len(FIELDS)} fields are expected, {len(values)} were found",
            f"{len(FIELDS)}項目が必要ですが、{len(values)}項目です",
        )
    for index, value in enumerate(values):
        width = _WIDTHS[index]
        if len(value) > width:
            raise _Refused(
                index,
                f"at most {width} characters are accepted ({len(value)} given)",
                f"{width}文字以内で指定してください({len(value)}文字)",
            )
    if _CONTROL.search(raw):
        # A control character outside the fields (a line ending in CR CR LF): the line's.
        where: int | str = next(
            (i for i, value in enumerate(values) if _CONTROL.search(value)), "行"
        )
        raise _Refused(where, "control characters are not accepted", "制御文字は使用できません")

    _required(NUMBER_SYSTEM, values)
    system = values[NUMBER_SYSTEM]
    if system not in (INTEGRATED_NUMBER_SYSTEM, ADDRESS_NUMBER_SYSTEM):
        raise _Refused(
            NUMBER_SYSTEM,
            f"must be {INTEGRATED_NUMBER_SYSTEM} (団体内統合宛名番号) or"
            f" {ADDRESS_NUMBER_SYSTEM} (宛名番号)",
            f"{INTEGRATED_NUMBER_SYSTEM}(団体内統合宛名番号)又は"
            f"{ADDRESS_NUMBER_SYSTEM}(宛名番号)を指定してください",
        )
    address_number = None
    if system == ADDRESS_NUMBER_SYSTEM:
        _required(ADDRESS_NUMBER, values)
    if values[ADDRESS_NUMBER]:
        address_number = _digits(ADDRESS_NUMBER, values[ADDRESS_NUMBER])
    integrated = ""
    if system == INTEGRATED_NUMBER_SYSTEM:
        _required(INTEGRATED_ADDRESS_NUMBER, values)
        integrated = _digits(INTEGRATED_ADDRESS_NUMBER, values[INTEGRATED_ADDRESS_NUMBER])
    elif values[INTEGRATED_ADDRESS_NUMBER]:
        _digits(INTEGRATED_ADDRESS_NUMBER, values[INTEGRATED_ADDRESS_NUMBER])
    _required(REQUESTED_AT, values)
    _timestamp(values[REQUESTED_AT])
    _required(REQUESTER, values)
    _coded(REQUESTER, validate_institution_code, values[REQUESTER])
    if values[REQUESTER] != requester:
        raise _Refused(
            REQUESTER,
            f"must be this institution's code {requester}",
            f"当機関の機関コード{requester}を指定してください",
        )
    if values[NON_DISCLOSURE] not in ("", "0", "1"):
        raise _Refused(NON_DISCLOSURE, "must be 0, 1 or empty", "0、1又は空欄を指定してください")
    _required(AFFAIR, values)
    affair = _coded(AFFAIR, validate_affair_code, values[AFFAIR])
    _required(PROCEDURE, values)
    procedure_code = _coded(PROCEDURE, validate_procedure_code, values[PROCEDURE])
    procedure = _coded(PROCEDURE, catalogue.procedure, procedure_code)
    if procedure.affair != affair:
        raise _Refused(
            AFFAIR,
            f"procedure {procedure_code} belongs to affair {procedure.affair}, not {affair}",
            f"事務手続{procedure_code}の事務は{procedure.affair}であり、{affair}ではありません",
        )
    _required(PROVIDER, values)
    provider = _provider(values[PROVIDER])
    # 委任元: whether the delegation exists is the permitted-query list's to say, at submission.
    delegating = [
        _coded(index, validate_institution_code, values[index]) if values[index] else None
        for index in (DELEGATING_REQUESTER, DELEGATING_PROVIDER)
    ]
    _required(INFORMATION_NAME, values)
    information_name = _coded(
        INFORMATION_NAME, validate_information_name_code, values[INFORMATION_NAME]
    )
    _coded(INFORMATION_NAME, catalogue.information_name, information_name)
    submission = QuerySubmission(
        integrated_address_number=integrated,
        procedure=procedure_code,
        information_name=information_name,
        provider=provider,
        conditions=_conditions(values),
        delegating_requester=delegating[0],
        delegating_provider=delegating[1],
        non_disclosure=values[NON_DISCLOSURE] == "1",
    )
    return submission, address_number if system == ADDRESS_NUMBER_SYSTEM else None


def _required(index: int, values: Sequence[str]) -> None:
    if not values[index]:
        raise _Refused(index, "is required", "必須項目です")


def _digits(index: int, value: str) -> str:
    if not _DIGITS.fullmatch(value):
        raise _Refused(index, "must be digits", "数字で指定してください")
    return value


def _coded(index: int, validate: Any, value: str) -> Any:
    """Run a validator of ``codes``; its refusal becomes the line's, with both messages."""
    try:
        return validate(value)
    except RenkeiError as failure:
        raise _Refused(index, failure.message_en, failure.message_ja) from None


def _timestamp(value: str) -> datetime:
    if not (len(value) == 17 and _DIGITS.fullmatch(value)):
        raise _Refused(
            REQUESTED_AT,
            "must be 17 digits YYYYMMDDhhmmssfff",
            "YYYYMMDDhhmmssfffの17桁で指定してください",
        )
    try:
        year, month, day, hour, minute, second = (int(value[a:b]) for a, b in _TIMESTAMP_PARTS)
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise _Refused(REQUESTED_AT, "is not a real date and time", "存在しない日時です") from None


def _date(index: int, value: str) -> date:
    try:
        if len(value) != 8 or not _DIGITS.fullmatch(value):
            raise ValueError(value)
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise _Refused(
            index, "must be a real date YYYYMMDD", "実在する日付をYYYYMMDDで指定してください"
        ) from None


def _provider(value: str) -> str:
    """情報提供者機関コード (16 digits) or 転入元 as a 6-digit municipality code."""
    if len(value) == 6:
        return str(_coded(PROVIDER, institution_code_for_municipality, value))
    return str(_coded(PROVIDER, validate_institution_code, value))


def _conditions(values: Sequence[str]) -> messages.QueryConditions | None:
    kind = values[CONDITION_KIND]
    if kind not in CONDITION_KINDS:
        raise _Refused(
            CONDITION_KIND, "must be 0, 1, 2, 3 or empty", "0、1、2、3又は空欄を指定してください"
        )
    by_year, by_period = CONDITION_KINDS[kind]
    for index, wanted in (
        (FISCAL_YEAR, by_year),
        (PERIOD_START, by_period),
        (PERIOD_END, by_period),
    ):
        if wanted and not values[index]:
            raise _Refused(
                index,
                f"is required when 照会条件区分 is {kind}",
                f"照会条件区分が{kind}のときは必須です",
            )
        if not wanted and values[index]:
            raise _Refused(
                index,
                f"must be empty when 照会条件区分 is {kind or 'empty'}",
                f"照会条件区分が{kind or '空欄'}のときは空欄にしてください",
            )
    if not (by_year or by_period):
        return None
    fiscal_year = None
    if by_year:
        year = values[FISCAL_YEAR]
        if not (len(year) == 4 and _DIGITS.fullmatch(year) and int(year) >= 1):
            raise _Refused(
                FISCAL_YEAR, "must be a fiscal year YYYY", "年度を西暦4桁(YYYY)で指定してください"
            )
        fiscal_year = int(year)
    start = end = None
    if by_period:
        start = _date(PERIOD_START, values[PERIOD_START])
        end = _date(PERIOD_END, values[PERIOD_END])
        if end < start:
            raise _Refused(
                PERIOD_END,
                "must not be before 照会開始日付",
                "照会開始日付より前の日付は指定できません",
            )
    return messages.QueryConditions(fiscal_year=fiscal_year, period_start=start, period_end=end)


def lines_to_store(parsed: BulkQueryFile) -> list[NewLine]:
    """The lines of a parsed file as the node stores them."""
    return [
        NewLine(
            number=line.number,
            raw=line.raw,
            submission=line.submission,
            address_number=line.address_number,
            refusal=line.refusal.params(line.number) if line.refusal is not None else None,
        )
        for line in parsed.lines
    ]


# -- the result file (pure) ---------------------------------------------------------------


def result_header(encoding: str) -> bytes:
    """The result file's first line (and the BOM when the input had one)."""
    return (codecs.BOM_UTF8 if encoding == "utf-8-sig" else b"") + _csv_bytes(
        [RESULT_HEADER], encoding
    )


def result_lines(rows: Sequence[dict[str, Any]], encoding: str) -> bytes:
    """Result lines for these line rows (joined with their queries), encoded."""
    return _csv_bytes([_result_row(row, encoding) for row in rows], encoding)


def _csv_bytes(rows: Iterable[Sequence[str]], encoding: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    codec = "utf-8" if encoding.startswith("utf-8") else encoding
    return out.getvalue().encode(codec, errors="replace")


def _result_row(row: dict[str, Any], encoding: str) -> list[str]:
    try:
        echoed = split_fields(row["raw"])
    except csv.Error:
        echoed = []
    echoed += [""] * (len(FIELDS) - len(echoed))
    state = row["state"]
    code, name = STATE_CODES.get(state, ("", state))
    normal = state == NORMAL_END
    count, provided = "", ""
    if normal and row["result"] is not None:
        records = _provided_records(bytes(row["result"]))
        count = str(len(records))
        provided = _json_field(records, encoding)
    return [
        str(row["line_number"]),
        echoed[ADDRESS_NUMBER],
        echoed[INTEGRATED_ADDRESS_NUMBER],
        echoed[INFORMATION_NAME],
        code,
        name,
        INFORMATION_NAME_NORMAL if normal else "",
        row["transaction_number"] or "",
        row["query_id"] or "",
        "" if normal else row["error_code"] or "",
        _message_ja(row) if row["error_code"] and not normal else "",
        count,
        provided,
    ]


def _provided_records(plaintext: bytes) -> list[dict[str, Any]]:
    payload = messages.from_element(parse_xml(plaintext), messages.ProvisionPayload)
    return [
        {"data_set": record.data_set, "record_id": record.record_id, "items": dict(record.items)}
        for record in payload.records
    ]


def _json_field(records: list[dict[str, Any]], encoding: str) -> str:
    text = json.dumps(records, ensure_ascii=False, separators=(",", ":"))
    if encoding == "cp932":
        try:
            text.encode("cp932")
        except UnicodeEncodeError:
            # Characters Shift_JIS cannot carry travel as JSON escapes: still the same JSON.
            text = "".join(ch if _in_cp932(ch) else json.dumps(ch)[1:-1] for ch in text)
    return text


def _in_cp932(ch: str) -> bool:
    try:
        ch.encode("cp932")
    except UnicodeEncodeError:
        return False
    return True


def _message_ja(row: dict[str, Any]) -> str:
    code = row["error_code"]
    if code == errors.BULK_QUERY_LINE_INVALID.code:
        return invalid_line_message_ja(json.loads(row["error_params"] or "{}"))
    kind = errors.ALL.get(code)
    if kind is None:
        return str(code)  # a code from another party that this node does not know
    return RenkeiError(
        kind,
        integrated_address_number=row["integrated_address_number"],
        code=row["information_name"],
        procedure=row["procedure"],
        provider=row["provider"],
        sender=row["provider"],
        transaction_number=row["transaction_number"],
        query_id=row["query_id"],
    ).message_ja


# -- the service ----------------------------------------------------------------------------


class BulkQueries(Service):
    """The bulk queries of one node: intake, the driver that runs them, progress and results.

    A service of the node's party: ``start`` resumes every unfinished bulk query; ``stop``
    waits for the submissions in flight, records them and releases the lines taken but not
    yet submitted.
    """

    log = Logger()

    def __init__(
        self,
        node: IntermediateServer,
        reactor: Any,
        *,
        concurrency: int = CONCURRENCY,
        bundle: int = BUNDLE,
        window: int = WINDOW,
        poll_interval: float = POLL_INTERVAL,
        max_lines: int = MAX_LINES,
    ) -> None:
        self.node = node
        self.reactor = reactor
        self.concurrency = concurrency
        self.bundle = bundle
        self.window = window
        self.poll_interval = poll_interval
        self.max_lines = max_lines
        self._running = False
        self._loop: LoopingCall | None = None
        self._busy = False
        self._queue: deque[ClaimedLine] = deque()
        self._in_flight = 0
        self._outcomes: list[Outcome] = []
        self._paused_until = 0.0
        self._idle_waiters: list[Deferred[None]] = []
        self._recovered_at = 0.0

    # -- life ---------------------------------------------------------------------------

    def startService(self) -> Any:
        super().startService()
        return self.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.stop()

    @deferred
    async def start(self) -> None:
        """Re-link or release lines left ``submitting``, then drive every running bulk query."""
        if self._running:
            return
        await self._recover()
        self._running = True
        self._loop = periodic(self._tick, self.node.clock)
        self._loop.start(self.poll_interval, now=True).addErrback(
            lambda failure: self.log.failure("bulk-query driver stopped", failure)
        )

    async def _recover(self) -> None:
        """Take over the lines left ``submitting`` by a process that is gone: this one's
        predecessor, or another process of the institution that died."""
        self._recovered_at = self.node.clock.seconds()
        relinked, released = await self.node.store.bulk_queries.recover(
            self.node.outbox.owner, self.node.now()
        )
        if relinked or released:
            self.log.info(
                "bulk queries resumed: {relinked} lines re-linked to their queries, "
                "{released} to submit again",
                relinked=relinked,
                released=released,
            )

    @deferred
    async def stop(self) -> None:
        """Stop driving: nothing half-written; what is left resumes at the next start."""
        self._running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        await self._idle()
        self._release_queue()
        outcomes, self._outcomes = self._outcomes, []
        if outcomes:
            try:
                await self.node.store.bulk_queries.finish(outcomes, self.node.now())
            except Exception as failure:
                # Left ``submitting``: the next start re-links or releases them.
                self.log.warn("bulk-query outcomes not recorded at stop: {f}", f=failure)

    def _idle(self) -> Deferred[None]:
        if not self._busy and self._in_flight == 0:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _maybe_idle(self) -> None:
        if not self._busy and self._in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _release_queue(self) -> None:
        while self._queue:
            line = self._queue.popleft()
            self._outcomes.append(Outcome(line.bulk_query_id, line.line_number, PENDING))

    # -- the driver -------------------------------------------------------------------------

    def _tick(self) -> Deferred[Any] | None:
        if self._busy or not self._running:
            return None
        self._busy = True
        outcomes, self._outcomes = self._outcomes, []
        paused = self.node.clock.seconds() < self._paused_until
        limit = 0 if paused else CLAIM_BATCH
        worked = self.node.store.bulk_queries.drive(
            outcomes, limit, self.window, self.node.now(), self.node.outbox.owner
        )
        if self.node.clock.seconds() - self._recovered_at >= STALE:
            # Another process of the institution may have died with lines in hand.
            worked.addCallback(
                lambda claimed: Deferred.fromCoroutine(self._recover()).addCallback(
                    lambda _: claimed
                )
            )

        def taken(claimed: list[ClaimedLine]) -> None:
            self._queue.extend(claimed)

        def failed(failure: Failure) -> None:
            self._outcomes[:0] = outcomes  # nothing was written: keep them for the next tick
            if not failure.check(DatabaseStopped):
                self.log.failure("bulk-query driver tick failed", failure)

        def done(_: Any) -> None:
            self._busy = False
            self._pump()
            self._maybe_idle()

        worked.addCallbacks(taken, failed)
        worked.addBoth(done)
        return worked

    def _kick(self) -> None:
        if self._running and not self._busy:
            self._tick()

    def _pump(self) -> None:
        if self.node.clock.seconds() < self._paused_until:
            self._release_queue()
            return
        while self._running and self._queue and self._in_flight < self.concurrency:
            # The next lines of one back-office system, submitted together: the node sends
            # those of one shape to the network as one bundle.
            system = self._queue[0].system
            lines: list[ClaimedLine] = []
            while self._queue and self._queue[0].system == system and len(lines) < self.bundle:
                lines.append(self._queue.popleft())
            self._in_flight += 1
            submitted = maybeDeferred(
                self.node.requester.submit_queries,
                [(line.submission, line.idempotency_key) for line in lines],
                system,
            )
            submitted.addCallbacks(
                self._submitted, self._refused, callbackArgs=(lines,), errbackArgs=(lines,)
            )
            submitted.addBoth(self._one_done)

    def _submitted(
        self, outcomes: Sequence[str | RenkeiError], lines: Sequence[ClaimedLine]
    ) -> None:
        for line, outcome in zip(lines, outcomes, strict=True):
            if isinstance(outcome, RenkeiError):
                self._outcomes.append(self._outcome_of_refusal(outcome, line))
            else:
                key = (line.bulk_query_id, line.line_number)
                self._outcomes.append(Outcome(*key, SUBMITTED, query_id=outcome))

    def _refused(self, failure: Failure, lines: Sequence[ClaimedLine]) -> None:
        if not isinstance(failure.value, DatabaseStopped | RenkeiError):
            keys = [(line.bulk_query_id, line.line_number) for line in lines]
            self.log.failure("bulk-query lines {lines} not submitted", failure, lines=keys)
        for line in lines:
            self._outcomes.append(self._outcome_of_refusal(failure.value, line))

    def _outcome_of_refusal(self, error: BaseException, line: ClaimedLine) -> Outcome:
        key = (line.bulk_query_id, line.line_number)
        if isinstance(error, DatabaseStopped):
            return Outcome(*key, PENDING)
        if not isinstance(error, RenkeiError):
            return Outcome(*key, ERROR, error_code=errors.INTERNAL.code)
        if error.status == 503:
            # No valid permitted-query list or no network for now: retry the line later.
            self._paused_until = self.node.clock.seconds() + RETRY_PAUSE
            return Outcome(*key, PENDING)
        state = {
            errors.NOT_PERMITTED.code: NOT_PERMITTED,
            errors.SYSTEM_NOT_AUTHORIZED.code: NOT_PERMITTED,
            errors.DELEGATION_NOT_PERMITTED.code: NOT_PERMITTED,
            errors.FUGO_NOT_ACQUIRED.code: FUGO_NOT_ACQUIRED,
            errors.UNKNOWN_PERSON.code: UNKNOWN_PERSON,
        }.get(error.code, ERROR)
        return Outcome(*key, state, error_code=error.code)

    def _one_done(self, _: Any) -> None:
        self._in_flight -= 1
        self._pump()
        self._maybe_idle()

    # -- the back-office API's calls -----------------------------------------------------

    @deferred
    async def submit(
        self, data: bytes, system: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Validate and store a bulk-query file; runs in the background. Answers
        ``{bulk_query_id, state, lines, invalid}``. The same file posted again under the
        same ``idempotency_key`` gets the first bulk query back (its state now); another
        file under it is IdempotencyKeyReused."""
        digest = hashlib.sha256(data).hexdigest()
        if idempotency_key is not None:
            earlier = await self.node.store.bulk_queries.posted_under(
                system, idempotency_key, digest
            )
            if earlier is not None:
                return earlier
        parsed: BulkQueryFile = await deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            parse_bulk_query_file,
            data,
            self.node.code,
            self.node.catalogue,
            self.max_lines,
        )
        bulk_query_id = str(uuid.uuid4())
        earlier = await self.node.store.bulk_queries.store(
            bulk_query_id,
            system,
            parsed.encoding,
            lines_to_store(parsed),
            self.node.now(),
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
        if earlier is not None:
            return earlier
        invalid = parsed.invalid
        self.node.events.bulk_query_accepted(bulk_query_id, system, len(parsed.lines), invalid)
        self._kick()
        return {
            "bulk_query_id": bulk_query_id,
            "state": RUNNING if invalid < len(parsed.lines) else ENDED,
            "lines": len(parsed.lines),
            "invalid": invalid,
        }

    def progress(self, bulk_query_id: str) -> Deferred[dict[str, Any]]:
        """``{bulk_query_id, state, system, lines, invalid, ended, by_state, created_at,
        ended_at}``; ``ended`` counts lines in a final state (held ones once ended)."""
        return self.node.store.bulk_queries.progress(bulk_query_id)

    @deferred
    async def result_file(self, bulk_query_id: str) -> tuple[bytes, str]:
        """The result file and its content type; BulkQueryNotEnded until every line ended."""
        encoding = await self.node.store.bulk_queries.result_encoding(bulk_query_id)
        chunks = [result_header(encoding)]
        after = 0
        while True:
            rows = await self.node.store.bulk_queries.result_page(bulk_query_id, after, RESULT_PAGE)
            if not rows:
                break
            # Decoding the results is CPU work: off the reactor and off the database thread.
            chunk: bytes = await deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), result_lines, rows, encoding
            )
            chunks.append(chunk)
            after = rows[-1]["line_number"]
        return b"".join(chunks), CONTENT_TYPES[encoding]
