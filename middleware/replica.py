"""副本 (replica) records: the copy of data an institution keeps for provision.

Only what the data standard layout describes is stored: every record is validated against
the catalogue before it is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from middleware.tables import person, replica_record

# レコード識別番号: what the payload schema's RecordId accepts, within the column's width.
RECORD_ID = re.compile(r"[0-9A-Za-z._\-]{1,32}")


@dataclass(frozen=True)
class ReplicaRecord:
    """One record of one data set about one person."""

    record_id: str
    integrated_address_number: str
    information_name: str
    data_set: str
    items: Mapping[str, str]
    suppressed: bool = False  # 自動応答不可フラグ


def validate(record: ReplicaRecord, catalogue: Catalogue, provides: tuple[str, ...]) -> None:
    """Refuse a record that this institution does not provide or the catalogue does not know."""
    if RECORD_ID.fullmatch(record.record_id) is None:
        raise RenkeiError(
            errors.INVALID_CODE, value=record.record_id, what="record identification number"
        )
    catalogue.information_name(record.information_name)
    if record.information_name not in provides:
        raise RenkeiError(errors.NOT_A_PROVIDER_OF, code=record.information_name)
    catalogue.validate_record(record.information_name, record.data_set, record.items)


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
        connection.execute(
            replica_record.insert().values(
                record_id=record.record_id,
                integrated_address_number=record.integrated_address_number,
                information_name=record.information_name,
                data_set=record.data_set,
                items=json.dumps(dict(record.items), ensure_ascii=False, sort_keys=True),
                suppressed=record.suppressed,
                registered_at=now,
            )
        )
    except IntegrityError:
        raise RenkeiError(errors.RECORD_ID_EXISTS, record_id=record.record_id) from None


def set_suppressed(connection: Connection, record_id: str, suppressed: bool) -> None:
    """Set or clear a record's auto-response suppression flag."""
    result = connection.execute(
        replica_record.update()
        .where(replica_record.c.record_id == record_id)
        .values(suppressed=suppressed)
    )
    if result.rowcount == 0:
        raise RenkeiError(errors.UNKNOWN_RECORD, record_id=record_id)


def delete(connection: Connection, record_id: str) -> None:
    """Delete a record; an unknown record id is refused."""
    result = connection.execute(
        replica_record.delete().where(replica_record.c.record_id == record_id)
    )
    if result.rowcount == 0:
        raise RenkeiError(errors.UNKNOWN_RECORD, record_id=record_id)


def records_of(
    connection: Connection, integrated_address_number: str, information_name: str
) -> list[ReplicaRecord]:
    """A person's records of one information name, in data set and record id order."""
    rows = connection.execute(
        select(replica_record)
        .where(
            replica_record.c.integrated_address_number == integrated_address_number,
            replica_record.c.information_name == information_name,
        )
        .order_by(replica_record.c.data_set, replica_record.c.record_id)
    )
    return [
        ReplicaRecord(
            record_id=row.record_id,
            integrated_address_number=row.integrated_address_number,
            information_name=row.information_name,
            data_set=row.data_set,
            items=json.loads(row.items),
            suppressed=row.suppressed,
        )
        for row in rows
    ]
