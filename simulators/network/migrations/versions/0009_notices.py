"""notices

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 11:36:31.339421

お知らせ relayed from institutions to マイナポータル: each notice's number, sender, the portal's
符号 of the person and how it stands (sent, delivered, read, undeliverable).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_notice",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notice_number", sa.String(length=20), nullable=True),
        sa.Column("sender", sa.String(length=16), nullable=False),
        sa.Column("sender_message_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("received_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("changed_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("delivered_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("read_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_notice")),
        sa.UniqueConstraint("notice_number", name=op.f("uq_hub_notice_notice_number")),
    )
    with op.batch_alter_table("hub_notice", schema=None) as batch_op:
        batch_op.create_index(
            "uq_hub_notice_sender_message", ["sender", "sender_message_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("hub_notice", schema=None) as batch_op:
        batch_op.drop_index("uq_hub_notice_sender_message")

    op.drop_table("hub_notice")
