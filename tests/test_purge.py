"""保管期限切れ情報の削除 in a running box: the network's clock is moved days, then years ahead,
and each party's purge job deletes each kind of data once (and only once) its retention has
passed; the hash chains still verify afterwards, from their signed checkpoints, and a
tampered checkpoint is found by `renkei records verify`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted

from middleware.audit import audit_entries
from middleware.tables import node_records
from tests.conftest import running_box
from tests.network import write_config
from tests.test_backup import renkei
from tests.test_console import add_users, logged_in
from tests.test_flow import ask_tax, count
from tests.test_held import held_item, setagaya_asks, wait_for_state

__all__ = ["setagaya_asks"]  # the fixture, used below

DAY = 86400.0
YEAR = 365 * DAY


@pytest_twisted.async_yield_fixture
async def box(tmp_path: Path, network_pki: Path) -> AsyncIterator[Any]:
    """The test box, its purge job run by hand only (its interval is decades), query results
    kept 7 days."""
    config = write_config(
        tmp_path, network_pki, result_retention=7 * DAY, retention="interval = 1000000000\n"
    )
    running = await running_box(config, in_memory=True)
    try:
        yield running
    finally:
        await running.stopService()


async def purged(box: Any, party: str) -> dict[str, int]:
    """Run a party's purge job now; what its recorded run counts."""
    target = box.hub if party == "hub" else box.nodes[party]
    run = await target.jobs.run("purge")
    assert run.outcome == "succeeded", run.error
    return dict(run.counts)


def deleted(counts: dict[str, int]) -> dict[str, int]:
    return {name: number for name, number in counts.items() if number}


async def move_to(box: Any, start: float, seconds: float) -> None:
    """Put the frozen network clock ``seconds`` after ``start``, and let the jobs it wakes
    (list issue and sync, held expiry, health) settle."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    box.clock.set(start + seconds)
    await deferLater(reactor, 0.3, lambda: None)


@pytest_twisted.ensureDeferred
async def test_each_kind_is_purged_once_its_retention_has_passed_and_the_chains_still_verify(
    box: Any, meguro_care: Any, setagaya_asks: Any
) -> None:
    """Moved days ahead, a party deletes query results after 7 days, held contents, outbox
    documents and 副本 file answers after 30, nothing else; years ahead, the records and the
    audit log after 7 years (a transaction's records together), each batch audited by
    system; `renkei records verify` and `audit verify` then verify from the checkpoints,
    records appended later included, and find a checkpoint edited in the database."""
    from tests.test_replica_file import entry, replica_document

    meguro = box.nodes["meguro"]
    conf = str(box.config.path)
    box.clock.freeze()
    start = box.clock.seconds()
    users = await add_users(meguro)
    asked = await ask_tax(meguro_care)
    assert (await meguro_care.wait_for_result(asked["query_id"]))["state"] == "provided"
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    hold = await held_item(meguro)
    await meguro.held.refuse(hold.transaction_number, "approver1", "本人の申出により")
    await wait_for_state(setagaya_asks, query_id, "refused")
    answer = await meguro_care.send(
        "POST",
        "/replica-files",
        replica_document(entry("PURGE-0001")),
        "application/xml",
        idempotency_key="purge-file-1",
    )
    assert answer.status == 200
    records_at_start = count(box, "meguro", node_records)

    await move_to(box, start, 7 * DAY - 3600)
    assert deleted(await purged(box, "meguro")) == {}
    assert deleted(await purged(box, "hub")) == {}

    await move_to(box, start, 7 * DAY + 3600)
    assert deleted(await purged(box, "meguro")) == {"results_deleted": 1}
    assert (await meguro_care.query_status(asked["query_id"]))["result"] is None

    await move_to(box, start, 30 * DAY - 3600)
    assert deleted(await purged(box, "meguro")) == {}
    await move_to(box, start, 30 * DAY + 3600)
    thirty = deleted(await purged(box, "meguro"))
    assert thirty.keys() == {
        "held_contents_deleted",
        "outbox_bodies_deleted",
        "replica_file_answers_deleted",
    }
    assert thirty["held_contents_deleted"] == 1 and thirty["replica_file_answers_deleted"] == 1
    approver = await logged_in(box, "ap", users["ap"])
    code, page, _ = await approver.get(f"/held/{hold.transaction_number}")
    assert code == 200 and 'id="content-deleted"' in page
    assert (await meguro.held.content(hold.transaction_number, "ap")).payload is None
    assert deleted(await purged(box, "hub")).keys() == {"outbox_bodies_deleted"}
    # Setagaya's refused query ended 30 days ago: its (empty) result and its documents go.
    assert deleted(await purged(box, "setagaya")).keys() == {
        "results_deleted",
        "outbox_bodies_deleted",
    }
    assert count(box, "meguro", node_records) == records_at_start + 1  # + result_deleted

    await move_to(box, start, 7 * YEAR - DAY)
    assert deleted(await purged(box, "meguro")) == {}
    assert deleted(await purged(box, "setagaya")) == {}
    assert deleted(await purged(box, "hub")) == {}

    # Seven years (and two leap days) on, the chain is cut oldest first and a transaction's
    # records go together: the tax query, first in the chain, keeps its records while its
    # result_deleted record of seven days later is kept, and holds the others back.
    await move_to(box, start, 7 * YEAR + 3 * DAY)
    seven = deleted(await purged(box, "meguro"))
    assert seven.keys() == {"audit_entries_deleted", "outbox_messages_deleted"}
    assert count(box, "meguro", node_records) == records_at_start + 1
    assert "records_deleted" in deleted(await purged(box, "setagaya"))
    assert "records_deleted" in deleted(await purged(box, "hub"))
    await move_to(box, start, 7 * YEAR + 10 * DAY)
    # (and the audit entry of the results' purge at seven days)
    assert deleted(await purged(box, "meguro")) == {
        "records_deleted": records_at_start + 1,
        "audit_entries_deleted": 1,
    }
    assert count(box, "meguro", node_records) == 0

    # Each batch was audited; the entry of the results' purge went with the audit log's.
    purges = meguro.database.run_blocking(audit_entries, limit=50, action="purge")
    assert {entry["target"] for entry in purges} == {
        "held_contents",
        "outbox_bodies",
        "replica_file_answers",
        "provision_records",
        "audit_log",
        "outbox_messages",
    }
    assert {entry["actor"] for entry in purges} == {"system"}
    records_purge = next(e for e in purges if e["target"] == "provision_records")
    assert records_purge["detail"]["retention"] == "7y"
    assert set(records_purge["detail"]) >= {"deleted", "cutoff", "newest", "through_seq"}

    # Records appended after the purges extend the chains the checkpoints start.
    await box.hub.jobs.run("list_issue")  # the clock stands still: the lists move by hand
    for node in box.nodes.values():
        await node.jobs.run("list_sync")
    again = await ask_tax(meguro_care)
    assert (await meguro_care.wait_for_result(again["query_id"]))["state"] == "provided"

    records = renkei("records", "verify", "-c", conf)
    assert records.returncode == 0, records.stdout + records.stderr
    for party in ("hub", "meguro", "setagaya"):
        assert f"{party}: " in records.stdout
    assert records.stdout.count("chain intact from its checkpoint after") == 3
    audit = renkei("audit", "verify", "-c", conf, "-i", "meguro")
    assert audit.returncode == 0 and "chain intact from its checkpoint after" in audit.stdout
    auditor = await logged_in(box, "au", users["au"])
    code, page, _ = await auditor.get("/audit")
    assert code == 200 and "改ざん検証: 正常" in page

    with sqlite3.connect(box.config.path.parent / "meguro.sqlite") as connection:
        (seq, document) = connection.execute(
            "SELECT seq, document FROM chain_checkpoint WHERE chain = 'provision_record'"
            " ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        connection.execute(
            "UPDATE chain_checkpoint SET document = ? WHERE seq = ? AND chain = 'provision_record'",
            (bytes(document).replace(b'deleted="', b'deleted="1'), seq),
        )
    broken = renkei("records", "verify", "-c", conf)
    assert broken.returncode == 1
    assert f"meguro: chain broken at record {seq}: the checkpoint's signature" in broken.stdout
    assert "setagaya: " in broken.stdout and "hub: " in broken.stdout
