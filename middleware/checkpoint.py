"""Signed checkpoints of the hash chains: where a purge cut a chain, vouched for by its party.

A purge (middleware/retention.py) deletes the oldest links of a chain (the provision records,
the audit log), after which the chain no longer starts at the genesis: its first link left
has a ``prev_hash`` nobody can recompute. In the same transaction the purge stores a
checkpoint: a ``ChainCheckpoint`` document (``middleware/schemas/ChainCheckpoint.xsd``) saying
which party's which chain was cut after which link (its ``seq`` and ``hash``), when that link
was recorded and how many links were deleted, signed with the party's signing key (XML-DSig,
crypto/xmlsig.py). Verification then starts from the newest checkpoint of the chain, once its
signature is checked against the network CA and its signer is the party (`ChainTrust`); a
checkpoint that does not verify (edited, of another party or chain, its row changed) breaks
the chain at the checkpoint's ``seq``. A checkpoint outlives the signing certificate it was
made with: its signer must have been issued by the network CA, whatever its validity now.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from cryptography import x509
from lxml import etree
from sqlalchemy import Connection, Table, select

from codes.errors import RenkeiError
from crypto.pki import identity_of
from crypto.xmlsig import IssuedVerifier, SignatureInvalid, Signer
from middleware.chain import Chain, Link
from middleware.clock import iso
from middleware.hardened_xml import parse_xml, serialize
from middleware.messages import NS, SCHEMA_DIR

__all__ = [
    "AUDIT",
    "RECORDS",
    "ChainTrust",
    "ChainVerification",
    "Checkpoint",
    "CheckpointInvalid",
    "CheckpointSigner",
    "newest_checkpoint",
    "store_checkpoint",
    "verify_from_checkpoint",
]

RECORDS = "provision_record"
"""The chain of provision records (情報提供等記録), at every party."""
AUDIT = "audit_record"
"""The chain of the staff audit log, at a node."""

_ROOT = f"{{{NS}}}ChainCheckpoint"
_SCHEMA = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "ChainCheckpoint.xsd"), etree.XMLParser()))
_SCHEMA_LOCK = threading.Lock()  # one validation at a time: a schema keeps one error log


@dataclass(frozen=True)
class Checkpoint:
    """Where a purge cut ``party``'s ``chain``: after ``link`` (recorded at ``recorded_at``),
    having deleted ``deleted`` links, at ``made_at``."""

    party: str
    chain: str
    link: Link
    recorded_at: datetime
    deleted: int
    made_at: datetime


class CheckpointInvalid(Exception):
    """A checkpoint that cannot vouch for its chain; the message says why."""


class CheckpointSigner:
    """Signs the checkpoints of one party (``hub`` or an institution code) with its signing
    key."""

    def __init__(self, signer: Signer, party: str) -> None:
        self._signer = signer
        self.party = party

    def sign(self, checkpoint: Checkpoint) -> bytes:
        """The signed ChainCheckpoint document of ``checkpoint``."""
        if checkpoint.party != self.party:
            raise ValueError(f"a checkpoint of {checkpoint.party} cannot be signed by {self.party}")
        element = etree.Element(_ROOT, nsmap={None: NS})  # type: ignore[dict-item]
        element.set("party", checkpoint.party)
        element.set("chain", checkpoint.chain)
        element.set("seq", str(checkpoint.link.seq))
        element.set("hash", checkpoint.link.hash)
        element.set("recordedAt", iso(checkpoint.recorded_at))
        element.set("deleted", str(checkpoint.deleted))
        element.set("madeAt", iso(checkpoint.made_at))
        return serialize(self._signer.sign(element))


class ChainTrust:
    """What the checkpoints of one party's chains are verified against: the network CA, and
    the party (``hub`` or its institution code) as the signer's common name."""

    def __init__(self, ca: x509.Certificate, party: str) -> None:
        self._verifier = IssuedVerifier(ca)
        self.party = party

    def verify(self, document: bytes, chain: str) -> Checkpoint:
        """The checkpoint of ``chain`` that ``document`` holds, once its schema and signature
        are checked and it is the party's own; `CheckpointInvalid` otherwise."""
        try:
            element = parse_xml(document)
        except RenkeiError as refusal:
            raise CheckpointInvalid(f"the checkpoint is not readable: {refusal.code}") from None
        if element.tag != _ROOT:
            raise CheckpointInvalid("the document is not a ChainCheckpoint")
        with _SCHEMA_LOCK:
            valid = _SCHEMA.validate(element)
            errors: list[Any] = list(cast(Any, _SCHEMA.error_log))
        if not valid:
            detail = errors[0].message if errors else "invalid"
            raise CheckpointInvalid(f"the checkpoint does not follow its schema: {detail}")
        try:
            signed, signer = self._verifier.verify(element)
        except SignatureInvalid as failure:
            raise CheckpointInvalid(
                f"the checkpoint's signature does not verify: {failure}"
            ) from None
        signer_name = identity_of(signer).common_name
        checkpoint = _read(signed)
        if signer_name != self.party or checkpoint.party != self.party:
            raise CheckpointInvalid(
                f"the checkpoint of {checkpoint.party} signed by {signer_name} is not"
                f" {self.party}'s own"
            )
        if checkpoint.chain != chain:
            raise CheckpointInvalid(f"the checkpoint is of the chain {checkpoint.chain}")
        return checkpoint


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _read(element: etree._Element) -> Checkpoint:
    """The checkpoint in a verified (and schema-valid) element."""
    return Checkpoint(
        party=element.get("party", ""),
        chain=element.get("chain", ""),
        link=Link(int(element.get("seq", "0")), element.get("hash", "")),
        recorded_at=_time(element.get("recordedAt", "")),
        deleted=int(element.get("deleted", "0")),
        made_at=_time(element.get("madeAt", "")),
    )


def store_checkpoint(
    connection: Connection, table: Table, checkpoint: Checkpoint, document: bytes
) -> None:
    """Keep a signed checkpoint inside the caller's transaction (the purge's)."""
    connection.execute(
        table.insert().values(
            chain=checkpoint.chain,
            seq=checkpoint.link.seq,
            hash=checkpoint.link.hash,
            made_at=checkpoint.made_at,
            document=document,
        )
    )


def newest_checkpoint(connection: Connection, table: Table, chain: str) -> Any:
    """The row of the newest checkpoint of ``chain`` (None: the chain was never cut)."""
    return connection.execute(
        select(table).where(table.c.chain == chain).order_by(table.c.seq.desc()).limit(1)
    ).first()


@dataclass(frozen=True)
class ChainVerification:
    """A chain verified: the ``seq`` of its first link that breaks it (None: whole), the
    checkpoint it was verified from (None: from the genesis), and why the newest checkpoint
    was refused, when it was (it then breaks the chain at its ``seq``)."""

    first_broken: int | None
    checkpoint: Checkpoint | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        """Whether the chain is whole."""
        return self.first_broken is None


def verify_from_checkpoint(
    connection: Connection,
    chain: Chain,
    checkpoints: Table,
    name: str,
    trust: ChainTrust | None,
) -> ChainVerification:
    """Verify ``chain`` (named ``name``) from its newest checkpoint, checked with ``trust``,
    or from its genesis when it was never cut; without ``trust`` a checkpoint cannot vouch
    for anything and the chain breaks at it."""
    row = newest_checkpoint(connection, checkpoints, name)
    if row is None:
        return ChainVerification(chain.verify(connection))
    if trust is None:
        return ChainVerification(
            row.seq, problem="its checkpoint cannot be checked without the network CA"
        )
    try:
        checkpoint = trust.verify(bytes(row.document), name)
    except CheckpointInvalid as refusal:
        return ChainVerification(row.seq, problem=str(refusal))
    if (checkpoint.link.seq, checkpoint.link.hash) != (row.seq, row.hash):
        return ChainVerification(
            row.seq, problem="the checkpoint's row does not say what its signed document says"
        )
    return ChainVerification(chain.verify(connection, checkpoint.link), checkpoint)
