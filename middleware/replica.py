"""副本 (replica) records: the copy of data an institution keeps for provision.

Only what the data standard layout describes is stored: every record is validated against
the catalogue before it is written. Records come one at a time (the back-office API's JSON)
or by the thousand (副本 files, adapters/care_insurance/replica_file.py): `store_batch` and
`delete_batch` check a whole batch with a few bulk queries and write it with one
``executemany``.

A record may carry a publication window (公開日 … 公開終了日, both days included, in Japan's
calendar); outside it the record is kept but not provided. A record without dates is always
provided.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Connection, Select, bindparam, or_, select
from sqlalchemy.exc import IntegrityError

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from middleware.storage import in_slices
from middleware.tables import person, replica_file_answer, replica_record

__all__ = [
    "JST",
    "MAX_RECORD_BYTES",
    "RECORD_ID",
    "PersonHoldings",
    "RecordKey",
    "ReplicaRecord",
    "delete",
    "delete_batch",
    "existing_record_ids",
    "file_answer",
    "holdings_of",
    "items_size",
    "keep_file_answer",
    "known_persons",
    "records_of",
    "records_of_persons",
    "row_of",
    "set_suppressed",
    "store",
    "store_batch",
    "today_in_japan",
    "validate",
]

# レコード識別番号: what the payload schema's RecordId accepts, within the column's width.
RECORD_ID = re.compile(r"[0-9A-Za-z._\-]{1,32}")
# The largest record accepted: the UTF-8 bytes of its item codes and values together.
MAX_RECORD_BYTES = 65_536
# Japan's calendar decides which day "today" is for a publication window (no DST in Japan).
JST = timezone(timedelta(hours=9), "JST")
# Ids per ``IN (...)`` list: well under SQLite's and PostgreSQL's parameter limits.
_IN_SLICE = 900

_T = TypeVar("_T")


@dataclass(frozen=True)
class ReplicaRecord:
    """One record of one data set about one person.

    The last five fields come from 副本 files (docs/replica-files.md) and are None for
    records posted as JSON.
    """

    record_id: str
    integrated_address_number: str
    information_name: str
    data_set: str
    items: Mapping[str, str]
    suppressed: bool = False  # 自動応答不可フラグ
    data_set_record_key: str | None = None
    parent_record_key: str | None = None
    major_version: str | None = None
    publication_date: date | None = None  # 公開日: first day provided
    published_end_date: date | None = None  # 公開終了日: last day provided


@dataclass(frozen=True)
class RecordKey:
    """What names a record to delete: its id, and whose record of which data set it is."""

    record_id: str
    integrated_address_number: str
    information_name: str
    data_set: str


def items_size(items: Mapping[str, str]) -> int:
    """The size of a record's items as counted against `MAX_RECORD_BYTES`."""
    return sum(len(code.encode()) + len(value.encode()) for code, value in items.items())


def today_in_japan(now: datetime) -> date:
    """The day in Japan at the aware moment ``now``: the day publication windows are read on."""
    return now.astimezone(JST).date()


def validate(record: ReplicaRecord, catalogue: Catalogue, provides: tuple[str, ...]) -> None:
    """Refuse a record that this institution does not provide or the catalogue does not know.

    Checked in this order: record id (InvalidCode), size (ReplicaRecordTooLarge), information
    name (UnknownInformationName, NotAProviderOf), data set and items (UnknownDataSet,
    UnknownItem, InvalidItemValue), publication window (ReplicaDatesInvalid).
    """
    if RECORD_ID.fullmatch(record.record_id) is None:
        raise RenkeiError(
            errors.INVALID_CODE, value=record.record_id, what="record identification number"
        )
    size = items_size(record.items)
    if size > MAX_RECORD_BYTES:
        raise RenkeiError(
            errors.REPLICA_RECORD_TOO_LARGE,
            record_id=record.record_id,
            size=size,
            limit=MAX_RECORD_BYTES,
        )
    catalogue.information_name(record.information_name)
    if record.information_name not in provides:
        raise RenkeiError(errors.NOT_A_PROVIDER_OF, code=record.information_name)
    catalogue.validate_record(record.information_name, record.data_set, record.items)
    start, end = record.publication_date, record.published_end_date
    if start is not None and end is not None and end < start:
        raise RenkeiError(
            errors.REPLICA_DATES_INVALID,
            record_id=record.record_id,
            detail="PublishedEndDate is before PublicationDate",
        )


def row_of(record: ReplicaRecord, now: datetime) -> dict[str, Any]:
    """The replica_record row that stores ``record`` (registered at ``now``)."""
    return {
        "record_id": record.record_id,
        "integrated_address_number": record.integrated_address_number,
        "information_name": record.information_name,
        "data_set": record.data_set,
        "items": json.dumps(dict(record.items), ensure_ascii=False, sort_keys=True),
        "suppressed": record.suppressed,
        "registered_at": now,
        "data_set_record_key": record.data_set_record_key,
        "parent_record_key": record.parent_record_key,
        "major_version": record.major_version,
        "publication_date": record.publication_date,
        "published_end_date": record.published_end_date,
    }


def store(connection: Connection, record: ReplicaRecord, now: datetime) -> None:
    """Write a validated record; a duplicate record id is refused."""
    known = connection.execute(
        select(person.c.integrated_address_number).where(
            person.c.integrated_address_number == record.integrated_address_number
        )
    ).first()
    if known is None:
        raise RenkeiError(
            errors.UNKNOWN_PERSON, integrated_address_number=record.integrated_address_number
        )
    exists = connection.execute(
        select(replica_record.c.record_id).where(replica_record.c.record_id == record.record_id)
    ).first()
    if exists is not None:
        raise RenkeiError(errors.RECORD_ID_EXISTS, record_id=record.record_id)
    try:
        connection.execute(replica_record.insert().values(**row_of(record, now)))
    except IntegrityError:
        raise RenkeiError(errors.RECORD_ID_EXISTS, record_id=record.record_id) from None


def _slices(values: Sequence[_T], size: int = _IN_SLICE) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def known_persons(connection: Connection, numbers: Iterable[str]) -> set[str]:
    """Which of these integrated address numbers are registered persons."""
    wanted = sorted(set(numbers))
    column = person.c.integrated_address_number
    found: set[str] = set()
    for part in _slices(wanted):
        found.update(connection.execute(select(column).where(column.in_(part))).scalars())
    return found


def existing_record_ids(connection: Connection, record_ids: Iterable[str]) -> set[str]:
    """Which of these record ids are already stored."""
    wanted = sorted(set(record_ids))
    column = replica_record.c.record_id
    found: set[str] = set()
    for part in _slices(wanted):
        found.update(connection.execute(select(column).where(column.in_(part))).scalars())
    return found


def store_batch(
    connection: Connection,
    records: Sequence[ReplicaRecord],
    now: datetime,
    claimed: Collection[str] = frozenset(),
    *,
    write: bool = True,
) -> list[RenkeiError | None]:
    """Store validated records in one transaction: one outcome per record, None when stored.

    A record of an unknown person is refused (UnknownPerson); so is a record id already
    stored, in ``claimed`` (ids taken by earlier batches of the same file), or taken by an
    earlier record of this batch (RecordIdExists). The others are inserted with one
    ``executemany``; with ``write=False`` nothing is written (a file's test mode). A
    concurrent insert of the same id fails the whole batch with IntegrityError: the caller
    runs it again, and the id then shows as existing.
    """
    persons = known_persons(connection, (r.integrated_address_number for r in records))
    existing = existing_record_ids(connection, (r.record_id for r in records))
    taken: set[str] = set()
    outcomes: list[RenkeiError | None] = []
    rows: list[dict[str, Any]] = []
    for record in records:
        if record.integrated_address_number not in persons:
            outcomes.append(
                RenkeiError(
                    errors.UNKNOWN_PERSON,
                    integrated_address_number=record.integrated_address_number,
                )
            )
        elif (
            record.record_id in existing or record.record_id in claimed or record.record_id in taken
        ):
            outcomes.append(RenkeiError(errors.RECORD_ID_EXISTS, record_id=record.record_id))
        else:
            taken.add(record.record_id)
            rows.append(row_of(record, now))
            outcomes.append(None)
    if rows and write:
        connection.execute(replica_record.insert(), rows)
    return outcomes


def delete_batch(
    connection: Connection,
    keys: Sequence[RecordKey],
    claimed: Collection[str] = frozenset(),
    *,
    write: bool = True,
) -> list[RenkeiError | None]:
    """Delete records in one transaction: one outcome per key, None when deleted.

    A key is refused (UnknownRecord) unless a record with that id exists for that person,
    information name and data set, and no earlier key of this batch or ``claimed`` (ids
    deleted by earlier batches of the same file) took it. With ``write=False`` nothing is
    deleted (a file's test mode).
    """
    stored: dict[str, tuple[str, str, str]] = {}
    wanted = sorted({key.record_id for key in keys})
    t = replica_record.c
    for part in _slices(wanted):
        rows = connection.execute(
            select(t.record_id, t.integrated_address_number, t.information_name, t.data_set).where(
                t.record_id.in_(part)
            )
        )
        for row in rows:
            stored[row.record_id] = (
                row.integrated_address_number,
                row.information_name,
                row.data_set,
            )
    taken: set[str] = set()
    outcomes: list[RenkeiError | None] = []
    for key in keys:
        found = stored.get(key.record_id)
        if (
            found != (key.integrated_address_number, key.information_name, key.data_set)
            or key.record_id in claimed
            or key.record_id in taken
        ):
            outcomes.append(RenkeiError(errors.UNKNOWN_RECORD, record_id=key.record_id))
        else:
            taken.add(key.record_id)
            outcomes.append(None)
    if write:
        for part in _slices(sorted(taken)):
            connection.execute(replica_record.delete().where(t.record_id.in_(part)))
    return outcomes


def set_suppressed(connection: Connection, record_id: str, suppressed: bool) -> None:
    """Set or clear a record's auto-response suppression flag."""
    result = connection.execute(
        replica_record.update()
        .where(replica_record.c.record_id == record_id)
        .values(suppressed=suppressed)
    )
    if result.rowcount == 0:
        raise RenkeiError(errors.UNKNOWN_RECORD, record_id=record_id)


def delete(
    connection: Connection, record_id: str, information_names: Collection[str] | None = None
) -> None:
    """Delete a record (of one of ``information_names``, when given); an unknown record id,
    or one of another information name, is refused as UnknownRecord."""
    where = replica_record.c.record_id == record_id
    if information_names is not None:
        where = where & replica_record.c.information_name.in_(sorted(information_names))
    result = connection.execute(replica_record.delete().where(where))
    if result.rowcount == 0:
        raise RenkeiError(errors.UNKNOWN_RECORD, record_id=record_id)


def records_of(
    connection: Connection,
    integrated_address_number: str,
    information_name: str,
    today: date | None = None,
) -> list[ReplicaRecord]:
    """A person's records of one information name, in data set and record id order.

    With ``today`` (see `today_in_japan`), only the records whose publication window covers
    that day: a missing PublicationDate or PublishedEndDate leaves that side open.
    """
    asked = {"number": integrated_address_number, "information_name": information_name}
    window = {} if today is None else {"today": today}
    return [
        _replica_record(row)
        for row in connection.execute(_records_of(today is not None), {**asked, **window})
    ]


def records_of_persons(
    connection: Connection,
    integrated_address_numbers: Iterable[str],
    information_name: str,
    today: date | None = None,
) -> dict[str, list[ReplicaRecord]]:
    """`records_of` of several persons, one statement per `IN_SLICE` persons: each person's
    records, in data set and record id order, by integrated address number (a person without
    any is left out)."""
    window = {} if today is None else {"today": today}
    found: dict[str, list[ReplicaRecord]] = {}
    for some in in_slices(sorted(set(integrated_address_numbers))):
        asked = {"numbers": some, "information_name": information_name, **window}
        for row in connection.execute(_records_of(today is not None, many=True), asked):
            found.setdefault(row.integrated_address_number, []).append(_replica_record(row))
    return found


def _replica_record(row: Any) -> ReplicaRecord:
    return ReplicaRecord(
        record_id=row.record_id,
        integrated_address_number=row.integrated_address_number,
        information_name=row.information_name,
        data_set=row.data_set,
        items=json.loads(row.items),
        suppressed=row.suppressed,
        data_set_record_key=row.data_set_record_key,
        parent_record_key=row.parent_record_key,
        major_version=row.major_version,
        publication_date=row.publication_date,
        published_end_date=row.published_end_date,
    )


@functools.cache
def _records_of(in_window: bool, many: bool = False) -> Select[Any]:
    """A person's (``number``; with ``many``, some persons': ``numbers``) records of one
    information name, with ``in_window`` only those published on ``today``; built once, as
    every provision reads them."""
    t = replica_record.c
    person = (
        t.integrated_address_number.in_(bindparam("numbers", expanding=True))
        if many
        else t.integrated_address_number == bindparam("number")
    )
    query = (
        select(replica_record)
        .where(person, t.information_name == bindparam("information_name"))
        .order_by(t.data_set, t.record_id)
    )
    if not in_window:
        return query
    today: BindParameter[date] = bindparam("today")
    return query.where(
        or_(t.publication_date.is_(None), t.publication_date <= today),
        or_(t.published_end_date.is_(None), t.published_end_date >= today),
    )


@dataclass(frozen=True)
class PersonHoldings:
    """What a node holds of one person: the registration and the 副本 records."""

    person: Any | None  # integrated_address_number, registered_at, fugo_acquired_at, has_fugo
    records: list[Any]  # record_id, information_name, data_set, items (JSON), suppressed, …


def holdings_of(connection: Connection, integrated_address_number: str) -> PersonHoldings | None:
    """The person ``integrated_address_number`` and their 副本, or None when neither exists
    (never the 符号 itself: only whether there is one)."""
    row = connection.execute(
        select(
            person.c.integrated_address_number,
            person.c.registered_at,
            person.c.fugo_acquired_at,
            (person.c.fugo.is_not(None)).label("has_fugo"),
        ).where(person.c.integrated_address_number == integrated_address_number)
    ).first()
    records = connection.execute(
        select(
            replica_record.c.record_id,
            replica_record.c.information_name,
            replica_record.c.data_set,
            replica_record.c["items"],
            replica_record.c.suppressed,
            replica_record.c.registered_at,
        )
        .where(replica_record.c.integrated_address_number == integrated_address_number)
        .order_by(replica_record.c.information_name, replica_record.c.record_id)
    ).all()
    if row is None and not records:
        return None
    return PersonHoldings(person=row, records=list(records))


def file_answer(
    connection: Connection, system: str, idempotency_key: str, request_hash: str
) -> tuple[int, bytes] | None:
    """The answer (status, result file) given to the 副本 file ``system`` posted under
    ``idempotency_key``, or None; another file under the key is IdempotencyKeyReused."""
    row = connection.execute(
        select(replica_file_answer).where(
            replica_file_answer.c.system == system,
            replica_file_answer.c.idempotency_key == idempotency_key,
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise RenkeiError(errors.IDEMPOTENCY_KEY_REUSED, key=idempotency_key)
    return row.status, bytes(row.document)


def keep_file_answer(
    connection: Connection,
    system: str,
    idempotency_key: str,
    request_hash: str,
    answer: tuple[int, bytes],
    now: datetime,
) -> None:
    """Keep the answer given to a 副本 file posted under ``idempotency_key``."""
    connection.execute(
        replica_file_answer.insert().values(
            system=system,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            status=answer[0],
            document=answer[1],
            answered_at=now,
        )
    )
