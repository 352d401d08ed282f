"""provision requests refused, recorded once each

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 22:00:00.000000

A provider now records every provision request it refuses (番号法 第23条); this table keeps
one row per refused request so that the hub sending it again is not recorded twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refused_request",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("transaction_number", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("received_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_refused_request")),
    )


def downgrade() -> None:
    op.drop_table("refused_request")
