"""Held provisions' own lifetime, decided against the hold's end (not the permit's)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Connection
from twisted.internet.interfaces import IReactorThreads

from codes.errors import RenkeiError
from middleware import held_queue
from middleware.storage import Database, migrate
from middleware.tables import provision

ROOT = Path(__file__).resolve().parents[1]
HELD_AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PERMIT_ENDS = HELD_AT + timedelta(minutes=10)
HOLD_ENDS = HELD_AT + timedelta(hours=72)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database holding one held provision (permit 10 min, hold 72 h)."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, ROOT / "middleware" / "migrations")
    made = Database(cast(IReactorThreads, object()), url)
    made.start()

    def hold(connection: Connection) -> None:
        connection.execute(
            provision.insert().values(
                transaction_number="20261201000000000001",
                message_id="m1",
                requester="1131121000000000",
                procedure="JT90010000000002",
                information_name="TM00000000000004",
                integrated_address_number="000000000010001",
                status="held",
                received_at=HELD_AT,
            )
        )
        held_queue.hold(
            connection,
            held_queue.HeldItem(
                transaction_number="20261201000000000001",
                requester="1131121000000000",
                procedure="JT90010000000002",
                information_name="TM00000000000004",
                integrated_address_number="000000000010001",
                payload=b"<x/>",
                recipient_certificate=b"",
                permit_expires_at=PERMIT_ENDS,
                held_at=HELD_AT,
                hold_expires_at=HOLD_ENDS,
                state=held_queue.HELD,
                decided_at=None,
                decided_by=None,
                reason=None,
            ),
        )

    made.run_blocking(hold)
    yield made
    made.stop()


def decide(database: Database, decision: str, at: datetime) -> held_queue.HeldItem:
    return database.run_blocking(
        held_queue.decide, "20261201000000000001", decision, "approver1", None, at
    )


def test_approval_after_the_permit_but_within_the_hold_is_accepted(database: Database) -> None:
    """An hour after the permit expired, the hold still waits and may be approved."""
    assert decide(database, held_queue.APPROVED, PERMIT_ENDS + timedelta(hours=1)).state == (
        "approved"
    )


def test_approval_after_the_hold_ended_is_refused_as_hold_expired(database: Database) -> None:
    """Once the hold has ended, an approval is HoldExpired and the item stays waiting for the
    sweep that refuses it."""
    with pytest.raises(RenkeiError) as late:
        decide(database, held_queue.APPROVED, HOLD_ENDS)
    assert late.value.code == "HoldExpired"
    assert database.run_blocking(held_queue.expired_numbers, HOLD_ENDS) == ["20261201000000000001"]
    assert database.run_blocking(held_queue.expired_numbers, HOLD_ENDS - timedelta(seconds=1)) == []
