"""Refusals leave a trace (番号法 第23条: records of what was asked, not only of what was given).

The hub records each query it refuses, under a 処理通番 it names in the refusal; the provider
records each provision request it refuses, with the code, once per request; both show in the
transaction's path and in the console's record search.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_twisted
from sqlalchemy import select

from middleware.network import HUB, PROVISION_REQUEST
from middleware.records import records_of_transaction, verify_chain
from middleware.tables import hub_record_head, hub_records, node_record_head, node_records
from tests.network import MEGURO, REPOSITORY, SETAGAYA
from tests.test_flow import ask_tax
from tests.test_refusals import post_to_setagaya, provision_request, refused_code, send

EXPIRED = -timedelta(seconds=1)


def provider_refusals(box: Any) -> list[tuple[str | None, str | None, str | None]]:
    """Setagaya's records of refused provision requests: (処理通番, requester, code)."""
    rows = box.nodes["setagaya"].database.run_blocking(
        lambda connection: connection.execute(
            select(
                node_records.c.transaction_number,
                node_records.c.requester,
                node_records.c.error_code,
            ).where(node_records.c.event == "provision", node_records.c.status == "refused")
        ).all()
    )
    return [tuple(row) for row in rows]


@pytest_twisted.ensureDeferred
async def test_provider_records_a_refused_request_once_with_its_code(box: Any) -> None:
    """An expired permit is refused and recorded with PermitExpired, the permit's 処理通番 and
    requester; the hub sending the same request again adds no second record."""
    number = f"{uuid.uuid4().int % 10**20:020d}"
    message_id = str(uuid.uuid4())
    body = provision_request(box, number=number, message_id=message_id, valid_for=EXPIRED)
    assert await refused_code(post_to_setagaya(box, body)) == "PermitExpired"
    assert await refused_code(post_to_setagaya(box, body)) == "PermitExpired"
    assert provider_refusals(box) == [(number, MEGURO, "PermitExpired")]
    node = box.nodes["setagaya"]
    assert node.database.run_blocking(verify_chain, node_records, node_record_head) is None


@pytest_twisted.ensureDeferred
async def test_provider_records_replays_and_unknown_persons(box: Any) -> None:
    """A replayed permit and a permit for another provider are each recorded with their code."""
    number = f"{uuid.uuid4().int % 10**20:020d}"
    await post_to_setagaya(box, provision_request(box, number=number))
    replay = provision_request(box, number=number)
    assert await refused_code(post_to_setagaya(box, replay)) == "PermitReplayed"
    elsewhere = provision_request(box, provider=MEGURO)
    assert await refused_code(post_to_setagaya(box, elsewhere)) == "PermitWrongProvider"
    codes = sorted(code or "" for _, _, code in provider_refusals(box))
    assert codes == ["PermitReplayed", "PermitWrongProvider"]


@pytest_twisted.ensureDeferred
async def test_permit_not_signed_by_the_hub_is_recorded_without_its_claims(box: Any) -> None:
    """A permit whose signature fails is recorded as refused, but none of what it claims
    (number, requester) is written: nothing unverified enters the records."""
    from crypto.pki import PkiLayout
    from crypto.xmlsig import Signer

    forger = Signer(PkiLayout(box.config.pki).institution_signing(MEGURO).load())
    body = provision_request(box, signer=forger)
    assert await refused_code(post_to_setagaya(box, body)) == "PermitSignatureInvalid"
    assert provider_refusals(box) == [(None, None, "PermitSignatureInvalid")]


@pytest_twisted.ensureDeferred
async def test_hub_records_a_refused_query_and_the_requester_shows_its_path(
    box: Any, meguro_care: Any, tmp_path: Path
) -> None:
    """When the hub's list no longer permits a query the requester's older list still
    permits, the hub refuses it under a 処理通番 of its own; the requester's query ends
    refused with that number, and the transaction's path joins both parties' records."""

    rules = (REPOSITORY / "simulators/network/data/permitted_list.csv").read_text("utf-8")
    narrowed = tmp_path / "permitted_list.csv"
    narrowed.write_text(
        "\n".join(line for line in rules.splitlines() if "TM00000000000002" not in line) + "\n",
        "utf-8",
    )
    assert box.config.network is not None
    config = dataclasses.replace(
        box.config, network=dataclasses.replace(box.config.network, permitted_list=narrowed)
    )
    await box.stop_party("hub")
    hub = await box.start_party("hub", config)
    submitted = await ask_tax(meguro_care)  # Meguro's list is still the older one
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert (status["state"], status["error"]["code"]) == ("refused", "NotPermitted")
    number = status["transaction_number"]
    assert number is not None and len(number) == 20
    hub_rows = hub.database.run_blocking(records_of_transaction, hub_records, number)
    assert [(r["event"], r["status"], r["error_code"]) for r in hub_rows] == [
        ("query", "refused", "NotPermitted")
    ]
    assert (hub_rows[0]["requester"], hub_rows[0]["provider"]) == (MEGURO, SETAGAYA)
    assert hub.database.run_blocking(verify_chain, hub_records, hub_record_head) is None
    path = await box.nodes["meguro"].transaction_path(number)
    assert [(e["party"], e["event"], e["status"]) for e in path] == [
        ("hub", "query", "refused"),
        ("meguro", "query", "refused"),
    ]


@pytest_twisted.ensureDeferred
async def test_refused_request_shows_in_the_console_record_search(box: Any) -> None:
    """Meguro's operators find a provision request Meguro refused by its status and code."""
    from middleware import messages
    from tests.test_console import add_users, logged_in

    number = f"{uuid.uuid4().int % 10**20:020d}"
    body = provision_request(box, number=number, provider=MEGURO, valid_for=EXPIRED)
    refused = send(box, HUB, MEGURO, PROVISION_REQUEST, body, messages.ProvisionRequestAck)
    assert await refused_code(refused) == "PermitExpired"
    await add_users(box.nodes["meguro"])
    operator = await logged_in(box, "op", None)
    code, page, _ = await operator.get("/records?status=refused&lang=en")
    assert code == 200 and number in page and "PermitExpired" in page
