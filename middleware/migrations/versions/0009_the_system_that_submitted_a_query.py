"""the back-office system that submitted a query

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 20:30:00.000000

A query belongs to the back-office system that submitted it (per-system authorization).
Queries stored before this revision have no system and are readable by none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.add_column(sa.Column("system", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("query", schema=None) as batch_op:
        batch_op.drop_column("system")
