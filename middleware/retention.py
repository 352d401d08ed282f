"""Retention (保管期限切れ情報の削除): every party's purge of what is past its retention.

Each kind of data a party keeps for a while has a period (``[retention]``,
`middleware.config.RetentionConfig`); the party's ``purge`` job (every ``[retention]
interval`` seconds) deletes, kind by kind and oldest first, what is past it, in batches of at
most ``[retention] batch`` rows, each batch one transaction:

- ``provision_records`` (情報提供等記録, 7 years by default): the oldest records of the chain,
  whole transactions at a time (a 処理通番's records go together, once its newest is past
  the period), leaving a signed checkpoint where the chain was cut
  (middleware/checkpoint.py); with them the rows of the outbox messages that ended before
  the same boundary (``outbox_messages``: the message ids the receivers' idempotency knew);
- ``audit_log`` (a node's): the oldest entries of the chain, leaving a checkpoint too;
- ``held_contents`` (a node's): the content of a held provision (the personal data an approver
  saw) and its recipient's certificate, once the hold was decided or expired that long ago;
- ``outbox_bodies``: the document of a message delivered (or refused for good) that long ago;
  the row stays, with its message id, until ``outbox_messages``;
- ``replica_file_answers`` (a node's): the answer kept under a 副本 file's Idempotency-Key (the
  key may then be used again);
- ``query_results`` (a node's): a query's result, that long after the query ended; the query,
  its state and 処理通番 stay, and the deletion is recorded (``result_deleted``).

Every batch that deletes something is recorded: its counts go into the job's run, and at a
node an audit entry by ``system`` (action ``purge``, the kind as target, how many, the
retention, the cutoff and the newest time deleted) is written in the batch's transaction.
Nothing is deleted before its time: the cutoff is the period before the party's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import Any

from sqlalchemy import Connection, Table, delete, select

from middleware.audit import AUDIT_CHAIN, SYSTEM, append_audit
from middleware.chain import Chain
from middleware.checkpoint import AUDIT, RECORDS, Checkpoint, CheckpointSigner, store_checkpoint
from middleware.config import RetentionConfig
from middleware.deferred import deferred
from middleware.outbox import DELIVERED, FAILED
from middleware.party import Party
from middleware.period import JAPAN, Period
from middleware.queries import FINISHED
from middleware.requester import query_record
from middleware.tables import held_provision, node_checkpoints, query, replica_file_answer

__all__ = [
    "Kind",
    "Purge",
    "Purged",
    "audit_log",
    "held_contents",
    "party_kinds",
    "query_results",
    "replica_file_answers",
]

_IN_CHUNK = 500  # values in one IN (...) list


@dataclass(frozen=True)
class Purged:
    """What one batch deleted: how many, the newest time among them, the last link deleted
    (a chain's), and whether more may be due (the batch was full)."""

    deleted: int
    newest: datetime | None = None
    through: int | None = None
    more: bool = False


Batch = Callable[[Connection, datetime, datetime, int], Purged]
"""One batch of a kind: (connection, cutoff, now, at most how many) -> what it deleted."""


@dataclass(frozen=True)
class Kind:
    """A kind of data kept for ``period``: its name (the ``[retention]`` key, the audit
    entry's target), the count its purge reports, and how one batch deletes it."""

    name: str
    count: str
    period: Period
    batch: Batch


def _rows_purged(deleted: int, newest: datetime | None, limit: int) -> Purged:
    return Purged(deleted, newest, more=deleted == limit)


# -- the hash chains ----------------------------------------------------------------------


def _whole_transactions(
    connection: Connection, links: Table, prefix: list[Any], column: str
) -> list[Any]:
    """``prefix`` (the oldest links, in order) cut back so that no 処理通番 it holds has a
    record left after it: a transaction's records are purged together."""
    numbers = {row.number for row in prefix if row.number is not None}
    if not numbers:
        return prefix
    through = prefix[-1].seq
    later: set[str] = set()
    ordered = sorted(numbers)
    for start in range(0, len(ordered), _IN_CHUNK):
        later.update(
            connection.execute(
                select(links.c[column])
                .where(
                    links.c[column].in_(ordered[start : start + _IN_CHUNK]),
                    links.c.seq > through,
                )
                .distinct()
            ).scalars()
        )
    while later:
        first = next((i for i, row in enumerate(prefix) if row.number in later), None)
        if first is None:
            break
        kept, prefix = prefix[first:], prefix[:first]
        staying = {row.number for row in kept if row.number is not None}
        later = staying & {row.number for row in prefix if row.number is not None}
    return prefix


def _chain_batch(
    chain: Chain,
    name: str,
    checkpoints: Table,
    signer: CheckpointSigner,
    together: str | None,
) -> Batch:
    """A batch that cuts the oldest links of ``chain`` recorded at or before the cutoff
    (whole transactions when ``together`` names the 処理通番 column) and keeps a signed
    checkpoint of the last one cut."""
    links = chain.links

    def batch(connection: Connection, cutoff: datetime, now: datetime, limit: int) -> Purged:
        number = links.c[together] if together is not None else None
        columns: list[Any] = [links.c.seq, links.c.recorded_at]
        if number is not None:
            columns.append(number.label("number"))
        rows = connection.execute(select(*columns).order_by(links.c.seq).limit(limit)).all()
        prefix = list(takewhile(lambda row: row.recorded_at <= cutoff, rows))
        if together is not None and prefix:
            prefix = _whole_transactions(connection, links, prefix, together)
        if not prefix:
            return Purged(0)
        last = prefix[-1]
        link = chain.cut(connection, last.seq)
        checkpoint = Checkpoint(
            party=signer.party,
            chain=name,
            link=link,
            recorded_at=last.recorded_at,
            deleted=len(prefix),
            made_at=now,
        )
        store_checkpoint(connection, checkpoints, checkpoint, signer.sign(checkpoint))
        newest = max(row.recorded_at for row in prefix)
        return Purged(len(prefix), newest, link.seq, more=len(rows) == limit)

    return batch


def _outbox_messages_batch(outbox: Table) -> Batch:
    """A batch that deletes the rows of messages that ended at or before the cutoff."""

    def batch(connection: Connection, cutoff: datetime, now: datetime, limit: int) -> Purged:
        rows = connection.execute(
            select(outbox.c.id, outbox.c.finished_at)
            .where(outbox.c.state.in_((DELIVERED, FAILED)), outbox.c.finished_at <= cutoff)
            .order_by(outbox.c.finished_at)
            .limit(limit)
        ).all()
        if rows:
            connection.execute(delete(outbox).where(outbox.c.id.in_([row.id for row in rows])))
        return _rows_purged(len(rows), max((row.finished_at for row in rows), default=None), limit)

    return batch


def _outbox_bodies_batch(outbox: Table) -> Batch:
    """A batch that deletes the documents of messages that ended at or before the cutoff."""

    def batch(connection: Connection, cutoff: datetime, now: datetime, limit: int) -> Purged:
        rows = connection.execute(
            select(outbox.c.id, outbox.c.finished_at)
            .where(
                outbox.c.state.in_((DELIVERED, FAILED)),
                outbox.c.finished_at <= cutoff,
                outbox.c.body_deleted_at.is_(None),
            )
            .order_by(outbox.c.finished_at)
            .limit(limit)
        ).all()
        if rows:
            connection.execute(
                outbox.update()
                .where(outbox.c.id.in_([row.id for row in rows]))
                .values(body=None, body_deleted_at=now)
            )
        return _rows_purged(len(rows), max((row.finished_at for row in rows), default=None), limit)

    return batch


def party_kinds(
    records: Chain,
    checkpoints: Table,
    outbox: Table,
    signer: CheckpointSigner,
    retention: RetentionConfig,
) -> list[Kind]:
    """What every party (hub and nodes) keeps for a while: its provision records, the
    documents of its outbox, and the outbox's rows (as long as the records)."""
    return [
        Kind(
            "provision_records",
            "records_deleted",
            retention.provision_records,
            _chain_batch(records, RECORDS, checkpoints, signer, "transaction_number"),
        ),
        Kind(
            "outbox_messages",
            "outbox_messages_deleted",
            retention.provision_records,
            _outbox_messages_batch(outbox),
        ),
        Kind(
            "outbox_bodies",
            "outbox_bodies_deleted",
            retention.outbox_bodies,
            _outbox_bodies_batch(outbox),
        ),
    ]


# -- a node's own kinds ---------------------------------------------------------------------


def audit_log(signer: CheckpointSigner, period: Period) -> Kind:
    """A node's staff audit log, cut oldest first with a signed checkpoint."""
    return Kind(
        "audit_log",
        "audit_entries_deleted",
        period,
        _chain_batch(AUDIT_CHAIN, AUDIT, node_checkpoints, signer, None),
    )


def _held_contents_batch(
    connection: Connection, cutoff: datetime, now: datetime, limit: int
) -> Purged:
    rows = connection.execute(
        select(held_provision.c.transaction_number, held_provision.c.decided_at)
        .where(
            held_provision.c.decided_at.is_not(None),
            held_provision.c.decided_at <= cutoff,
            held_provision.c.content_deleted_at.is_(None),
        )
        .order_by(held_provision.c.decided_at)
        .limit(limit)
    ).all()
    if rows:
        connection.execute(
            held_provision.update()
            .where(
                held_provision.c.transaction_number.in_([row.transaction_number for row in rows])
            )
            .values(payload=None, recipient_certificate=None, content_deleted_at=now)
        )
    return _rows_purged(len(rows), max((row.decided_at for row in rows), default=None), limit)


def held_contents(period: Period) -> Kind:
    """The content of decided (or expired) holds at a node."""
    return Kind("held_contents", "held_contents_deleted", period, _held_contents_batch)


def _replica_file_answers_batch(
    connection: Connection, cutoff: datetime, now: datetime, limit: int
) -> Purged:
    rows = connection.execute(
        select(
            replica_file_answer.c.system,
            replica_file_answer.c.idempotency_key,
            replica_file_answer.c.answered_at,
        )
        .where(replica_file_answer.c.answered_at <= cutoff)
        .order_by(replica_file_answer.c.answered_at)
        .limit(limit)
    ).all()
    for row in rows:
        connection.execute(
            delete(replica_file_answer).where(
                replica_file_answer.c.system == row.system,
                replica_file_answer.c.idempotency_key == row.idempotency_key,
            )
        )
    return _rows_purged(len(rows), max((row.answered_at for row in rows), default=None), limit)


def replica_file_answers(period: Period) -> Kind:
    """The answers kept for 副本 files' Idempotency-Keys at a node."""
    return Kind(
        "replica_file_answers", "replica_file_answers_deleted", period, _replica_file_answers_batch
    )


def query_results(party: Party, code: str, period: Period) -> Kind:
    """The results of a node's queries (``code`` the node's), each deletion recorded."""

    def batch(connection: Connection, cutoff: datetime, now: datetime, limit: int) -> Purged:
        rows = connection.execute(
            select(query)
            .where(
                query.c.state.in_(FINISHED),
                query.c.completed_at <= cutoff,
                query.c.result_deleted_at.is_(None),
            )
            .order_by(query.c.completed_at)
            .limit(limit)
        ).all()
        if not rows:
            return Purged(0)
        connection.execute(
            query.update()
            .where(query.c.query_id.in_([row.query_id for row in rows]))
            .values(result=None, result_deleted_at=now)
        )
        party.record(
            connection,
            now,
            [query_record(code, row, "result_deleted", row.state) for row in rows],
        )
        return _rows_purged(len(rows), max(row.completed_at for row in rows), limit)

    return Kind("query_results", "results_deleted", period, batch)


# -- the purge job --------------------------------------------------------------------------


def _japan(moment: datetime) -> str:
    return moment.astimezone(JAPAN).isoformat(timespec="seconds")


class Purge:
    """The purge of one party: each kind in turn, batch after batch until nothing more is
    due; each batch recorded (at a node, ``audited``, by an audit entry in its transaction),
    each kind deleted a business event of the party's log."""

    def __init__(self, party: Party, kinds: Sequence[Kind], *, batch: int, audited: bool) -> None:
        self._party = party
        self.kinds = tuple(kinds)
        self._limit = batch
        self._audited = audited

    @deferred
    async def run(self) -> dict[str, int]:
        """Delete what is past its retention, kind by kind; how many of each (the ``purge``
        job's counts)."""
        counts: dict[str, int] = {}
        for kind in self.kinds:
            now = self._party.now()
            cutoff = kind.period.before(now)
            total = 0
            newest: datetime | None = None
            while True:
                purged = await self._party.database.run(self._batch, kind, cutoff, now)
                total += purged.deleted
                if purged.newest is not None:
                    newest = purged.newest if newest is None else max(newest, purged.newest)
                if not purged.deleted or not purged.more:
                    break
            counts[kind.count] = total
            # One business event per kind deleted (nothing when none was due).
            self._party.events.purged(
                kind.name.replace("_", " "),
                total,
                f"kept {kind.period}: up to {_japan(cutoff)}, the newest of "
                f"{_japan(newest) if newest is not None else '-'}",
            )
        return counts

    def _batch(self, connection: Connection, kind: Kind, cutoff: datetime, now: datetime) -> Purged:
        purged = kind.batch(connection, cutoff, now, self._limit)
        if purged.deleted and self._audited:
            detail: dict[str, Any] = {
                "deleted": purged.deleted,
                "retention": str(kind.period),
                "cutoff": cutoff.isoformat(),
            }
            if purged.newest is not None:
                detail["newest"] = purged.newest.isoformat()
            if purged.through is not None:
                detail["through_seq"] = purged.through
            append_audit(connection, now, SYSTEM, "purge", kind.name, detail)
        return purged
