"""A running network's conversation, drawn from its parties' provision records (a running
network captures nothing): per record, the message it stands for, ordered with the back
offices' requests by time. The report draws its sequence diagram from it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from middleware.config import Config
from middleware.network import HUB
from middleware.records import records_of_transaction
from middleware.tables import hub_records, node_records
from renkei.scenarios.targets import read_database
from simulators.capture import Exchange, MessageLog

__all__ = ["recorded_exchanges"]

# In one second, the order of the messages a transaction's records stand for: the query to
# the hub, the provision request to the provider, the provision to the hub, the provision
# relayed to the requester; (operation, sent by the hub).
_RANK = {
    ("query", False): 0,
    ("provision_request", True): 1,
    ("provision", False): 2,
    ("provision", True): 3,
}


def _as_exchange(party: str, row: dict[str, Any]) -> Exchange | None:
    """The message a provision record stands for (None for a record that is no message: a
    result stored, a result deleted)."""
    requester, provider = row["requester"], row["provider"]
    event, status, at = row["event"], row["status"], row["recorded_at"]
    refusal = row["error_code"]
    number = row["transaction_number"]
    if party == requester and event == "query":
        route = (requester, HUB, "query")
    elif party == HUB and event == "query" and status != "refused":
        route = (HUB, provider, "provision_request")
    elif party == HUB and event == "query":
        route = (HUB, requester, "query")
    elif party == provider and event == "provision":
        route = (provider, HUB, "provision")
    elif party == HUB and event == "provision":
        route = (HUB, requester, "provision")
    else:
        return None
    source, destination, operation = route
    return Exchange(at, source, destination, operation, None, None, refusal=refusal,
                    number=number, state=status)  # fmt: skip


async def recorded_exchanges(
    reactor: Any, config: Config, numbers: Iterable[str], calls: list[dict[str, Any]]
) -> MessageLog:
    """The messages of the transactions ``numbers`` as the parties recorded them, with the
    back offices' requests ``calls`` (each given its ``order`` among them)."""
    assert config.network is not None
    parties = [(HUB, config.network.database, hub_records)]
    parties += [(i.code, i.database, node_records) for i in config.institutions]
    found: list[tuple[str, dict[str, Any]]] = []
    for party, url, table in parties:
        for number in sorted(numbers):
            rows = await read_database(reactor, url, records_of_transaction, table, number)
            found += [(party, row) for row in rows]
    exchanges = [exchange for party, row in found if (exchange := _as_exchange(party, row))]
    events: list[tuple[Any, int, Any]] = [(call["at"], -1, call) for call in calls]
    events += [(exchange.at, _RANK[exchange.operation, exchange.source == HUB], exchange)
               for exchange in exchanges]  # fmt: skip
    events.sort(key=lambda event: (event[0], event[1]))
    log = MessageLog()
    for order, (_, _, event) in enumerate(events):
        if isinstance(event, dict):
            event["order"] = order
        else:
            event.order = order
            log.exchanges.append(event)
    return log
