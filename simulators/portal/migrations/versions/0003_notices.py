"""notices

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 11:36:32.339595

お知らせ: the notices institutions sent persons, with their attachments, kept by the network's
number, and when the person read each.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_notice",
        sa.Column("notice_number", sa.String(length=20), nullable=False),
        sa.Column("fugo", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("read_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["fugo"], ["portal_account.fugo"], name=op.f("fk_portal_notice_fugo_portal_account")
        ),
        sa.PrimaryKeyConstraint("notice_number", name=op.f("pk_portal_notice")),
    )
    with op.batch_alter_table("portal_notice", schema=None) as batch_op:
        batch_op.create_index("ix_portal_notice_fugo", ["fugo", "received_at"], unique=False)

    op.create_table(
        "portal_notice_attachment",
        sa.Column("notice_number", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_number"],
            ["portal_notice.notice_number"],
            name=op.f("fk_portal_notice_attachment_notice_number_portal_notice"),
        ),
        sa.PrimaryKeyConstraint(
            "notice_number", "position", name=op.f("pk_portal_notice_attachment")
        ),
    )


def downgrade() -> None:
    op.drop_table("portal_notice_attachment")
    with op.batch_alter_table("portal_notice", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_notice_fugo")

    op.drop_table("portal_notice")
