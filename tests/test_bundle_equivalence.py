"""A bundle's lines (docs/protocol.md §1c) leave what the same lines sent as single messages
leave: the same queries, states, provisions, holds and provision records at every party, the
same 業務統計, records in the order of the lines; and a line met twice in one bundle is
handled once, as a single message sent twice is."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from lxml import etree
from sqlalchemy import select
from twisted.internet.defer import ensureDeferred

from codes.errors import RenkeiError
from crypto.pki import PkiLayout
from middleware import business_statistics, messages, persons
from middleware.clock import utc_now
from middleware.network import (
    MAX_BUNDLE_LINES,
    PROVISION_BUNDLE,
    PROVISION_REQUEST_BUNDLE,
    QUERY_BUNDLE,
    DeliveryRefused,
)
from middleware.outbox import PENDING
from middleware.queries import QuerySubmission
from middleware.tables import (
    held_provision,
    hub_outbox,
    hub_query,
    hub_records,
    node_outbox,
    node_records,
    person,
    provision,
    query,
    refused_request,
)
from simulators.network import jukinet
from simulators.network.fugo import FugoCipher, id_code
from simulators.network.hub import PERMITTED, query_values, transaction_number
from tests.conftest import running_box
from tests.logs import LogRecorder
from tests.network import (
    CARE_AFFAIR,
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    LOCAL_TAX,
    MEGURO,
    PORTAL,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
    write_config,
)
from tests.test_business_events import no_person_in
from tests.test_business_statistics import FLAGGED_TAX_RECORD, TARO_MEGURO, client_of
from tests.test_flow import wait_until
from tests.test_query_bundles import (
    bundle_of,
    fugo_of_hanako,
    premium_assessment,
    provision_request_bundle,
    send_bundle,
    send_to_setagaya,
)

ICHIRO_INDIVIDUAL_NUMBER = "345678901234"
ICHIRO_SETAGAYA = "000000000020003"  # linked at Setagaya here: known there, without records
STRANGER_MEGURO = "000000000010009"  # a 符号 of a resident Setagaya does not know
FORGED_MEGURO = "000000000010008"  # a 符号 issued to Setagaya: the hub refuses it
NOBODY_MEGURO = "000000000099999"  # registered nowhere: no 符号, refused at Meguro


@pytest_twisted.async_yield_fixture
async def postgresql_box(
    tmp_path: Path, network_pki: Path, postgresql_database: Any
) -> AsyncIterator[Any]:
    """The box, its hub and nodes on PostgreSQL (stopped at teardown, the test passed or
    not)."""
    databases = {party: postgresql_database() for party in ("hub", "meguro", "setagaya")}
    running = await running_box(
        write_config(tmp_path, network_pki, database=databases), in_memory=True
    )
    yield running
    await running.stopService()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_box(request: pytest.FixtureRequest) -> Any:
    """The box on SQLite, then on PostgreSQL."""
    return request.getfixturevalue("box" if request.param == "sqlite" else "postgresql_box")


# What a record says, without what differs from one run to the next (its place in the chain,
# its time, its 処理通番).
_RECORD_COLUMNS = (
    "event",
    "status",
    "requester",
    "provider",
    "affair",
    "procedure",
    "information_name",
    "person",
    "error_code",
    "non_disclosure",
    "delegating_requester",
    "delegating_provider",
)


def fugo_of(box: Any, resident_code: str, institution: str) -> str:
    """The 符号 the hub issues to ``institution`` for the resident ``resident_code``."""
    layout = PkiLayout(box.config.pki)
    cipher = FugoCipher(layout.hub_fugo_key().read_bytes())
    return cipher.issue(id_code(resident_code, layout.hub_idcode_key().read_bytes()), institution)


async def persons_of_every_kind(box: Any) -> None:
    """Meguro asks Setagaya's local tax of: 目黒 花子 (provided), 世田谷 太郎 (his record
    flagged: held, 自動応答不可), 碑文谷 一郎 (linked at Setagaya now, without records: no
    data), a stranger to Setagaya (FugoUnknown, refused by the provider), a person whose
    符号 is Setagaya's (FugoInvalid, refused by the hub) and a person without 符号."""
    now = utc_now(box.clock)
    ichiro = box.hub.database.run_blocking(jukinet.resident_code_of, ICHIRO_INDIVIDUAL_NUMBER)
    box.nodes["setagaya"].database.run_blocking(
        persons.link, ICHIRO_SETAGAYA, fugo_of(box, ichiro, SETAGAYA), now
    )
    meguro = box.nodes["meguro"].database
    meguro.run_blocking(persons.link, STRANGER_MEGURO, fugo_of(box, "X" * 11, MEGURO), now)
    meguro.run_blocking(persons.link, FORGED_MEGURO, fugo_of_hanako(box, SETAGAYA), now)
    office = client_of(box, "setagaya", LOCAL_TAX)
    try:
        await office.register_replica_record(FLAGGED_TAX_RECORD)
    finally:
        await office.close()


def asked(run: str) -> list[tuple[QuerySubmission, str]]:
    """The lines of one run, each with its idempotency key (``run`` keeps the keys of two
    runs apart): every kind of person, a line again under its key (a resend: the same
    query), and the same person again under another key (a second query)."""
    return [
        (premium_assessment(HANAKO_MEGURO), f"{run}-1"),
        (premium_assessment(TARO_MEGURO), f"{run}-2"),
        (premium_assessment(ICHIRO_MEGURO), f"{run}-3"),
        (premium_assessment(STRANGER_MEGURO), f"{run}-4"),
        (premium_assessment(FORGED_MEGURO), f"{run}-5"),
        (premium_assessment(NOBODY_MEGURO), f"{run}-6"),
        (premium_assessment(HANAKO_MEGURO), f"{run}-1"),
        (premium_assessment(HANAKO_MEGURO), f"{run}-7"),
    ]


def read(database: Any, statement: Any) -> list[Any]:
    return list(database.run_blocking(lambda connection: connection.execute(statement).all()))


def settled(box: Any, query_ids: list[str]) -> bool:
    """Whether every query has ended or is held, and no party has a message to deliver."""
    meguro = box.nodes["meguro"].database
    states = read(meguro, select(query.c.state).where(query.c.query_id.in_(query_ids)))
    if any(state in ("submitted", "accepted") for (state,) in states):
        return False
    outboxes = [
        (box.hub.database, hub_outbox),
        (meguro, node_outbox),
        (box.nodes["setagaya"].database, node_outbox),
    ]
    return not any(
        read(database, select(table.c.id).where(table.c.state == PENDING))
        for database, table in outboxes
    )


def records_of(database: Any, table: Any, number: str) -> list[tuple[Any, ...]]:
    columns = [table.c[name] for name in _RECORD_COLUMNS]
    statement = select(*columns).where(table.c.transaction_number == number).order_by(table.c.seq)
    return [tuple(row) for row in read(database, statement)]


def trace(box: Any, outcome: str | RenkeiError) -> dict[str, Any]:
    """What one line left at every party: its query at Meguro, the hub's row, Setagaya's
    provision, refusal or hold, and the records of each, less what differs from run to run
    (ids, times, 処理通番, idempotency keys)."""
    if isinstance(outcome, RenkeiError):
        return {"refused here": outcome.code}
    meguro, setagaya = box.nodes["meguro"].database, box.nodes["setagaya"].database
    (row,) = read(meguro, select(query).where(query.c.query_id == outcome))
    number = row.transaction_number
    kept = {
        name: getattr(row, name)
        for name in (
            "system",
            "integrated_address_number",
            "affair",
            "procedure",
            "information_name",
            "provider",
            "conditions",
            "delegating_requester",
            "delegating_provider",
            "non_disclosure",
            "state",
            "error_code",
            "request_hash",
        )
    }
    kept["numbered, accepted, completed, with a result"] = (
        number is not None,
        row.accepted_at is not None,
        row.completed_at is not None,
        row.result is not None,
    )
    hub_rows = read(
        box.hub.database,
        select(
            hub_query.c.requester,
            hub_query.c.provider,
            hub_query.c.affair,
            hub_query.c.procedure,
            hub_query.c.information_name,
            hub_query.c.state,
            hub_query.c.error_code,
            hub_query.c.non_disclosure,
            hub_query.c.delegating_requester,
            hub_query.c.delegating_provider,
            hub_query.c.permit_expires_at.is_not(None),
            hub_query.c.finished_at.is_not(None),
        ).where(hub_query.c.transaction_number == number),
    )
    provided = read(
        setagaya,
        select(
            provision.c.requester,
            provision.c.procedure,
            provision.c.information_name,
            provision.c.integrated_address_number,
            provision.c.status,
            provision.c.error_code,
            provision.c.non_disclosure,
            provision.c.delegating_requester,
            provision.c.delegating_provider,
        ).where(provision.c.transaction_number == number),
    )
    refused = read(
        setagaya,
        select(refused_request.c.error_code).where(refused_request.c.transaction_number == number),
    )
    held = read(
        setagaya,
        select(
            held_provision.c.requester,
            held_provision.c.procedure,
            held_provision.c.integrated_address_number,
            held_provision.c.state,
            held_provision.c.payload.is_not(None),
        ).where(held_provision.c.transaction_number == number),
    )
    return {
        "meguro query": kept,
        "meguro records": records_of(meguro, node_records, number),
        "hub query": [tuple(r) for r in hub_rows],
        "hub records": records_of(box.hub.database, hub_records, number),
        "setagaya provision": [tuple(r) for r in provided],
        "setagaya refused": [tuple(r) for r in refused],
        "setagaya held": [tuple(r) for r in held],
        "setagaya records": records_of(setagaya, node_records, number),
    }


def statistics(box: Any) -> dict[str, dict[tuple[str, str, str], int]]:
    """Each party's 業務統計 of this month, by side, institution and outcome."""
    month = business_statistics.month_of(utc_now(box.clock))
    parties = {
        "hub": (box.hub.database, hub_records),
        "meguro": (box.nodes["meguro"].database, node_records),
        "setagaya": (box.nodes["setagaya"].database, node_records),
    }
    counted = {}
    for name, (database, records) in parties.items():
        summary = business_statistics.summary_of(records)
        found = database.run_blocking(
            business_statistics.figures, summary, month, month, "counterpart"
        )
        counted[name] = {(f.side, f.value, f.outcome): f.count for f in found}
    return counted


async def singly(box: Any, lines: list[tuple[QuerySubmission, str]]) -> list[str | RenkeiError]:
    """Each line submitted alone, one after the other (a QueryRequest each)."""
    requester = box.nodes["meguro"].requester
    outcomes: list[str | RenkeiError] = []
    for submission, key in lines:
        try:
            outcomes.append(await requester.submit_query(submission, CARE_INSURANCE, key))
        except RenkeiError as refusal:
            outcomes.append(refusal)
    return outcomes


@pytest_twisted.ensureDeferred
async def test_a_mixed_bundle_leaves_what_its_lines_sent_alone_leave(any_box: Any) -> None:
    """The same lines (provided, held, no data, refused by the provider, refused by the hub,
    refused here, a resend, the same person twice) submitted one by one, then together (one
    QueryBundle, one PermitBundle, one ProvisionBundle): each line of the bundle leaves the
    same query, hub row, provision or refusal or hold, and records at each party as its
    single counterpart; 業務統計 count the bundle's lines as they counted the single ones;
    and the bundle's records are in the order of its lines. On SQLite and PostgreSQL."""
    box = any_box
    await persons_of_every_kind(box)
    meguro = box.nodes["meguro"]

    alone = await singly(box, asked("alone"))
    await wait_until(lambda: settled(box, [o for o in alone if isinstance(o, str)]))
    counted_alone = statistics(box)
    with LogRecorder() as log:
        together = await meguro.requester.submit_queries(asked("together"), CARE_INSURANCE)
        await wait_until(lambda: settled(box, [o for o in together if isinstance(o, str)]))

    assert together[6] == together[0] and alone[6] == alone[0]  # the resend
    states = [trace(box, outcome)["meguro query"]["state"] for outcome in together[:5]]
    assert states == ["provided", "held", "no_data", "refused", "refused"]
    assert [trace(box, outcome) for outcome in together] == [
        trace(box, outcome) for outcome in alone
    ]
    counted = statistics(box)
    assert counted_alone["meguro"] and counted_alone["setagaya"] and counted_alone["hub"]
    assert counted == {
        party: {key: 2 * n for key, n in figures.items()}
        for party, figures in counted_alone.items()
    }

    # The business log: a line per event for the bundle's lines, one alone for each held or
    # refused line naming its query, and never a person.
    meguro_lines, setagaya_lines = log.lines("meguro"), log.lines("setagaya")
    assert sum("6 queries submitted together by care-insurance" in x for x in meguro_lines) == 1
    ended = [x for x in meguro_lines if "3 queries to 世田谷区 ended" in x]
    assert len(ended) == 1 and "answered: no data 1, provided 2" in ended[0]
    for alone, words in ((together[1], "held"), (together[3], "FugoUnknown")):
        assert sum(alone in x and words in x for x in meguro_lines) == 1, (alone, meguro_lines)
    assert sum(together[4] in x and "FugoInvalid" in x for x in meguro_lines) == 1
    assert (
        sum("3 provisions to 目黒区: given (no data) 1, given 2" in x for x in setagaya_lines) == 1
    )
    assert sum("held (自動応答不可)" in x for x in setagaya_lines) == 1
    assert sum("refused (FugoUnknown)" in x for x in setagaya_lines) == 1
    assert sum("5 queries 目黒区 → 世田谷区 permitted" in x for x in log.lines("hub")) == 1
    people = (HANAKO_MEGURO, TARO_MEGURO, ICHIRO_MEGURO, STRANGER_MEGURO, FORGED_MEGURO)
    fugos = read(meguro.database, select(person.c.fugo).where(person.c.fugo.is_not(None)))
    no_person_in(log, *people, ICHIRO_SETAGAYA, NOBODY_MEGURO, *(f for (f,) in fugos), "84200")

    # The records of the bundle's lines follow its lines, at the hub and at the provider.
    numbers = [
        read(meguro.database, select(query.c.transaction_number).where(query.c.query_id == q))[0][0]
        for q in (together[0], *together[1:5], together[7])
    ]
    hub_order = read(
        box.hub.database,
        select(hub_records.c.transaction_number)
        .where(hub_records.c.transaction_number.in_(numbers), hub_records.c.event == "query")
        .order_by(hub_records.c.seq),
    )
    assert [n for (n,) in hub_order] == numbers
    asked_of_setagaya = [n for n in numbers if n != numbers[4]]  # not the line the hub refused
    setagaya_order = read(
        box.nodes["setagaya"].database,
        select(node_records.c.transaction_number)
        .where(node_records.c.transaction_number.in_(asked_of_setagaya))
        .order_by(node_records.c.seq),
    )
    assert [n for (n,) in setagaya_order] == asked_of_setagaya


def open_query(hub: Any, requester: str, now: Any) -> str:
    """A query of ``requester`` to Setagaya the hub permitted: its 処理通番."""
    asked = messages.QueryRequest(
        message_id=str(uuid.uuid4()),
        requester_fugo="0" * 32,
        affair=CARE_AFFAIR,
        procedure=PREMIUM_ASSESSMENT,
        information_name=TAX_INFORMATION,
        provider=SETAGAYA,
    )
    values = query_values(requester, asked, PERMITTED, now, now)

    def store(connection: Any) -> str:
        row_id = connection.execute(hub_query.insert(), values).inserted_primary_key[0]
        number = transaction_number(now, row_id)
        where = hub_query.c.id == row_id
        connection.execute(hub_query.update().where(where).values(transaction_number=number))
        return number

    return str(hub.database.run_blocking(store))


def no_data(number: str) -> messages.Provision:
    return messages.Provision(
        message_id=str(uuid.uuid4()), transaction_number=number, status="no_data"
    )


def test_a_provision_met_twice_in_one_bundle_is_relayed_once(portal_box: Any) -> None:
    """A provider's bundle naming a 処理通番 twice (the schema refuses it on the network; the
    hub's own handling does not count on that) is taken as that provision sent twice alone:
    relayed and recorded once, the second left as a retry; for a requester that is a node of
    renkei's (relayed in a ProvisionBundle) and for one that is not (マイナポータル, relayed
    as a Provision)."""
    hub = portal_box.hub
    now = utc_now(portal_box.clock)
    to_meguro, to_portal = open_query(hub, MEGURO, now), open_query(hub, PORTAL, now)
    bundle = messages.ProvisionBundle(
        message_id=str(uuid.uuid4()),
        provisions=(no_data(to_meguro), no_data(to_meguro), no_data(to_portal), no_data(to_portal)),
    )

    record = hub._record_provision_bundle  # private: below the schema, which refuses a repeat
    results, outgoing = hub.database.run_blocking(record, SETAGAYA, bundle, now)

    assert results == [(MEGURO, None), (None, None), (PORTAL, None), (None, None)]
    relayed: dict[str, list[str]] = {}
    for message in outgoing:
        if message.kind == PROVISION_BUNDLE:
            provisions = messages.decode(message.body, messages.ProvisionBundle).provisions
            relayed.setdefault(message.destination, []).extend(
                p.transaction_number for p in provisions
            )
        else:
            relayed.setdefault(message.destination, []).append(message.reference)
    assert relayed == {MEGURO: [to_meguro], PORTAL: [to_portal]}
    for number in (to_meguro, to_portal):
        recorded = read(
            hub.database,
            select(hub_records.c.seq).where(
                hub_records.c.transaction_number == number, hub_records.c.event == "provision"
            ),
        )
        assert len(recorded) == 1, number


@pytest_twisted.ensureDeferred
async def test_permits_asked_again_are_answered_as_single_requests_asked_again(box: Any) -> None:
    """A provision request bundle sent again (the hub's retry) gets the first answers and
    changes nothing; its permits asked under another request are PermitReplayed line by line
    and recorded, as a ProvisionRequest asked again under another message would be, and
    provide nothing more; a bundle naming a 処理通番 twice is refused on the way in (the
    schema) and stores nothing."""
    setagaya = box.nodes["setagaya"].database
    hanako = fugo_of_hanako(box, SETAGAYA)
    numbers = tuple(f"{uuid.uuid4().int % 10**20:020d}" for _ in range(2))
    body = provision_request_bundle(box, (hanako, hanako), numbers=numbers)

    answer = await send_to_setagaya(box, body)
    assert [(line.transaction_number, line.code) for line in answer.lines] == [
        (numbers[0], None),
        (numbers[1], None),
    ]
    assert await send_to_setagaya(box, body) == answer
    replayed = await send_to_setagaya(
        box, provision_request_bundle(box, (hanako, hanako), numbers=numbers)
    )
    assert [line.code for line in replayed.lines] == ["PermitReplayed", "PermitReplayed"]

    assert read(setagaya, select(provision.c.status)) == [("provided",), ("provided",)]
    for number in numbers:
        assert [r[1] for r in records_of(setagaya, node_records, number)] == [
            "provided",
            "refused",
        ]
    sent = read(setagaya, select(node_outbox.c.body).where(node_outbox.c.kind == PROVISION_BUNDLE))
    (relayed,) = [messages.decode(body, messages.ProvisionBundle) for (body,) in sent]
    assert [p.transaction_number for p in relayed.provisions] == list(numbers)

    twice = f"{uuid.uuid4().int % 10**20:020d}"
    with pytest.raises(DeliveryRefused) as refused:
        await send_to_setagaya(
            box, provision_request_bundle(box, (hanako, hanako), numbers=(twice, twice))
        )
    assert refused.value.code == "XmlSchemaInvalid"
    assert records_of(setagaya, node_records, twice) == []


@pytest_twisted.ensureDeferred
async def test_queries_past_a_bundles_lines_travel_in_two_bundles_each_stored_once(
    any_box: Any,
) -> None:
    """501 queries submitted together (one more than a bundle's lines, as many as an `IN`
    list's values) travel in two QueryBundles and are each permitted, provided and recorded
    once at every party; submitted again under their keys they give the same queries and
    nothing new. On SQLite and PostgreSQL."""
    box = any_box
    meguro, setagaya = box.nodes["meguro"], box.nodes["setagaya"].database
    lines = [(premium_assessment(HANAKO_MEGURO), f"many-{n}") for n in range(MAX_BUNDLE_LINES + 1)]

    outcomes = await meguro.requester.submit_queries(lines, CARE_INSURANCE)
    query_ids = [o for o in outcomes if isinstance(o, str)]
    assert len(set(query_ids)) == len(lines)
    await wait_until(lambda: settled(box, query_ids), timeout=300)

    states = read(meguro.database, select(query.c.state, query.c.transaction_number))
    assert sorted({state for state, _ in states}) == ["provided"]
    numbers = {number for _, number in states}
    assert len(numbers) == len(lines)
    sent = read(meguro.database, select(node_outbox.c.kind))
    assert sent == [(QUERY_BUNDLE,), (QUERY_BUNDLE,)]
    hub_numbers = read(box.hub.database, select(hub_query.c.transaction_number))
    assert {number for (number,) in hub_numbers} == numbers
    provided = read(setagaya, select(provision.c.transaction_number))
    assert {number for (number,) in provided} == numbers
    for database, table in (
        (meguro.database, node_records),
        (box.hub.database, hub_records),
        (setagaya, node_records),
    ):
        recorded = read(database, select(table.c.transaction_number, table.c.event))
        assert len(recorded) == len(set(recorded)), "a record written twice"

    again = await meguro.requester.submit_queries(lines, CARE_INSURANCE)
    assert again == outcomes
    assert len(read(meguro.database, select(query.c.query_id))) == len(lines)
    assert len(read(meguro.database, select(node_outbox.c.id))) == 2


@pytest_twisted.ensureDeferred
async def test_bundles_with_lines_in_common_received_at_once_store_each_line_once(
    any_box: Any,
) -> None:
    """Bundles whose lines overlap, received at the same time (a requester's retry while
    the first is still being handled): each line is stored, numbered, recorded and permitted
    once, and both answers give a line the same 処理通番. On SQLite and PostgreSQL."""
    from twisted.internet.defer import gatherResults

    box = any_box
    ok = fugo_of_hanako(box, MEGURO)
    for _ in range(3):
        first, more = bundle_of(ok, ok, ok), bundle_of(ok, ok)
        second = replace(more, lines=(first.lines[2], more.lines[0], first.lines[1], more.lines[1]))
        answers = await gatherResults(
            [ensureDeferred(send_bundle(box, first)), ensureDeferred(send_bundle(box, second))]
        )
        numbered: dict[str, set[str]] = {}
        for answer in answers:
            assert [line.code for line in answer.lines] == [None] * len(answer.lines)
            for line in answer.lines:
                numbered.setdefault(line.message_id, set()).add(line.transaction_number)
        assert len(numbered) == 5
        assert all(len(numbers) == 1 for numbers in numbered.values()), numbered

    queries = read(box.hub.database, select(hub_query.c.requester_message_id))
    assert len(queries) == 15
    permitted = read(
        box.hub.database,
        select(hub_records.c.transaction_number).where(hub_records.c.event == "query"),
    )
    assert len(permitted) == len(set(permitted)) == 15
    bodies = read(
        box.hub.database,
        select(hub_outbox.c.body).where(hub_outbox.c.kind == PROVISION_REQUEST_BUNDLE),
    )
    # The permit bundles the hub queued (kept unsigned until sent): each line's 処理通番.
    permits = [
        str(element.text)
        for (body,) in bodies
        for element in etree.fromstring(body).iter("{*}TransactionNumber")
    ]
    assert sorted(permits) == sorted(number for (number,) in permitted)
