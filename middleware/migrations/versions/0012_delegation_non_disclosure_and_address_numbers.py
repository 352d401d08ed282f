"""delegation (委任元), 照会側不開示 and 宛名番号

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 22:30:00.000000

Queries, provisions and provision records carry the institutions acted for (委任元) and the
requester's non-disclosure; the integrated-address function keeps 宛名番号.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delegating_requester", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delegating_provider", sa.String(length=16), nullable=True))
    for table in ("query", "provision"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("delegating_requester", sa.String(length=16), nullable=True)
            )
            batch_op.add_column(
                sa.Column("delegating_provider", sa.String(length=16), nullable=True)
            )
            batch_op.add_column(
                sa.Column("non_disclosure", sa.Boolean(), server_default="0", nullable=False)
            )
    with op.batch_alter_table("bulk_query_line", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address_number", sa.String(length=15), nullable=True))
        batch_op.add_column(sa.Column("delegating_requester", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delegating_provider", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("non_disclosure", sa.Boolean(), server_default="0", nullable=False)
        )
    op.create_table(
        "address_number",
        sa.Column("address_number", sa.String(length=15), nullable=False),
        sa.Column("integrated_address_number", sa.String(length=15), nullable=False),
        sa.Column("registered_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integrated_address_number"],
            ["person.integrated_address_number"],
            name=op.f("fk_address_number_integrated_address_number_person"),
        ),
        sa.PrimaryKeyConstraint("address_number", name=op.f("pk_address_number")),
    )
    with op.batch_alter_table("address_number", schema=None) as batch_op:
        batch_op.create_index(
            "ix_address_number_person", ["integrated_address_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("address_number", schema=None) as batch_op:
        batch_op.drop_index("ix_address_number_person")
    op.drop_table("address_number")
    with op.batch_alter_table("bulk_query_line", schema=None) as batch_op:
        batch_op.drop_column("non_disclosure")
        batch_op.drop_column("delegating_provider")
        batch_op.drop_column("delegating_requester")
        batch_op.drop_column("address_number")
    for table in ("provision", "query"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("non_disclosure")
            batch_op.drop_column("delegating_provider")
            batch_op.drop_column("delegating_requester")
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.drop_column("delegating_provider")
        batch_op.drop_column("delegating_requester")
