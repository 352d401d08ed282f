"""自己情報提供 at マイナポータル: a person asks an institution for their own information.

The portal acts for the person signed in as a requester acts for its back office: the
request is stored and sent to the hub through the outbox in one transaction
(`SelfInformation.ask`: a ``SelfInformationQuery`` under the portal's 符号 of the person),
the hub's answer gives it a 処理通番 or refuses it, and the provider's answer comes back
relayed by the hub as a ``Provision`` (`SelfInformation.receive_provision`): held for the
provider's staff (自動応答不可), refused, or a payload sealed for the portal alone, which is
decrypted and verified exactly as a node verifies a provision
(`middleware.requester.ProvisionOpener`) and kept for the person to read. Every step is
recorded in the portal's own chain of provision records, under the 自己情報提供 procedure.
A person reads only their own requests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from twisted.internet.defer import Deferred

from codes import errors
from codes.catalogue import SELF_INFORMATION_AFFAIR, SELF_INFORMATION_PROCEDURE
from codes.errors import RenkeiError
from middleware import messages
from middleware.deferred import deferred
from middleware.network import HUB, SELF_INFORMATION, DeliveryRefused, decode_answer
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.queries import ACCEPTED, ERROR, FINISHED, HELD, REFUSED, SUBMITTED
from middleware.records import RecordEntry
from middleware.requester import ProvisionOpener, provision_ack
from middleware.tables import portal_request

__all__ = ["KIND", "SelfInformation", "SelfInformationRequest"]

KIND = "self_information"
"""The outbox kind of a person's request on its way to the hub."""


@dataclass(frozen=True)
class SelfInformationRequest:
    """One request of a person, as the person may read it."""

    request_id: str
    provider: str
    information_name: str
    state: str
    transaction_number: str | None
    error_code: str | None
    submitted_at: datetime
    completed_at: datetime | None
    result: bytes | None  # the provider's verified, signed payload, once provided

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def _request_of(row: Any) -> SelfInformationRequest:
    return SelfInformationRequest(
        request_id=row.request_id,
        provider=row.provider,
        information_name=row.information_name,
        state=row.state,
        transaction_number=row.transaction_number,
        error_code=row.error_code,
        submitted_at=row.submitted_at,
        completed_at=row.completed_at,
        result=bytes(row.result) if row.result is not None else None,
    )


class SelfInformation:
    """The requests for their own information that persons make through one portal."""

    def __init__(self, party: Party, opener: ProvisionOpener) -> None:
        self._party = party
        self._database = party.database
        self._opener = opener
        self._code = opener.requester
        self._catalogue = opener.catalogue

    # -- asking ------------------------------------------------------------------------------

    @deferred
    async def ask(self, fugo: str, provider: str, information_name: str) -> str:
        """The person behind ``fugo`` asks ``provider`` for their own information of
        ``information_name``: stored and sent to the hub; the request's id."""
        self._catalogue.information_name(information_name)  # UnknownInformationName
        request_id, outgoing = await self._database.run(
            self._create, fugo, provider, information_name, self._party.now()
        )
        self._party.outbox.send_now(outgoing)
        return request_id

    def _create(
        self,
        connection: Connection,
        fugo: str,
        provider: str,
        information_name: str,
        now: datetime,
    ) -> tuple[str, OutgoingMessage]:
        request_id = str(uuid.uuid4())
        connection.execute(
            portal_request.insert().values(
                request_id=request_id,
                fugo=fugo,
                provider=provider,
                information_name=information_name,
                state=SUBMITTED,
                submitted_at=now,
            )
        )
        body = messages.encode(
            messages.SelfInformationQuery(
                message_id=request_id,
                person_fugo=fugo,
                provider=provider,
                information_name=information_name,
            )
        )
        outgoing = OutgoingMessage(request_id, KIND, HUB, request_id, body)
        self._party.outbox.enqueue(connection, outgoing)
        return request_id, outgoing

    def _record(self, row: Any, event: str, status: str, **extra: Any) -> RecordEntry:
        return RecordEntry(
            event=event,
            status=status,
            transaction_number=extra.pop("transaction_number", row.transaction_number),
            requester=self._code,
            provider=row.provider,
            affair=SELF_INFORMATION_AFFAIR,
            procedure=SELF_INFORMATION_PROCEDURE,
            information_name=row.information_name,
            person=row.fugo,
            **extra,
        )

    # -- the hub's answer ---------------------------------------------------------------------

    @deferred
    async def deliver(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of a request: the hub accepts it (a 処理通番) or refuses it."""
        try:
            document = await self._party.transport.exchange(HUB, SELF_INFORMATION, message.body)
            accepted = decode_answer(document, messages.QueryAccepted)
        except DeliveryRefused as refusal:
            await self._database.run(
                self._hub_answered,
                message.reference,
                refusal.transaction_number,
                REFUSED,
                refusal.code,
            )
            raise
        await self._database.run(
            self._hub_answered, message.reference, accepted.transaction_number, ACCEPTED
        )

    def _hub_answered(
        self,
        connection: Connection,
        request_id: str,
        number: str | None,
        state: str,
        code: str | None = None,
    ) -> None:
        row = connection.execute(
            select(portal_request).where(portal_request.c.request_id == request_id)
        ).one()
        if row.state != SUBMITTED:
            return  # the provider's answer came first
        now = self._party.now()
        ended = {"error_code": code, "completed_at": now} if state == REFUSED else {}
        accepted = {"accepted_at": now} if state == ACCEPTED else {}
        connection.execute(
            portal_request.update()
            .where(portal_request.c.request_id == request_id)
            .values(state=state, transaction_number=number, **ended, **accepted)
        )
        extra = {"error_code": code} if code is not None else {}
        self._party.record(
            connection, now, [self._record(row, "query", state, transaction_number=number, **extra)]
        )

    # -- the provider's answer ------------------------------------------------------------------

    @deferred
    async def receive_provision(self, delivered: messages.Provision) -> bytes:
        """A provision relayed by the hub: held, refused, or a payload decrypted and verified
        (outside any transaction) and kept once; the acknowledgement."""
        row = await self._database.read(self._request_of_result, delivered)
        if row.state not in FINISHED:
            if delivered.status == HELD:
                state, result, code = HELD, None, None
            else:
                state, result, code = self._opener.open(
                    delivered, provider=row.provider, information_name=row.information_name
                )
            await self._database.run(
                self._store,
                row.request_id,
                delivered.transaction_number,
                state,
                result,
                code,
                delivered.non_disclosure,
            )
            if code is not None and code in errors.ALL and state == ERROR:
                raise RenkeiError(errors.ALL[code], transaction_number=delivered.transaction_number)
        return messages.encode(provision_ack(delivered))

    def _request_of_result(self, connection: Connection, delivered: messages.Provision) -> Any:
        number = delivered.transaction_number
        row = connection.execute(
            select(portal_request).where(portal_request.c.request_id == delivered.query_message_id)
        ).first()
        if row is None or row.transaction_number not in (None, number):
            raise RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number)
        return row

    def _store(
        self,
        connection: Connection,
        request_id: str,
        number: str,
        state: str,
        result: bytes | None,
        code: str | None,
        non_disclosure: bool = False,
    ) -> None:
        """Keep the provider's answer once, and record it (marked 不開示 when the provider
        hides the transaction: 提供側不開示)."""
        row = connection.execute(
            select(portal_request).where(portal_request.c.request_id == request_id)
        ).one()
        if row.state in FINISHED or (row.state == HELD and state == HELD):
            return  # delivered twice: the first delivery stands
        now = self._party.now()
        entries = []
        if row.transaction_number is None:
            # The answer overtook the hub's QueryAccepted: accepted here.
            entries.append(
                self._record(
                    row,
                    "query",
                    ACCEPTED,
                    transaction_number=number,
                    non_disclosure=non_disclosure,
                )
            )
        ended = {"completed_at": now} if state in FINISHED else {}
        connection.execute(
            portal_request.update()
            .where(portal_request.c.request_id == request_id)
            .values(
                state=state,
                transaction_number=number,
                accepted_at=row.accepted_at or now,
                result=result,
                error_code=code,
                **ended,
            )
        )
        entries.append(
            self._record(
                row,
                "result",
                state,
                transaction_number=number,
                error_code=code,
                non_disclosure=non_disclosure,
            )
        )
        self._party.record(connection, now, entries)

    # -- what a person reads ----------------------------------------------------------------------

    def requests_of(self, fugo: str) -> Deferred[list[SelfInformationRequest]]:
        """A person's requests, newest first."""
        return self._database.read(_requests_of, fugo)

    def request(self, fugo: str, request_id: str) -> Deferred[SelfInformationRequest]:
        """One of the person's requests (anyone else's is UnknownSelfInformation to them)."""
        return self._database.read(_request, fugo, request_id)


def _requests_of(connection: Connection, fugo: str) -> list[SelfInformationRequest]:
    rows = connection.execute(
        select(portal_request)
        .where(portal_request.c.fugo == fugo)
        .order_by(portal_request.c.submitted_at.desc(), portal_request.c.request_id)
    )
    return [_request_of(row) for row in rows]


def _request(connection: Connection, fugo: str, request_id: str) -> SelfInformationRequest:
    row = connection.execute(
        select(portal_request).where(portal_request.c.request_id == request_id)
    ).first()
    if row is None or row.fugo != fugo:
        raise RenkeiError(errors.UNKNOWN_SELF_INFORMATION, request_id=request_id[:36])
    return _request_of(row)
