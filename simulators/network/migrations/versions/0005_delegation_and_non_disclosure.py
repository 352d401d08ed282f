"""delegation (委任元) and 照会側不開示

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:30:00

The hub's queries and provision records carry the institutions acted for (委任元) and the
requester's non-disclosure.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delegating_requester", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delegating_provider", sa.String(length=16), nullable=True))
    with op.batch_alter_table("hub_query", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delegating_requester", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delegating_provider", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("non_disclosure", sa.Boolean(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("hub_query", schema=None) as batch_op:
        batch_op.drop_column("non_disclosure")
        batch_op.drop_column("delegating_provider")
        batch_op.drop_column("delegating_requester")
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.drop_column("delegating_provider")
        batch_op.drop_column("delegating_requester")
