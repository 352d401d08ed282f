"""Unit tests for middleware.retention and middleware.checkpoint: the purge's batches of each
kind, on a migrated node database, and the signed checkpoints the chains are verified from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Connection, select
from twisted.internet.interfaces import IReactorThreads

from crypto.pki import PkiLayout, load_certificate
from crypto.xmlsig import Signer
from middleware.audit import append_audit, audit_verification
from middleware.checkpoint import ChainTrust, CheckpointSigner
from middleware.config import RetentionConfig
from middleware.outbox import DELIVERED, PENDING
from middleware.period import Period
from middleware.records import RecordEntry, append_records, record_chain, verify_records
from middleware.retention import Kind, audit_log, party_kinds
from middleware.storage import Database, migrate
from middleware.tables import (
    node_checkpoints,
    node_outbox,
    node_record_head,
    node_records,
)
from tests.network import MEGURO, SETAGAYA

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=400)
LIMIT = 1000


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database in a SQLite file, used through run_blocking only."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, ROOT / "middleware" / "migrations")
    database = Database(cast(IReactorThreads, object()), url)
    yield database
    database.stop()


@pytest.fixture
def signer(network_pki: Path) -> CheckpointSigner:
    """Meguro's checkpoints, signed with its signing key."""
    return CheckpointSigner(
        Signer(PkiLayout(network_pki).institution_signing(MEGURO).load()), MEGURO
    )


def trust_of(network_pki: Path, party: str) -> ChainTrust:
    return ChainTrust(load_certificate(PkiLayout(network_pki).ca().certificate), party)


def kinds(signer: CheckpointSigner) -> dict[str, Kind]:
    found = party_kinds(
        record_chain(node_records, node_record_head),
        node_checkpoints,
        node_outbox,
        signer,
        RetentionConfig(),
    )
    return {kind.name: kind for kind in found}


def record(database: Database, at: datetime, number: str | None, event: str = "query") -> None:
    entry = RecordEntry(event=event, status="accepted", transaction_number=number, requester=MEGURO)
    database.run_blocking(append_records, node_records, node_record_head, at, [entry])


def seqs(database: Database) -> list[int]:
    return list(
        database.run_blocking(
            lambda connection: (
                connection.execute(select(node_records.c.seq).order_by(node_records.c.seq))
                .scalars()
                .all()
            )
        )
    )


def verified(database: Database, trust: ChainTrust | None) -> Any:
    return database.run_blocking(
        verify_records, node_records, node_record_head, node_checkpoints, trust
    )


def test_records_are_purged_whole_transactions_at_a_time_with_a_signed_checkpoint(
    node_db: Database, signer: CheckpointSigner, network_pki: Path
) -> None:
    """Only the oldest records go, and a 処理通番 whose newest record is not past the cutoff
    keeps all its records (the older transactions before it go); the chain then verifies
    from the signed checkpoint of the last record deleted."""
    record(node_db, T0, "A")
    record(node_db, T0, "A")
    record(node_db, T0 + timedelta(hours=1), "B")
    record(node_db, T0 + timedelta(hours=2), None)  # a refusal with no 処理通番
    record(node_db, T0 + timedelta(days=10), "B")
    record(node_db, T0 + timedelta(days=11), "C")
    purge = kinds(signer)["provision_records"].batch

    nothing = node_db.run_blocking(purge, T0 - timedelta(seconds=1), NOW, LIMIT)
    assert nothing.deleted == 0 and seqs(node_db) == [1, 2, 3, 4, 5, 6]
    first = node_db.run_blocking(purge, T0 + timedelta(days=5), NOW, LIMIT)
    assert (first.deleted, first.through, first.newest) == (2, 2, T0)
    assert seqs(node_db) == [3, 4, 5, 6]
    result = verified(node_db, trust_of(network_pki, MEGURO))
    assert result.intact and result.checkpoint.link.seq == 2 and result.checkpoint.deleted == 2
    assert result.checkpoint.recorded_at == T0 and result.checkpoint.made_at == NOW

    second = node_db.run_blocking(purge, T0 + timedelta(days=10), NOW, LIMIT)
    assert (second.deleted, second.through) == (3, 5)
    assert seqs(node_db) == [6]
    record(node_db, NOW, "D")
    result = verified(node_db, trust_of(network_pki, MEGURO))
    assert result.intact and result.checkpoint.link.seq == 5


def test_a_purge_goes_by_batches_each_with_its_checkpoint(
    node_db: Database, signer: CheckpointSigner, network_pki: Path
) -> None:
    """A batch deletes at most its limit and says more may be due; each leaves its own
    checkpoint, and the chain verifies from the newest."""
    for number in range(5):
        record(node_db, T0, f"T{number}")
    purge = kinds(signer)["provision_records"].batch
    batches = [node_db.run_blocking(purge, T0, NOW, 2) for _ in range(4)]
    assert [(batch.deleted, batch.more) for batch in batches] == [
        (2, True),
        (2, True),
        (1, False),
        (0, False),
    ]
    rows = node_db.run_blocking(
        lambda connection: connection.execute(
            select(node_checkpoints.c.chain, node_checkpoints.c.seq)
        ).all()
    )
    assert sorted(rows) == [
        ("provision_record", 2),
        ("provision_record", 4),
        ("provision_record", 5),
    ]
    assert verified(node_db, trust_of(network_pki, MEGURO)).intact


def tamper(database: Database, statement: Any) -> None:
    def work(connection: Connection) -> None:
        connection.execute(statement)

    database.run_blocking(work)


def test_a_checkpoint_that_does_not_verify_breaks_the_chain_at_it(
    node_db: Database, signer: CheckpointSigner, network_pki: Path
) -> None:
    """An edited checkpoint, a row that says other than its document, another party's trust
    or none at all break the chain at the checkpoint; without any checkpoint the chain
    breaks at its first record left."""
    for number in range(4):
        record(node_db, T0 + timedelta(hours=number), f"T{number}")
    node_db.run_blocking(kinds(signer)["provision_records"].batch, T0, NOW, LIMIT)
    meguro = trust_of(network_pki, MEGURO)
    assert verified(node_db, meguro).intact
    (document,) = node_db.run_blocking(
        lambda connection: connection.execute(select(node_checkpoints.c.document)).scalars().all()
    )

    assert verified(node_db, None).first_broken == 1
    other = verified(node_db, trust_of(network_pki, SETAGAYA))
    assert other.first_broken == 1 and f"is not {SETAGAYA}'s own" in (other.problem or "")

    edited = bytes(document).replace(b'seq="1"', b'seq="3"')
    assert edited != bytes(document)
    tamper(node_db, node_checkpoints.update().values(document=edited, seq=3))
    result = verified(node_db, meguro)
    assert result.first_broken == 3 and "signature does not verify" in (result.problem or "")

    tamper(node_db, node_checkpoints.update().values(document=document, seq=1, hash="0" * 64))
    result = verified(node_db, meguro)
    assert "row does not say what its signed document says" in (result.problem or "")

    tamper(node_db, node_checkpoints.delete())
    assert verified(node_db, meguro).first_broken == 1  # the genesis no longer leads to seq 2


def test_the_audit_log_is_cut_with_a_checkpoint_of_its_own(
    node_db: Database, signer: CheckpointSigner, network_pki: Path
) -> None:
    """The audit log's oldest entries go, whatever their kind; its chain verifies from its
    own checkpoint, and the records' chain is not touched."""
    for hours in range(3):
        node_db.run_blocking(append_audit, T0 + timedelta(hours=hours), "admin", "login")
    node_db.run_blocking(append_audit, NOW, "admin", "logout")
    record(node_db, T0, "A")
    kind = audit_log(signer, Period(years=1))
    purged = node_db.run_blocking(kind.batch, kind.period.before(NOW), NOW, LIMIT)
    assert (purged.deleted, purged.through) == (3, 3)
    result = node_db.run_blocking(audit_verification, trust_of(network_pki, MEGURO))
    assert result.intact and result.checkpoint is not None
    assert result.checkpoint.chain == "audit_record"
    assert seqs(node_db) == [1] and verified(node_db, trust_of(network_pki, MEGURO)).intact


def test_outbox_documents_go_first_and_their_rows_with_the_records(
    node_db: Database, signer: CheckpointSigner
) -> None:
    """A message delivered past ``outbox_bodies`` loses its document and keeps its row; past
    the records' period the row goes too; a message still pending keeps both."""

    def message(message_id: str, state: str, finished_at: datetime | None) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "kind": "query",
            "destination": "hub",
            "reference": message_id,
            "body": b"<QueryRequest/>",
            "state": state,
            "attempts": 1,
            "created_at": T0,
            "next_attempt_at": T0,
            "finished_at": finished_at,
        }

    tamper(
        node_db,
        node_outbox.insert().values(
            [message("delivered", DELIVERED, T0), message("waiting", PENDING, None)]
        ),
    )
    found = kinds(signer)
    bodies = node_db.run_blocking(found["outbox_bodies"].batch, T0, NOW, LIMIT)
    assert (bodies.deleted, bodies.newest) == (1, T0)
    rows = node_db.run_blocking(
        lambda connection: {
            row.message_id: (row.body, row.body_deleted_at)
            for row in connection.execute(select(node_outbox))
        }
    )
    assert rows == {"delivered": (None, NOW), "waiting": (b"<QueryRequest/>", None)}
    assert node_db.run_blocking(found["outbox_bodies"].batch, T0, NOW, LIMIT).deleted == 0
    messages = node_db.run_blocking(found["outbox_messages"].batch, T0, NOW, LIMIT)
    assert messages.deleted == 1
    left = node_db.run_blocking(
        lambda connection: connection.execute(select(node_outbox.c.message_id)).scalars().all()
    )
    assert left == ["waiting"]
