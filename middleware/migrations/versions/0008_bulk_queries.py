"""bulk queries (一括照会) and their lines

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 13:54:01.445610
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bulk_query",
        sa.Column("bulk_query_id", sa.String(length=36), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("encoding", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("created_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("ended_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("bulk_query_id", name=op.f("pk_bulk_query")),
    )
    with op.batch_alter_table("bulk_query", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_query_state", ["state", "created_at"], unique=False)

    op.create_table(
        "bulk_query_line",
        sa.Column("bulk_query_id", sa.String(length=36), nullable=False),
        sa.Column("line_number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("integrated_address_number", sa.String(length=15), nullable=True),
        sa.Column("procedure", sa.String(length=16), nullable=True),
        sa.Column("information_name", sa.String(length=16), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=True),
        sa.Column("conditions", sa.Text(), nullable=True),
        sa.Column("query_id", sa.String(length=36), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_params", sa.Text(), nullable=True),
        sa.Column("claimed_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("ended_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bulk_query_id"],
            ["bulk_query.bulk_query_id"],
            name=op.f("fk_bulk_query_line_bulk_query_id_bulk_query"),
        ),
        sa.PrimaryKeyConstraint("bulk_query_id", "line_number", name=op.f("pk_bulk_query_line")),
    )
    with op.batch_alter_table("bulk_query_line", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bulk_query_line_progress", ["bulk_query_id", "state", "line_number"], unique=False
        )
        batch_op.create_index("ix_bulk_query_line_query_id", ["query_id"], unique=False)
        batch_op.create_index("ix_bulk_query_line_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bulk_query_line", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_query_line_state")
        batch_op.drop_index("ix_bulk_query_line_query_id")
        batch_op.drop_index("ix_bulk_query_line_progress")

    op.drop_table("bulk_query_line")
    with op.batch_alter_table("bulk_query", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_query_state")

    op.drop_table("bulk_query")
