"""index on record requester and provider

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_provision_record_pair", ["requester", "provider", "seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.drop_index("ix_provision_record_pair")
