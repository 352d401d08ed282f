"""A node's queries as a requester (照会): their states, what a back office submits, and how
their conditions are stored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from middleware import messages

__all__ = [
    "ACCEPTED",
    "ERROR",
    "FINISHED",
    "HELD",
    "NO_DATA",
    "PROVIDED",
    "PROVISION_STATUSES",
    "REFUSED",
    "STATES",
    "SUBMITTED",
    "QuerySubmission",
    "conditions_from_json",
    "conditions_json",
]

# query states
SUBMITTED = "submitted"
ACCEPTED = "accepted"
PROVIDED = "provided"
NO_DATA = "no_data"
REFUSED = "refused"
HELD = "held"  # 保留中: the provider holds the provision for a staff decision
ERROR = "error"
FINISHED = (PROVIDED, NO_DATA, REFUSED, ERROR)
STATES = (SUBMITTED, ACCEPTED, HELD, *FINISHED)  # every state of a query
# Every status of a provision (a provider's answer): the same words, a provision has no
# submitted, accepted or error.
PROVISION_STATUSES = (HELD, PROVIDED, NO_DATA, REFUSED)


@dataclass(frozen=True)
class QuerySubmission:
    """What a back office asks: a person, a procedure, an information name and a provider."""

    integrated_address_number: str
    procedure: str
    information_name: str
    provider: str
    conditions: messages.QueryConditions | None = None
    # 照会者機関コード(委任元) / 提供者機関コード(委任元): the institutions acted for, if any.
    delegating_requester: str | None = None
    delegating_provider: str | None = None
    non_disclosure: bool = False  # 照会側不開示


def conditions_json(conditions: messages.QueryConditions | None) -> str:
    """Query conditions as stored with the query (JSON)."""
    if conditions is None:
        return "null"
    return json.dumps(
        {
            "fiscal_year": conditions.fiscal_year,
            "period_start": conditions.period_start and conditions.period_start.isoformat(),
            "period_end": conditions.period_end and conditions.period_end.isoformat(),
        }
    )


def conditions_from_json(text: str | None) -> messages.QueryConditions | None:
    """Conditions as `conditions_json` stored them."""
    stored = json.loads(text) if text else None
    if stored is None:
        return None
    return messages.QueryConditions(
        fiscal_year=stored["fiscal_year"],
        period_start=_iso_date(stored["period_start"]),
        period_end=_iso_date(stored["period_end"]),
    )


def _iso_date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)
