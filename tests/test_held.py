"""Held provisions (自動応答不可フラグ): a flagged record is never provided automatically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_twisted

from adapters.payload_view import describe_payload
from codes.errors import RenkeiError
from middleware.node import IntermediateServer
from middleware.tables import node_outbox, node_records
from simulators.back_office import BackOfficeClient
from tests.network import CARE_INFORMATION, CARE_INSURANCE, MEGURO
from tests.test_flow import count

TARO_MEGURO = "000000000010002"
TARO_SETAGAYA = "000000000020002"
CERTIFICATION = "JT90010000000002"  # 要介護認定: may query care information of a municipality
FLAGGED_RECORD = {
    "record_id": "MEG-KAIGO-0201-DV01",
    "integrated_address_number": TARO_MEGURO,
    "information_name": CARE_INFORMATION,
    "data_set": "0201",
    "items": {"TK00000402010001": "0001310599", "TK00000402010002": "13"},
    "auto_response_suppressed": True,
}


@pytest_twisted.async_yield_fixture
async def setagaya_asks(box: Any, meguro_care: Any) -> AsyncIterator[Any]:
    """Meguro holds a flagged record of 世田谷 太郎; Setagaya's back office asks for it."""
    from twisted.internet import reactor

    await meguro_care.register_replica_record(FLAGGED_RECORD)
    client = BackOfficeClient(
        reactor, box.config, box.config.institution("setagaya"), CARE_INSURANCE
    )

    try:
        yield SetagayaAsks(client)
    finally:
        await client.close()


class SetagayaAsks:
    """Setagaya's care-insurance client, with the one query these tests make."""

    def __init__(self, client: BackOfficeClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def ask(self) -> str:
        """Ask Meguro for 世田谷 太郎's certification (his record is flagged)."""
        submitted = await self.client.submit_query(
            integrated_address_number=TARO_SETAGAYA,
            procedure=CERTIFICATION,
            information_name=CARE_INFORMATION,
            provider=MEGURO,
        )
        return str(submitted["query_id"])


async def wait_for_state(client: Any, query_id: str, state: str) -> Any:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(400):
        status = await client.query_status(query_id)
        if status["state"] == state:
            return status
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"query never reached {state}: {status}")


async def held_item(node: IntermediateServer) -> Any:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(400):
        items = await node.held.items()
        if items:
            return items[0]
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("nothing was held")


@pytest_twisted.ensureDeferred
async def test_flagged_record_is_held_and_the_requester_sees_held(
    box: Any, setagaya_asks: Any
) -> None:
    """A request touching a flagged record is not answered: the requester's query shows held
    and the provider keeps the exact content for review, nothing is sent."""
    query_id = await setagaya_asks.ask()
    status = await wait_for_state(setagaya_asks, query_id, "held")
    assert status["result"] is None
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    assert item.transaction_number == status["transaction_number"]
    held = await meguro.held.content(item.transaction_number, "approver1")
    content = describe_payload(meguro.catalogue, held.payload)
    (record,) = content["records"]
    assert record["record_id"] == "MEG-KAIGO-0201-DV01"
    assert {i["name"]: i["value"] for i in record["items"]}["要介護状態区分"] == "13"


@pytest_twisted.ensureDeferred
async def test_approved_held_provision_reaches_the_requester_once(
    box: Any, setagaya_asks: Any
) -> None:
    """Approval signs, encrypts and sends exactly the held content; a second decision is
    refused and nothing is sent twice."""
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    await meguro.held.approve(item.transaction_number, "approver1")
    status = await wait_for_state(setagaya_asks, query_id, "provided")
    (record,) = status["result"]["records"]
    assert record["record_id"] == "MEG-KAIGO-0201-DV01"
    with pytest.raises(RenkeiError) as again:
        await meguro.held.approve(item.transaction_number, "approver2")
    assert again.value.code == "HeldAlreadyDecided"
    sent = count(box, "meguro", node_outbox, node_outbox.c.reference == item.transaction_number)
    assert sent == 2  # the held notice and the approved provision
    assert await meguro.held.items() == []


@pytest_twisted.ensureDeferred
async def test_an_approval_signs_and_encrypts_outside_database_transactions(
    box: Any, setagaya_asks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approved content is signed and encrypted on the reactor's thread, not inside the
    transaction that takes the decision."""
    import threading

    from tests.test_flow import crypto_threads

    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    threads = crypto_threads(monkeypatch)
    await meguro.held.approve(item.transaction_number, "approver1")
    await wait_for_state(setagaya_asks, query_id, "provided")
    assert threads and set(threads) == {threading.main_thread().name}


@pytest_twisted.ensureDeferred
async def test_refused_held_provision_arrives_as_refused(box: Any, setagaya_asks: Any) -> None:
    """A refusal reaches the requester as 提供不可 with the ProvisionRefused code."""
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    await meguro.held.refuse(item.transaction_number, "approver1", "DV protection order")
    status = await wait_for_state(setagaya_asks, query_id, "refused")
    assert status["error"]["code"] == "ProvisionRefused"
    assert status["result"] is None
    decided = await meguro.database.run(
        lambda connection: __import__("middleware.held_queue").held_queue.get(
            connection, item.transaction_number
        )
    )
    assert (decided.state, decided.decided_by, decided.reason) == (
        "refused",
        "approver1",
        "DV protection order",
    )


@pytest_twisted.ensureDeferred
async def test_held_provision_outlives_its_permit_and_is_approved_after_it(
    box: Any, setagaya_asks: Any
) -> None:
    """A hold does not end with the permit (600 s in the test network): an hour later the
    held item is still waiting and its approval reaches the requester."""
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    assert item.hold_expires_at - item.held_at == timedelta(hours=72)
    box.clock.advance(3600)
    assert await meguro.held.expire() == 0
    await meguro.held.approve(item.transaction_number, "approver1")
    status = await wait_for_state(setagaya_asks, query_id, "provided")
    assert status["result"]["records"]


@pytest_twisted.ensureDeferred
async def test_held_provision_not_decided_within_its_hold_is_refused_and_stays_listed(
    box: Any, setagaya_asks: Any
) -> None:
    """When the network's clock passes the end of a 72-hour hold, the provider's own sweep
    refuses it with HoldExpired; it can no longer be approved and stays listed as expired."""
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    box.clock.advance(72 * 3600 + 1)
    status = await wait_for_state(setagaya_asks, query_id, "refused")
    assert status["error"]["code"] == "HoldExpired"
    with pytest.raises(RenkeiError) as late:
        await meguro.held.approve(item.transaction_number, "approver1")
    assert late.value.code == "HeldAlreadyDecided"
    assert await meguro.held.items() == []
    (ended,) = await meguro.held.expired()
    assert (ended.transaction_number, ended.state) == (item.transaction_number, "expired")


@pytest_twisted.ensureDeferred
async def test_held_provision_survives_a_provider_restart(box: Any, setagaya_asks: Any) -> None:
    """Items held when the provider stops are still held after it restarts and can be
    approved then; the requester receives the provision once."""
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    await box.stop_party("meguro")
    restarted = await box.start_party("meguro")
    item = await held_item(restarted)
    await restarted.held.approve(item.transaction_number, "approver1")
    status = await wait_for_state(setagaya_asks, query_id, "provided")
    results = count(
        box,
        "setagaya",
        node_records,
        node_records.c.transaction_number == status["transaction_number"],
        node_records.c.event == "result",
    )
    assert results == 2  # held, then provided


@pytest_twisted.ensureDeferred
async def test_viewing_and_deciding_held_items_is_audited(box: Any, setagaya_asks: Any) -> None:
    """Viewing held content and the decision each leave an audit entry naming the staff
    member, and the audit chain stays intact."""
    from middleware.audit import audit_entries, verify_audit

    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    meguro = box.nodes["meguro"]
    item = await held_item(meguro)
    await meguro.held.content(item.transaction_number, "approver1")
    await meguro.held.refuse(item.transaction_number, "approver1", "DV protection order")
    entries = await meguro.database.run(lambda connection: audit_entries(connection, limit=10))
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(entries)] == [
        ("approver1", "view_held_content", item.transaction_number),
        ("approver1", "refuse", item.transaction_number),
    ]
    assert await meguro.database.run(verify_audit) is None


@pytest_twisted.ensureDeferred
async def test_changing_the_flag_is_audited_and_takes_effect(box: Any, setagaya_asks: Any) -> None:
    """Clearing a record's flag (with a reason) lets the next request be answered
    automatically, and the change is audited."""
    from middleware.audit import audit_entries

    meguro = box.nodes["meguro"]
    await meguro.held.set_suppression(FLAGGED_RECORD["record_id"], False, "admin1", "order lifted")
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "provided")
    (entry,) = await meguro.database.run(lambda connection: audit_entries(connection, limit=10))
    assert (entry["actor"], entry["action"], entry["target"]) == (
        "admin1",
        "flag_change",
        FLAGGED_RECORD["record_id"],
    )
    assert entry["detail"] == {"auto_response_suppressed": False, "reason": "order lifted"}


@pytest_twisted.ensureDeferred
async def test_metrics_show_held_provisions_waiting(box: Any, setagaya_asks: Any) -> None:
    """The provider's metrics listener reports a held provision waiting, and none once it
    has been decided: the gauge of a status without rows is 0, never the last value."""
    import treq

    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    metrics = box.metrics["meguro"]
    port = metrics.node.institution.metrics_listen.split("port=")[1].split(":")[0]
    url = f"http://127.0.0.1:{port}/metrics"
    await metrics.refresh()
    text = await (await treq.get(url)).text()
    assert f'renkei_held_waiting{{institution="{MEGURO}"}} 1.0' in text
    assert f'renkei_provisions{{institution="{MEGURO}",status="held"}} 1.0' in text
    item = await held_item(box.nodes["meguro"])
    await box.nodes["meguro"].held.approve(item.transaction_number, "approver1")
    await metrics.refresh()
    text = await (await treq.get(url)).text()
    assert f'renkei_held_waiting{{institution="{MEGURO}"}} 0.0' in text
    assert f'renkei_provisions{{institution="{MEGURO}",status="held"}} 0.0' in text
    assert f'renkei_provisions{{institution="{MEGURO}",status="provided"}} 1.0' in text
    assert f'renkei_queries{{institution="{MEGURO}",state="accepted"}} 0.0' in text
