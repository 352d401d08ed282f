"""Held provisions (自動応答不可フラグ): the staff decisions on answers a node did not send.

A replica record flagged 自動応答不可 (a DV-protected person, say) makes the provider hold the
whole answer (`middleware.provider`). Staff with the approver role read exactly what would be
sent (the view is audited) and approve it, which signs, encrypts and sends it, or refuse it,
which answers 提供不可; a hold not decided within the institution's ``hold_lifetime`` is
refused with HoldExpired by a periodic sweep. A decision is taken once: the item's state
changes in the same transaction that queues the answer, and the answer is sealed before that
transaction, outside it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, select
from twisted.internet.defer import Deferred

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from middleware import held_queue, messages, replica
from middleware.audit import SYSTEM, append_audit
from middleware.deferred import deferred
from middleware.hardened_xml import parse_xml
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.provider import Provider
from middleware.queries import NO_DATA, PROVIDED, REFUSED
from middleware.records import RecordEntry
from middleware.tables import provision

__all__ = ["HeldDecisions"]

# The audit action of each decision.
ACTIONS = {
    held_queue.APPROVED: "approve",
    held_queue.REFUSED: "refuse",
    held_queue.EXPIRED: "expire",
}


@dataclass(frozen=True)
class _DecidedAnswer:
    """The Provision a decision sends: sealed when approved, 提供不可 otherwise."""

    message_id: str
    body: bytes
    status: str
    error_code: str | None


class HeldDecisions:
    """The held provisions of one intermediate server and the decisions on them."""

    def __init__(self, party: Party, code: str, catalogue: Catalogue, provider: Provider) -> None:
        self._party = party
        self._database = party.database
        self._code = code
        self._catalogue = catalogue
        self._provider = provider

    def items(self) -> Deferred[list[held_queue.HeldItem]]:
        """Held provisions waiting for a decision, the soonest to expire first."""
        return self._database.read(held_queue.waiting)

    def expired(self) -> Deferred[list[held_queue.HeldItem]]:
        """The holds that ended undecided most recently (refused with HoldExpired)."""
        return self._database.read(held_queue.expired)

    def item(self, number: str) -> Deferred[held_queue.HeldItem]:
        """A held item as it stands (UnknownHeldProvision if none); not audited: callers show
        its metadata only, its payload is read through `content`."""
        return self._database.read(held_queue.get, number)

    def content(self, number: str, actor: str) -> Deferred[held_queue.HeldItem]:
        """A held item with the exact payload that would be sent; the view is audited."""
        return self._database.run(self._view, number, actor)

    def _view(self, connection: Connection, number: str, actor: str) -> held_queue.HeldItem:
        item = held_queue.get(connection, number)
        append_audit(connection, self._party.now(), actor, "view_held_content", number)
        return item

    def set_suppression(
        self, record_id: str, suppressed: bool, actor: str, reason: str
    ) -> Deferred[None]:
        """Change a replica record's auto-response suppression flag (audited, with a reason)."""
        return self._database.run(self._set_suppression, record_id, suppressed, actor, reason)

    def _set_suppression(
        self, connection: Connection, record_id: str, suppressed: bool, actor: str, reason: str
    ) -> None:
        replica.set_suppressed(connection, record_id, suppressed)
        append_audit(
            connection,
            self._party.now(),
            actor,
            "flag_change",
            record_id,
            {"auto_response_suppressed": suppressed, "reason": reason},
        )

    @deferred
    async def approve(self, number: str, actor: str) -> None:
        """Approve a held provision: sign, encrypt and send exactly the held content."""
        await self._decide(number, held_queue.APPROVED, actor, None)

    @deferred
    async def refuse(self, number: str, actor: str, reason: str) -> None:
        """Refuse a held provision: the requester receives 提供不可 (ProvisionRefused)."""
        await self._decide(number, held_queue.REFUSED, actor, reason)

    @deferred
    async def expire(self) -> int:
        """Refuse, with HoldExpired, every held item whose hold ended undecided."""
        numbers = await self._database.read(held_queue.expired_numbers, self._party.now())
        for number in numbers:
            try:
                await self._decide(number, held_queue.EXPIRED, SYSTEM, None)
            except RenkeiError:
                continue  # decided meanwhile by someone else
        return len(numbers)

    async def _decide(self, number: str, decision: str, actor: str, reason: str | None) -> None:
        """Seal the answer the decision gives (outside any transaction), then take the
        decision, queue the answer and record it in one transaction (which refuses a
        decision taken meanwhile by someone else)."""
        item = await self._database.read(held_queue.get, number)
        if item.state != held_queue.HELD:
            raise RenkeiError(
                errors.HELD_ALREADY_DECIDED, transaction_number=number, state=item.state
            )
        if decision == held_queue.APPROVED and self._party.now() >= item.hold_expires_at:
            raise RenkeiError(errors.HOLD_EXPIRED, expires_at=item.hold_expires_at)
        answer = self._answer(item, decision)
        outgoing = await self._database.run(self._take, number, decision, actor, reason, answer)
        self._party.outbox.send_now(outgoing)
        self._party.events.decided(
            number, decision, actor, item.requester, answer.status, answer.error_code
        )

    def _answer(self, item: held_queue.HeldItem, decision: str) -> _DecidedAnswer:
        """The Provision a decision sends."""
        message_id = str(uuid.uuid4())
        number = item.transaction_number
        if decision == held_queue.APPROVED:
            if item.payload is None or item.recipient_certificate is None:
                # Only a decided hold loses its content (after its retention).
                raise RenkeiError(
                    errors.HELD_ALREADY_DECIDED, transaction_number=number, state=item.state
                )
            payload = messages.from_element(parse_xml(item.payload), messages.ProvisionPayload)
            status = PROVIDED if payload.records or payload.attachments else NO_DATA
            recipient = x509.load_der_x509_certificate(item.recipient_certificate)
            body = self._provider.sealed_provision(message_id, number, status, payload, recipient)
            return _DecidedAnswer(message_id, body, status, None)
        kind = errors.PROVISION_REFUSED if decision == held_queue.REFUSED else errors.HOLD_EXPIRED
        body = messages.encode(
            messages.Provision(
                message_id=message_id,
                transaction_number=number,
                status=REFUSED,
                error_code=kind.code,
                non_disclosure=self._provider.withholds(item.information_name),
            )
        )
        return _DecidedAnswer(message_id, body, REFUSED, kind.code)

    def _take(
        self,
        connection: Connection,
        number: str,
        decision: str,
        actor: str,
        reason: str | None,
        answer: _DecidedAnswer,
    ) -> OutgoingMessage:
        now = self._party.now()
        # Refuses a decision on an item decided meanwhile (the body is then never sent).
        item = held_queue.decide(connection, number, decision, actor, reason, now)
        detail: dict[str, Any] | None = {"reason": reason} if reason else None
        append_audit(connection, now, actor, ACTIONS[decision], number, detail)
        connection.execute(
            provision.update()
            .where(provision.c.transaction_number == number)
            .values(status=answer.status, error_code=answer.error_code)
        )
        asked = connection.execute(
            select(
                provision.c.non_disclosure,
                provision.c.delegating_requester,
                provision.c.delegating_provider,
            ).where(provision.c.transaction_number == number)
        ).one()
        return self._provider.queue_provision(
            connection,
            now,
            answer.message_id,
            answer.body,
            RecordEntry(
                event="provision",
                status=answer.status,
                transaction_number=number,
                requester=item.requester,
                provider=self._code,
                affair=self._catalogue.procedure(item.procedure).affair,
                procedure=item.procedure,
                information_name=item.information_name,
                person=item.integrated_address_number,
                error_code=answer.error_code,
                non_disclosure=bool(asked.non_disclosure),
                delegating_requester=asked.delegating_requester,
                delegating_provider=asked.delegating_provider,
            ),
        )
