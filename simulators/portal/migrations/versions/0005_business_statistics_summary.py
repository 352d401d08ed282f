"""業務統計: the summary of the provision records (as every party keeps)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:00:00.000000

Queries made and provision requests answered, counted by month (Japan time), side, requester,
provider, procedure, information name and outcome (middleware/business_statistics.py), kept
current from now on in the transaction that appends records, and filled here from the records
kept so far (a walk over every record: about a minute and a half per 10 million records,
docs/performance.md).
"""

from collections.abc import Sequence

from alembic import op

from middleware.migration_env import create_record_summary

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_record_summary()


def downgrade() -> None:
    op.drop_table("provision_record_totals")
    op.drop_table("provision_record_summary")
