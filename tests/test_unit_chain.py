"""Unit tests for middleware.chain: the one hash chain behind records and the audit log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, create_engine

from middleware.chain import GENESIS, Chain, link_hash

metadata = MetaData()
links = Table(
    "link",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("note", String, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
head = Table(
    "link_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


def content(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq": row["seq"], "note": row["note"]}


CHAIN = Chain(links, head, content)


@pytest.fixture
def connection() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection


def test_links_follow_each_other_and_verify(connection: Connection) -> None:
    assert CHAIN.append(connection, [{"note": "a"}, {"note": "b"}]) == 2
    assert CHAIN.append(connection, [{"note": "c"}]) == 3
    rows = connection.execute(links.select().order_by(links.c.seq)).all()
    assert rows[0].prev_hash == GENESIS
    assert rows[0].hash == link_hash(GENESIS, {"seq": 1, "note": "a"})
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]
    assert CHAIN.verify(connection) is None


def test_an_empty_append_changes_nothing(connection: Connection) -> None:
    assert CHAIN.append(connection, []) == 0
    assert connection.execute(head.select()).first() is None
    assert CHAIN.verify(connection) is None


def test_an_edited_link_breaks_at_itself(connection: Connection) -> None:
    CHAIN.append(connection, [{"note": note} for note in "abc"])
    connection.execute(links.update().where(links.c.seq == 2).values(note="x"))
    assert CHAIN.verify(connection) == 2


def test_a_removed_newest_link_or_head_is_seen(connection: Connection) -> None:
    CHAIN.append(connection, [{"note": note} for note in "abc"])
    connection.execute(links.delete().where(links.c.seq == 3))
    assert CHAIN.verify(connection) == 3
    connection.execute(head.delete())
    assert CHAIN.verify(connection) == 3


def test_the_hash_is_canonical_json_after_the_previous_hash() -> None:
    """Key order does not matter; the text is compact, sorted and keeps Japanese as is."""
    import hashlib

    assert link_hash("p", {"b": 1, "a": "目黒"}) == link_hash("p", {"a": "目黒", "b": 1})
    expected = hashlib.sha256('p{"a":"目黒","b":1}'.encode()).hexdigest()
    assert link_hash("p", {"b": 1, "a": "目黒"}) == expected


def test_a_chain_cut_verifies_from_its_last_deleted_link_and_not_from_the_genesis(
    connection: Connection,
) -> None:
    """Cutting the oldest links gives the last one deleted; the rest verifies from it (and
    its head), not from the genesis, and a link edited after the cut is still found."""
    from middleware.chain import Link

    CHAIN.append(connection, [{"note": note} for note in "abcde"])
    third = connection.execute(links.select().where(links.c.seq == 3)).one()
    assert CHAIN.cut(connection, 3) == Link(3, third.hash)
    assert [row.seq for row in connection.execute(links.select())] == [4, 5]
    assert CHAIN.verify(connection) == 1
    assert CHAIN.verify(connection, Link(3, third.hash)) is None
    assert CHAIN.verify(connection, Link(3, GENESIS)) == 4
    CHAIN.append(connection, [{"note": "f"}])
    assert CHAIN.verify(connection, Link(3, third.hash)) is None
    connection.execute(links.update().where(links.c.seq == 5).values(note="x"))
    assert CHAIN.verify(connection, Link(3, third.hash)) == 5


def test_a_chain_cut_to_its_head_is_whole_with_no_link_left(connection: Connection) -> None:
    """Every link deleted: the chain is its head, which still says where it ended."""
    CHAIN.append(connection, [{"note": note} for note in "ab"])
    last = CHAIN.cut(connection, 2)
    assert connection.execute(links.select()).first() is None
    assert CHAIN.verify(connection, last) is None
    CHAIN.append(connection, [{"note": "c"}])
    assert CHAIN.verify(connection, last) is None
