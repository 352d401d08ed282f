"""a person's requests for their own information

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 11:14:20.052681

自己情報提供: what a signed-in person asked an institution for, its 処理通番, its state and,
once provided, the provider's verified payload.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_request",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("fugo", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("information_name", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("transaction_number", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("submitted_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("accepted_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("completed_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["fugo"], ["portal_account.fugo"], name=op.f("fk_portal_request_fugo_portal_account")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_portal_request")),
        sa.UniqueConstraint(
            "transaction_number", name=op.f("uq_portal_request_transaction_number")
        ),
    )
    with op.batch_alter_table("portal_request", schema=None) as batch_op:
        batch_op.create_index("ix_portal_request_fugo", ["fugo", "submitted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("portal_request", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_request_fugo")

    op.drop_table("portal_request")
