"""Per-system authorization: each back-office system of a node sees and does only its own.

Setagaya has two systems in the test network: local-tax (queries under the local-tax 事務,
keeps the 副本 of 地方税関係情報) and care-insurance (queries under the care-insurance 事務,
keeps the 副本 of 介護保険 information). Neither may read, follow or touch the other's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select

from adapters.care_insurance.replica_file import build_replica_file, refused_codes
from middleware.replica import ReplicaRecord
from middleware.tables import audit_record, replica_record
from simulators.back_office import BackOfficeClient, BackOfficeError
from tests.network import (
    CARE_CERTIFICATION,
    CARE_INFORMATION,
    CARE_INSURANCE,
    LOCAL_TAX,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)

HANAKO_SETAGAYA = "000000000020001"
CARE_RECORD = {
    "record_id": "SET-KAIGO-0101-0001",
    "integrated_address_number": HANAKO_SETAGAYA,
    "information_name": CARE_INFORMATION,
    "data_set": "0101",
    "items": {"TK00000401010001": "0001312801", "TK00000401010003": "2024-04-01"},
}


@pytest_twisted.async_yield_fixture
async def setagaya(box: Any) -> AsyncIterator[dict[str, BackOfficeClient]]:
    """Setagaya's two back-office systems, each with its own client certificate."""
    from twisted.internet import reactor

    institution = box.config.institution("setagaya")
    clients = {
        system: BackOfficeClient(reactor, box.config, institution, system)
        for system in (LOCAL_TAX, CARE_INSURANCE)
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


def audited_refusals(box: Any, name: str) -> list[dict[str, Any]]:
    """The back-office refusals in a node's audit log: actor, request and detail."""
    rows = box.nodes[name].database.run_blocking(
        lambda connection: connection.execute(
            select(audit_record).where(audit_record.c.action == "back_office_refused")
        ).all()
    )
    return [
        {"actor": row.actor, "target": row.target, "detail": json.loads(row.detail)} for row in rows
    ]


async def care_query(client: BackOfficeClient) -> str:
    """Setagaya's care-insurance system asks Meguro for Hanako's certification."""
    submitted = await client.submit_query(
        integrated_address_number=HANAKO_SETAGAYA,
        procedure=CARE_CERTIFICATION,
        information_name=CARE_INFORMATION,
        provider=MEGURO,
    )
    return str(submitted["query_id"])


@pytest_twisted.ensureDeferred
async def test_another_systems_query_is_unknown_even_while_long_polling(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """Local-tax gets 404 UnknownQuery for care-insurance's query (also with ?wait=), with
    the same answer as for an id that never existed; care-insurance reads it."""
    query_id = await care_query(setagaya[CARE_INSURANCE])
    status = await setagaya[CARE_INSURANCE].wait_for_result(query_id)
    assert status["state"] == "provided" and status["result"]["records"]
    for wait in (0, 5):
        with pytest.raises(BackOfficeError) as refused:
            await setagaya[LOCAL_TAX].query_status(query_id, wait=wait)
        assert (refused.value.status, refused.value.code) == (404, "UnknownQuery")
        assert "被保険者" not in json.dumps(refused.value.error, ensure_ascii=False)
    with pytest.raises(BackOfficeError) as never:
        await setagaya[LOCAL_TAX].query_status("00000000-0000-0000-0000-000000000000")
    assert {key for key in never.value.error} == {key for key in refused.value.error}


@pytest_twisted.ensureDeferred
async def test_long_poll_of_another_systems_query_answers_at_once(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """A long poll on another system's query is refused at once, not after the wait."""
    import time

    query_id = await care_query(setagaya[CARE_INSURANCE])
    started = time.monotonic()
    with pytest.raises(BackOfficeError):
        await setagaya[LOCAL_TAX].query_status(query_id, wait=30)
    assert time.monotonic() - started < 10


@pytest_twisted.ensureDeferred
async def test_system_may_not_query_under_another_systems_affair(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """Local-tax submitting a care-insurance procedure is 403 SystemNotAuthorized, and no
    query is created."""
    with pytest.raises(BackOfficeError) as refused:
        await care_query(setagaya[LOCAL_TAX])
    assert (refused.value.status, refused.value.code) == (403, "SystemNotAuthorized")
    assert "local-tax" in refused.value.error["message_en"]
    assert "業務システムlocal-tax" in refused.value.error["message_ja"]


@pytest_twisted.ensureDeferred
async def test_system_may_not_register_or_delete_another_systems_replica(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """Local-tax may not register a care-insurance record (403); a care-insurance record is
    unknown to it when it tries to delete it (404), and stays stored."""
    with pytest.raises(BackOfficeError) as refused:
        await setagaya[LOCAL_TAX].register_replica_record(CARE_RECORD)
    assert (refused.value.status, refused.value.code) == (403, "SystemNotAuthorized")
    await setagaya[CARE_INSURANCE].register_replica_record(CARE_RECORD)
    with pytest.raises(BackOfficeError) as hidden:
        await setagaya[LOCAL_TAX].request("DELETE", f"/replica-records/{CARE_RECORD['record_id']}")
    assert (hidden.value.status, hidden.value.code) == (404, "UnknownRecord")
    stored = box.nodes["setagaya"].database.run_blocking(
        lambda connection: connection.execute(
            select(replica_record.c.record_id).where(
                replica_record.c.record_id == CARE_RECORD["record_id"]
            )
        ).all()
    )
    assert len(stored) == 1
    await setagaya[CARE_INSURANCE].request("DELETE", f"/replica-records/{CARE_RECORD['record_id']}")


@pytest_twisted.ensureDeferred
async def test_replica_file_entries_of_another_system_are_refused_one_by_one(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """In a file posted by local-tax, its tax entry is stored and the care entry refused with
    SystemNotAuthorized; a deletion file of care records is refused the same way."""
    tax = ReplicaRecord(
        record_id="SET-TAX-2024-0001",
        integrated_address_number=HANAKO_SETAGAYA,
        information_name=TAX_INFORMATION,
        data_set="0101",
        items={"TK00000201010001": "2024"},
    )
    care = ReplicaRecord(
        record_id="SET-KAIGO-FILE-0001",
        integrated_address_number=HANAKO_SETAGAYA,
        information_name=CARE_INFORMATION,
        data_set="0101",
        items={"TK00000401010001": "0001312801"},
    )
    result = await setagaya[LOCAL_TAX].send_file(
        "/replica-files",
        build_replica_file([tax, care], "AUTH-1", source_system=LOCAL_TAX),
        "application/xml",
    )
    assert refused_codes(result) == ["SystemNotAuthorized"]
    await setagaya[CARE_INSURANCE].send_file(
        "/replica-files",
        build_replica_file([care], "AUTH-2", source_system=CARE_INSURANCE),
        "application/xml",
    )
    deletion = await setagaya[LOCAL_TAX].send_file(
        "/replica-files",
        build_replica_file([care], "AUTH-3", deletion=True, source_system=LOCAL_TAX),
        "application/xml",
    )
    assert refused_codes(deletion) == ["SystemNotAuthorized"]
    refusals = [
        r for r in audited_refusals(box, "setagaya") if r["target"] == "POST /replica-files"
    ]
    assert [r["detail"]["entries"] for r in refusals] == [1, 1]
    assert {r["actor"] for r in refusals} == {"back-office:local-tax"}


@pytest_twisted.ensureDeferred
async def test_bulk_query_lines_of_another_systems_affair_are_not_permitted(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """A bulk-query line of a care-insurance procedure posted by local-tax ends not_permitted
    (照会不許可) with SystemNotAuthorized."""
    fields = [  # the 18 fields of docs/bulk-query.md
        "01",
        "",
        HANAKO_SETAGAYA,
        "20261201093000000",
        "",
        "",
        SETAGAYA,
        "0",
        "JM90000000001000",
        PREMIUM_ASSESSMENT,
        "",
        "",
        MEGURO,
        CARE_INFORMATION,
        "",
        "",
        "",
        "",
    ]
    accepted = json.loads(
        await setagaya[LOCAL_TAX].send_file(
            "/bulk-queries", (",".join(fields) + "\r\n").encode(), "text/csv"
        )
    )
    progress = await wait_for_bulk_end(setagaya[LOCAL_TAX], accepted["bulk_query_id"])
    assert progress["by_state"] == {"not_permitted": 1}
    result = await setagaya[LOCAL_TAX].send(
        "GET", f"/bulk-queries/{accepted['bulk_query_id']}/result", None
    )
    assert b"SystemNotAuthorized" in result.body
    with pytest.raises(BackOfficeError) as hidden:
        await setagaya[CARE_INSURANCE].request("GET", f"/bulk-queries/{accepted['bulk_query_id']}")
    assert (hidden.value.status, hidden.value.code) == (404, "UnknownBulkQuery")


async def wait_for_bulk_end(client: BackOfficeClient, bulk_query_id: str) -> dict[str, Any]:
    """Poll a bulk query's progress until it has ended."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(400):
        progress: dict[str, Any] = await client.request("GET", f"/bulk-queries/{bulk_query_id}")
        if progress["state"] == "ended":
            return progress
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("the bulk query did not end")


@pytest_twisted.ensureDeferred
async def test_every_refusal_of_a_back_office_request_is_audited(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """The refused read of another system's query and the refused procedure are each in the
    audit log with the system, the request and the code."""
    query_id = await care_query(setagaya[CARE_INSURANCE])
    with pytest.raises(BackOfficeError):
        await setagaya[LOCAL_TAX].query_status(query_id)
    with pytest.raises(BackOfficeError):
        await care_query(setagaya[LOCAL_TAX])
    refusals = audited_refusals(box, "setagaya")
    assert {
        "actor": "back-office:local-tax",
        "target": f"GET /queries/{query_id}",
        "detail": {"code": "UnknownQuery"},
    } in refusals
    assert {
        "actor": "back-office:local-tax",
        "target": "POST /queries",
        "detail": {"code": "SystemNotAuthorized"},
    } in refusals


@pytest_twisted.ensureDeferred
async def test_every_system_may_register_persons(
    box: Any, setagaya: dict[str, BackOfficeClient]
) -> None:
    """The integrated-address function serves the whole institution: both systems see the
    same person."""
    first = await setagaya[LOCAL_TAX].person_state(HANAKO_SETAGAYA)
    second = await setagaya[CARE_INSURANCE].person_state(HANAKO_SETAGAYA)
    assert first == second


def test_config_requires_each_system_to_say_what_it_may_do(tmp_path: Any) -> None:
    """A system named in back_office_systems without its [back-office:…] section, or keeping
    an information name its institution does not provide, is a configuration error."""
    from pathlib import Path

    from middleware.config import ConfigError, load_config

    source = (Path(__file__).resolve().parents[1] / "twistd.conf").read_text(encoding="utf-8")
    missing = tmp_path / "missing.conf"
    missing.write_text(source.replace("[back-office:meguro:care-insurance]", "[x]"), "utf-8")
    with pytest.raises(ConfigError, match=r"\[back-office:meguro:care-insurance\] must say"):
        load_config(missing)
    foreign = tmp_path / "foreign.conf"
    foreign.write_text(
        source.replace(
            "[back-office:meguro:care-insurance]\naffairs = JM90000000001000\n"
            "information_names = TM00000000000004",
            "[back-office:meguro:care-insurance]\naffairs = JM90000000001000\n"
            "information_names = TM00000000000002",
        ),
        "utf-8",
    )
    with pytest.raises(ConfigError, match="does not provide"):
        load_config(foreign)
    stray = tmp_path / "stray.conf"
    stray.write_text(source + "\n[back-office:meguro:nobody]\naffairs =\n", "utf-8")
    with pytest.raises(ConfigError, match="not a back-office system"):
        load_config(stray)
