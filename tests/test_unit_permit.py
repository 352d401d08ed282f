"""Unit tests for middleware.permit: the terms a provider checks on a verified permit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from codes.errors import RenkeiError
from middleware.permit import CLOCK_SKEW, check_permit_terms

ME = "1131121000000000"
OTHER = "1131105000000000"
TRANSACTION = "20260101000000000001"
ISSUED = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(minutes=10)


def _check(
    *,
    provider: str = ME,
    issued_at: datetime = ISSUED,
    expires_at: datetime = EXPIRES,
    now: datetime,
) -> None:
    check_permit_terms(
        transaction_number=TRANSACTION,
        provider=provider,
        issued_at=issued_at,
        expires_at=expires_at,
        me=ME,
        now=now,
    )


def test_permit_for_us_within_validity_is_accepted() -> None:
    """A permit addressed to us, checked between issue and expiry, passes."""
    _check(now=ISSUED + timedelta(minutes=1))
    _check(now=ISSUED)
    _check(now=EXPIRES - timedelta(seconds=1))


def test_permit_for_another_provider_is_refused() -> None:
    """A permit addressed to another institution is refused with PermitWrongProvider."""
    with pytest.raises(RenkeiError) as caught:
        _check(provider=OTHER, now=ISSUED + timedelta(minutes=1))
    assert caught.value.code == "PermitWrongProvider"
    assert OTHER in caught.value.message_en


def test_wrong_provider_is_reported_before_expiry() -> None:
    """An expired permit for someone else is refused as addressed to the wrong provider."""
    with pytest.raises(RenkeiError) as caught:
        _check(provider=OTHER, now=EXPIRES + timedelta(hours=1))
    assert caught.value.code == "PermitWrongProvider"


def test_permit_after_expiry_is_refused() -> None:
    """A permit checked after its expiry is refused with PermitExpired naming the 処理通番."""
    with pytest.raises(RenkeiError) as caught:
        _check(now=EXPIRES + timedelta(seconds=1))
    assert caught.value.code == "PermitExpired"
    assert TRANSACTION in caught.value.message_ja
    assert "2026-01-01T09:10:00Z" in caught.value.message_en


def test_permit_at_exactly_its_expiry_is_refused() -> None:
    """The expiry instant itself is already outside the permit's validity."""
    with pytest.raises(RenkeiError) as caught:
        _check(now=EXPIRES)
    assert caught.value.code == "PermitExpired"


def test_permit_issued_beyond_clock_skew_in_the_future_is_refused() -> None:
    """A permit issued more than the allowed skew after our clock is PermitNotYetValid."""
    now = ISSUED - CLOCK_SKEW - timedelta(seconds=1)
    with pytest.raises(RenkeiError) as caught:
        _check(now=now)
    assert caught.value.code == "PermitNotYetValid"
    assert TRANSACTION in caught.value.message_en
    assert "2026-01-01T09:00:00Z" in caught.value.message_en


def test_permit_issued_within_clock_skew_in_the_future_is_accepted() -> None:
    """A permit issued up to the allowed skew after our clock (the bound included) passes."""
    _check(now=ISSUED - timedelta(seconds=1))
    _check(now=ISSUED - CLOCK_SKEW)


def test_clock_skew_is_thirty_seconds() -> None:
    """The tolerated clock difference between hub and node is 30 seconds."""
    assert timedelta(seconds=30) == CLOCK_SKEW
