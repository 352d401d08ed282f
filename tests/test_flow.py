"""The query → provision → result flow end to end, over real loopback mutual TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import func, select

from middleware.records import records_of_transaction, verify_chain
from middleware.tables import (
    hub_query,
    hub_record_head,
    hub_records,
    node_record_head,
    node_records,
    provision,
    query,
)
from simulators.back_office import BackOfficeError
from tests.network import (
    CARE_CERTIFICATION,
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)


def ask_tax(client: Any, person: str = HANAKO_MEGURO, **changes: Any) -> Any:
    """Meguro's care-insurance office asks Setagaya for a person's local tax information."""
    body = {
        "integrated_address_number": person,
        "procedure": PREMIUM_ASSESSMENT,
        "information_name": TAX_INFORMATION,
        "provider": SETAGAYA,
    }
    body.update(changes)
    return client.submit_query(**body)


def count(box: Any, party: str, table: Any, *conditions: Any) -> int:
    database = box.hub.database if party == "hub" else box.nodes[party].database
    return int(
        database.run_blocking(
            lambda connection: connection.execute(
                select(func.count()).select_from(table).where(*conditions)
            ).scalar_one()
        )
    )


async def wait_until(condition: Any, timeout: float = 20.0) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    waited = 0.0
    while not condition():
        assert waited < timeout, "condition not reached"
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.async_yield_fixture
async def care_of(either_box: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Either box with Meguro's care-insurance client."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    client = BackOfficeClient(
        reactor, either_box.config, either_box.config.institution("meguro"), CARE_INSURANCE
    )
    try:
        yield either_box, client
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_query_is_provided_decrypted_and_recorded_by_all_three_parties(
    care_of: tuple[Any, Any],
) -> None:
    """A permitted query returns the provider's replica items, and hub, requester and provider
    each record the transaction in an intact hash chain (in memory and over mutual TLS)."""
    box, meguro_care = care_of
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"])

    assert status["state"] == "provided"
    number = status["transaction_number"]
    assert len(number) == 20
    result = status["result"]
    assert result["information_name"] == {"code": TAX_INFORMATION, "name": "地方税関係情報"}
    assert result["provider"] == SETAGAYA
    (record,) = result["records"]
    assert record["record_id"] == "SET-TAX-2026-0001"
    items = {item["name"]: item["value"] for item in record["items"]}
    assert items["市町村民税所得割額"] == "84200"
    assert items["課税年度"] == "2026"

    hub_rows = box.hub.database.run_blocking(records_of_transaction, hub_records, number)
    meguro_rows = box.nodes["meguro"].database.run_blocking(
        records_of_transaction, node_records, number
    )
    setagaya_rows = box.nodes["setagaya"].database.run_blocking(
        records_of_transaction, node_records, number
    )
    assert [(r["event"], r["status"]) for r in hub_rows] == [
        ("query", "permitted"),
        ("provision", "provided"),
    ]
    assert [(r["event"], r["status"]) for r in meguro_rows] == [
        ("query", "accepted"),
        ("result", "provided"),
    ]
    assert [(r["event"], r["status"]) for r in setagaya_rows] == [("provision", "provided")]
    for rows in (hub_rows, meguro_rows, setagaya_rows):
        assert {(r["requester"], r["provider"]) for r in rows} == {(MEGURO, SETAGAYA)}
    assert box.hub.database.run_blocking(verify_chain, hub_records, hub_record_head) is None
    for node in box.nodes.values():
        assert node.database.run_blocking(verify_chain, node_records, node_record_head) is None


def crypto_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads permits (the hub) and payloads (a provider) are signed on,
    and payloads encrypted on."""
    import threading

    from lxml import etree

    from crypto import envelope
    from crypto.xmlsig import Signer

    threads: list[str] = []
    sign, seal = Signer.sign, envelope.seal

    def signing(self: Signer, element: Any) -> Any:
        if etree.QName(element).localname in ("Permit", "ProvisionPayload"):
            threads.append(threading.current_thread().name)
        return sign(self, element)

    def sealing(plaintext: bytes, recipient: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return seal(plaintext, recipient)

    monkeypatch.setattr(Signer, "sign", signing)
    monkeypatch.setattr(envelope, "seal", sealing)
    return threads


@pytest_twisted.ensureDeferred
async def test_permits_and_payloads_are_sealed_outside_database_transactions(
    box: Any, meguro_care: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub signs the permit, and the provider signs and encrypts the payload, on the
    reactor's thread, never inside a database transaction (those run on database threads)."""
    import threading

    threads = crypto_threads(monkeypatch)
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    assert len(threads) == 3 and set(threads) == {threading.main_thread().name}


@pytest_twisted.ensureDeferred
async def test_person_without_replica_gets_a_signed_no_data_answer(
    box: Any, meguro_care: Any
) -> None:
    """A person the provider knows but holds no record of ends in no_data, not an error."""
    submitted = await ask_tax(meguro_care, person="000000000010002")
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "no_data"
    assert status["result"]["records"] == []


@pytest_twisted.ensureDeferred
async def test_query_not_on_the_list_is_refused_at_the_requester(
    box: Any, meguro_care: Any
) -> None:
    """A procedure the list does not permit for this information name is refused before
    anything is sent or stored."""
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care, procedure=CARE_CERTIFICATION)
    assert refused.value.status == 403
    assert refused.value.code == "NotPermitted"
    assert (
        refused.value.error["message_ja"]
        == f"特定個人情報名{TAX_INFORMATION}の照会は許可されていません"
    )
    assert count(box, "meguro", query) == 0
    assert count(box, "hub", hub_query) == 0


@pytest_twisted.ensureDeferred
async def test_query_for_a_person_without_fugo_is_refused(box: Any, meguro_care: Any) -> None:
    """A person whose 符号 was never acquired cannot be queried: 「…は符号が未取得です」."""
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care, person="000000000019999")
    assert refused.value.code == "FugoNotAcquired"
    assert refused.value.error["message_ja"] == "000000000019999は符号が未取得です"
    assert count(box, "meguro", query) == 0


@pytest_twisted.ensureDeferred
async def test_person_unknown_to_the_resident_registry_stays_without_fugo(
    box: Any, meguro_care: Any
) -> None:
    """Registering a person the registry does not know fails with UnknownResident, and
    a later query for that person is refused with FugoNotAcquired."""
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.register_person("000000000018888", "111111111118")
    assert refused.value.code == "UnknownResident"
    with pytest.raises(BackOfficeError) as again:
        await ask_tax(meguro_care, person="000000000018888")
    assert again.value.code == "FugoNotAcquired"


@pytest_twisted.ensureDeferred
async def test_unknown_information_name_is_refused(box: Any, meguro_care: Any) -> None:
    """An information name outside the data standard layout is refused with its code."""
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care, information_name="TM00000000000099")
    assert refused.value.code == "UnknownInformationName"
    assert count(box, "meguro", query) == 0


@pytest_twisted.ensureDeferred
async def test_provision_delivered_twice_is_stored_once(box: Any, meguro_care: Any) -> None:
    """Re-delivering the same provision to the requester is acknowledged and changes nothing."""
    from middleware import messages
    from middleware.network import HUB, PROVISION
    from tests.test_refusals import send

    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    number = status["transaction_number"]
    relayed = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(box.hub.outbox.table.c.body).where(
                box.hub.outbox.table.c.reference == number,
                box.hub.outbox.table.c.kind == "provision",
            )
        ).scalar_one()
    )
    ack = await send(box, HUB, MEGURO, PROVISION, relayed, messages.ProvisionAck)
    assert ack.transaction_number == number
    results = count(
        box,
        "meguro",
        node_records,
        node_records.c.transaction_number == number,
        node_records.c.event == "result",
    )
    assert results == 1


@pytest_twisted.ensureDeferred
async def test_provider_restarted_mid_flow_delivers_exactly_once(
    care_of: tuple[Any, Any],
) -> None:
    """With the provider down when the hub delivers, the hub retries; the restarted provider
    answers once and the requester receives exactly one result (in memory and over TLS)."""
    box, meguro_care = care_of
    await box.stop_party("setagaya")
    submitted = await ask_tax(meguro_care)
    # Let the hub fail at least once against the stopped provider.
    table = box.hub.outbox.table
    await wait_until(lambda: count(box, "hub", table, table.c.attempts > 1) == 1)
    await box.start_party("setagaya")
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    number = status["transaction_number"]
    assert count(box, "setagaya", provision, provision.c.transaction_number == number) == 1
    assert (
        count(
            box,
            "meguro",
            node_records,
            node_records.c.transaction_number == number,
            node_records.c.event == "result",
        )
        == 1
    )
    # The hub marks the transaction completed once the requester's acknowledgement is in.
    await wait_until(lambda: count(box, "hub", hub_query, hub_query.c.state == "completed") == 1)


@pytest_twisted.ensureDeferred
async def test_query_in_meguro_only_person_fails_at_the_provider_with_its_code(
    box: Any, meguro_care: Any
) -> None:
    """A person Setagaya does not know (no 符号 there) ends as refused with FugoUnknown,
    carried from the provider through the hub to the requester."""
    submitted = await ask_tax(meguro_care, person=ICHIRO_MEGURO)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "refused"
    assert status["error"]["code"] == "FugoUnknown"


@pytest_twisted.ensureDeferred
async def test_long_poll_answers_when_the_query_ends(box: Any, meguro_care: Any) -> None:
    """GET /queries/<id>?wait=N returns the final status in one request once the query ends."""
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.query_status(submitted["query_id"], wait=20)
    assert status["state"] == "provided"


@pytest.mark.parametrize("wait", ["abc", "-1", "61"])
@pytest_twisted.ensureDeferred
async def test_long_poll_refuses_a_bad_wait(box: Any, meguro_care: Any, wait: str) -> None:
    """A wait that is not a number of seconds between 0 and 60 is a BadRequest."""
    submitted = await ask_tax(meguro_care)
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.request("GET", f"/queries/{submitted['query_id']}?wait={wait}")
    assert refused.value.code == "BadRequest"


@pytest_twisted.ensureDeferred
async def test_transaction_path_joins_the_hubs_records_and_the_nodes(
    box: Any, meguro_care: Any
) -> None:
    """A node shows one transaction's path: the hub's records, asked of the hub over mutual
    TLS, and its own, in time order."""
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    path = await box.nodes["meguro"].transaction_path(status["transaction_number"])
    # Records carry whole seconds, so steps within one second may come in either order.
    assert sorted((e["party"], e["event"], e["status"]) for e in path) == [
        ("hub", "provision", "provided"),
        ("hub", "query", "permitted"),
        ("meguro", "query", "accepted"),
        ("meguro", "result", "provided"),
    ]
    times = [entry["recorded_at"] for entry in path]
    assert times == sorted(times)


@pytest_twisted.ensureDeferred
async def test_hub_gives_a_transactions_records_to_its_parties_only(box: Any) -> None:
    """Records of a transaction are refused to an institution that is not one of its
    parties, with the same answer as for an unknown transaction."""
    from codes.errors import RenkeiError

    with pytest.raises(RenkeiError) as refused:
        await box.hub.transaction_records("1131130000000000", "20261126000000000001")
    assert refused.value.code == "UnknownTransaction"
