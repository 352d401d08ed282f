"""The body shared by both Alembic environments (node and hub databases), and the steps
that a node's migration and the hub's share."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy import MetaData, create_engine, pool

from middleware.business_statistics import COLUMNS, Summary, rebuild
from middleware.tables import UtcDateTime

__all__ = ["create_record_summary", "run_migrations"]


def run_migrations(metadata: MetaData) -> None:
    """Run migrations online against the URL set in the Alembic config."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def create_record_summary() -> None:
    """Create the 業務統計 summary beside the provision records (its cells and its totals) and
    fill it from the records kept so far (`middleware.business_statistics.rebuild`): the one
    body of the node's revision 0017 and the hub's 0007. As of those revisions: a later change
    of the summary is a migration of its own, not an edit here."""
    every = ("month", "side", "requester", "provider", "procedure", "information_name", "outcome")
    totals = tuple(key for key in every if key not in ("requester", "provider"))
    cells, sums = (
        op.create_table(
            name,
            *(
                sa.Column(key, sa.String(length=7 if key == "month" else 16), nullable=False)
                for key in keys
            ),
            sa.Column("tally", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{name}")),
            sqlite_with_rowid=False,
        )
        for name, keys in (
            ("provision_record_summary", every),
            ("provision_record_totals", totals),
        )
    )
    # The record columns an item is made of, as they are at this revision.
    records = sa.Table(
        "provision_record",
        sa.MetaData(),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("recorded_at", UtcDateTime()),
        *(sa.Column(name, sa.String()) for name in COLUMNS if name not in ("seq", "recorded_at")),
    )
    rebuild(op.get_bind(), records, Summary(cells, sums))
