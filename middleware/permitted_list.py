"""照会許可照合リスト: which procedure of which kind of institution may query what of whom.

Pure logic: the hub checks a query against its list, the requester checks before sending
and the provider re-checks before answering. The list is a signed, versioned document with
an expiry; nobody works on an expired one.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Table, select

from codes import errors
from codes.errors import RenkeiError
from codes.institution import INSTITUTION_KINDS
from middleware.clock import iso
from middleware.storage import insert_if_absent


@dataclass(frozen=True)
class ListedInstitution:
    """An institution as the list's directory names it."""

    code: str
    name: str
    kind: str


@dataclass(frozen=True)
class PermittedRule:
    """One row: requester kind and procedure may query an information name of a provider kind."""

    requester_kind: str
    affair: str
    procedure: str
    provider_kind: str
    information_name: str
    legal_basis: str

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (
            self.requester_kind,
            self.affair,
            self.procedure,
            self.provider_kind,
            self.information_name,
        )


@dataclass(frozen=True)
class PermittedList:
    """One version of the list, already verified."""

    version: int
    issued_at: datetime
    expires_at: datetime
    institutions: Mapping[str, ListedInstitution]
    rules: tuple[PermittedRule, ...]
    _index: dict[tuple[str, str, str, str, str], PermittedRule] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {rule.key: rule for rule in self.rules})

    def ensure_current(self, now: datetime) -> None:
        """Refuse to work on an expired list."""
        if now >= self.expires_at:
            raise RenkeiError(errors.PERMITTED_LIST_EXPIRED, expires_at=iso(self.expires_at))

    def institution(self, code: str) -> ListedInstitution:
        """The directory entry of ``code``; unknown institutions are refused."""
        try:
            return self.institutions[code]
        except KeyError:
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=code) from None

    def check(
        self,
        requester: str,
        provider: str,
        affair: str,
        procedure: str,
        information_name: str,
        now: datetime,
    ) -> PermittedRule:
        """The rule that permits this query; NotPermitted when none does."""
        self.ensure_current(now)
        key = (
            self.institution(requester).kind,
            affair,
            procedure,
            self.institution(provider).kind,
            information_name,
        )
        rule = self._index.get(key)
        if rule is None:
            raise RenkeiError(errors.NOT_PERMITTED, code=information_name, procedure=procedure)
        return rule


def read_rules(path: Path) -> list[PermittedRule]:
    """The hub's source of rules: a CSV file with a header row (see docs/protocol.md).
    Raises ValueError naming the file for a kind outside INSTITUTION_KINDS."""
    with path.open(encoding="utf-8", newline="") as handle:
        rules = [
            PermittedRule(
                requester_kind=row["requester_kind"],
                affair=row["affair"],
                procedure=row["procedure"],
                provider_kind=row["provider_kind"],
                information_name=row["information_name"],
                legal_basis=row["legal_basis"],
            )
            for row in csv.DictReader(line for line in handle if not line.startswith("#"))
        ]
    for rule in rules:
        for kind in (rule.requester_kind, rule.provider_kind):
            if kind not in INSTITUTION_KINDS:
                raise ValueError(f"{path}: {kind!r} is not an institution kind")
    return rules


def directory(entries: Iterable[ListedInstitution]) -> dict[str, ListedInstitution]:
    """The list's institution directory keyed by institution code."""
    return {entry.code: entry for entry in entries}


# -- versions kept in a database (hub and nodes alike) -----------------------------------


def store_version(
    connection: Connection,
    table: Table,
    version: int,
    issued_at: datetime,
    expires_at: datetime,
    document: bytes,
    now: datetime,
) -> bool:
    """Keep a version (idempotent, also under concurrent calls); True when it was new."""
    return insert_if_absent(
        connection,
        table,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        document=document,
        stored_at=now,
    )


def latest_version(connection: Connection, table: Table) -> tuple[int, bytes] | None:
    """The newest stored version number and its signed document."""
    row = connection.execute(
        select(table.c.version, table.c.document).order_by(table.c.version.desc()).limit(1)
    ).first()
    return None if row is None else (int(row.version), bytes(row.document))
