"""お知らせ at an intermediate server: notices to persons, sent through the network to
マイナポータル, and how each stands.

A back-office system asks its node to send a notice (a title, a body, at most three
attachments) to one person or a list of them (`Notices.send`): checked here (`validate_notice`;
every person registered with their 符号 acquired), then stored with one ``Notice`` message per
person in the outbox, in one transaction, so that a refused request keeps nothing. The hub
answers each with the notice's number (送信済, ``sent``) or refuses it (配信不可,
``undeliverable``, with the code). The hub then learns from the portal whether the notice was
delivered (配信済) or could not be (配信不可: the person has no account), and whether the
person read it (既読); the node asks it how its notices stand (お知らせ状況確認), a
``NoticeStatusRequest`` of at most `STATUS_BATCH` numbers at a time, in the party's job
``notice_status``. A back-office system reads its own notices only; the console reads all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from twisted.internet.defer import Deferred

from codes import errors
from codes.errors import RenkeiError
from middleware import messages, persons
from middleware.attachments import validate_attachments
from middleware.deferred import deferred
from middleware.network import HUB, NOTICE, NOTICE_STATUS, DeliveryRefused, decode_answer
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.tables import notice, notice_attachment, notice_recipient

__all__ = [
    "DELIVERED",
    "FINAL",
    "JOB",
    "MAX_BODY",
    "MAX_RECIPIENTS",
    "MAX_TITLE",
    "QUEUED",
    "READ",
    "SENT",
    "STATES",
    "STATUS_BATCH",
    "UNDELIVERABLE",
    "NoticeDraft",
    "NoticeStatus",
    "Notices",
    "RecipientStatus",
    "validate_notice",
]

QUEUED = "queued"  # 送信待ち: in the outbox towards the hub
SENT = "sent"  # 送信済: the hub took it
DELIVERED = "delivered"  # 配信済: the portal took it
READ = "read"  # 既読
UNDELIVERABLE = "undeliverable"  # 配信不可
STATES = (QUEUED, SENT, DELIVERED, READ, UNDELIVERABLE)
FINAL = (READ, UNDELIVERABLE)
_ORDER = {state: rank for rank, state in enumerate(STATES)}

JOB = "notice_status"  # the job that asks the hub how the notices stand
STATUS_BATCH = 500  # numbers asked about in one NoticeStatusRequest (its schema's limit)
MAX_TITLE = 100
MAX_BODY = 4000
MAX_RECIPIENTS = 100

_TITLE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
# What XML 1.0 can carry (a body keeps its line breaks and tabs).
_BODY = re.compile("[\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]{1,4000}")


@dataclass(frozen=True)
class NoticeDraft:
    """What a back-office system asks to send: to each of ``recipients`` (integrated
    address numbers), the same notice."""

    title: str
    body: str
    recipients: tuple[str, ...]
    attachments: tuple[messages.Attachment, ...] = ()


@dataclass(frozen=True)
class RecipientStatus:
    """How a notice stands for one person."""

    integrated_address_number: str
    state: str
    notice_number: str | None
    error_code: str | None
    changed_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


@dataclass(frozen=True)
class NoticeStatus:
    """A notice as its system (and the console) reads it."""

    notice_id: str
    system: str
    title: str
    body: str
    created_at: datetime
    attachments: tuple[tuple[str, str, int], ...]  # name, media type, size
    recipients: tuple[RecipientStatus, ...]

    def count(self, state: str) -> int:
        """How many of its persons it stands ``state`` for."""
        return sum(1 for recipient in self.recipients if recipient.state == state)


def _invalid(detail: str) -> RenkeiError:
    return RenkeiError(errors.NOTICE_INVALID, detail=detail)


def validate_notice(draft: NoticeDraft) -> NoticeDraft:
    """The draft when it can be sent (NoticeInvalid, AttachmentInvalid otherwise): a title of
    1 to 100 characters on one line, a body of 1 to 4000 characters XML can carry, 1 to
    `MAX_RECIPIENTS` persons named once each, at most three valid attachments."""
    if not isinstance(draft.title, str) or not _TITLE.fullmatch(draft.title):
        raise _invalid(f"a title is 1 to {MAX_TITLE} characters on one line")
    if not isinstance(draft.body, str) or not _BODY.fullmatch(draft.body):
        raise _invalid(f"a body is 1 to {MAX_BODY} characters of text")
    if not 1 <= len(draft.recipients) <= MAX_RECIPIENTS:
        raise _invalid(f"a notice goes to 1 to {MAX_RECIPIENTS} persons")
    if len(set(draft.recipients)) != len(draft.recipients):
        raise _invalid("a person is named twice")
    validate_attachments(draft.attachments)
    return draft


class Notices:
    """The notices of one intermediate server (``node.notices``)."""

    def __init__(self, party: Party, interval: float) -> None:
        self._party = party
        self._database = party.database
        party.jobs.add(JOB, interval, self.check_status, now=False)

    # -- sending -------------------------------------------------------------------------------

    @deferred
    async def send(self, draft: NoticeDraft, system: str) -> str:
        """Send a notice to each of its persons through the hub; the notice's id. Refused
        whole (nothing kept) when a person is not registered or has no 符号 yet."""
        validate_notice(draft)
        notice_id, outgoing = await self._database.run(
            self._store, draft, system, self._party.now()
        )
        for message in outgoing:
            self._party.outbox.send_now(message)
        return notice_id

    def _store(
        self, connection: Connection, draft: NoticeDraft, system: str, now: datetime
    ) -> tuple[str, list[OutgoingMessage]]:
        fugos = []
        for number in draft.recipients:
            persons.person_state(connection, number)  # UnknownPerson
            fugos.append(persons.fugo_of(connection, number))  # FugoNotAcquired
        notice_id = str(uuid.uuid4())
        connection.execute(
            notice.insert().values(
                notice_id=notice_id,
                system=system,
                title=draft.title,
                body=draft.body,
                created_at=now,
            )
        )
        for position, attachment in enumerate(draft.attachments):
            connection.execute(
                notice_attachment.insert().values(
                    notice_id=notice_id,
                    position=position,
                    name=attachment.name,
                    media_type=attachment.media_type,
                    content=attachment.content,
                )
            )
        outgoing = []
        for number, fugo in zip(draft.recipients, fugos, strict=True):
            message_id = str(uuid.uuid4())
            connection.execute(
                notice_recipient.insert().values(
                    notice_id=notice_id,
                    integrated_address_number=number,
                    message_id=message_id,
                    state=QUEUED,
                    changed_at=now,
                )
            )
            body = messages.encode(
                messages.Notice(
                    message_id=message_id,
                    person_fugo=fugo,
                    title=draft.title,
                    body=draft.body,
                    attachments=draft.attachments,
                )
            )
            message = OutgoingMessage(message_id, NOTICE, HUB, message_id, body)
            self._party.outbox.enqueue(connection, message)
            outgoing.append(message)
        return notice_id, outgoing

    @deferred
    async def deliver(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of one person's notice: the hub numbers it (送信済) or
        refuses it (配信不可, with the code)."""
        try:
            document = await self._party.transport.exchange(HUB, NOTICE, message.body)
            answer = decode_answer(document, messages.NoticeAck)
        except DeliveryRefused as refusal:
            await self._database.run(
                self._move, message.reference, UNDELIVERABLE, error_code=refusal.code
            )
            raise
        await self._database.run(
            self._move, message.reference, SENT, notice_number=answer.notice_number
        )

    def _move(
        self,
        connection: Connection,
        message_id: str,
        state: str,
        *,
        notice_number: str | None = None,
        error_code: str | None = None,
        at: datetime | None = None,
    ) -> bool:
        """One person's notice moves forward to ``state`` (never back); whether it moved."""
        row = connection.execute(
            select(notice_recipient).where(notice_recipient.c.message_id == message_id)
        ).one()
        if _ORDER[state] <= _ORDER[row.state] or row.state in FINAL:
            return False
        now = self._party.now()
        moved: dict[str, Any] = {"state": state, "changed_at": now}
        if notice_number is not None:
            moved["notice_number"] = notice_number
        if state == UNDELIVERABLE:
            moved["error_code"] = error_code
        # An undeliverable notice was sent, never delivered nor read.
        passed = (SENT,) if state == UNDELIVERABLE else (SENT, DELIVERED, READ)
        for reached, column in ((SENT, "sent_at"), (DELIVERED, "delivered_at"), (READ, "read_at")):
            if (
                reached in passed
                and _ORDER[state] >= _ORDER[reached]
                and getattr(row, column) is None
            ):
                moved[column] = at if reached == state and at is not None else now
        connection.execute(
            notice_recipient.update()
            .where(notice_recipient.c.message_id == message_id)
            .values(**moved)
        )
        return True

    # -- お知らせ状況確認 ---------------------------------------------------------------------

    @deferred
    async def check_status(self) -> dict[str, int]:
        """Ask the hub how the notices that have not ended stand (the oldest changed first,
        `STATUS_BATCH` at most), and move each forward; reports how many were asked about and
        how many moved."""
        waiting = await self._database.read(_waiting, STATUS_BATCH)
        if not waiting:
            return {"asked": 0, "changed": 0}
        asked = messages.NoticeStatusRequest(
            message_id=str(uuid.uuid4()), notice_numbers=tuple(waiting)
        )
        document = await self._party.transport.exchange(HUB, NOTICE_STATUS, messages.encode(asked))
        answer = decode_answer(document, messages.NoticeStatusList)
        changed = await self._database.run(self._take_states, waiting, answer.notices)
        return {"asked": len(waiting), "changed": changed}

    def _take_states(
        self,
        connection: Connection,
        waiting: dict[str, str],
        states: Sequence[messages.NoticeState],
    ) -> int:
        changed = 0
        for state in states:
            message_id = waiting.get(state.notice_number)
            if message_id is None or state.status not in _ORDER:
                continue  # not one asked about: nothing to take from it
            changed += self._move(
                connection,
                message_id,
                state.status,
                error_code=state.error_code,
                at=state.changed_at,
            )
        return changed

    # -- what is read ----------------------------------------------------------------------------

    def status(self, notice_id: str, system: str | None) -> Deferred[NoticeStatus]:
        """A notice as ``system`` reads it (another system's is UnknownNotice to it); with no
        system, as the console reads any."""
        return self._database.read(_status, notice_id, system)

    def recent(self, system: str | None, limit: int) -> Deferred[list[NoticeStatus]]:
        """The newest ``limit`` notices of ``system`` (of every system, with None)."""
        return self._database.read(_recent, system, limit)


def _waiting(connection: Connection, limit: int) -> dict[str, str]:
    """The notices sent and not ended (number → message id), the oldest changed first."""
    rows = connection.execute(
        select(notice_recipient.c.notice_number, notice_recipient.c.message_id)
        .where(notice_recipient.c.state.in_((SENT, DELIVERED)))
        .order_by(notice_recipient.c.changed_at)
        .limit(limit)
    )
    return {row.notice_number: row.message_id for row in rows}


def _status(connection: Connection, notice_id: str, system: str | None) -> NoticeStatus:
    row = connection.execute(select(notice).where(notice.c.notice_id == notice_id)).first()
    if row is None or (system is not None and row.system != system):
        raise RenkeiError(errors.UNKNOWN_NOTICE, notice=notice_id[:36])
    files = connection.execute(
        select(
            notice_attachment.c.name, notice_attachment.c.media_type, notice_attachment.c.content
        )
        .where(notice_attachment.c.notice_id == notice_id)
        .order_by(notice_attachment.c.position)
    )
    recipients = connection.execute(
        select(notice_recipient)
        .where(notice_recipient.c.notice_id == notice_id)
        .order_by(notice_recipient.c.integrated_address_number)
    )
    return NoticeStatus(
        notice_id=row.notice_id,
        system=row.system,
        title=row.title,
        body=row.body,
        created_at=row.created_at,
        attachments=tuple((f.name, f.media_type, len(f.content)) for f in files),
        recipients=tuple(
            RecipientStatus(
                integrated_address_number=r.integrated_address_number,
                state=r.state,
                notice_number=r.notice_number,
                error_code=r.error_code,
                changed_at=r.changed_at,
                sent_at=r.sent_at,
                delivered_at=r.delivered_at,
                read_at=r.read_at,
            )
            for r in recipients
        ),
    )


def _recent(connection: Connection, system: str | None, limit: int) -> list[NoticeStatus]:
    query = select(notice.c.notice_id).order_by(notice.c.created_at.desc()).limit(limit)
    if system is not None:
        query = query.where(notice.c.system == system)
    return [_status(connection, notice_id, None) for notice_id in connection.scalars(query)]
