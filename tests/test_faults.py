"""Faults injected on the links (simulators.faults): with the network misbehaving on purpose,
a query is still answered, and answered once, at every party."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from codes.errors import RenkeiError
from middleware.network import HUB, PROVISION, PROVISION_REQUEST, QUERY
from middleware.tables import hub_records, node_outbox, node_records, query
from simulators.faults import Fault, FaultPlan
from tests.network import MEGURO, SETAGAYA
from tests.test_flow import ask_tax, count, wait_until


async def provided_once(box: Any, client: Any) -> dict[str, Any]:
    """Ask, wait for the result; it is provided, and each party recorded it once."""
    submitted = await ask_tax(client)
    status = await client.wait_for_result(submitted["query_id"], timeout=30)
    assert status["state"] == "provided"
    number = status["transaction_number"]
    assert count(box, "meguro", node_records, node_records.c.transaction_number == number) == 2
    assert count(box, "setagaya", node_records, node_records.c.transaction_number == number) == 1
    assert count(box, "hub", hub_records, hub_records.c.transaction_number == number) == 2
    assert count(box, "meguro", query) == 1
    return status


async def provided_once_more(box: Any) -> None:
    """Still once at every party, after every retry has ended."""
    assert count(box, "meguro", node_records) == 2
    assert count(box, "setagaya", node_records) == 1
    assert count(box, "hub", hub_records) == 2


@pytest_twisted.ensureDeferred
async def test_a_provision_whose_answer_is_lost_is_sent_again_and_stored_once(
    box: Any, meguro_care: Any
) -> None:
    """reset_peer on Setagaya's provisions (twice): the hub handled each copy, the answers
    were lost, Setagaya sent it again, and the result is stored and recorded once."""
    box.faults.add(Fault("reset_peer", source=SETAGAYA, operation=PROVISION, limit=2))
    await provided_once(box, meguro_care)

    def sent() -> Any:
        return box.nodes["setagaya"].database.run_blocking(
            lambda connection: connection.execute(node_outbox.select()).one()
        )

    await wait_until(lambda: sent().state == "delivered")
    assert sent().attempts == 3
    hits = [hit for hit in box.faults.hits if hit.kind == "reset_peer"]
    assert len(hits) == 2 and all(hit.message_id for hit in hits)
    await provided_once_more(box)


@pytest_twisted.ensureDeferred
async def test_duplicated_messages_are_handled_once(box: Any, meguro_care: Any) -> None:
    """duplicate on every message of the flow: each arrives twice, each is acted on once."""
    box.faults.add(Fault("duplicate"))
    await provided_once(box, meguro_care)
    assert {hit.operation for hit in box.faults.hits} >= {QUERY, PROVISION_REQUEST, PROVISION}


@pytest_twisted.ensureDeferred
async def test_a_dropped_query_is_sent_again(box: Any, meguro_care: Any) -> None:
    """drop on Meguro's query (once): it never reached the hub; the outbox sent it again."""
    box.faults.add(Fault("drop", source=MEGURO, destination=HUB, operation=QUERY, limit=1))
    await provided_once(box, meguro_care)
    assert [hit.kind for hit in box.faults.hits] == ["drop"]


@pytest_twisted.ensureDeferred
async def test_a_provider_down_is_reached_once_it_is_up_again(box: Any, meguro_care: Any) -> None:
    """down on Setagaya: the provision request waits in the hub's outbox; once the fault is
    removed it is delivered and the query answered."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    name = box.faults.add(Fault("down", destination=SETAGAYA))
    submitted = await ask_tax(meguro_care)
    await deferLater(reactor, 1.0, lambda: None)
    status = await meguro_care.query_status(submitted["query_id"])
    assert status["state"] == "accepted"
    assert any(hit.kind == "down" for hit in box.faults.hits)
    box.faults.remove(name)
    status = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
    assert status["state"] == "provided"


@pytest_twisted.ensureDeferred
async def test_latency_delays_but_delivers(box: Any, meguro_care: Any) -> None:
    """latency 0.3 ± 0.1 s on every message: the query takes longer and is answered once."""
    import time

    box.faults.add(Fault("latency", latency=0.3, jitter=0.1))
    started = time.monotonic()
    await provided_once(box, meguro_care)
    assert time.monotonic() - started >= 0.6  # at least three delayed hops


@pytest_twisted.ensureDeferred
async def test_reordered_messages_are_each_handled_once(box: Any, meguro_care: Any) -> None:
    """reorder (held up to 0.3 s each) on every message of four queries asked together:
    their messages arrive out of order, each query is provided, each party records each
    transaction once."""
    from twisted.internet.defer import gatherResults

    box.faults.add(Fault("reorder", latency=0.3))
    submitted = [await ask_tax(meguro_care) for _ in range(4)]
    statuses = await gatherResults(
        [meguro_care.wait_for_result(s["query_id"], timeout=30) for s in submitted]
    )
    assert [status["state"] for status in statuses] == ["provided"] * 4
    assert count(box, "meguro", node_records) == 8
    assert count(box, "setagaya", node_records) == 4
    assert count(box, "hub", hub_records) == 8
    assert sum(hit.kind == "reorder" for hit in box.faults.hits) >= 4 * 3


@pytest_twisted.ensureDeferred
async def test_a_provider_whose_clock_runs_ahead_refuses_the_permit_as_expired(
    box: Any, meguro_care: Any
) -> None:
    """skew Setagaya's clock 15 minutes ahead: the permit (valid 10 minutes) is expired by its
    time, the query ends refused with PermitExpired and the refusal is recorded; 15 minutes
    behind, PermitNotYetValid; without the skew the same query is provided."""
    for offset, code in ((900.0, "PermitExpired"), (-900.0, "PermitNotYetValid")):
        name = box.faults.add(Fault("skew", source=SETAGAYA, offset=offset))
        assert box.nodes["setagaya"].now() != box.nodes["meguro"].now()
        submitted = await ask_tax(meguro_care)
        status = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
        assert (status["state"], status["error"]["code"]) == ("refused", code)
        number = status["transaction_number"]
        refused = count(
            box,
            "setagaya",
            node_records,
            node_records.c.transaction_number == number,
            node_records.c.error_code == code,
        )
        assert refused == 1
        box.faults.remove(name)
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
    assert status["state"] == "provided"


@pytest_twisted.ensureDeferred
async def test_corrupted_messages_are_refused_with_a_code_and_sent_again(
    either_box: Any,
) -> None:
    """corrupt on the query and on the provision (twice each), in memory and over mutual
    TLS: each damaged copy is refused as ContentDigestMismatch, the sender sends it again,
    and the query is provided once."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    box = either_box
    box.faults.add(Fault("corrupt", source=MEGURO, operation=QUERY, limit=2))
    box.faults.add(Fault("corrupt", source=SETAGAYA, operation=PROVISION, limit=2))
    client = BackOfficeClient(
        reactor, box.config, box.config.institution("meguro"), "care-insurance"
    )
    try:
        await provided_once(box, client)
    finally:
        await client.close()
    assert [hit.kind for hit in box.faults.hits].count("corrupt") >= 3


def test_a_document_must_match_its_content_digest() -> None:
    """A document with the digest of another is ContentDigestMismatch, a refusal the sender
    retries; without a digest a document is taken as it is."""
    from middleware.network import (
        TransientFailure,
        check_content_digest,
        content_digest,
        refusal_of,
    )

    check_content_digest(b"<a/>", content_digest(b"<a/>"))
    check_content_digest(b"<a/>", None)
    with pytest.raises(RenkeiError) as refused:
        check_content_digest(b"<b/>", content_digest(b"<a/>"))
    assert refused.value.code == "ContentDigestMismatch"
    assert isinstance(refusal_of(refused.value), TransientFailure)
    assert content_digest(b"").startswith("sha-256=:") and content_digest(b"").endswith(":")


def test_a_plan_draws_the_same_hits_from_the_same_seed() -> None:
    """With a seed, which messages a fault of probability 0.5 hits is the same every run;
    a limit stops it; a fault hits only the messages it names."""

    def hits(seed: int) -> list[bool]:
        plan = FaultPlan(seed=seed, clock=_Clock())
        plan.add(Fault("drop", source=MEGURO, probability=0.5, limit=5))
        return [bool(plan.draw(MEGURO, HUB, QUERY, None)) for _ in range(40)]

    first = hits(7)
    assert first == hits(7)
    assert sum(first) == 5
    plan = FaultPlan(seed=1, clock=_Clock())
    plan.add(Fault("drop", source=MEGURO, operation=QUERY))
    assert plan.draw(SETAGAYA, HUB, QUERY, None) == []
    assert plan.draw(MEGURO, HUB, PROVISION, None) == []
    assert plan.draw(MEGURO, HUB, QUERY, b'<QueryRequest messageId="abc"/>')
    assert plan.hits[-1].message_id == "abc"


def test_a_fault_of_no_known_kind_is_refused() -> None:
    """An unknown kind, operation or a probability outside 0–1 is a coded BadRequest."""
    for bad in (
        {"kind": "explode"},
        {"kind": "drop", "operation": "teleport"},
        {"kind": "drop", "probability": 1.5},
        {"kind": "latency", "latency": -1.0},
    ):
        with pytest.raises(RenkeiError) as refused:
            Fault(**bad)
        assert refused.value.code == "BadRequest"


class _Clock:
    def seconds(self) -> float:
        return 1_767_225_600.0
