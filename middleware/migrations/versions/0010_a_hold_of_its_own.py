"""a held provision's own lifetime (hold_expires_at)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:30:00.000000

A hold used to end with the permit (ten minutes by default); it now has its own end, set from
the provider's hold_lifetime when the provision is held. Holds stored before this revision
keep their permit's expiry as their end.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("held_provision", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hold_expires_at", middleware.tables.UtcDateTime(), nullable=True)
        )
    op.execute("UPDATE held_provision SET hold_expires_at = permit_expires_at")
    with op.batch_alter_table("held_provision", schema=None) as batch_op:
        batch_op.alter_column(
            "hold_expires_at", existing_type=middleware.tables.UtcDateTime(), nullable=False
        )
        batch_op.drop_index("ix_held_provision_state")
        batch_op.create_index("ix_held_provision_hold", ["state", "hold_expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("held_provision", schema=None) as batch_op:
        batch_op.drop_index("ix_held_provision_hold")
        batch_op.create_index(
            "ix_held_provision_state", ["state", "permit_expires_at"], unique=False
        )
        batch_op.drop_column("hold_expires_at")
