"""self-information attachments

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 11:13:15.487373

自己情報提供用添付ファイル: the files a back-office system registers for a person and an
information name, provided with the person's own information (middleware/attachments.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "self_information_attachment",
        sa.Column("attachment_id", sa.String(length=36), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("integrated_address_number", sa.String(length=15), nullable=False),
        sa.Column("information_name", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("registered_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integrated_address_number"],
            ["person.integrated_address_number"],
            name=op.f("fk_self_information_attachment_integrated_address_number_person"),
        ),
        sa.PrimaryKeyConstraint("attachment_id", name=op.f("pk_self_information_attachment")),
    )
    with op.batch_alter_table("self_information_attachment", schema=None) as batch_op:
        batch_op.create_index(
            "ix_self_information_attachment_person",
            ["integrated_address_number", "information_name"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("self_information_attachment", schema=None) as batch_op:
        batch_op.drop_index("ix_self_information_attachment_person")

    op.drop_table("self_information_attachment")
