"""initial schema of マイナポータル

Revision ID: 0001
Revises:
Create Date: 2026-12-07 11:04:47.622935

What every party keeps (outbox, provision records, permitted-query list versions, job runs)
and the portal's own: persons' accounts (by the portal's 符号) and their sessions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import middleware.tables

revision: str = "0001"
down_revision: str | None = None
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
    with op.batch_alter_table("job_run", schema=None) as batch_op:
        batch_op.create_index("ix_job_run_job", ["job", "outcome", "id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=36), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("next_attempt_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("finished_at", middleware.tables.UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("leased_by", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "outbox_owner",
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("started_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_outbox_owner")),
    )
    op.create_table(
        "permitted_list_version",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("issued_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("expires_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_permitted_list_version")),
    )
    op.create_table(
        "portal_account",
        sa.Column("fugo", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("opened_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("last_signed_in_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("fugo", name=op.f("pk_portal_account")),
    )
    op.create_table(
        "provision_record",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("transaction_number", sa.String(length=20), nullable=True),
        sa.Column("requester", sa.String(length=16), nullable=True),
        sa.Column("provider", sa.String(length=16), nullable=True),
        sa.Column("affair", sa.String(length=16), nullable=True),
        sa.Column("procedure", sa.String(length=16), nullable=True),
        sa.Column("information_name", sa.String(length=16), nullable=True),
        sa.Column("person", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("non_disclosure", sa.Boolean(), nullable=False),
        sa.Column("delegating_requester", sa.String(length=16), nullable=True),
        sa.Column("delegating_provider", sa.String(length=16), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_provision_record")),
    )
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.create_index("ix_provision_record_event", ["event", "seq"], unique=False)
        batch_op.create_index(
            "ix_provision_record_information_name", ["information_name", "seq"], unique=False
        )
        batch_op.create_index(
            "ix_provision_record_pair", ["requester", "provider", "seq"], unique=False
        )
        batch_op.create_index("ix_provision_record_person", ["person", "recorded_at"], unique=False)
        batch_op.create_index("ix_provision_record_procedure", ["procedure", "seq"], unique=False)
        batch_op.create_index("ix_provision_record_provider", ["provider", "seq"], unique=False)
        batch_op.create_index("ix_provision_record_recorded_at", ["recorded_at"], unique=False)
        batch_op.create_index("ix_provision_record_requester", ["requester", "seq"], unique=False)
        batch_op.create_index("ix_provision_record_status", ["status", "seq"], unique=False)
        batch_op.create_index(
            "ix_provision_record_transaction", ["transaction_number"], unique=False
        )

    op.create_table(
        "provision_record_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provision_record_head")),
    )
    op.create_table(
        "portal_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("fugo", sa.String(length=32), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", middleware.tables.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fugo"], ["portal_account.fugo"], name=op.f("fk_portal_session_fugo_portal_account")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_portal_session")),
    )
    with op.batch_alter_table("portal_session", schema=None) as batch_op:
        batch_op.create_index("ix_portal_session_fugo", ["fugo"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("portal_session", schema=None) as batch_op:
        batch_op.drop_index("ix_portal_session_fugo")

    op.drop_table("portal_session")
    op.drop_table("provision_record_head")
    with op.batch_alter_table("provision_record", schema=None) as batch_op:
        batch_op.drop_index("ix_provision_record_transaction")
        batch_op.drop_index("ix_provision_record_status")
        batch_op.drop_index("ix_provision_record_requester")
        batch_op.drop_index("ix_provision_record_recorded_at")
        batch_op.drop_index("ix_provision_record_provider")
        batch_op.drop_index("ix_provision_record_procedure")
        batch_op.drop_index("ix_provision_record_person")
        batch_op.drop_index("ix_provision_record_pair")
        batch_op.drop_index("ix_provision_record_information_name")
        batch_op.drop_index("ix_provision_record_event")

    op.drop_table("provision_record")
    op.drop_table("portal_account")
    op.drop_table("permitted_list_version")
    op.drop_table("outbox_owner")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    with op.batch_alter_table("job_run", schema=None) as batch_op:
        batch_op.drop_index("ix_job_run_job")

    op.drop_table("job_run")
