"""Business events in a party's log: one line each, for the people who run the party.

What a party does for the network (a query submitted, accepted or refused, a result received,
a provision given, held, decided, refused or expired, a provision relayed, data deleted when
its time is up) is logged once, when it is committed, in one line in the party's log
(``var/log/NAME.log``), under the party's name as its namespace (``[meguro#info]``): the
処理通番 first (or the query's id before the hub gave one), the institutions by name (目黒区, not
their codes), the information name and the procedure by code, the state and the code of a
refusal. The lines of a bundle (docs/protocol.md §1c: a bulk query's) are logged one line per
event for all of them, with their lowest and highest 処理通番 and the count of each outcome
(each line is in the provision records); one held, refused or failed is logged alone. The
time at the head of each line is Japan time (renkei/service.py).

No person is ever named: no 個人番号, no 統合宛名番号, no 符号, no item value. The
provision records (情報提供等記録) say who was asked about; the log says what happened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from twisted.logger import Logger

from middleware.replica import JST

__all__ = ["BusinessLog", "japan_time"]

# What a query's end, a provision's status and a decision on a held provision are called.
RESULTS = {
    "provided": "provided",
    "no_data": "answered: no data",
    "held": "held by the provider (自動応答不可), waiting for its staff",
    "refused": "refused",
    "error": "failed",
}
GIVEN = {"provided": "given", "no_data": "given (no data)"}
DECISIONS = {"approved": "approved", "refused": "refused", "expired": "expired undecided"}


def japan_time(moment: datetime) -> str:
    """A time as a person reads it in a log: ``2026-12-10 20:03 JST``."""
    return moment.astimezone(JST).strftime("%Y-%m-%d %H:%M JST")


class BusinessLog:
    """The business events of one party (``name``: ``hub`` or an institution's name), with
    the institutions of the network named as ``names`` says (code → name)."""

    def __init__(self, name: str, names: Iterable[tuple[str, str]]) -> None:
        self.log = Logger(namespace=name)
        self._names = dict(names)

    def name(self, code: str | None) -> str:
        """An institution's name (its code when it is not one of the network's)."""
        if code is None:
            return "an unknown institution"
        return self._names.get(code, code)

    def _line(self, number: str | None, text: str, **fields: Any) -> None:
        head = f"処理通番 {number}: " if number else ""
        self.log.info("{line}", line=head + text, transaction_number=number, **fields)

    def _together(self, numbers: Sequence[str], text: str, **fields: Any) -> None:
        """One line for the same event of several transactions of a bundle (each is in the
        provision records): their 処理通番, lowest and highest, and how many."""
        first, last = min(numbers), max(numbers)
        head = f"処理通番 {first}: " if first == last else f"処理通番 {first} to {last}: "
        self.log.info(
            "{line}",
            line=head + text,
            transaction_number=None,
            first_transaction_number=first,
            last_transaction_number=last,
            count=len(numbers),
            **fields,
        )

    @staticmethod
    def _counted(counts: Mapping[str, int], words: Mapping[str, str]) -> str:
        """``counts`` by state, as a person reads them: ``provided 48, answered: no data 2``."""
        return ", ".join(f"{words.get(state, state)} {n}" for state, n in sorted(counts.items()))

    # -- the requester (情報照会) --------------------------------------------------------------

    def query_submitted(
        self, query_id: str, system: str, provider: str, information_name: str, procedure: str
    ) -> None:
        """A back-office system submitted a query (it has no 処理通番 yet)."""
        self._line(
            None,
            f"query {query_id} submitted by {system}: {information_name} of "
            f"{self.name(provider)} for {procedure}",
            query_id=query_id,
        )

    def queries_submitted(
        self, count: int, system: str, provider: str, information_name: str, procedure: str
    ) -> None:
        """A back-office system submitted queries together (a bulk query's lines): one line
        for all of them (each query is in the database, and logged when it ends)."""
        if count:
            self._line(
                None,
                f"{count} queries submitted together by {system}: {information_name} of "
                f"{self.name(provider)} for {procedure}",
                count=count,
            )

    def queries_ended(
        self, ended: Sequence[tuple[str, str]], provider: str, information_name: str
    ) -> None:
        """Queries of a bundle ended provided or with no data (their 処理通番 and state): one
        line for all of them, with the count of each state; their records say which is
        which. A query held, refused or failed has a line of its own (`query_ended`)."""
        if ended:
            counts = self._counted(Counter(state for _, state in ended), RESULTS)
            self._together(
                [number for number, _ in ended],
                f"{len(ended)} queries to {self.name(provider)} ended, {information_name}: "
                f"{counts}",
            )

    def query_ended(
        self,
        number: str,
        query_id: str,
        state: str,
        provider: str,
        information_name: str,
        code: str | None = None,
    ) -> None:
        """A query's result came: provided, no data, refused or failed (``code``), or
        ``held``: its provider holds it for a staff decision, the query waits."""
        outcome = RESULTS.get(state, state) + (f" ({code})" if code else "")
        self._line(
            number,
            f"query {query_id} to {self.name(provider)} {outcome}, {information_name}",
            query_id=query_id,
        )

    def query_refused_by_network(
        self, number: str | None, query_id: str, provider: str, information_name: str, code: str
    ) -> None:
        """The hub refused a query (not permitted, a 符号 it cannot convert, ...)."""
        self._line(
            number,
            f"query {query_id} to {self.name(provider)} refused by the network ({code}), "
            f"{information_name}",
            query_id=query_id,
        )

    def bulk_query_accepted(
        self, bulk_query_id: str, system: str, lines: int, invalid: int
    ) -> None:
        """A bulk-query file accepted: its lines are queries of their own (logged each)."""
        self._line(
            None,
            f"bulk query {bulk_query_id} from {system} accepted: {lines} lines, {invalid} invalid",
            bulk_query_id=bulk_query_id,
        )

    # -- the provider (情報提供) ---------------------------------------------------------------

    def provision(
        self,
        number: str,
        status: str,
        requester: str,
        information_name: str,
        procedure: str,
        hold_ends: datetime | None = None,
    ) -> None:
        """A provision request answered: given (``provided``, ``no_data``), or ``held`` for a
        staff decision until ``hold_ends``."""
        to = f"provision to {self.name(requester)}"
        asked = f"{information_name} for {procedure}"
        if status == "held":
            until = f" until {japan_time(hold_ends)}" if hold_ends is not None else ""
            self._line(
                number,
                f"{to} held (自動応答不可), {asked}: it waits for an approver in 保留一覧{until}",
            )
        else:
            self._line(number, f"{to} {GIVEN.get(status, status)}, {asked}")

    def provisions_given(
        self,
        given: Sequence[tuple[str, str]],
        requester: str,
        information_name: str,
        procedure: str,
    ) -> None:
        """Provision requests of a bundle answered, given (their 処理通番 and status,
        ``provided`` or ``no_data``): one line for all of them; their records say which is
        which. A provision held or refused has a line of its own."""
        if given:
            counts = self._counted(Counter(status for _, status in given), GIVEN)
            self._together(
                [number for number, _ in given],
                f"{len(given)} provisions to {self.name(requester)}: {counts}, "
                f"{information_name} for {procedure}",
            )

    def provision_refused(self, number: str | None, requester: str | None, code: str) -> None:
        """A provision request refused with ``code`` (its permit, the list, the replica)."""
        self._line(number, f"provision request of {self.name(requester)} refused ({code})")

    def decided(
        self, number: str, decision: str, actor: str, requester: str, status: str, code: str | None
    ) -> None:
        """A held provision decided: approved or refused by ``actor``, or expired undecided."""
        by = "" if decision == "expired" else f" by {actor}"
        sent = GIVEN.get(status, status) if code is None else f"refused ({code})"
        self._line(
            number,
            f"held provision to {self.name(requester)} {DECISIONS.get(decision, decision)}{by}: "
            f"{sent}",
        )

    # -- the hub ------------------------------------------------------------------------------

    def query_permitted(
        self, number: str, requester: str, provider: str, information_name: str, procedure: str
    ) -> None:
        """The hub permitted a query and issued its permit."""
        self._line(
            number,
            f"query {self.name(requester)} → {self.name(provider)} permitted, "
            f"{information_name} for {procedure}",
        )

    def queries_permitted(
        self,
        numbers: Sequence[str],
        requester: str,
        provider: str,
        information_name: str,
        procedure: str,
    ) -> None:
        """The hub permitted the queries of a bundle (their 処理通番): one line for all of
        them; a query refused has a line of its own (`query_refused`)."""
        if numbers:
            self._together(
                numbers,
                f"{len(numbers)} queries {self.name(requester)} → {self.name(provider)} "
                f"permitted, {information_name} for {procedure}",
            )

    def query_refused(
        self,
        number: str,
        requester: str,
        provider: str,
        information_name: str,
        procedure: str,
        code: str,
    ) -> None:
        """The hub refused a query with ``code``."""
        self._line(
            number,
            f"query {self.name(requester)} → {self.name(provider)} refused ({code}), "
            f"{information_name} for {procedure}",
        )

    def relayed(
        self, number: str, provider: str, requester: str, status: str, code: str | None
    ) -> None:
        """The hub relayed a provider's answer (or its refusal) to the requester."""
        what = status + (f" ({code})" if code else "")
        self._line(
            number, f"provision {self.name(provider)} → {self.name(requester)} relayed: {what}"
        )

    def relayed_together(
        self, relayed: Sequence[tuple[str, str, str | None]], provider: str, requester: str
    ) -> None:
        """The hub relayed the answers of a bundle from ``provider`` to ``requester`` (their
        処理通番, status and code): one line for all of them, with the count of each status
        (and code)."""
        if relayed:
            counts = Counter(status + (f" ({code})" if code else "") for _, status, code in relayed)
            self._together(
                [number for number, _, _ in relayed],
                f"{len(relayed)} provisions {self.name(provider)} → {self.name(requester)} "
                f"relayed: {self._counted(counts, {})}",
            )

    # -- deletions ----------------------------------------------------------------------------

    def purged(self, what: str, count: int, why: str) -> None:
        """``count`` of ``what`` deleted (``why``: whose time was up); nothing when none."""
        if count:
            self._line(None, f"{what} deleted: {count} ({why})", count=count)
