"""Idempotent submission: a back office that sends a query or a bulk-query file again under the
same Idempotency-Key gets the first one back, and nothing is asked twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from middleware.tables import bulk_query, bulk_query_line, node_outbox, query
from simulators.back_office import BackOfficeError
from tests.network import HANAKO_MEGURO, ICHIRO_MEGURO
from tests.test_bulk_query import file_of, line, until_ended
from tests.test_flow import ask_tax, count


@pytest_twisted.ensureDeferred
async def test_a_query_sent_again_under_its_key_is_the_same_query(
    box: Any, meguro_care: Any
) -> None:
    """The same query sent three times under one key is one query, sent to the hub once,
    provided once; each answer names the same query id."""
    answers = [await ask_tax(meguro_care, idempotency_key="resend-0001") for _ in range(3)]
    assert len({answer["query_id"] for answer in answers}) == 1
    (query_id,) = {answer["query_id"] for answer in answers}
    status = await meguro_care.wait_for_result(query_id)
    assert status["state"] == "provided"
    assert count(box, "meguro", query, query.c.idempotency_key == "resend-0001") == 1
    assert count(box, "meguro", node_outbox, node_outbox.c.reference == query_id) == 1
    assert count(box, "setagaya", node_outbox) == 1  # one provision, not three


@pytest_twisted.ensureDeferred
async def test_another_query_under_a_used_key_is_refused(box: Any, meguro_care: Any) -> None:
    """A different query under a key already used is IdempotencyKeyReused (422), and nothing
    is stored for it."""
    await ask_tax(meguro_care, idempotency_key="key-A")
    with pytest.raises(BackOfficeError) as refused:
        await ask_tax(meguro_care, person=ICHIRO_MEGURO, idempotency_key="key-A")
    assert refused.value.status == 422
    assert refused.value.code == "IdempotencyKeyReused"
    assert count(box, "meguro", query) == 1


@pytest_twisted.ensureDeferred
async def test_queries_without_a_key_or_under_different_keys_are_distinct(
    box: Any, meguro_care: Any
) -> None:
    """Without a key every submission is a new query, and so is each under a key of its own."""
    first = await ask_tax(meguro_care)
    second = await ask_tax(meguro_care)
    third = await ask_tax(meguro_care, idempotency_key='"quoted-key"')
    fourth = await ask_tax(meguro_care, idempotency_key="quoted-key")  # the same key, bare
    assert len({first["query_id"], second["query_id"], third["query_id"]}) == 3
    assert fourth["query_id"] == third["query_id"]
    assert count(box, "meguro", query, query.c.integrated_address_number == HANAKO_MEGURO) == 3


@pytest_twisted.ensureDeferred
async def test_a_malformed_key_is_a_bad_request(box: Any, meguro_care: Any) -> None:
    """A key with spaces, non-ASCII characters or more than 64 characters is BadRequest."""
    for key in ("two words", "x" * 65, ""):
        with pytest.raises(BackOfficeError) as refused:
            await ask_tax(meguro_care, idempotency_key=key)
        assert refused.value.code == "BadRequest", key
    assert count(box, "meguro", query) == 0


@pytest_twisted.ensureDeferred
async def test_a_bulk_query_file_posted_again_under_its_key_is_the_same_bulk_query(
    box: Any, meguro_care: Any
) -> None:
    """The same file posted twice under one key is one bulk query with its lines stored once;
    the second answer is the first bulk query as it is now. Another file under the key is
    IdempotencyKeyReused."""
    data = file_of(line(), line(統合宛名番号=ICHIRO_MEGURO))
    first = json.loads(
        await meguro_care.send_file("/bulk-queries", data, "text/csv", idempotency_key="bulk-1")
    )
    await until_ended(box, first["bulk_query_id"])
    again = json.loads(
        await meguro_care.send_file("/bulk-queries", data, "text/csv", idempotency_key="bulk-1")
    )
    assert again == {**first, "state": "ended"}
    assert count(box, "meguro", bulk_query) == 1
    assert count(box, "meguro", bulk_query_line) == 2
    assert count(box, "meguro", query) == 2
    with pytest.raises(BackOfficeError) as refused:
        await meguro_care.send_file(
            "/bulk-queries", file_of(line()), "text/csv", idempotency_key="bulk-1"
        )
    assert refused.value.code == "IdempotencyKeyReused"
    assert count(box, "meguro", bulk_query) == 1


@pytest_twisted.ensureDeferred
async def test_a_replica_file_sent_again_under_its_key_gets_the_same_answer(
    box: Any, meguro_care: Any
) -> None:
    """A 副本 file posted twice under one key: the second answer is the first one, byte for
    byte (not RecordIdExists for every entry), and its records are stored once; another
    file under the key is IdempotencyKeyReused, and changes nothing."""
    from middleware.tables import replica_record
    from tests.test_replica_file import entry, read_result, replica_document

    document = replica_document(entry("RESEND-0001"), entry("RESEND-0002"))
    answers = [
        await meguro_care.send(
            "POST", "/replica-files", document, "application/xml", idempotency_key="file-0001"
        )
        for _ in range(2)
    ]
    assert answers[0].status == answers[1].status == 200
    assert answers[0].body == answers[1].body
    assert read_result(answers[1].body).codes() == {"RESEND-0001": None, "RESEND-0002": None}
    assert count(box, "meguro", replica_record, replica_record.c.record_id.like("RESEND-%")) == 2
    other = replica_document(entry("RESEND-0003"))
    refused = await meguro_care.send(
        "POST", "/replica-files", other, "application/xml", idempotency_key="file-0001"
    )
    assert refused.status == 422
    assert json.loads(refused.body)["error"]["code"] == "IdempotencyKeyReused"
    assert count(box, "meguro", replica_record, replica_record.c.record_id == "RESEND-0003") == 0
