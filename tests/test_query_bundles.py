"""Query bundles: a requester's queries of one shape about several persons in one message
(docs/protocol.md, "Query bundles"), each line handled by the hub as the QueryRequest it
stands for, answered and recorded line by line, all in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select

from codes.errors import RenkeiError
from crypto.pki import PkiLayout
from crypto.xmlsig import Signer
from middleware import messages
from middleware.clock import utc_now
from middleware.network import (
    HUB,
    PROVISION_BUNDLE,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
    QUERY_BUNDLE,
    DeliveryRefused,
)
from middleware.queries import QuerySubmission
from middleware.tables import (
    hub_outbox,
    hub_query,
    hub_records,
    node_records,
    provision,
    query,
    refused_request,
)
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


def provision_requests(box: Any) -> list[str]:
    """The kinds of the provision requests the hub queued (permits, for the provider)."""
    kinds = box.hub.database.run_blocking(
        lambda connection: (
            connection.execute(
                select(hub_outbox.c.kind).where(
                    hub_outbox.c.kind.in_((PROVISION_REQUEST, PROVISION_REQUEST_BUNDLE))
                )
            )
            .scalars()
            .all()
        )
    )
    return list(kinds)


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
    # The permitted line's permit, in a bundle of its own: Setagaya is a node of renkei's.
    assert provision_requests(box) == [PROVISION_REQUEST_BUNDLE]


@pytest_twisted.ensureDeferred
async def test_a_bundle_sent_again_gets_the_first_answers_and_changes_nothing(box: Any) -> None:
    """The requester's retry of a bundle (its answer lost) is answered as the first time: the
    same 処理通番 per line, no new query, record or message."""
    bundle = bundle_of(fugo_of_hanako(box, MEGURO), fugo_of_hanako(box, SETAGAYA))
    first = await send_bundle(box, bundle)
    queries, records = hub_queries(box), query_records(box)

    assert await send_bundle(box, bundle) == first
    assert (hub_queries(box), query_records(box)) == (queries, records)
    assert provision_requests(box) == [PROVISION_REQUEST_BUNDLE]


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


def provision_request_bundle(
    box: Any,
    fugos: tuple[str, ...],
    *,
    signer: Signer | None = None,
    message_id: str = "",
    numbers: tuple[str, ...] = (),
) -> bytes:
    """A provision request bundle as the hub would send it to Setagaya, a permit per 符号
    (under ``numbers``, the 処理通番 of each, if given; otherwise new ones)."""
    from twisted.internet import reactor

    layout = PkiLayout(box.config.pki)
    now = utc_now(reactor)
    bundle = messages.PermitBundle(
        requester=MEGURO,
        provider=SETAGAYA,
        affair=CARE_AFFAIR,
        procedure=PREMIUM_ASSESSMENT,
        information_name=TAX_INFORMATION,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        lines=tuple(
            messages.PermitBundleLine(transaction_number=number, provider_fugo=fugo)
            for number, fugo in zip(
                numbers or [f"{uuid.uuid4().int % 10**20:020d}" for _ in fugos], fugos, strict=True
            )
        ),
    )
    signer = signer or Signer(layout.hub_signing().load())
    return messages.encode(
        messages.ProvisionRequestBundle(
            message_id=message_id or str(uuid.uuid4()),
            permit_element=signer.sign(messages.to_element(bundle)),
            route=messages.Route(
                requester=MEGURO,
                encryption_certificate=layout.institution_encryption(MEGURO)
                .load()
                .certificate.public_bytes(Encoding.DER),
            ),
        )
    )


async def send_to_setagaya(box: Any, body: bytes) -> messages.ProvisionRequestBundleAnswer:
    answer: messages.ProvisionRequestBundleAnswer = await send(
        box,
        HUB,
        SETAGAYA,
        PROVISION_REQUEST_BUNDLE,
        body,
        messages.ProvisionRequestBundleAnswer,
    )
    return answer


def setagaya_provisions(box: Any) -> list[tuple[str, str]]:
    """Setagaya's provisions (処理通番, status) and refused requests (処理通番, code)."""
    database = box.nodes["setagaya"].database

    def read(connection: Any) -> list[tuple[str, str]]:
        provided = connection.execute(select(provision.c.transaction_number, provision.c.status))
        refused = connection.execute(
            select(refused_request.c.transaction_number, refused_request.c.error_code)
        )
        return sorted(map(tuple, [*provided, *refused]))

    return list(database.run_blocking(read))


@pytest_twisted.ensureDeferred
async def test_a_provider_answers_each_permit_of_a_bundle(box: Any) -> None:
    """Each permit of a bundle is answered as its own ProvisionRequest would be: a person the
    provider knows is provided, a 符号 it does not know is refused (FugoUnknown, recorded)
    without refusing the other; the same request again changes nothing."""
    unknown = "0123456789ABCDEF0123456789ABCDEF"
    body = provision_request_bundle(box, (fugo_of_hanako(box, SETAGAYA), unknown))
    answer = await send_to_setagaya(box, body)

    known_line, unknown_line = answer.lines
    assert known_line.code is None
    assert (unknown_line.code, bool(unknown_line.message_ja)) == ("FugoUnknown", True)
    assert setagaya_provisions(box) == sorted(
        [
            (known_line.transaction_number, "provided"),
            (unknown_line.transaction_number, "FugoUnknown"),
        ]
    )
    assert await send_to_setagaya(box, body) == answer
    assert len(setagaya_provisions(box)) == 2


@pytest_twisted.ensureDeferred
async def test_a_provider_refuses_a_bundle_signed_by_another_key_whole(
    box: Any, tmp_path: Any
) -> None:
    """A permit bundle not signed by the hub's pinned key is refused whole
    (PermitSignatureInvalid), recorded once, and nothing is provided."""
    from crypto.pki import InstitutionEntry, init_pki

    init_pki(tmp_path / "other", [InstitutionEntry(MEGURO, ())])
    other = PkiLayout(tmp_path / "other")
    body = provision_request_bundle(
        box, (fugo_of_hanako(box, SETAGAYA),), signer=Signer(other.hub_signing().load())
    )
    with pytest.raises(DeliveryRefused) as refused:
        await send_to_setagaya(box, body)
    assert refused.value.code == "PermitSignatureInvalid"
    assert setagaya_provisions(box) == [(None, "PermitSignatureInvalid")]


def records_at(database: Any, table: Any) -> int:
    return int(
        database.run_blocking(
            lambda connection: connection.execute(
                select(func.count()).select_from(table)
            ).scalar_one()
        )
    )


@pytest_twisted.ensureDeferred
async def test_provision_bundles_sent_again_change_nothing_and_unknown_lines_are_refused(
    box: Any,
) -> None:
    """Provisions travel in bundles (provider → hub → requester). A bundle sent again (its
    answer lost) is taken line by line as the first time — nothing relayed, stored or
    recorded twice — and a provision of a transaction the receiver does not know is refused
    alone (UnknownTransaction)."""
    meguro = box.nodes["meguro"]
    asked = [(premium_assessment(), f"again-{n}") for n in range(2)]
    query_ids = await meguro.requester.submit_queries(asked, CARE_INSURANCE)
    numbers = []
    for query_id in query_ids:
        assert isinstance(query_id, str)
        status = await meguro.requester.wait_for_end(query_id, 30.0, CARE_INSURANCE)
        assert status.state == "provided"
        numbers.append(status.transaction_number)
    kinds = box.hub.database.run_blocking(
        lambda connection: connection.execute(select(hub_outbox.c.kind)).scalars().all()
    )
    assert sorted(kinds) == [PROVISION_BUNDLE, PROVISION_REQUEST_BUNDLE]
    delivered = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(hub_outbox.c.body).where(hub_outbox.c.kind == PROVISION_BUNDLE)
        ).scalar_one()
    )
    relayed = messages.decode(delivered, messages.ProvisionBundle)
    assert sorted(p.transaction_number for p in relayed.provisions) == sorted(numbers)
    before = (records_at(box.hub.database, hub_records), records_at(meguro.database, node_records))

    unknown = replace(relayed.provisions[0], transaction_number="20260101000000000999")
    again = replace(relayed, provisions=(*relayed.provisions, unknown))
    to_meguro: messages.ProvisionBundleAnswer = await send(
        box, HUB, MEGURO, PROVISION_BUNDLE, messages.encode(again), messages.ProvisionBundleAnswer
    )
    assert [line.code for line in to_meguro.lines] == [None, None, "UnknownTransaction"]

    from_setagaya = replace(
        again,
        provisions=tuple(replace(p, query_message_id=None) for p in again.provisions),
    )
    to_hub: messages.ProvisionBundleAnswer = await send(
        box,
        SETAGAYA,
        HUB,
        PROVISION_BUNDLE,
        messages.encode(from_setagaya),
        messages.ProvisionBundleAnswer,
    )
    assert [line.code for line in to_hub.lines] == [None, None, "UnknownTransaction"]
    after = (records_at(box.hub.database, hub_records), records_at(meguro.database, node_records))
    assert after == before
    for query_id in query_ids:
        assert isinstance(query_id, str)
        status = await meguro.requester.query_status(query_id, CARE_INSURANCE)
        assert status.state == "provided"


def test_a_fault_on_a_bundle_counts_for_each_of_its_lines() -> None:
    """A fault that hits a bundle hits every line it carries: the hit is found under each
    line's 処理通番 (or, for a query bundle, each line's query id), as for a single message."""
    from twisted.internet.task import Clock

    from simulators.faults import Fault, FaultPlan, names_of

    bundle = bundle_of("0" * 32, "1" * 32)
    query_ids = [line.message_id for line in bundle.lines]
    provisions = messages.ProvisionBundle(
        message_id=str(uuid.uuid4()),
        provisions=tuple(
            messages.Provision(message_id=str(uuid.uuid4()), transaction_number=n, status="error")
            for n in ("20261207000000000001", "20261207000000000002")
        ),
    )
    assert names_of(QUERY_BUNDLE, messages.encode(bundle)) == tuple(query_ids)
    assert names_of(PROVISION_REQUEST, messages.encode(bundle)) == ()  # not a bundle

    plan = FaultPlan(seed=1, clock=Clock())
    plan.add(Fault(kind="drop", operation=QUERY_BUNDLE))
    plan.add(Fault(kind="drop", operation=PROVISION_BUNDLE))
    plan.draw(MEGURO, HUB, QUERY_BUNDLE, messages.encode(bundle))
    plan.draw(SETAGAYA, HUB, PROVISION_BUNDLE, messages.encode(provisions))
    assert [hit.fault for hit in plan.hits_of("20269999000000000000", query_ids[1:])] == ["f1"]
    assert [hit.fault for hit in plan.hits_of("20261207000000000002")] == ["f2"]
    assert plan.hits_of("20261207000000000003", ["not-a-line"]) == []


def test_records_written_together_keep_their_order_and_chain(box: Any) -> None:
    """Records appended inside `records_together` are written when it ends, in their order,
    as one extension of the hash chain that verifies; an error inside writes none."""
    from datetime import UTC, datetime

    from middleware.records import RecordEntry, verify_chain
    from middleware.tables import hub_record_head

    hub = box.hub
    now = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

    def entry(n: int) -> RecordEntry:
        return RecordEntry(
            event="query", status="permitted", transaction_number=f"{n:020d}", requester=MEGURO
        )

    def together(connection: Any) -> int:
        with hub.records_together(connection):
            hub.record(connection, now, [entry(1)])
            hub.record(connection, now, [entry(2), entry(3)])
            written = connection.execute(select(func.count()).select_from(hub_records))
            assert written.scalar_one() == 0  # not yet
        numbers = connection.execute(
            select(hub_records.c.transaction_number).order_by(hub_records.c.seq)
        )
        assert [int(n) for n in numbers.scalars()] == [1, 2, 3]
        return 3

    def failing(connection: Any) -> None:
        with hub.records_together(connection):
            hub.record(connection, now, [entry(4)])
            raise RuntimeError("the bundle fails")

    hub.database.run_blocking(together)
    with pytest.raises(RuntimeError):
        hub.database.run_blocking(failing)
    assert records_at(hub.database, hub_records) == 3
    assert hub.database.run_blocking(verify_chain, hub_records, hub_record_head) is None


@pytest_twisted.ensureDeferred
async def test_a_bundle_with_lines_answered_before_answers_those_as_first_and_the_rest_anew(
    box: Any,
) -> None:
    """A bundle whose lines were partly received before (in an earlier bundle) answers those
    lines with their first 処理通番 and changes nothing of them; its new lines, permitted or
    refused, get new 処理通番 in their order, and their records follow that order on the chain."""
    from middleware.records import verify_chain
    from middleware.tables import hub_record_head

    ok, wrong = fugo_of_hanako(box, MEGURO), fugo_of_hanako(box, SETAGAYA)
    first = bundle_of(ok, wrong)
    first_answer = await send_bundle(box, first)
    more = bundle_of(ok, wrong)
    mixed = replace(
        more,
        lines=(first.lines[0], more.lines[0], first.lines[1], more.lines[1]),
    )
    answer = await send_bundle(box, mixed)

    old_ok, new_ok, old_wrong, new_wrong = answer.lines
    assert (old_ok.transaction_number, old_ok.code) == (
        first_answer.lines[0].transaction_number,
        None,
    )
    assert (old_wrong.transaction_number, old_wrong.code) == (
        first_answer.lines[1].transaction_number,
        "FugoInvalid",
    )
    assert (new_ok.code, new_wrong.code) == (None, "FugoInvalid")
    assert new_ok.transaction_number < new_wrong.transaction_number
    assert hub_queries(box) == [
        (first.lines[0].message_id, old_ok.transaction_number, None),
        (first.lines[1].message_id, old_wrong.transaction_number, "FugoInvalid"),
        (more.lines[0].message_id, new_ok.transaction_number, None),
        (more.lines[1].message_id, new_wrong.transaction_number, "FugoInvalid"),
    ]
    assert query_records(box) == [
        (old_ok.transaction_number, "permitted", None),
        (old_wrong.transaction_number, "refused", "FugoInvalid"),
        (new_ok.transaction_number, "permitted", None),
        (new_wrong.transaction_number, "refused", "FugoInvalid"),
    ]
    assert box.hub.database.run_blocking(verify_chain, hub_records, hub_record_head) is None


def test_a_line_met_twice_in_one_bundle_is_the_retry_of_the_first(box: Any) -> None:
    """A bundle naming the same line twice (the schema refuses it on the network; the hub's
    own handling does not count on that) stores one query: the second is its retry, with the
    same 処理通番 and nothing new."""
    line = bundle_of(fugo_of_hanako(box, MEGURO)).lines[0]
    bundle = replace(bundle_of(), lines=(line, line))
    now = utc_now(box.clock)
    record = box.hub._record_query_bundle  # private: below the schema, which refuses a repeat
    results = box.hub.database.run_blocking(record, MEGURO, bundle, now)

    (number, outgoing, refusal, new), (again, resent, refused_again, new_again) = results
    assert (outgoing is not None, refusal, new) == (True, None, True)
    assert (again, resent, refused_again, new_again) == (number, None, None, False)
    assert hub_queries(box) == [(line.message_id, number, None)]
    assert query_records(box) == [(number, "permitted", None)]


@pytest_twisted.ensureDeferred
async def test_a_key_met_twice_among_queries_submitted_together_is_a_resend(box: Any) -> None:
    """Queries submitted together are stored as if one after the other: an idempotency key met
    again among them gives the first query's id (the same submission) or IdempotencyKeyReused
    (another), and one stored before gives its query; only the new ones are stored."""
    meguro = box.nodes["meguro"]
    (before,) = await meguro.requester.submit_queries(
        [(premium_assessment(), "stored-before")], CARE_INSURANCE
    )
    other = premium_assessment("000000000099999")  # another person
    asked = [
        (premium_assessment(), "twice"),
        (premium_assessment(), "twice"),
        (premium_assessment(), "stored-before"),
        (other, "twice"),
    ]
    first, again, earlier, reused = await meguro.requester.submit_queries(asked, CARE_INSURANCE)

    assert isinstance(first, str) and again == first and earlier == before
    assert isinstance(reused, RenkeiError) and reused.code == "IdempotencyKeyReused"
    stored = meguro.database.run_blocking(
        lambda connection: connection.execute(select(func.count()).select_from(query)).scalar_one()
    )
    assert stored == 2


class StatementCount:
    """The SQL statements run by some work (`counting`), an executemany counting once."""

    def __init__(self) -> None:
        import threading

        self.count = 0
        self._inside = threading.local()

    def counting(self, work: Any) -> Any:
        """``work``, its statements counted (on whatever thread it runs)."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._inside.on = True
            try:
                return work(*args, **kwargs)
            finally:
                self._inside.on = False

        return counted

    def _executed(self, *_: Any) -> None:
        if getattr(self._inside, "on", False):
            self.count += 1

    def __enter__(self) -> StatementCount:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._executed)
        return self

    def __exit__(self, *_: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "before_cursor_execute", self._executed)


@pytest_twisted.ensureDeferred
async def test_a_bundle_costs_as_many_statements_whatever_its_lines(
    box: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each party handles a bundle's lines with a few statements for all of them (one read
    for what each line needs, one executemany for what each writes), not some for each line:
    a bundle of 8 lines runs as many statements as one of 2, at the requester storing its
    queries, at the hub permitting them and marking them delivered, and at the provider
    answering them."""
    meguro, setagaya = box.nodes["meguro"], box.nodes["setagaya"]
    now = utc_now(box.clock)

    def store(lines: int) -> int:
        checked = [
            (index, premium_assessment(), CARE_AFFAIR, f"{lines}-{index}") for index in range(lines)
        ]
        with StatementCount() as counted:
            create = counted.counting(meguro.requester._create_queries)  # private: its statements
            meguro.database.run_blocking(create, checked, CARE_INSURANCE, now)
        return counted.count

    def permit(lines: int) -> int:
        bundle = bundle_of(*[fugo_of_hanako(box, MEGURO)] * lines)
        with StatementCount() as counted:
            record = counted.counting(box.hub._record_query_bundle)  # private: its statements
            box.hub.database.run_blocking(record, MEGURO, bundle, now)
        return counted.count

    def deliver(lines: int) -> int:
        numbers = [f"{n:020d}" for n in range(lines)]
        with StatementCount() as counted:
            settle = counted.counting(box.hub._set_states)  # private: its statements
            box.hub.database.run_blocking(settle, numbers, "permitted", "delivered")
        return counted.count

    async def provide(lines: int) -> int:
        body = provision_request_bundle(box, (fugo_of_hanako(box, SETAGAYA),) * lines)
        with StatementCount() as counted, monkeypatch.context() as patched:
            for name in ("_prepare_lines", "_store_lines"):
                work = getattr(setagaya.provider, name)
                patched.setattr(setagaya.provider, name, counted.counting(work))
            answer = await send_to_setagaya(box, body)
        assert [line.code for line in answer.lines] == [None] * lines
        return counted.count

    # Once first: the first records of a party also make its chain's head.
    store(1), permit(1), await provide(1)
    assert store(2) == store(8)
    assert permit(2) == permit(8)
    assert deliver(2) == deliver(8)
    assert await provide(2) == await provide(8)
