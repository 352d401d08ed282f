"""the runs of the periodic jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00.000000

Every run of the hub's periodic jobs (the issue of the permitted-query list, the outbox
poll, health; middleware/jobs.py) is recorded: when it started and ended, its outcome, the
counts it reports and its error.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0007"
down_revision: str | None = "0006"
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
