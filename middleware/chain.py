"""Hash chains: the one mechanism behind the provision records and the staff audit log.

A chain is a table of links and a head table of one row. Each link's ``hash`` is the SHA-256
of the previous link's hash followed by the canonical JSON of the link's content (what the
chain's ``content`` function takes from the link's row), so an edited or removed link breaks
the chain from that point on. Every append first locks the head row (a row lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which keeps ``seq`` gap-free and the chain linear
with several writers, and then moves the head to the newest link, so a removed newest link or
a removed head row is detected too.

The oldest links may be deleted once past their retention (`Chain.cut`, by the purge of
middleware/retention.py): the last link deleted, its ``seq`` and ``hash`` (a `Link`), is
where verification then starts instead of the genesis, once a signed checkpoint vouches for
it (middleware/checkpoint.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert, Select, Table, Update, delete, select

__all__ = ["GENESIS", "ORIGIN", "Chain", "Content", "Link", "link_hash"]

GENESIS = "0" * 64
"""The ``prev_hash`` of a chain's first link."""


@dataclass(frozen=True)
class Link:
    """A place in a chain: a link's ``seq`` and ``hash`` (the link that follows it has
    ``seq + 1`` and ``prev_hash`` = ``hash``)."""

    seq: int
    hash: str


ORIGIN = Link(0, GENESIS)
"""Where a chain starts before any link was deleted."""

Content = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""What a link's hash covers, taken from its row (``seq``, ``recorded_at`` and its fields)."""


def link_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """The hash of a link with ``content`` that follows the link hashed ``prev_hash``."""
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + text).encode()).hexdigest()


# The statements of every append, built once per table (building costs more than executing).


@functools.cache
def _head_for_update(head: Table) -> Select[Any]:
    return select(head.c.seq, head.c.hash).where(head.c.id == 1).with_for_update()


@functools.cache
def _insert(links: Table) -> Insert:
    return links.insert()


@functools.cache
def _head_update(head: Table) -> Update:
    """Sets the columns given at execution (``seq``, ``hash``) on the head row."""
    return head.update().where(head.c.id == 1)


@dataclass(frozen=True)
class Chain:
    """One hash chain: its links, its head and what its hashes cover."""

    links: Table
    head: Table
    content: Content

    def append(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append links made of ``rows`` (each without ``seq``, ``prev_hash`` and ``hash``)
        inside the caller's transaction; the ``seq`` of the last one (or of the head when
        ``rows`` is empty)."""
        head = connection.execute(_head_for_update(self.head)).first()
        if head is None:
            seq, prev_hash = 0, GENESIS
            if rows:
                connection.execute(self.head.insert().values(id=1, seq=0, hash=GENESIS))
        else:
            seq, prev_hash = head.seq, head.hash
        if not rows:
            return seq
        links: list[dict[str, Any]] = []
        for row in rows:
            seq += 1
            link = {**row, "seq": seq, "prev_hash": prev_hash}
            link["hash"] = prev_hash = link_hash(prev_hash, self.content(link))
            links.append(link)
        connection.execute(_insert(self.links), links)
        connection.execute(_head_update(self.head), {"seq": seq, "hash": prev_hash})
        return seq

    def verify(self, connection: Connection, start: Link = ORIGIN) -> int | None:
        """The ``seq`` of the first link that breaks the chain, or None when it is whole.

        The links must follow ``start`` (the origin, or the last link a purge deleted): an
        edited link breaks at its own ``seq``, a removed one at the ``seq`` it held; a
        removed newest link (or a removed head row) breaks at the first ``seq`` past the links
        left.
        """
        prev_hash = start.hash
        expected_seq = start.seq
        for row in connection.execute(select(self.links).order_by(self.links.c.seq)):
            link: dict[str, Any] = dict(row._mapping)
            expected_seq += 1
            if (
                link["seq"] != expected_seq
                or link["prev_hash"] != prev_hash
                or link["hash"] != link_hash(prev_hash, self.content(link))
            ):
                return expected_seq
            prev_hash = link["hash"]
        head = connection.execute(select(self.head.c.seq, self.head.c.hash)).first()
        if head is None:
            return None if expected_seq == 0 else expected_seq + 1
        if head.seq != expected_seq or head.hash != prev_hash:
            return expected_seq + 1
        return None

    def cut(self, connection: Connection, through: int) -> Link:
        """Delete the links up to ``through`` (the oldest ones) inside the caller's
        transaction; the last one deleted, where the chain now starts. The head stays."""
        last = connection.execute(
            select(self.links.c.seq, self.links.c.hash).where(self.links.c.seq == through)
        ).one()
        connection.execute(delete(self.links).where(self.links.c.seq <= through))
        return Link(last.seq, last.hash)
