"""The staff audit log: append-only and hash-chained, one chain per node.

Every staff login, failed login, logout and operation (views of held content, approvals,
refusals, exports, flag and user changes) is written here with who, when and what, in the
same transaction as the operation itself. Like the provision records
(``middleware/records.py``) it is a `middleware.chain.Chain`: each entry's hash covers its
content and the previous entry's hash, and the single head row serializes appends and
remembers the newest entry, so an edited entry, a removed entry (the newest one included) or
a removed head row is detected by ``verify_audit``. Entries past their retention are purged,
oldest first (middleware/retention.py): the chain is then verified from the signed checkpoint
the purge left (middleware/checkpoint.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    func,
    select,
    true,
)

from middleware.chain import Chain, link_hash
from middleware.checkpoint import AUDIT, ChainTrust, ChainVerification, verify_from_checkpoint
from middleware.tables import audit_head, audit_record, node_checkpoints

__all__ = [
    "ACTIONS",
    "AUDIT_CHAIN",
    "SYSTEM",
    "AuditPage",
    "append_audit",
    "audit_content",
    "audit_entries",
    "audit_hash",
    "audit_page",
    "audit_verification",
    "count_audit",
    "latest_entries",
    "verify_audit",
]

SYSTEM = "system"
"""The actor of entries not caused by a logged-in staff member (CLI, set-up, timers)."""

ACTIONS = frozenset(
    {
        "login",
        "login_failed",
        "logout",
        "session_expired",
        "view_held_content",
        "view_person",
        "approve",
        "refuse",
        "export",
        "flag_change",
        "user_add",
        "user_disable",
        "password_reset",
        "totp_reset",
        "role_change",
        "back_office_refused",
        "purge",
        "restore",
    }
)
"""The actions known today; ``append_audit`` accepts others so new features can add theirs."""


def _detail_text(detail: Mapping[str, Any] | None) -> str | None:
    if detail is None:
        return None
    return json.dumps(dict(detail), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def audit_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """What an entry's hash covers (its ``detail`` as stored, JSON text)."""
    return {
        "seq": row["seq"],
        "recorded_at": row["recorded_at"].astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": row["actor"],
        "action": row["action"],
        "target": row["target"],
        "detail": row["detail"],
    }


AUDIT_CHAIN = Chain(audit_record, audit_head, audit_content)
"""The node's audit log as a hash chain."""


def audit_hash(
    prev_hash: str,
    seq: int,
    recorded_at: datetime,
    actor: str,
    action: str,
    target: str | None,
    detail: str | None,
) -> str:
    """The hash of one entry given the previous entry's hash (``detail`` as stored, JSON)."""
    return link_hash(
        prev_hash,
        audit_content(
            {
                "seq": seq,
                "recorded_at": recorded_at,
                "actor": actor,
                "action": action,
                "target": target,
                "detail": detail,
            }
        ),
    )


def append_audit(
    connection: Connection,
    recorded_at: datetime,
    actor: str,
    action: str,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry inside the caller's transaction; its ``seq``.

    ``detail`` is a JSON-serializable mapping, stored as canonical JSON text.
    """
    if recorded_at.tzinfo is None:
        raise ValueError("naive datetime given as an audit time")
    if not actor or not action:
        raise ValueError("an audit entry needs an actor and an action")
    return AUDIT_CHAIN.append(
        connection,
        [
            {
                "recorded_at": recorded_at,
                "actor": actor,
                "action": action,
                "target": target,
                "detail": _detail_text(detail),
            }
        ],
    )


def audit_verification(connection: Connection, trust: ChainTrust | None) -> ChainVerification:
    """The audit log's chain verified from its newest checkpoint (checked with ``trust``:
    the network CA and the node), or from its genesis when never purged."""
    return verify_from_checkpoint(connection, AUDIT_CHAIN, node_checkpoints, AUDIT, trust)


def verify_audit(connection: Connection, trust: ChainTrust | None = None) -> int | None:
    """The ``seq`` of the first entry that breaks the chain, or None when it is whole.

    An edited entry breaks at its own ``seq``, a removed one at the ``seq`` it held; a removed
    newest entry (or a removed head row) breaks at the first ``seq`` past the entries left.
    After a purge the chain is verified from its checkpoint, which ``trust`` checks (without
    it, the chain breaks at the checkpoint).
    """
    return audit_verification(connection, trust).first_broken


def _filter(
    actor: str | None, action: str | None, target: str | None = None
) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if target is not None:
        conditions.append(audit_record.c.target == target)
    if actor is not None:
        conditions.append(audit_record.c.actor == actor)
    if action is not None:
        conditions.append(audit_record.c.action == action)
    return and_(true(), *conditions)


def audit_entries(
    connection: Connection,
    *,
    limit: int,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """One page of entries, newest first, as plain dictionaries (``detail`` decoded).

    Keys: seq, recorded_at, actor, action, target, detail.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    rows = connection.execute(
        select(
            audit_record.c.seq,
            audit_record.c.recorded_at,
            audit_record.c.actor,
            audit_record.c.action,
            audit_record.c.target,
            audit_record.c.detail,
        )
        .where(_filter(actor, action, target))
        .order_by(audit_record.c.seq.desc())
        .limit(limit)
        .offset(offset)
    )
    entries = []
    for row in rows:
        entry = dict(row._mapping)
        if entry["detail"] is not None:
            entry["detail"] = json.loads(entry["detail"])
        entries.append(entry)
    return entries


def latest_entries(
    connection: Connection, action: str, targets: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The newest entry of ``action`` on each of ``targets`` that has one, by target."""
    found = {}
    for target in targets:
        entries = audit_entries(connection, limit=1, action=action, target=target)
        if entries:
            found[target] = entries[0]
    return found


def count_audit(
    connection: Connection, *, actor: str | None = None, action: str | None = None
) -> int:
    """How many entries match the same filters as ``audit_entries`` (for paging)."""
    return int(
        connection.execute(
            select(func.count()).select_from(audit_record).where(_filter(actor, action))
        ).scalar_one()
    )


@dataclass(frozen=True)
class AuditPage:
    """One page of the audit log, how many entries match, and the chain's state."""

    entries: list[dict[str, Any]]
    total: int
    first_broken: int | None  # the first entry whose hash does not verify, if any


def audit_page(
    connection: Connection,
    *,
    limit: int,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
    trust: ChainTrust | None = None,
) -> AuditPage:
    """``audit_entries`` with their count and the chain verified (from its checkpoint, which
    ``trust`` checks), in one transaction."""
    return AuditPage(
        entries=audit_entries(connection, limit=limit, offset=offset, actor=actor, action=action),
        total=count_audit(connection, actor=actor, action=action),
        first_broken=verify_audit(connection, trust),
    )
