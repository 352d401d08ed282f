"""保留 (held provisions): the auto-response suppression flag's queue at a provider.

A provision request that touches a replica record flagged 自動応答不可 is not answered: the
exact content that would be sent is kept here, unsigned, with the requester's encryption
certificate. A staff member with the approver role then approves it (it is signed, encrypted
and sent like any provision) or refuses it. A hold has a lifetime of its own (the provider's
``hold_lifetime``, 72 hours by default), independent of the permit's validity, which only
bounds automatic answers: a held item still undecided when its hold ends is refused
automatically (``HoldExpired``) and stays listed as expired. Each item is decided once. The
content of a decided (or expired) item is deleted once ``[retention] held_contents`` has
passed (middleware/retention.py); its metadata stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from codes import errors
from codes.errors import RenkeiError
from middleware.tables import held_provision

__all__ = [
    "APPROVED",
    "EXPIRED",
    "HELD",
    "REFUSED",
    "HeldItem",
    "decide",
    "expired",
    "expired_numbers",
    "get",
    "hold",
    "waiting",
]

HELD = "held"
APPROVED = "approved"
REFUSED = "refused"
EXPIRED = "expired"


@dataclass(frozen=True)
class HeldItem:
    """One held provision."""

    transaction_number: str
    requester: str
    procedure: str
    information_name: str
    integrated_address_number: str
    # The content and its recipient: None once deleted after its retention.
    payload: bytes | None
    recipient_certificate: bytes | None
    permit_expires_at: datetime
    held_at: datetime
    hold_expires_at: datetime  # when an undecided hold is refused (HoldExpired)
    state: str
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None

    def metadata(self) -> dict[str, Any]:
        """What an operator may see: everything but the content."""
        return {
            "transaction_number": self.transaction_number,
            "requester": self.requester,
            "procedure": self.procedure,
            "information_name": self.information_name,
            "integrated_address_number": self.integrated_address_number,
            "permit_expires_at": self.permit_expires_at.isoformat(),
            "held_at": self.held_at.isoformat(),
            "hold_expires_at": self.hold_expires_at.isoformat(),
            "state": self.state,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
        }


def hold(connection: Connection, item: HeldItem) -> None:
    """Put a provision on hold (inside the transaction that answers the request)."""
    connection.execute(
        held_provision.insert().values(
            transaction_number=item.transaction_number,
            requester=item.requester,
            procedure=item.procedure,
            information_name=item.information_name,
            integrated_address_number=item.integrated_address_number,
            payload=item.payload,
            recipient_certificate=item.recipient_certificate,
            permit_expires_at=item.permit_expires_at,
            held_at=item.held_at,
            hold_expires_at=item.hold_expires_at,
            state=HELD,
        )
    )


def _item(row: Any) -> HeldItem:
    return HeldItem(
        transaction_number=row.transaction_number,
        requester=row.requester,
        procedure=row.procedure,
        information_name=row.information_name,
        integrated_address_number=row.integrated_address_number,
        payload=None if row.payload is None else bytes(row.payload),
        recipient_certificate=(
            None if row.recipient_certificate is None else bytes(row.recipient_certificate)
        ),
        permit_expires_at=row.permit_expires_at,
        held_at=row.held_at,
        hold_expires_at=row.hold_expires_at,
        state=row.state,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        reason=row.reason,
    )


def get(connection: Connection, number: str) -> HeldItem:
    """One held item by 処理通番."""
    row = connection.execute(
        select(held_provision).where(held_provision.c.transaction_number == number)
    ).first()
    if row is None:
        raise RenkeiError(errors.UNKNOWN_HELD_PROVISION, transaction_number=number)
    return _item(row)


def waiting(connection: Connection) -> list[HeldItem]:
    """Items still waiting for a decision, the soonest to expire first."""
    rows = connection.execute(
        select(held_provision)
        .where(held_provision.c.state == HELD)
        .order_by(held_provision.c.hold_expires_at)
    )
    return [_item(row) for row in rows]


def expired(connection: Connection, limit: int = 50) -> list[HeldItem]:
    """The ``limit`` items whose hold ended undecided most recently, newest first."""
    rows = connection.execute(
        select(held_provision)
        .where(held_provision.c.state == EXPIRED)
        .order_by(held_provision.c.hold_expires_at.desc())
        .limit(limit)
    )
    return [_item(row) for row in rows]


def decide(
    connection: Connection,
    number: str,
    decision: str,
    actor: str,
    reason: str | None,
    now: datetime,
) -> HeldItem:
    """Record one decision (approved, refused or expired) on a waiting item.

    Approving an item whose hold has ended is refused (HoldExpired): it must expire instead.
    The permit's own expiry does not matter here: it bounds automatic answers only.
    """
    item = get(connection, number)
    if item.state != HELD:
        raise RenkeiError(errors.HELD_ALREADY_DECIDED, transaction_number=number, state=item.state)
    if decision == APPROVED and now >= item.hold_expires_at:
        raise RenkeiError(errors.HOLD_EXPIRED, expires_at=item.hold_expires_at)
    connection.execute(
        held_provision.update()
        .where(held_provision.c.transaction_number == number, held_provision.c.state == HELD)
        .values(state=decision, decided_at=now, decided_by=actor, reason=reason)
    )
    return get(connection, number)


def expired_numbers(connection: Connection, now: datetime) -> list[str]:
    """Waiting items whose hold has ended."""
    return list(
        connection.execute(
            select(held_provision.c.transaction_number).where(
                held_provision.c.state == HELD, held_provision.c.hold_expires_at <= now
            )
        ).scalars()
    )
