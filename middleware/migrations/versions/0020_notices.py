"""notices

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 11:36:30.105618

お知らせ: the notices the node's back-office systems send persons through the network, their
attachments, and how each stands for each person (queued, sent, delivered, read,
undeliverable; middleware/notices.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notice",
        sa.Column("notice_id", sa.String(length=36), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("notice_id", name=op.f("pk_notice")),
    )
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.create_index("ix_notice_created", ["created_at"], unique=False)

    op.create_table(
        "notice_attachment",
        sa.Column("notice_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["notice.notice_id"], name=op.f("fk_notice_attachment_notice_id_notice")
        ),
        sa.PrimaryKeyConstraint("notice_id", "position", name=op.f("pk_notice_attachment")),
    )
    op.create_table(
        "notice_recipient",
        sa.Column("notice_id", sa.String(length=36), nullable=False),
        sa.Column("integrated_address_number", sa.String(length=15), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("notice_number", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("changed_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("sent_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("delivered_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("read_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["notice.notice_id"], name=op.f("fk_notice_recipient_notice_id_notice")
        ),
        sa.PrimaryKeyConstraint(
            "notice_id", "integrated_address_number", name=op.f("pk_notice_recipient")
        ),
        sa.UniqueConstraint("message_id", name=op.f("uq_notice_recipient_message_id")),
        sa.UniqueConstraint("notice_number", name=op.f("uq_notice_recipient_notice_number")),
    )
    with op.batch_alter_table("notice_recipient", schema=None) as batch_op:
        batch_op.create_index("ix_notice_recipient_state", ["state", "changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notice_recipient", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_recipient_state")

    op.drop_table("notice_recipient")
    op.drop_table("notice_attachment")
    with op.batch_alter_table("notice", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_created")

    op.drop_table("notice")
