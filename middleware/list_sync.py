"""A node's copy of the permitted-query list (照会許可用照合リスト), kept in step with the hub
(マイナポータル keeps one the same way, for the network's directory of institutions).

The hub signs and publishes the list; a node fetches it at start (awaited, so that a node
started after its hub starts with a list), then every ``list_refresh`` seconds (the node's
``list_sync`` job), and every second while it has none in force. Every version is verified
against the hub's pinned signing certificate and stored; the newest verified one is used, and
a stored one is loaded at start so that a node whose hub is down still knows its last list.
Both sides of a query check it: the requester before sending, the provider before answering.

The nodes of one process (a network in a box: bench/national.py runs 1,743) fetch the same
signed document; `verify_list` verifies it once per process and pinned certificate and gives
each of them the same immutable list (the same bytes and the same key give the same answer),
instead of each parsing and verifying it again and keeping a copy of its directory.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from cryptography.hazmat.primitives import hashes
from sqlalchemy import Table
from twisted.logger import Logger

from codes import errors
from codes.errors import RenkeiError
from crypto.xmlsig import PinnedVerifier, SignatureInvalid
from middleware import messages
from middleware.deferred import deferred
from middleware.network import HUB, PERMITTED_LIST
from middleware.party import Party
from middleware.permitted_list import (
    Delegation,
    ListedInstitution,
    PermittedList,
    PermittedRule,
    latest_version,
    store_version,
)
from middleware.tables import node_list_versions

__all__ = ["JOB", "VERIFIED_KEPT", "PermittedLists", "verify_list"]

JOB = "list_sync"  # the name of the job that keeps the list in step
VERIFIED_KEPT = 4  # lists kept verified in a process (the newest versions)

# Lists verified in this process, by the SHA-256 of the document and of the pinned certificate.
_verified: OrderedDict[tuple[bytes, bytes], PermittedList] = OrderedDict()


def verify_list(document: bytes, hub_verifier: PinnedVerifier) -> PermittedList:
    """The list a signed document holds, once its signature is verified against the hub's
    pinned certificate (PermittedListSignature when it is not). A document already verified
    in this process against the same certificate gives the same list at once: the newest
    `VERIFIED_KEPT` are kept; one that failed is never kept."""
    key = (
        hashlib.sha256(document).digest(),
        hub_verifier.certificate.fingerprint(hashes.SHA256()),
    )
    permitted = _verified.get(key)
    if permitted is None:
        permitted = _verify(document, hub_verifier)
        _verified[key] = permitted
        while len(_verified) > VERIFIED_KEPT:
            _verified.popitem(last=False)
    return permitted


def _verify(document: bytes, hub_verifier: PinnedVerifier) -> PermittedList:
    element = messages.decode_signed(document, messages.PermittedListDocument)
    try:
        verified = hub_verifier.verify(element)
    except SignatureInvalid:
        raise RenkeiError(errors.PERMITTED_LIST_SIGNATURE) from None
    listed = messages.from_element(verified, messages.PermittedListDocument)
    return PermittedList(
        version=listed.version,
        issued_at=listed.issued_at,
        expires_at=listed.expires_at,
        institutions={
            i.code: ListedInstitution(i.code, i.name, i.kind) for i in listed.institutions
        },
        rules=tuple(
            PermittedRule(
                r.requester_kind,
                r.affair,
                r.procedure,
                r.provider_kind,
                r.information_name,
                r.legal_basis,
            )
            for r in listed.rows
        ),
        delegations=frozenset(Delegation(d.delegator, d.delegate) for d in listed.delegations),
    )


class PermittedLists:
    """The permitted-query list of one node: the one in force and its synchronization."""

    log = Logger()

    def __init__(
        self, party: Party, hub_verifier: PinnedVerifier, versions: Table = node_list_versions
    ) -> None:
        self._party = party
        self._hub_verifier = hub_verifier
        # Where the versions are kept: a node's table, or マイナポータル's.
        self._versions = versions
        self.current: PermittedList | None = None
        """The newest verified list (possibly expired), or None before the first."""
        party.jobs.add(
            JOB, party.config.list_refresh, self.refresh, now=False, retry=self._retry_after
        )

    @deferred
    async def start(self) -> None:
        """Load the stored list and fetch the hub's (a first run of the job, awaited; when it
        fails, the job tries again)."""
        stored = await self._party.database.read(latest_version, self._versions)
        if stored is not None:
            self.current = verify_list(stored[1], self._hub_verifier)
        await self._party.jobs.run(JOB)

    def check_current(self) -> PermittedList:
        """The list in force; refused when none was received or it expired."""
        if self.current is None:
            raise RenkeiError(errors.PERMITTED_LIST_MISSING)
        self.current.ensure_current(self._party.now())
        return self.current

    @deferred
    async def sync(self) -> PermittedList:
        """Fetch the hub's list, verify it, keep the version and use it when newer."""
        document = await self._party.transport.exchange(HUB, PERMITTED_LIST)
        permitted = verify_list(document, self._hub_verifier)
        await self._party.database.run(
            store_version,
            self._versions,
            permitted.version,
            permitted.issued_at,
            permitted.expires_at,
            document,
            self._party.now(),
        )
        if self.current is None or permitted.version > self.current.version:
            self.current = permitted
        return self.current

    @deferred
    async def refresh(self) -> dict[str, int]:
        """`sync`, then refused unless the list is in force (the job fails and runs again
        soon); reports the version in force."""
        await self.sync()
        return {"version": self.check_current().version}

    def _retry_after(self, failures: int) -> float:
        """Seconds before the job runs again after failing: every second while no list is
        in force (nothing can be queried), else the party's backoff."""
        if not self._in_force():
            return 1.0
        return self._party.jobs.backoff.delay(failures)

    def _in_force(self) -> bool:
        return self.current is not None and self._party.now() < self.current.expires_at
