"""the runs of the periodic jobs

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 10:00:00.000000

Every run of a node's periodic jobs (list sync, retention, held expiry, outbox poll, metrics,
health; middleware/jobs.py) is recorded: when it started and ended, its outcome, the counts it
reports and its error. The console's ジョブ状況 page reads them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("started_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("ended_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_run")),
    )
    op.create_index("ix_job_run_job", "job_run", ["job", "outcome", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_run_job", table_name="job_run")
    op.drop_table("job_run")
