"""Retention, permitted-list versions and expiry, restarts, and PostgreSQL storage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select

from crypto.pki import PkiLayout
from crypto.xmlsig import Signer
from middleware.hardened_xml import parse_xml, serialize
from middleware.tables import hub_query, node_list_versions, node_records
from simulators.back_office import BackOfficeError
from tests.network import MEGURO, write_config
from tests.test_flow import ask_tax, count, wait_until


@pytest_twisted.ensureDeferred
async def test_query_result_is_deleted_when_its_retention_ends(box: Any, meguro_care: Any) -> None:
    """A result is kept for the configured time after completion, then deleted and the
    deletion recorded; the query's state and 処理通番 remain."""
    meguro = box.nodes["meguro"]
    submitted = await ask_tax(meguro_care)
    await meguro_care.wait_for_result(submitted["query_id"])

    assert (await meguro.purge.run())["results_deleted"] == 0
    # The network's clock moves past the retention: the node's own purge deletes the result.
    box.clock.advance(box.config.retention.query_results.seconds + 1)
    await wait_until(
        lambda: count(box, "meguro", node_records, node_records.c.event == "result_deleted") == 1
    )

    status = await meguro_care.query_status(submitted["query_id"])
    assert status["state"] == "provided"
    assert status["result"] is None
    assert status["result_deleted_at"] is not None
    events = count(
        box,
        "meguro",
        node_records,
        node_records.c.transaction_number == status["transaction_number"],
        node_records.c.event == "result_deleted",
    )
    assert events == 1
    assert (await meguro.purge.run())["results_deleted"] == 0


@pytest_twisted.ensureDeferred
async def test_requester_refuses_to_query_on_an_expired_list(box: Any, meguro_care: Any) -> None:
    """Once the list in force has expired and no newer one can arrive (the hub is down),
    queries are refused."""
    await box.stop_party("hub")
    box.clock.advance(3601)  # the test network's list_validity is 3600 s
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care)
    assert refused.value.status == 503
    assert refused.value.code == "PermittedListExpired"


@pytest_twisted.ensureDeferred
async def test_node_keeps_every_list_version_and_uses_the_newest(box: Any) -> None:
    """A newly issued list is fetched, verified and stored beside the older versions."""
    meguro = box.nodes["meguro"]
    first = meguro.lists.current.version
    await box.hub.issue_permitted_list()
    synced = await meguro.lists.sync()
    assert synced.version == first + 1
    versions = meguro.database.run_blocking(
        lambda connection: (
            connection.execute(
                select(node_list_versions.c.version).order_by(node_list_versions.c.version)
            )
            .scalars()
            .all()
        )
    )
    assert versions == [first, first + 1]


@pytest_twisted.ensureDeferred
async def test_node_refuses_a_list_not_signed_by_the_hub(box: Any) -> None:
    """A list re-signed by another key is refused and the list in force is kept."""
    meguro = box.nodes["meguro"]
    before = meguro.lists.current
    document = parse_xml(box.hub.list_document)
    for signature in document.findall("{http://www.w3.org/2000/09/xmldsig#}Signature"):
        document.remove(signature)
    document.set("version", "999")
    forger = Signer(PkiLayout(box.config.pki).institution_signing(MEGURO).load())
    box.hub.list_document = serialize(forger.sign(document))
    with pytest.raises(Exception) as refused:
        await meguro.lists.sync()
    assert getattr(refused.value, "code", None) == "PermittedListSignatureInvalid"
    assert meguro.lists.current is before


@pytest_twisted.ensureDeferred
async def test_requester_restarted_while_the_hub_relays_receives_the_result_once(
    box: Any, meguro_care: Any
) -> None:
    """With the requester down when the hub relays the provision, the hub retries and the
    restarted requester stores the result exactly once."""
    await box.stop_party("setagaya")
    submitted = await ask_tax(meguro_care)
    await wait_until(lambda: count(box, "hub", hub_query, hub_query.c.state == "permitted") == 1)
    await box.stop_party("meguro")
    await box.start_party("setagaya")
    await wait_until(lambda: count(box, "hub", hub_query, hub_query.c.state == "provided") == 1)
    relay = box.hub.outbox.table
    await wait_until(
        lambda: count(box, "hub", relay, relay.c.kind == "provision", relay.c.attempts > 1) == 1
    )
    await box.start_party("meguro")
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    assert count(box, "meguro", node_records, node_records.c.event == "result") == 1
    await wait_until(lambda: count(box, "hub", hub_query, hub_query.c.state == "completed") == 1)


@pytest_twisted.ensureDeferred
async def test_the_flow_works_on_postgresql(
    tmp_path: Path, network_pki: Path, postgresql_database: Any
) -> None:
    """Hub and nodes on PostgreSQL: migrations run and a query is provided end to end."""
    from twisted.internet import reactor

    from renkei.service import Box
    from simulators.back_office import BackOfficeClient

    config = write_config(
        tmp_path,
        network_pki,
        database={
            "hub": postgresql_database(),
            "meguro": postgresql_database(),
            "setagaya": postgresql_database(),
        },
    )
    running = Box(config, reactor)
    await running.start()
    client = BackOfficeClient(reactor, config, config.institution("meguro"), "care-insurance")
    try:
        submitted = await ask_tax(client)
        status = await client.wait_for_result(submitted["query_id"])
        assert status["state"] == "provided"
        assert status["result"]["records"][0]["record_id"] == "SET-TAX-2026-0001"
    finally:
        await client.close()
        await running.stopService()


@pytest_twisted.ensureDeferred
async def test_a_stopped_hub_drops_the_connections_kept_alive_to_it(tls_box: Any) -> None:
    """Stopping a listener closes the kept-alive connections too: a client that used the old
    hub reaches the hub started in its place on the same port, not the stopped one."""
    from middleware import messages
    from tests.network import MEGURO
    from tests.test_refusals import as_institution

    client = as_institution(tls_box, MEGURO)
    try:
        await client.get(tls_box.config.hub_address + "/permitted-list")  # a kept-alive link
        await tls_box.stop_party("hub")
        replacement = await tls_box.start_party("hub")
        document = await client.get(tls_box.config.hub_address + "/permitted-list")
        element = messages.decode_signed(document, messages.PermittedListDocument)
        assert int(element.get("version") or 0) == replacement.permitted_list.version
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_box_that_cannot_start_stops_what_it_had_started(
    tmp_path: Path, network_pki: Path
) -> None:
    """A box whose last listener's port is taken fails to start, and the hub and nodes it had
    started are stopped again: their ports are free, nothing is left running."""
    import socket

    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    from renkei.service import Box
    from tests.network import host_and_port_of, write_config

    config = write_config(tmp_path, network_pki)
    taken = socket.socket()
    taken.bind(host_and_port_of(config.institution("setagaya").back_office_address))
    taken.listen()
    try:
        box = Box(config, reactor)
        with pytest.raises(CannotListenError):
            await box.start()
    finally:
        taken.close()
    for address in (config.hub_address, config.institution("meguro").network_address):
        with socket.socket() as probe:
            assert probe.connect_ex(host_and_port_of(address)) != 0, address


@pytest_twisted.ensureDeferred
async def test_a_periodic_job_that_fails_once_runs_again(box: Any) -> None:
    """A party's periodic job that raises is recorded as failed and runs again after the
    backoff (1 s), on the network's clock; it then runs at its interval again."""
    meguro = box.nodes["meguro"]
    runs: list[int] = []

    def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    box.clock.freeze()
    meguro.jobs.add("flaky", 3600, flaky, now=False)
    box.clock.advance(3600)
    first = await meguro.jobs.run("flaky")  # the run the clock started
    assert first.outcome == "failed" and first.error == "RuntimeError: the first run fails"
    box.clock.advance(1)
    second = await meguro.jobs.run("flaky")
    assert second.outcome == "succeeded" and runs == [0, 1]
    assert meguro.jobs.state("flaky").next_run_at == second.started_at + timedelta(hours=1)


@pytest_twisted.ensureDeferred
async def test_a_node_that_never_received_a_list_refuses_queries(
    tmp_path: Path, network_pki: Path
) -> None:
    """Meguro's node started where no hub answers holds no permitted-query list: a query is
    refused PermittedListMissing, and nothing is stored or sent."""
    from twisted.internet import reactor

    from codes.catalogue import default_catalogue
    from codes.errors import RenkeiError
    from middleware.node import IntermediateServer
    from middleware.queries import QuerySubmission
    from middleware.tables import node_outbox, query
    from simulators.in_memory import InMemoryNetwork
    from tests.network import (
        CARE_INSURANCE,
        HANAKO_MEGURO,
        PREMIUM_ASSESSMENT,
        SETAGAYA,
        TAX_INFORMATION,
    )

    config = write_config(tmp_path, network_pki, demo=False)
    alone = InMemoryNetwork(reactor)  # the hub is on no link of it
    node = IntermediateServer(
        config,
        config.institution("meguro"),
        default_catalogue(),
        reactor,
        alone.transport(MEGURO),
    )
    await node.startService()
    try:
        assert node.lists.current is None
        asked = QuerySubmission(HANAKO_MEGURO, PREMIUM_ASSESSMENT, TAX_INFORMATION, SETAGAYA)
        with pytest.raises(RenkeiError) as refused:
            await node.requester.submit_query(asked, CARE_INSURANCE)
        assert refused.value.code == "PermittedListMissing"
        stored = [
            node.database.run_blocking(
                lambda connection, table=table: connection.execute(select(table)).all()
            )
            for table in (query, node_outbox)
        ]
        assert stored == [[], []]
    finally:
        await node.stopService()
