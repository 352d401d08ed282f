"""Query bundles: a requester's queries of one shape about several persons in one message
(docs/protocol.md, "Query bundles"), each line handled by the hub as the QueryRequest it
stands for, answered and recorded line by line, all in one transaction."""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted
from sqlalchemy import func, select

from codes.errors import RenkeiError
from crypto.pki import PkiLayout
from middleware import messages
from middleware.network import HUB, PROVISION_REQUEST, QUERY_BUNDLE
from middleware.queries import QuerySubmission
from middleware.tables import hub_outbox, hub_query, hub_records, query
from simulators.network import jukinet
from simulators.network.fugo import FugoCipher, id_code
from tests.network import (
    CARE_AFFAIR,
    CARE_INSURANCE,
    HANAKO_INDIVIDUAL_NUMBER,
    HANAKO_MEGURO,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)
from tests.test_refusals import send


def fugo_of_hanako(box: Any, institution: str) -> str:
    """Hanako's 符号 as the hub issues it to ``institution``."""
    layout = PkiLayout(box.config.pki)
    resident_code = box.hub.database.run_blocking(
        jukinet.resident_code_of, HANAKO_INDIVIDUAL_NUMBER
    )
    cipher = FugoCipher(layout.hub_fugo_key().read_bytes())
    return cipher.issue(id_code(resident_code, layout.hub_idcode_key().read_bytes()), institution)


def bundle_of(*fugos: str) -> messages.QueryBundle:
    """Meguro's premium assessment asking Setagaya's local tax, a line per 符号."""
    return messages.QueryBundle(
        message_id=str(uuid.uuid4()),
        affair=CARE_AFFAIR,
        procedure=PREMIUM_ASSESSMENT,
        information_name=TAX_INFORMATION,
        provider=SETAGAYA,
        lines=tuple(
            messages.QueryBundleLine(message_id=str(uuid.uuid4()), requester_fugo=fugo)
            for fugo in fugos
        ),
    )


async def send_bundle(box: Any, bundle: messages.QueryBundle) -> messages.QueryBundleAnswer:
    answer: messages.QueryBundleAnswer = await send(
        box, MEGURO, HUB, QUERY_BUNDLE, messages.encode(bundle), messages.QueryBundleAnswer
    )
    return answer


def hub_queries(box: Any) -> list[tuple[str, str, str | None]]:
    """The hub's queries: the requester's message id, the 処理通番 and the refusal's code."""
    rows = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(
                hub_query.c.requester_message_id,
                hub_query.c.transaction_number,
                hub_query.c.error_code,
            ).order_by(hub_query.c.id)
        ).all()
    )
    return [tuple(row) for row in rows]


def query_records(box: Any) -> list[tuple[str, str, str | None]]:
    """The hub's records of queries: 処理通番, status, code."""
    rows = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(hub_records.c.transaction_number, hub_records.c.status, hub_records.c.error_code)
            .where(hub_records.c.event == "query")
            .order_by(hub_records.c.seq)
        ).all()
    )
    return [tuple(row) for row in rows]


def provision_requests(box: Any) -> int:
    """The provision requests the hub queued (a permitted query's permit, for the provider)."""
    return int(
        box.hub.database.run_blocking(
            lambda connection: connection.execute(
                select(func.count())
                .select_from(hub_outbox)
                .where(hub_outbox.c.kind == PROVISION_REQUEST)
            ).scalar_one()
        )
    )


@pytest_twisted.ensureDeferred
async def test_the_hub_answers_a_bundle_line_by_line(box: Any) -> None:
    """A line the hub refuses (a 符号 issued to another institution) is answered with its code
    and 処理通番 and recorded; the other line is permitted and its permit queued."""
    bundle = bundle_of(fugo_of_hanako(box, MEGURO), fugo_of_hanako(box, SETAGAYA))
    answer = await send_bundle(box, bundle)

    assert answer.message_id == bundle.message_id
    permitted, refused = answer.lines
    assert (permitted.message_id, permitted.code) == (bundle.lines[0].message_id, None)
    assert (refused.message_id, refused.code) == (bundle.lines[1].message_id, "FugoInvalid")
    assert refused.message_en and refused.message_ja
    assert hub_queries(box) == [
        (bundle.lines[0].message_id, permitted.transaction_number, None),
        (bundle.lines[1].message_id, refused.transaction_number, "FugoInvalid"),
    ]
    assert query_records(box) == [
        (permitted.transaction_number, "permitted", None),
        (refused.transaction_number, "refused", "FugoInvalid"),
    ]
    assert provision_requests(box) == 1  # the permitted line's


@pytest_twisted.ensureDeferred
async def test_a_bundle_sent_again_gets_the_first_answers_and_changes_nothing(box: Any) -> None:
    """The requester's retry of a bundle (its answer lost) is answered as the first time: the
    same 処理通番 per line, no new query, record or message."""
    bundle = bundle_of(fugo_of_hanako(box, MEGURO), fugo_of_hanako(box, SETAGAYA))
    first = await send_bundle(box, bundle)
    queries, records = hub_queries(box), query_records(box)

    assert await send_bundle(box, bundle) == first
    assert (hub_queries(box), query_records(box)) == (queries, records)
    assert provision_requests(box) == 1


def premium_assessment(person: str = HANAKO_MEGURO) -> QuerySubmission:
    return QuerySubmission(
        integrated_address_number=person,
        procedure=PREMIUM_ASSESSMENT,
        information_name=TAX_INFORMATION,
        provider=SETAGAYA,
    )


@pytest_twisted.ensureDeferred
async def test_queries_submitted_together_end_each_with_its_own_result(box: Any) -> None:
    """Submissions made together are stored and sent as one bundle; each query ends with its
    own result, a submission refused here (a person without a 符号) stores nothing, and the
    same submissions sent again under the same keys give the same queries."""
    meguro = box.nodes["meguro"]
    asked = [
        (premium_assessment(), "key-1"),
        (premium_assessment("000000000099999"), "key-2"),  # no 符号 for this person
        (premium_assessment(), "key-3"),
    ]
    outcomes = await meguro.requester.submit_queries(asked, CARE_INSURANCE)

    first, unknown, third = outcomes
    assert isinstance(first, str) and isinstance(third, str) and first != third
    assert isinstance(unknown, RenkeiError) and unknown.code == "FugoNotAcquired"
    for query_id in (first, third):
        status = await meguro.requester.wait_for_end(query_id, 30.0, CARE_INSURANCE)
        assert (status.state, status.error_code) == ("provided", None)
        assert status.transaction_number is not None
    assert len({number for _, number, _ in hub_queries(box)}) == 2  # a 処理通番 each

    again = await meguro.requester.submit_queries(asked, CARE_INSURANCE)
    assert again[0] == first and again[2] == third
    stored = meguro.database.run_blocking(
        lambda connection: connection.execute(select(func.count()).select_from(query)).scalar_one()
    )
    assert stored == 2
