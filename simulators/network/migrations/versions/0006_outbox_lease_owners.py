"""the owners of outbox leases, and their heartbeats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 05:00:00.000000

Each running outbox writes a heartbeat into outbox_owner and marks the messages its attempts
hold (outbox.leased_by): a message leased by an owner that stopped or died is delivered again
within seconds instead of after its lease.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_owner",
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("started_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_outbox_owner")),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("leased_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("leased_by")
    op.drop_table("outbox_owner")
