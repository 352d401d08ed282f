"""who claimed a bulk-query line

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 19:40:00.000000

A line taken by the bulk-query driver records the outbox owner of its process
(bulk_query_line.claimed_by): another process of the same institution re-links or releases
it only once that owner has stopped or died, never while it is submitting the line.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bulk_query_line") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bulk_query_line") as batch:
        batch.drop_column("claimed_by")
