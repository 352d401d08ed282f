"""the purge of expired data and the signed checkpoints of the records' hash chain

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:30:00.000000

As at the hub: the purge (middleware/retention.py) deletes the portal's oldest provision
records, leaving a signed checkpoint of the chain where it cut it (chain_checkpoint), and the
documents of ended outbox messages (outbox.body nullable, body_deleted_at, and an index to
find them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("made_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_checkpoint")),
    )
    op.create_index("ix_chain_checkpoint_chain", "chain_checkpoint", ["chain", "seq"], unique=True)
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(
            sa.Column("body_deleted_at", middleware.tables.UtcDateTime(), nullable=True)
        )
    op.create_index("ix_outbox_finished", "outbox", ["state", "finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_finished", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("body_deleted_at")
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_index("ix_chain_checkpoint_chain", table_name="chain_checkpoint")
    op.drop_table("chain_checkpoint")
