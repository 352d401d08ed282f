"""情報提供許可証 checks a provider makes before answering (pure logic).

The signature is verified first, against the pinned hub signing certificate (crypto/); the
fields checked here come only from the verified element. Replay is checked against the
provider's database by the provision service, since it needs the record of used permits.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from codes import errors
from codes.errors import RenkeiError
from middleware.clock import iso

__all__ = ["CLOCK_SKEW", "check_permit_terms"]

# Clocks of the hub and of a node may differ a little; a permit issued "in the future" by
# less than this is accepted.
CLOCK_SKEW = timedelta(seconds=30)


def check_permit_terms(
    *,
    transaction_number: str,
    provider: str,
    issued_at: datetime,
    expires_at: datetime,
    me: str,
    now: datetime,
) -> None:
    """Refuse a verified permit that is not for us or not valid now."""
    if provider != me:
        raise RenkeiError(errors.PERMIT_WRONG_PROVIDER, provider=provider)
    if now >= expires_at:
        raise RenkeiError(
            errors.PERMIT_EXPIRED,
            transaction_number=transaction_number,
            expires_at=iso(expires_at),
        )
    if issued_at - CLOCK_SKEW > now:
        raise RenkeiError(
            errors.PERMIT_NOT_YET_VALID,
            transaction_number=transaction_number,
            issued_at=iso(issued_at),
        )
