"""Table definitions (SQLAlchemy Core) of an intermediate server's database, the hub's and
マイナポータル's.

Each institution has a database of its own; the hub has another, the portal a third. Tables
that all keep (outbox, provision records, permitted-list versions, job runs) are built by
one function each, so the schemas cannot drift apart. Migrations live in
``middleware/migrations``, ``simulators/network/migrations`` and
``simulators/portal/migrations``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

__all__ = [
    "NAMING_CONVENTION",
    "UtcDateTime",
    "address_number",
    "audit_head",
    "audit_record",
    "bulk_query",
    "bulk_query_line",
    "held_provision",
    "hub_checkpoints",
    "hub_job_run",
    "hub_list_versions",
    "hub_metadata",
    "hub_notice",
    "hub_outbox",
    "hub_outbox_owner",
    "hub_query",
    "hub_record_head",
    "hub_record_summary",
    "hub_record_totals",
    "hub_records",
    "node_checkpoints",
    "node_job_run",
    "node_list_versions",
    "node_metadata",
    "node_outbox",
    "node_outbox_owner",
    "node_record_head",
    "node_record_summary",
    "node_record_totals",
    "node_records",
    "notice",
    "notice_attachment",
    "notice_recipient",
    "person",
    "portal_account",
    "portal_checkpoints",
    "portal_job_run",
    "portal_list_versions",
    "portal_metadata",
    "portal_notice",
    "portal_notice_attachment",
    "portal_outbox",
    "portal_outbox_owner",
    "portal_record_head",
    "portal_record_summary",
    "portal_record_totals",
    "portal_records",
    "portal_request",
    "portal_session",
    "provision",
    "query",
    "refused_request",
    "replica_file_answer",
    "replica_record",
    "resident",
    "self_information_attachment",
    "staff_session",
    "staff_user",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes as naive UTC and gives them back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def _outbox(metadata: MetaData) -> Table:
    """Messages to deliver at least once, written in the transaction that decided them."""
    return Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_id", String(36), nullable=False, unique=True),
        Column("kind", String(32), nullable=False),
        Column("destination", String(16), nullable=False),
        Column("reference", String(36), nullable=False),
        # The document; deleted (NULL) once the message has ended for ``[retention]
        # outbox_bodies`` (the row stays, with its message id, as long as the records).
        Column("body", LargeBinary),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("created_at", UtcDateTime, nullable=False),
        Column("next_attempt_at", UtcDateTime, nullable=False),
        Column("finished_at", UtcDateTime),
        Column("last_error", Text),
        # The outbox (owner) whose attempt holds the message's lease, while one does.
        Column("leased_by", String(32)),
        Column("body_deleted_at", UtcDateTime),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        # The purge's look for messages ended long enough ago (middleware/retention.py).
        Index("ix_outbox_finished", "state", "finished_at"),
    )


def _outbox_owners(metadata: MetaData) -> Table:
    """The outboxes running on a database, with their last heartbeat (middleware.outbox)."""
    return Table(
        "outbox_owner",
        metadata,
        Column("owner", String(32), primary_key=True),
        Column("started_at", UtcDateTime, nullable=False),
        Column("heartbeat_at", UtcDateTime, nullable=False),
    )


def _provision_records(metadata: MetaData) -> tuple[Table, Table]:
    """情報提供等記録: append-only and hash-chained, plus the chain's head row."""
    records = Table(
        "provision_record",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("recorded_at", UtcDateTime, nullable=False),
        Column("event", String(32), nullable=False),
        Column("transaction_number", String(20)),
        Column("requester", String(16)),
        Column("provider", String(16)),
        Column("affair", String(16)),
        Column("procedure", String(16)),
        Column("information_name", String(16)),
        Column("person", String(32)),
        Column("status", String(16), nullable=False),
        Column("error_code", String(64)),
        Column("non_disclosure", Boolean, nullable=False, default=False),
        Column("delegating_requester", String(16)),
        Column("delegating_provider", String(16)),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        Index("ix_provision_record_transaction", "transaction_number"),
        Index("ix_provision_record_recorded_at", "recorded_at"),
        Index("ix_provision_record_person", "person", "recorded_at"),
        # The operators' search filters, newest first (seq) within each.
        Index("ix_provision_record_requester", "requester", "seq"),
        Index("ix_provision_record_provider", "provider", "seq"),
        # A counterpart search: one seek per direction (see the console's record_branches).
        Index("ix_provision_record_pair", "requester", "provider", "seq"),
        Index("ix_provision_record_procedure", "procedure", "seq"),
        Index("ix_provision_record_information_name", "information_name", "seq"),
        Index("ix_provision_record_status", "status", "seq"),
        Index("ix_provision_record_event", "event", "seq"),
    )
    head = Table(
        "provision_record_head",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("seq", Integer, nullable=False),
        Column("hash", String(64), nullable=False),
    )
    return records, head


def _record_summaries(metadata: MetaData) -> tuple[Table, Table]:
    """業務統計: the items of the provision records (a query made, a provision request
    answered) counted by the month they began (Japan time), side, requester, provider,
    procedure, information name and outcome (``provision_record_summary``), and the same
    without the institutions (``provision_record_totals``: what every grouping but the
    institutions reads, a few cells a month however many institutions there are); both kept
    current in the transaction that appends the records (middleware/business_statistics.py).
    An unknown value is stored as ``''``. On SQLite their rows are kept in key order, months
    first (``WITHOUT ROWID``): a period's cells are read in one pass, without a second index."""

    def summary(name: str, *keys: str) -> Table:
        return Table(
            name,
            metadata,
            *(Column(key, String(7 if key == "month" else 16), primary_key=True) for key in keys),
            Column("tally", Integer, nullable=False),
            sqlite_with_rowid=False,
        )

    every = ("month", "side", "requester", "provider", "procedure", "information_name", "outcome")
    institutions = ("requester", "provider")
    return (
        summary("provision_record_summary", *every),
        summary("provision_record_totals", *(key for key in every if key not in institutions)),
    )


def _permitted_list_versions(metadata: MetaData) -> Table:
    """Every version of the permitted-query list ever issued or received, signed."""
    return Table(
        "permitted_list_version",
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("issued_at", UtcDateTime, nullable=False),
        Column("expires_at", UtcDateTime, nullable=False),
        Column("document", LargeBinary, nullable=False),
        Column("stored_at", UtcDateTime, nullable=False),
    )


def _chain_checkpoints(metadata: MetaData) -> Table:
    """The signed checkpoints of a party's hash chains (middleware/checkpoint.py): where each
    purge of a chain left it, verification of the chain starting from the newest."""
    return Table(
        "chain_checkpoint",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        # The chain: ``provision_record`` or ``audit_record``.
        Column("chain", String(32), nullable=False),
        # The last link deleted: its seq and hash, as the signed document says.
        Column("seq", Integer, nullable=False),
        Column("hash", String(64), nullable=False),
        Column("made_at", UtcDateTime, nullable=False),
        # The ChainCheckpoint document, signed with the party's signing key.
        Column("document", LargeBinary, nullable=False),
        Index("ix_chain_checkpoint_chain", "chain", "seq", unique=True),
    )


def _job_runs(metadata: MetaData) -> Table:
    """Every run of the party's periodic jobs (middleware.jobs): the newest of each job and
    outcome are kept."""
    return Table(
        "job_run",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("job", String(64), nullable=False),
        Column("started_at", UtcDateTime, nullable=False),
        Column("ended_at", UtcDateTime, nullable=False),
        Column("outcome", String(16), nullable=False),
        # What the run reports, e.g. {"results_deleted": 3} (JSON).
        Column("counts", Text, nullable=False),
        Column("error", Text),
        # A job's runs newest first, by outcome (the console, the pruning of old rows).
        Index("ix_job_run_job", "job", "outcome", "id"),
    )


# -- an intermediate server (node) -------------------------------------------------------

node_metadata = MetaData(naming_convention=NAMING_CONVENTION)

person = Table(
    "person",
    node_metadata,
    Column("integrated_address_number", String(15), primary_key=True),
    Column("fugo", String(32), unique=True),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("fugo_acquired_at", UtcDateTime),
    # The integrated-address function's key of a person: HMAC-SHA256 of the individual
    # number under the node's person key (never the number itself), so that registering
    # the same person again finds the same integrated address number.
    Column("person_key", String(64), unique=True),
    # Why the last background acquisition of the 符号 failed (an error code), if it did.
    Column("fugo_error", String(64)),
)

# 宛名番号: the person numbers of the institution's 宛名 system (shared by its back offices in
# this emulation), linked to integrated address numbers by the integrated-address function;
# a bulk-query line may name its person by one (番号体系 02).
address_number = Table(
    "address_number",
    node_metadata,
    Column("address_number", String(15), primary_key=True),
    Column(
        "integrated_address_number",
        String(15),
        ForeignKey("person.integrated_address_number"),
        nullable=False,
    ),
    Column("registered_at", UtcDateTime, nullable=False),
    Index("ix_address_number_person", "integrated_address_number"),
)

replica_record = Table(
    "replica_record",
    node_metadata,
    Column("record_id", String(32), primary_key=True),
    Column(
        "integrated_address_number",
        String(15),
        ForeignKey("person.integrated_address_number"),
        nullable=False,
    ),
    Column("information_name", String(16), nullable=False),
    Column("data_set", String(4), nullable=False),
    Column("items", Text, nullable=False),
    # 自動応答不可フラグ: never provide this record without a staff member's approval.
    Column("suppressed", Boolean, nullable=False, default=False, server_default="0"),
    Column("registered_at", UtcDateTime, nullable=False),
    # The 副本 file's entry fields (docs/replica-files.md); absent for records posted as JSON.
    Column("data_set_record_key", String(32)),
    Column("parent_record_key", String(32)),
    Column("major_version", String(8)),
    Column("publication_date", Date),
    Column("published_end_date", Date),
    Index("ix_replica_record_person", "integrated_address_number", "information_name"),
)

query = Table(
    "query",
    node_metadata,
    Column("query_id", String(36), primary_key=True),
    # The back-office system that submitted the query: the only one that may read it
    # (NULL for queries submitted before systems were recorded: no system may).
    Column("system", String(64)),
    Column("integrated_address_number", String(15), nullable=False),
    Column("affair", String(16), nullable=False),
    Column("procedure", String(16), nullable=False),
    Column("information_name", String(16), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("conditions", Text, nullable=False),
    # 委任元 and 照会側不開示, as asked (docs/protocol.md, "Delegation").
    Column("delegating_requester", String(16)),
    Column("delegating_provider", String(16)),
    Column("non_disclosure", Boolean, nullable=False, default=False, server_default="0"),
    Column("state", String(16), nullable=False),
    Column("transaction_number", String(20), unique=True),
    Column("error_code", String(64)),
    Column("submitted_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("result", LargeBinary),
    Column("result_deleted_at", UtcDateTime),
    # A back office's Idempotency-Key, and the SHA-256 of what it asked under it.
    Column("idempotency_key", String(64)),
    Column("request_hash", String(64)),
    Index("ix_query_completed", "state", "completed_at"),
    Index("uq_query_idempotency_key", "system", "idempotency_key", unique=True),
)

provision = Table(
    "provision",
    node_metadata,
    Column("transaction_number", String(20), primary_key=True),
    Column("message_id", String(36), nullable=False),
    Column("requester", String(16), nullable=False),
    Column("procedure", String(16), nullable=False),
    Column("information_name", String(16), nullable=False),
    Column("integrated_address_number", String(15)),
    Column("status", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("received_at", UtcDateTime, nullable=False),
    # From the permit: 委任元 and 照会側不開示, carried into every record of the provision.
    Column("delegating_requester", String(16)),
    Column("delegating_provider", String(16)),
    Column("non_disclosure", Boolean, nullable=False, default=False, server_default="0"),
)

# Provision requests refused (their records are in provision_record): one row per request,
# so that the hub sending the same request again is not recorded twice.
refused_request = Table(
    "refused_request",
    node_metadata,
    Column("message_id", String(36), primary_key=True),
    Column("transaction_number", String(20)),
    Column("error_code", String(64), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

held_provision = Table(
    "held_provision",
    node_metadata,
    Column(
        "transaction_number",
        String(20),
        ForeignKey("provision.transaction_number"),
        primary_key=True,
    ),
    Column("requester", String(16), nullable=False),
    Column("procedure", String(16), nullable=False),
    Column("information_name", String(16), nullable=False),
    Column("integrated_address_number", String(15), nullable=False),
    # The exact content that would be sent (unsigned ProvisionPayload XML) and for whom;
    # deleted (NULL) ``[retention] held_contents`` after the decision or expiry.
    Column("payload", LargeBinary),
    Column("recipient_certificate", LargeBinary),
    Column("permit_expires_at", UtcDateTime, nullable=False),
    Column("held_at", UtcDateTime, nullable=False),
    # The hold's own end (held_at + the provider's hold_lifetime), not the permit's.
    Column("hold_expires_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_at", UtcDateTime),
    Column("decided_by", String(64)),
    Column("reason", Text),
    Column("content_deleted_at", UtcDateTime),
    Index("ix_held_provision_hold", "state", "hold_expires_at"),
)

# 自己情報提供用添付ファイル: files a back-office system registers for a person, provided with
# their own information of one information name (middleware/attachments.py).
self_information_attachment = Table(
    "self_information_attachment",
    node_metadata,
    Column("attachment_id", String(36), primary_key=True),
    # The back-office system that registered it: the only one that may delete it.
    Column("system", String(64), nullable=False),
    Column(
        "integrated_address_number",
        String(15),
        ForeignKey("person.integrated_address_number"),
        nullable=False,
    ),
    Column("information_name", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Index("ix_self_information_attachment_person", "integrated_address_number", "information_name"),
)

# お知らせ: the notices the node's back-office systems send to persons through the network,
# and how each stands for each person (middleware/notices.py).
notice = Table(
    "notice",
    node_metadata,
    Column("notice_id", String(36), primary_key=True),
    # The back-office system that sent it: the only one that may read it.
    Column("system", String(64), nullable=False),
    Column("title", String(100), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_notice_created", "created_at"),
)

notice_attachment = Table(
    "notice_attachment",
    node_metadata,
    Column("notice_id", String(36), ForeignKey("notice.notice_id"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

notice_recipient = Table(
    "notice_recipient",
    node_metadata,
    Column("notice_id", String(36), ForeignKey("notice.notice_id"), primary_key=True),
    Column("integrated_address_number", String(15), primary_key=True),
    # The id of the Notice message sent to the hub for this person.
    Column("message_id", String(36), nullable=False, unique=True),
    # queued (送信待ち), sent (送信済), delivered (配信済), read (既読), undeliverable (配信不可)
    Column("state", String(16), nullable=False),
    # The network's number of the notice (from its NoticeAck).
    Column("notice_number", String(20), unique=True),
    Column("error_code", String(64)),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("read_at", UtcDateTime),
    Index("ix_notice_recipient_state", "state", "changed_at"),
)

node_outbox = _outbox(node_metadata)
node_outbox_owner = _outbox_owners(node_metadata)
node_records, node_record_head = _provision_records(node_metadata)
node_record_summary, node_record_totals = _record_summaries(node_metadata)
node_list_versions = _permitted_list_versions(node_metadata)
node_job_run = _job_runs(node_metadata)
node_checkpoints = _chain_checkpoints(node_metadata)


# The answer given to a 副本 file posted under an Idempotency-Key: the same file posted again
# under the key gets it again, and nothing is imported twice.
replica_file_answer = Table(
    "replica_file_answer",
    node_metadata,
    Column("system", String(64), primary_key=True),
    Column("idempotency_key", String(64), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("document", LargeBinary, nullable=False),
    Column("answered_at", UtcDateTime, nullable=False),
    Index("ix_replica_file_answer_answered_at", "answered_at"),
)

# -- staff and their audit log (情報提供等記録 are separate: middleware/records.py) -------

audit_record = Table(
    "audit_record",
    node_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", Text),
    Column("detail", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_record_actor", "actor", "seq"),
    Index("ix_audit_record_action", "action", "seq"),
)


audit_head = Table(
    "audit_head",
    node_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


staff_user = Table(
    "staff_user",
    node_metadata,
    Column("name", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("roles", String(200), nullable=False),
    Column("totp_secret", String(64)),
    # The newest TOTP time step accepted, so that a code cannot be replayed (RFC 6238 §5.2).
    Column("totp_last_counter", Integer),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=False),
)


staff_session = Table(
    "staff_session",
    node_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_name", String(64), ForeignKey("staff_user.name"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Index("ix_staff_session_user_name", "user_name"),
)


# -- bulk queries (一括照会, adapters/care_insurance/bulk_query.py) ------------------------

bulk_query = Table(
    "bulk_query",
    node_metadata,
    Column("bulk_query_id", String(36), primary_key=True),
    # The back-office system (client certificate CN) that posted the file.
    Column("system", String(64), nullable=False),
    # The input's encoding ("utf-8", "utf-8-sig" or "cp932"): the result file's too.
    Column("encoding", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("invalid", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    # A back office's Idempotency-Key, and the SHA-256 of the file posted under it.
    Column("idempotency_key", String(64)),
    Column("request_hash", String(64)),
    Index("ix_bulk_query_state", "state", "created_at"),
    Index("uq_bulk_query_idempotency_key", "system", "idempotency_key", unique=True),
)

bulk_query_line = Table(
    "bulk_query_line",
    node_metadata,
    Column(
        "bulk_query_id",
        String(36),
        ForeignKey("bulk_query.bulk_query_id"),
        primary_key=True,
    ),
    # The physical line number in the file (1 = the first line).
    Column("line_number", Integer, primary_key=True, autoincrement=False),
    Column("raw", Text, nullable=False),
    Column("state", String(24), nullable=False),
    # What a valid line asks (absent on an invalid line).
    Column("integrated_address_number", String(15)),
    Column("procedure", String(16)),
    Column("information_name", String(16)),
    Column("provider", String(16)),
    Column("conditions", Text),
    # 番号体系 02: the line's 宛名番号 (integrated_address_number is then found at claim).
    Column("address_number", String(15)),
    Column("delegating_requester", String(16)),
    Column("delegating_provider", String(16)),
    Column("non_disclosure", Boolean, nullable=False, default=False, server_default="0"),
    Column("query_id", String(36)),
    Column("error_code", String(64)),
    # The refusal's template values (JSON), e.g. the field and detail of an invalid line.
    Column("error_params", Text),
    # When the driver took the line to submit it: a re-link after a crash looks for the
    # query created at or after this time.
    Column("claimed_at", UtcDateTime),
    # The outbox owner of the process that took the line (middleware/outbox.py): another
    # process re-links or releases the line only once that owner has stopped or died.
    Column("claimed_by", String(32)),
    Column("ended_at", UtcDateTime),
    Index("ix_bulk_query_line_state", "state"),
    Index("ix_bulk_query_line_progress", "bulk_query_id", "state", "line_number"),
    Index("ix_bulk_query_line_query_id", "query_id"),
)


# -- the hub ------------------------------------------------------------------------------

hub_metadata = MetaData(naming_convention=NAMING_CONVENTION)

resident = Table(
    "resident",
    hub_metadata,
    Column("individual_number", String(12), primary_key=True),
    Column("resident_code", String(11), nullable=False, unique=True),
)

hub_query = Table(
    "hub_query",
    hub_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_number", String(20), unique=True),
    Column("requester", String(16), nullable=False),
    Column("requester_message_id", String(36), nullable=False, unique=True),
    Column("provider", String(16), nullable=False),
    Column("affair", String(16), nullable=False),
    Column("procedure", String(16), nullable=False),
    Column("information_name", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("received_at", UtcDateTime, nullable=False),
    Column("permit_expires_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("delegating_requester", String(16)),
    Column("delegating_provider", String(16)),
    Column("non_disclosure", Boolean, nullable=False, default=False, server_default="0"),
)

# お知らせ relayed from institutions to マイナポータル, and how each stands.
hub_notice = Table(
    "hub_notice",
    hub_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notice_number", String(20), unique=True),
    Column("sender", String(16), nullable=False),
    Column("sender_message_id", String(36), nullable=False),
    # The portal's 符号 of the person.
    Column("recipient", String(32), nullable=False),
    # sent, delivered, read, undeliverable
    Column("state", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("received_at", UtcDateTime, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
    Column("read_at", UtcDateTime),
    Index("uq_hub_notice_sender_message", "sender", "sender_message_id", unique=True),
)

hub_outbox = _outbox(hub_metadata)
hub_outbox_owner = _outbox_owners(hub_metadata)
hub_records, hub_record_head = _provision_records(hub_metadata)
hub_record_summary, hub_record_totals = _record_summaries(hub_metadata)
hub_list_versions = _permitted_list_versions(hub_metadata)
hub_job_run = _job_runs(hub_metadata)
hub_checkpoints = _chain_checkpoints(hub_metadata)


# -- マイナポータル (simulators/portal/) ------------------------------------------------------

portal_metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A person's マイナポータル account, opened at their first sign-in: known by the portal's own
# 符号 of the person (the portal never keeps the individual number).
portal_account = Table(
    "portal_account",
    portal_metadata,
    Column("fugo", String(32), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("last_signed_in_at", UtcDateTime, nullable=False),
)

# Signed-in persons: the SHA-256 of the session cookie's token, never the token.
portal_session = Table(
    "portal_session",
    portal_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("fugo", String(32), ForeignKey("portal_account.fugo"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Index("ix_portal_session_fugo", "fugo"),
)

# A person's requests for their own information (自己情報提供), asked through the hub; the
# result is the provider's verified, signed payload (plaintext), once provided.
portal_request = Table(
    "portal_request",
    portal_metadata,
    Column("request_id", String(36), primary_key=True),
    Column("fugo", String(32), ForeignKey("portal_account.fugo"), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("information_name", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("transaction_number", String(20), unique=True),
    Column("error_code", String(64)),
    Column("submitted_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("result", LargeBinary),
    Index("ix_portal_request_fugo", "fugo", "submitted_at"),
)

# The notices institutions sent persons (お知らせ), kept by the network's number.
portal_notice = Table(
    "portal_notice",
    portal_metadata,
    Column("notice_number", String(20), primary_key=True),
    Column("fugo", String(32), ForeignKey("portal_account.fugo"), nullable=False),
    Column("sender", String(16), nullable=False),
    Column("title", String(100), nullable=False),
    Column("body", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("read_at", UtcDateTime),
    Index("ix_portal_notice_fugo", "fugo", "received_at"),
)

portal_notice_attachment = Table(
    "portal_notice_attachment",
    portal_metadata,
    Column(
        "notice_number",
        String(20),
        ForeignKey("portal_notice.notice_number"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

portal_outbox = _outbox(portal_metadata)
portal_outbox_owner = _outbox_owners(portal_metadata)
portal_records, portal_record_head = _provision_records(portal_metadata)
portal_list_versions = _permitted_list_versions(portal_metadata)
portal_job_run = _job_runs(portal_metadata)
portal_checkpoints = _chain_checkpoints(portal_metadata)
portal_record_summary, portal_record_totals = _record_summaries(portal_metadata)
