"""お知らせ at マイナポータル: the notices institutions send persons, and their reading.

The hub relays an institution's notice under the portal's 符号 of the person (`Mailbox.receive`):
kept once by the network's number for the person's account, or refused when the person has no
account (NoPortalAccount: they never signed in), which the hub takes as 配信不可. A person
reads their notices on the portal's pages; opening one marks it read (`Mailbox.read`) and, in
the same transaction, puts a ``NoticeRead`` for the hub in the outbox, so the sender learns it
(既読) when it next asks the hub.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select
from twisted.internet.defer import Deferred

from codes import errors
from codes.errors import RenkeiError
from middleware import messages
from middleware.deferred import deferred
from middleware.network import HUB, NOTICE_READ, decode_answer
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.tables import portal_account, portal_notice, portal_notice_attachment

__all__ = ["KIND", "Mailbox", "PersonNotice"]

KIND = "notice_read"
"""The outbox kind of a NoticeRead on its way to the hub."""


@dataclass(frozen=True)
class PersonNotice:
    """A notice as its person reads it (``attachments`` only when opened)."""

    notice_number: str
    sender: str
    title: str
    body: str
    received_at: datetime
    read_at: datetime | None
    attachments: tuple[messages.Attachment, ...] = ()


class Mailbox:
    """The notices of the persons of one portal (``portal.notices``)."""

    def __init__(self, party: Party) -> None:
        self._party = party
        self._database = party.database

    # -- from the hub ---------------------------------------------------------------------------

    @deferred
    async def receive(self, notice: messages.Notice) -> bytes:
        """A notice the hub relays: kept once for the person's account (NoPortalAccount when
        the person has none); the acknowledgement."""
        if notice.notice_number is None or notice.sender is None:
            raise RenkeiError(
                errors.XML_SCHEMA_INVALID,
                message_type="Notice",
                detail="a notice relayed by the network has its noticeNumber and sender",
            )
        await self._database.run(self._keep, notice, self._party.now())
        return messages.encode(
            messages.NoticeAck(message_id=notice.message_id, notice_number=notice.notice_number)
        )

    @staticmethod
    def _keep(connection: Connection, notice: messages.Notice, now: datetime) -> None:
        account = connection.execute(
            select(portal_account.c.fugo).where(portal_account.c.fugo == notice.person_fugo)
        ).first()
        if account is None:
            raise RenkeiError(errors.NO_PORTAL_ACCOUNT)
        known = connection.execute(
            select(portal_notice.c.notice_number).where(
                portal_notice.c.notice_number == notice.notice_number
            )
        ).first()
        if known is not None:
            return  # the hub's retry: kept already
        connection.execute(
            portal_notice.insert().values(
                notice_number=notice.notice_number,
                fugo=notice.person_fugo,
                sender=notice.sender,
                title=notice.title,
                body=notice.body,
                received_at=now,
            )
        )
        for position, attachment in enumerate(notice.attachments):
            connection.execute(
                portal_notice_attachment.insert().values(
                    notice_number=notice.notice_number,
                    position=position,
                    name=attachment.name,
                    media_type=attachment.media_type,
                    content=attachment.content,
                )
            )

    # -- a person's reading -----------------------------------------------------------------------

    def notices_of(self, fugo: str) -> Deferred[list[PersonNotice]]:
        """A person's notices, newest first."""
        return self._database.read(_notices_of, fugo)

    def unread(self, fugo: str) -> Deferred[int]:
        """How many of a person's notices they have not read."""
        return self._database.read(
            lambda connection: int(
                connection.execute(
                    select(func.count())
                    .select_from(portal_notice)
                    .where(portal_notice.c.fugo == fugo, portal_notice.c.read_at.is_(None))
                ).scalar_one()
            )
        )

    @deferred
    async def read(self, fugo: str, notice_number: str) -> PersonNotice:
        """Open one of the person's notices (anyone else's is UnknownNotice to them): the
        first time, it is marked read and the hub is told."""
        found, outgoing = await self._database.run(
            self._open, fugo, notice_number, self._party.now()
        )
        if outgoing is not None:
            self._party.outbox.send_now(outgoing)
        return found

    def _open(
        self, connection: Connection, fugo: str, notice_number: str, now: datetime
    ) -> tuple[PersonNotice, OutgoingMessage | None]:
        row = connection.execute(
            select(portal_notice).where(portal_notice.c.notice_number == notice_number)
        ).first()
        if row is None or row.fugo != fugo:
            raise RenkeiError(errors.UNKNOWN_NOTICE, notice=notice_number[:20])
        outgoing = None
        read_at = row.read_at
        if read_at is None:
            read_at = now
            connection.execute(
                portal_notice.update()
                .where(portal_notice.c.notice_number == notice_number)
                .values(read_at=now)
            )
            message_id = str(uuid.uuid4())
            body = messages.encode(
                messages.NoticeRead(message_id=message_id, notice_number=notice_number, read_at=now)
            )
            outgoing = OutgoingMessage(message_id, KIND, HUB, notice_number, body)
            self._party.outbox.enqueue(connection, outgoing)
        files = connection.execute(
            select(portal_notice_attachment)
            .where(portal_notice_attachment.c.notice_number == notice_number)
            .order_by(portal_notice_attachment.c.position)
        )
        return (
            PersonNotice(
                notice_number=row.notice_number,
                sender=row.sender,
                title=row.title,
                body=row.body,
                received_at=row.received_at,
                read_at=read_at,
                attachments=tuple(
                    messages.Attachment(
                        name=f.name, media_type=f.media_type, content=bytes(f.content)
                    )
                    for f in files
                ),
            ),
            outgoing,
        )

    @deferred
    async def deliver(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of a NoticeRead to the hub."""
        document = await self._party.transport.exchange(HUB, NOTICE_READ, message.body)
        decode_answer(document, messages.NoticeAck)


def _notices_of(connection: Connection, fugo: str) -> list[PersonNotice]:
    rows = connection.execute(
        select(portal_notice)
        .where(portal_notice.c.fugo == fugo)
        .order_by(portal_notice.c.received_at.desc(), portal_notice.c.notice_number.desc())
    )
    return [
        PersonNotice(
            notice_number=row.notice_number,
            sender=row.sender,
            title=row.title,
            body=row.body,
            received_at=row.received_at,
            read_at=row.read_at,
        )
        for row in rows
    ]
