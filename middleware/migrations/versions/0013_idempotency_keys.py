"""idempotency keys of queries and bulk queries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 04:00:00.000000

A back office that sends a query (or a bulk-query file) again after a connection error, under
the same Idempotency-Key, gets the first one back instead of a second: the key and the SHA-256
of what was asked are kept with the query, unique per system.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("query", "bulk_query"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("idempotency_key", sa.String(length=64), nullable=True))
            batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
            batch.create_index(
                f"uq_{table}_idempotency_key", ["system", "idempotency_key"], unique=True
            )


def downgrade() -> None:
    for table in ("query", "bulk_query"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"uq_{table}_idempotency_key")
            batch.drop_column("request_hash")
            batch.drop_column("idempotency_key")
