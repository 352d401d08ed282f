"""Bulk queries (一括照会) at a node: their lines and states in the database.

A bulk query is stored whole, with every line of its file, in one transaction
(`store_bulk_query`); its driver (`adapters.care_insurance.bulk_query.BulkQueries`) then, one
transaction per tick (`drive`), records the outcomes of its submissions, polls the ends of
the lines' queries, ends the bulk queries with no line in flight and claims new lines. After a
crash `recover` re-links or releases the lines left ``submitting``. The file format and the
result file are the adapter's; the states are here (docs/bulk-query.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select

from codes import errors
from codes.errors import RenkeiError
from middleware import persons
from middleware.outbox import STALE
from middleware.queries import FINISHED, QuerySubmission, conditions_from_json, conditions_json
from middleware.tables import bulk_query, bulk_query_line, node_outbox_owner, person, query

__all__ = [
    "ENDED",
    "ERROR",
    "FINAL",
    "FUGO_NOT_ACQUIRED",
    "HELD",
    "INVALID",
    "IN_FLIGHT",
    "NORMAL_END",
    "NOT_PERMITTED",
    "PENDING",
    "REFUSED",
    "RUNNING",
    "SUBMITTED",
    "SUBMITTING",
    "UNKNOWN_PERSON",
    "ClaimedLine",
    "NewLine",
    "Outcome",
    "claim",
    "drive",
    "finish_outcomes",
    "line_key",
    "posted_under",
    "progress_of",
    "recover",
    "result_encoding",
    "result_page",
    "store_bulk_query",
]

# line states
PENDING = "pending"  # valid, not yet submitted
SUBMITTING = "submitting"  # taken by the driver; the node may have created its query
SUBMITTED = "submitted"  # the node's query id is recorded; waiting for its end
HELD = "held"  # 保留中 at the provider; final once no other line is in flight
NORMAL_END = "normal_end"
NOT_PERMITTED = "not_permitted"
FUGO_NOT_ACQUIRED = "fugo_not_acquired"
UNKNOWN_PERSON = "unknown_person"
REFUSED = "refused"
ERROR = "error"
INVALID = "invalid"

IN_FLIGHT = (PENDING, SUBMITTING, SUBMITTED)
FINAL = (NORMAL_END, NOT_PERMITTED, FUGO_NOT_ACQUIRED, UNKNOWN_PERSON, REFUSED, ERROR, INVALID)

# bulk query states
RUNNING = "running"
ENDED = "ended"


@dataclass(frozen=True)
class NewLine:
    """A line of a posted file, to store: the query it asks, or the refusal's parameters."""

    number: int
    raw: str
    submission: QuerySubmission | None  # None: the line was refused
    address_number: str | None = None  # 番号体系 02: resolved when the line is claimed
    refusal: dict[str, Any] | None = None  # BulkQueryLineInvalid's parameters


@dataclass(frozen=True)
class ClaimedLine:
    """A line the driver took to submit, for the back-office system that posted its file."""

    bulk_query_id: str
    line_number: int
    submission: QuerySubmission
    system: str

    @property
    def idempotency_key(self) -> str:
        """The key the line's query is submitted under (`line_key`)."""
        return line_key(self.bulk_query_id, self.line_number)


def line_key(bulk_query_id: str, line_number: int) -> str:
    """The idempotency key a line's query is submitted under: submitted twice (after a
    crash), the line still has one query, and after a crash its query is found by it."""
    return f"bulk-query:{bulk_query_id}:{line_number}"


@dataclass(frozen=True)
class Outcome:
    """What became of a submission: the line's next state, query id and error code."""

    bulk_query_id: str
    line_number: int
    state: str
    query_id: str | None = None
    error_code: str | None = None


def store_bulk_query(
    connection: Connection,
    bulk_query_id: str,
    system: str,
    encoding: str,
    lines: Sequence[NewLine],
    now: datetime,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> None:
    """Store a bulk query and all its lines (valid lines pending, refused ones ended), with
    the Idempotency-Key it was posted under and the SHA-256 of its file."""
    invalid = sum(1 for line in lines if line.submission is None)
    valid = len(lines) - invalid
    connection.execute(
        bulk_query.insert().values(
            bulk_query_id=bulk_query_id,
            system=system,
            encoding=encoding,
            state=RUNNING if valid else ENDED,
            lines=len(lines),
            invalid=invalid,
            created_at=now,
            ended_at=None if valid else now,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
    )
    rows = []
    for line in lines:
        row: dict[str, Any] = {
            "bulk_query_id": bulk_query_id,
            "line_number": line.number,
            "raw": line.raw,
            "state": PENDING,
            "integrated_address_number": None,
            "procedure": None,
            "information_name": None,
            "provider": None,
            "conditions": None,
            "address_number": None,
            "delegating_requester": None,
            "delegating_provider": None,
            "non_disclosure": False,
            "error_code": None,
            "error_params": None,
            "ended_at": None,
        }
        if line.submission is not None:
            submission = line.submission
            row.update(
                integrated_address_number=submission.integrated_address_number or None,
                procedure=submission.procedure,
                information_name=submission.information_name,
                provider=submission.provider,
                conditions=conditions_json(submission.conditions),
                address_number=line.address_number,
                delegating_requester=submission.delegating_requester,
                delegating_provider=submission.delegating_provider,
                non_disclosure=submission.non_disclosure,
            )
        else:
            row.update(
                state=INVALID,
                error_code=errors.BULK_QUERY_LINE_INVALID.code,
                error_params=json.dumps(line.refusal, ensure_ascii=False),
                ended_at=now,
            )
        rows.append(row)
    for start in range(0, len(rows), 5_000):
        connection.execute(bulk_query_line.insert(), rows[start : start + 5_000])


def posted_under(
    connection: Connection, system: str, idempotency_key: str, request_hash: str
) -> dict[str, Any] | None:
    """The bulk query ``system`` posted under ``idempotency_key`` (its id, state, lines and
    invalid lines), or None; IdempotencyKeyReused when it was another file."""
    row = connection.execute(
        select(
            bulk_query.c.bulk_query_id,
            bulk_query.c.state,
            bulk_query.c.lines,
            bulk_query.c.invalid,
            bulk_query.c.request_hash,
        ).where(bulk_query.c.system == system, bulk_query.c.idempotency_key == idempotency_key)
    ).first()
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise RenkeiError(errors.IDEMPOTENCY_KEY_REUSED, key=idempotency_key)
    return {
        "bulk_query_id": row.bulk_query_id,
        "state": row.state,
        "lines": row.lines,
        "invalid": row.invalid,
    }


def recover(connection: Connection, owner: str, now: datetime) -> tuple[int, int]:
    """After a stop or crash: re-link or release every line left ``submitting`` by a process
    that is gone (not ``owner``, this process, and with no heartbeat for `STALE` seconds: a
    process of the same institution that is alive is still submitting its lines).

    The node creates a query in its own transaction, so a crash may fall between that and
    the recording of its id here. A line's query is submitted under the line's own
    idempotency key (`line_key`): a line whose query exists is re-linked to it, any other
    goes back to ``pending`` (submitted again, under the same key, it cannot make a second
    query). The (re-linked, released) counts.
    """
    alive = select(node_outbox_owner.c.owner).where(
        node_outbox_owner.c.heartbeat_at >= now - timedelta(seconds=STALE)
    )
    lines = connection.execute(
        select(bulk_query_line.c.bulk_query_id, bulk_query_line.c.line_number, bulk_query.c.system)
        .join(bulk_query, bulk_query.c.bulk_query_id == bulk_query_line.c.bulk_query_id)
        .where(
            bulk_query_line.c.state == SUBMITTING,
            or_(
                bulk_query_line.c.claimed_by.is_(None),
                (bulk_query_line.c.claimed_by != owner)
                & bulk_query_line.c.claimed_by.not_in(alive),
            ),
        )
    ).all()
    relinked, released = [], []
    for line in lines:
        found = connection.execute(
            select(query.c.query_id).where(
                query.c.system == line.system,
                query.c.idempotency_key == line_key(line.bulk_query_id, line.line_number),
            )
        ).first()
        key = {"b_id": line.bulk_query_id, "b_line": line.line_number}
        if found is None:
            released.append({**key, "b_state": PENDING, "b_query": None})
        else:
            relinked.append({**key, "b_state": SUBMITTED, "b_query": found.query_id})
    for batch in (relinked, released):
        if batch:
            connection.execute(
                bulk_query_line.update()
                .where(
                    bulk_query_line.c.bulk_query_id == bindparam("b_id"),
                    bulk_query_line.c.line_number == bindparam("b_line"),
                )
                .values(state=bindparam("b_state"), query_id=bindparam("b_query"), claimed_by=None),
                batch,
            )
    return len(relinked), len(released)


def record_outcomes(connection: Connection, outcomes: Sequence[Outcome], now: datetime) -> set[str]:
    """Write the outcomes of submissions; the bulk queries touched.

    A line refused with FugoNotAcquired whose person this node does not know at all is
    recorded as ``unknown_person`` (the node does not tell the two apart).
    """
    if not outcomes:
        return set()
    missing: dict[str, list[int]] = {}
    for outcome in outcomes:
        if outcome.error_code == errors.FUGO_NOT_ACQUIRED.code:
            missing.setdefault(outcome.bulk_query_id, []).append(outcome.line_number)
    unknown: set[tuple[str, int]] = set()
    for bulk_query_id, numbers in missing.items():
        for start in range(0, len(numbers), 500):
            found = connection.execute(
                select(bulk_query_line.c.line_number)
                .select_from(
                    bulk_query_line.outerjoin(
                        person,
                        person.c.integrated_address_number
                        == bulk_query_line.c.integrated_address_number,
                    )
                )
                .where(
                    bulk_query_line.c.bulk_query_id == bulk_query_id,
                    bulk_query_line.c.line_number.in_(numbers[start : start + 500]),
                    person.c.integrated_address_number.is_(None),
                )
            ).all()
            unknown |= {(bulk_query_id, row.line_number) for row in found}
    rows = []
    for outcome in outcomes:
        state, code = outcome.state, outcome.error_code
        if (outcome.bulk_query_id, outcome.line_number) in unknown:
            state, code = UNKNOWN_PERSON, errors.UNKNOWN_PERSON.code
        final = state in FINAL
        rows.append(
            {
                "b_id": outcome.bulk_query_id,
                "b_line": outcome.line_number,
                "b_state": state,
                "b_query": outcome.query_id,
                "b_code": code,
                "b_ended": now if final else None,
            }
        )
    connection.execute(
        bulk_query_line.update()
        .where(
            bulk_query_line.c.bulk_query_id == bindparam("b_id"),
            bulk_query_line.c.line_number == bindparam("b_line"),
            bulk_query_line.c.state == SUBMITTING,
        )
        .values(
            state=bindparam("b_state"),
            query_id=bindparam("b_query"),
            error_code=bindparam("b_code"),
            ended_at=bindparam("b_ended"),
        ),
        rows,
    )
    return {outcome.bulk_query_id for outcome in outcomes}


def line_state_of_query(state: str, error_code: str | None) -> str:
    """A line's state from its query's end (or hold)."""
    if state in ("provided", "no_data"):
        return NORMAL_END
    if state == HELD:
        return HELD
    if state == "refused":
        if error_code in (
            errors.PROVISION_REFUSED.code,
            errors.HOLD_EXPIRED.code,
            errors.HELD_PERMIT_EXPIRED.code,  # holds decided before hold_lifetime existed
        ):
            return REFUSED
        if error_code == errors.NOT_PERMITTED.code:
            return NOT_PERMITTED
    return ERROR


def watch(connection: Connection, now: datetime) -> set[str]:
    """One batch poll: every submitted or held line of a running bulk query whose query has
    ended (or is held) takes its state; the bulk queries touched."""
    rows = connection.execute(
        select(
            bulk_query_line.c.bulk_query_id,
            bulk_query_line.c.line_number,
            bulk_query_line.c.state,
            query.c.state.label("query_state"),
            query.c.error_code,
        )
        .select_from(
            bulk_query_line.join(query, query.c.query_id == bulk_query_line.c.query_id).join(
                bulk_query, bulk_query.c.bulk_query_id == bulk_query_line.c.bulk_query_id
            )
        )
        .where(
            bulk_query_line.c.state.in_((SUBMITTED, HELD)),
            bulk_query.c.state == RUNNING,
            query.c.state.in_((*FINISHED, HELD)),
            or_(bulk_query_line.c.state == SUBMITTED, query.c.state != HELD),
        )
    ).all()
    if not rows:
        return set()
    updates = []
    for row in rows:
        state = line_state_of_query(row.query_state, row.error_code)
        updates.append(
            {
                "b_id": row.bulk_query_id,
                "b_line": row.line_number,
                "b_old": row.state,
                "b_state": state,
                "b_code": row.error_code,
                "b_ended": None if state == HELD else now,
            }
        )
    connection.execute(
        bulk_query_line.update()
        .where(
            bulk_query_line.c.bulk_query_id == bindparam("b_id"),
            bulk_query_line.c.line_number == bindparam("b_line"),
            bulk_query_line.c.state == bindparam("b_old"),
        )
        .values(
            state=bindparam("b_state"),
            error_code=bindparam("b_code"),
            ended_at=bindparam("b_ended"),
        ),
        updates,
    )
    return {row.bulk_query_id for row in rows}


def end_finished(connection: Connection, bulk_query_ids: Iterable[str], now: datetime) -> list[str]:
    """End each of these bulk queries that has no line in flight; the ones ended.

    Lines still held then keep ``held`` as their final state in this bulk query.
    """
    ended = []
    for bulk_query_id in sorted(bulk_query_ids):
        open_lines = connection.execute(
            select(bulk_query_line.c.line_number)
            .where(
                bulk_query_line.c.bulk_query_id == bulk_query_id,
                bulk_query_line.c.state.in_(IN_FLIGHT),
            )
            .limit(1)
        ).first()
        if open_lines is not None:
            continue
        done = connection.execute(
            bulk_query.update()
            .where(bulk_query.c.bulk_query_id == bulk_query_id, bulk_query.c.state == RUNNING)
            .values(state=ENDED, ended_at=now)
        )
        if done.rowcount:
            ended.append(bulk_query_id)
    return ended


def claim(connection: Connection, limit: int, now: datetime, owner: str) -> list[ClaimedLine]:
    """Take up to ``limit`` pending lines, oldest bulk query first, in line order, for
    ``owner`` (this process's outbox owner)."""
    claimed: list[ClaimedLine] = []
    if limit <= 0:
        return claimed
    running = connection.execute(
        select(bulk_query.c.bulk_query_id, bulk_query.c.system)
        .where(bulk_query.c.state == RUNNING)
        .order_by(bulk_query.c.created_at)
    ).all()
    for bulk_query_id, system in running:
        rows = connection.execute(
            select(
                bulk_query_line.c.line_number,
                bulk_query_line.c.integrated_address_number,
                bulk_query_line.c.address_number,
                bulk_query_line.c.procedure,
                bulk_query_line.c.information_name,
                bulk_query_line.c.provider,
                bulk_query_line.c.conditions,
                bulk_query_line.c.delegating_requester,
                bulk_query_line.c.delegating_provider,
                bulk_query_line.c.non_disclosure,
            )
            .where(
                bulk_query_line.c.bulk_query_id == bulk_query_id,
                bulk_query_line.c.state == PENDING,
            )
            .order_by(bulk_query_line.c.line_number)
            .limit(limit - len(claimed))
        ).all()
        if not rows:
            continue
        numbers = _resolve_address_numbers(connection, bulk_query_id, rows, now)
        taken = [row for row in rows if row.line_number in numbers]
        if not taken:
            continue
        connection.execute(
            bulk_query_line.update()
            .where(
                bulk_query_line.c.bulk_query_id == bulk_query_id,
                bulk_query_line.c.line_number.in_([row.line_number for row in taken]),
                bulk_query_line.c.state == PENDING,
            )
            .values(state=SUBMITTING, claimed_at=now, claimed_by=owner)
        )
        claimed += [
            ClaimedLine(
                bulk_query_id,
                row.line_number,
                QuerySubmission(
                    integrated_address_number=numbers[row.line_number],
                    procedure=row.procedure,
                    information_name=row.information_name,
                    provider=row.provider,
                    conditions=conditions_from_json(row.conditions),
                    delegating_requester=row.delegating_requester,
                    delegating_provider=row.delegating_provider,
                    non_disclosure=bool(row.non_disclosure),
                ),
                system,
            )
            for row in taken
        ]
        if len(claimed) >= limit:
            break
    return claimed


def _resolve_address_numbers(
    connection: Connection, bulk_query_id: str, rows: Sequence[Any], now: datetime
) -> dict[int, str]:
    """The integrated address number of each line, by line number. A line of 番号体系 02 is
    resolved through the integrated-address function's 宛名番号 (and keeps the number it
    found); one whose 宛名番号 is unknown ends ``unknown_person`` with UnknownAddressNumber."""
    numbers: dict[int, str] = {}
    unknown = []
    for row in rows:
        if row.integrated_address_number is not None:
            numbers[row.line_number] = row.integrated_address_number
            continue
        try:
            number = persons.person_of_address_number(connection, row.address_number)
        except RenkeiError:
            unknown.append(row.line_number)
            continue
        numbers[row.line_number] = number
        connection.execute(
            bulk_query_line.update()
            .where(
                bulk_query_line.c.bulk_query_id == bulk_query_id,
                bulk_query_line.c.line_number == row.line_number,
            )
            .values(integrated_address_number=number)
        )
    if unknown:
        connection.execute(
            bulk_query_line.update()
            .where(
                bulk_query_line.c.bulk_query_id == bulk_query_id,
                bulk_query_line.c.line_number.in_(unknown),
            )
            .values(
                state=UNKNOWN_PERSON,
                error_code=errors.UNKNOWN_ADDRESS_NUMBER.code,
                ended_at=now,
            )
        )
    return numbers


def drive(
    connection: Connection,
    outcomes: Sequence[Outcome],
    claim_limit: int,
    window: int,
    now: datetime,
    owner: str,
) -> list[ClaimedLine]:
    """One tick of the driver in one transaction: record outcomes, poll ends, end finished
    bulk queries, and take new lines while fewer than ``window`` are in flight."""
    touched = record_outcomes(connection, outcomes, now)
    touched |= watch(connection, now)
    end_finished(connection, touched, now)
    if claim_limit <= 0:
        return []
    outstanding = connection.execute(
        select(func.count())
        .select_from(bulk_query_line)
        .where(bulk_query_line.c.state.in_((SUBMITTING, SUBMITTED)))
    ).scalar_one()
    return claim(connection, min(claim_limit, window - int(outstanding)), now, owner)


def finish_outcomes(connection: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Record the last outcomes when the driver stops."""
    end_finished(connection, record_outcomes(connection, outcomes, now), now)


def progress_of(connection: Connection, bulk_query_id: str) -> dict[str, Any]:
    """A bulk query's progress (see `BulkQueries.progress`)."""
    head = connection.execute(
        select(bulk_query).where(bulk_query.c.bulk_query_id == bulk_query_id)
    ).first()
    if head is None:
        raise RenkeiError(errors.UNKNOWN_BULK_QUERY, bulk_query_id=bulk_query_id)
    counts = {
        state: int(number)
        for state, number in connection.execute(
            select(bulk_query_line.c.state, func.count())
            .where(bulk_query_line.c.bulk_query_id == bulk_query_id)
            .group_by(bulk_query_line.c.state)
        ).all()
    }
    ended = sum(number for state, number in counts.items() if state in FINAL)
    if head.state == ENDED:
        ended += counts.get(HELD, 0)
    return {
        "bulk_query_id": bulk_query_id,
        "state": head.state,
        "system": head.system,
        "lines": head.lines,
        "invalid": head.invalid,
        "ended": ended,
        "by_state": dict(sorted(counts.items())),
        "created_at": head.created_at.isoformat(),
        "ended_at": head.ended_at.isoformat() if head.ended_at else None,
    }


def result_encoding(connection: Connection, bulk_query_id: str) -> str:
    """The encoding of an ended bulk query's file (BulkQueryNotEnded before it ended)."""
    progress = progress_of(connection, bulk_query_id)
    if progress["state"] != ENDED:
        raise RenkeiError(
            errors.BULK_QUERY_NOT_ENDED,
            bulk_query_id=bulk_query_id,
            ended=progress["ended"],
            lines=progress["lines"],
        )
    encoding = connection.execute(
        select(bulk_query.c.encoding).where(bulk_query.c.bulk_query_id == bulk_query_id)
    ).scalar_one()
    return str(encoding)


def result_page(
    connection: Connection, bulk_query_id: str, after: int, size: int
) -> list[dict[str, Any]]:
    """Up to ``size`` lines after line ``after``, each with its query's 処理通番, state and
    (encrypted-at-rest) result."""
    rows = connection.execute(
        select(
            bulk_query_line,
            query.c.transaction_number,
            query.c.state.label("query_state"),
            query.c.result,
        )
        .select_from(
            bulk_query_line.outerjoin(query, query.c.query_id == bulk_query_line.c.query_id)
        )
        .where(
            bulk_query_line.c.bulk_query_id == bulk_query_id,
            bulk_query_line.c.line_number > after,
        )
        .order_by(bulk_query_line.c.line_number)
        .limit(size)
    ).all()
    return [dict(row._mapping) for row in rows]
