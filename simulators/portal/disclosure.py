"""情報提供等記録の開示 at マイナポータル: a person sees who exchanged their information.

For the person signed in, the portal asks the hub for the hub's own records of them and, one
by one, through the hub, for each institution's (a ``RecordDisclosureRequest`` under the
portal's 符号 of the person, which the hub converts for the institution), all at once. Each
party answers without the transactions marked 不開示 (`middleware.disclosure`); a party that
cannot answer (unreachable, or an outside member that does not serve disclosures) is shown
with its code rather than hiding the others. Nothing of it is stored at the portal.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import gatherResults

from codes import errors
from middleware import messages
from middleware.deferred import deferred
from middleware.network import (
    HUB,
    RECORD_DISCLOSURE,
    DeliveryRefused,
    TransientFailure,
    decode_answer,
)
from middleware.party import Party
from middleware.permitted_list import ListedInstitution

__all__ = ["Disclosure", "PartyRecords"]


@dataclass(frozen=True)
class PartyRecords:
    """One party's records of the person (``hub`` or an institution code), or the code of
    why they could not be had."""

    party: str
    records: tuple[messages.NetworkRecord, ...] = ()
    truncated: bool = False
    error_code: str | None = None


class Disclosure:
    """The disclosure of persons' records through one portal."""

    def __init__(self, party: Party, institutions: Callable[[], list[ListedInstitution]]) -> None:
        self._party = party
        self._institutions = institutions

    @deferred
    async def records_of(self, fugo: str) -> list[PartyRecords]:
        """The records of the person behind ``fugo`` at the hub, then at each institution of
        the network's directory, asked all at once."""
        parties = [HUB, *(entry.code for entry in self._institutions())]
        answers: list[PartyRecords] = await gatherResults(
            [self._ask(fugo, party) for party in parties], consumeErrors=True
        )
        return answers

    @deferred
    async def _ask(self, fugo: str, party: str) -> PartyRecords:
        asked = messages.RecordDisclosureRequest(
            message_id=str(uuid.uuid4()),
            person_fugo=fugo,
            institution=None if party == HUB else party,
        )
        try:
            document = await self._party.transport.exchange(
                HUB, RECORD_DISCLOSURE, messages.encode(asked)
            )
            answer = decode_answer(document, messages.DisclosedRecords)
        except DeliveryRefused as refusal:
            return PartyRecords(party, error_code=refusal.code)
        except TransientFailure:
            return PartyRecords(party, error_code=errors.NETWORK_UNAVAILABLE.code)
        if answer.party != party or answer.message_id != asked.message_id:
            return PartyRecords(party, error_code=errors.NETWORK_UNAVAILABLE.code)
        return PartyRecords(party, answer.records, answer.truncated)
