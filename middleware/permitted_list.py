"""照会許可照合リスト: which procedure of which kind of institution may query what of whom.

Pure logic: the hub checks a query against its list, the requester checks before sending
and the provider re-checks before answering. The list is a signed, versioned document with
an expiry; nobody works on an expired one.

The list also says which institutions act for which (委任, delegation): an institution may
query in the name of another (照会者機関コード(委任元)) or answer in the name of another
(提供者機関コード(委任元)) only when the list has that delegation; the rule is then checked
with the kinds of the institutions acted for. Which delegations exist is the network's
emulated data (simulators/network/data/delegations.csv).
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
from codes.institution import INSTITUTION_KINDS, validate_institution_code
from middleware.clock import iso
from middleware.storage import insert_if_absent

__all__ = [
    "Delegation",
    "ListedInstitution",
    "PermittedList",
    "PermittedRule",
    "directory",
    "latest_version",
    "read_delegations",
    "read_rules",
    "store_version",
]


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
class Delegation:
    """Institution ``delegate`` may act for institution ``delegator`` (委任)."""

    delegator: str
    delegate: str


@dataclass(frozen=True)
class PermittedList:
    """One version of the list, already verified."""

    version: int
    issued_at: datetime
    expires_at: datetime
    institutions: Mapping[str, ListedInstitution]
    rules: tuple[PermittedRule, ...]
    delegations: frozenset[Delegation] = frozenset()
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

    def acting_for(self, institution: str, delegator: str | None) -> str:
        """Whom ``institution`` acts for: itself, or ``delegator`` when the list has that
        delegation (else DelegationNotPermitted)."""
        if delegator is None or delegator == institution:
            return institution
        self.institution(delegator)
        if Delegation(delegator, institution) not in self.delegations:
            raise RenkeiError(
                errors.DELEGATION_NOT_PERMITTED, delegate=institution, delegator=delegator
            )
        return delegator

    def check(
        self,
        requester: str,
        provider: str,
        affair: str,
        procedure: str,
        information_name: str,
        now: datetime,
        *,
        delegating_requester: str | None = None,
        delegating_provider: str | None = None,
    ) -> PermittedRule:
        """The rule that permits this query; NotPermitted when none does. With a delegating
        requester or provider (委任元), the delegation must be on the list and the rule is
        checked for the institutions acted for."""
        self.ensure_current(now)
        key = (
            self.institution(self.acting_for(requester, delegating_requester)).kind,
            affair,
            procedure,
            self.institution(self.acting_for(provider, delegating_provider)).kind,
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


def read_delegations(path: Path) -> list[Delegation]:
    """The hub's delegations: a CSV file with the header ``delegator,delegate,note`` (lines
    starting with ``#`` are comments). Raises ValueError naming the file for a code that is
    not an institution code or an institution acting for itself."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    delegations = []
    for row in rows:
        try:
            delegation = Delegation(
                validate_institution_code(row["delegator"]),
                validate_institution_code(row["delegate"]),
            )
        except (RenkeiError, KeyError) as failure:
            raise ValueError(f"{path}: {failure}") from None
        if delegation.delegator == delegation.delegate:
            raise ValueError(f"{path}: {delegation.delegator} cannot delegate to itself")
        delegations.append(delegation)
    return delegations


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
