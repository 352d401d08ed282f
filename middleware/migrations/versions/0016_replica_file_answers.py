"""the answers to 副本 files posted under an Idempotency-Key

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 20:00:00.000000

A 副本 file posted under an Idempotency-Key keeps its answer (status and result file): the
same file posted again under the key gets that answer again and is not imported twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replica_file_answer",
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("answered_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("system", "idempotency_key", name=op.f("pk_replica_file_answer")),
    )


def downgrade() -> None:
    op.drop_table("replica_file_answer")
