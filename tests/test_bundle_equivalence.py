"""A bundle's lines (docs/protocol.md §1c) leave what the same lines sent as single messages
leave: the same queries, states, provisions, holds and provision records at every party, the
same 業務統計, records in the order of the lines; and a line met twice in one bundle is
handled once, as a single message sent twice is."""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted
from sqlalchemy import insert, select

from codes.errors import RenkeiError
from crypto.pki import PkiLayout
from middleware import business_statistics, messages, persons
from middleware.clock import utc_now
from middleware.network import PROVISION_BUNDLE
from middleware.outbox import PENDING
from middleware.queries import QuerySubmission
from middleware.tables import (
    held_provision,
    hub_outbox,
    hub_query,
    hub_records,
    node_outbox,
    node_records,
    provision,
    query,
    refused_request,
)
from simulators.network import jukinet
from simulators.network.fugo import FugoCipher, id_code
from simulators.network.hub import PERMITTED, transaction_number
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
)
from tests.test_business_statistics import FLAGGED_TAX_RECORD, TARO_MEGURO, client_of
from tests.test_flow import wait_until
from tests.test_query_bundles import fugo_of_hanako

ICHIRO_INDIVIDUAL_NUMBER = "345678901234"
ICHIRO_SETAGAYA = "000000000020003"  # linked at Setagaya here: known there, without records
STRANGER_MEGURO = "000000000010009"  # a 符号 of a resident Setagaya does not know
FORGED_MEGURO = "000000000010008"  # a 符号 issued to Setagaya: the hub refuses it
NOBODY_MEGURO = "000000000099999"  # registered nowhere: no 符号, refused at Meguro

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


def premium_assessment(person: str) -> QuerySubmission:
    return QuerySubmission(
        integrated_address_number=person,
        procedure=PREMIUM_ASSESSMENT,
        information_name=TAX_INFORMATION,
        provider=SETAGAYA,
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
async def test_a_mixed_bundle_leaves_what_its_lines_sent_alone_leave(box: Any) -> None:
    """The same lines (provided, held, no data, refused by the provider, refused by the hub,
    refused here, a resend, the same person twice) submitted one by one, then together (one
    QueryBundle, one PermitBundle, one ProvisionBundle): each line of the bundle leaves the
    same query, hub row, provision or refusal or hold, and records at each party as its
    single counterpart; 業務統計 count the bundle's lines as they counted the single ones;
    and the bundle's records are in the order of its lines."""
    await persons_of_every_kind(box)
    meguro = box.nodes["meguro"]

    alone = await singly(box, asked("alone"))
    await wait_until(lambda: settled(box, [o for o in alone if isinstance(o, str)]))
    counted_alone = statistics(box)
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
        party: {key: 2 * n for key, n in figures.items()} for party, figures in counted_alone.items()
    }

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

    def add(connection: Any) -> str:
        inserted = connection.execute(
            insert(hub_query).values(
                requester=requester,
                requester_message_id=str(uuid.uuid4()),
                provider=SETAGAYA,
                affair=CARE_AFFAIR,
                procedure=PREMIUM_ASSESSMENT,
                information_name=TAX_INFORMATION,
                state=PERMITTED,
                received_at=now,
            )
        ).inserted_primary_key
        assert inserted is not None
        number = transaction_number(now, int(inserted[0]))
        connection.execute(
            hub_query.update()
            .where(hub_query.c.id == inserted[0])
            .values(transaction_number=number)
        )
        return number

    return str(hub.database.run_blocking(add))


def no_data(number: str) -> messages.Provision:
    return messages.Provision(message_id=str(uuid.uuid4()), transaction_number=number, status="no_data")


def test_a_provision_met_twice_in_one_bundle_is_relayed_once(portal_box: Any) -> None:
    """A provider's bundle naming a 処理通番 twice is taken as that provision sent twice
    alone: relayed and recorded once, the second left as a retry; for a requester that is a
    node of renkei's (relayed in a ProvisionBundle) and for one that is not (マイナポータル,
    relayed as a Provision)."""
    hub = portal_box.hub
    now = utc_now(portal_box.clock)
    to_meguro, to_portal = open_query(hub, MEGURO, now), open_query(hub, PORTAL, now)
    bundle = messages.ProvisionBundle(
        message_id=str(uuid.uuid4()),
        provisions=(no_data(to_meguro), no_data(to_meguro), no_data(to_portal), no_data(to_portal)),
    )

    results, outgoing = hub.database.run_blocking(
        hub._record_provision_bundle, SETAGAYA, bundle, now
    )

    assert results == [(MEGURO, None), (None, None), (PORTAL, None), (None, None)]
    relayed = {}
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
        provisions = read(
            hub.database,
            select(hub_records.c.seq).where(
                hub_records.c.transaction_number == number, hub_records.c.event == "provision"
            ),
        )
        assert len(provisions) == 1, number
