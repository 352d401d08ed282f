"""The provider side of an intermediate server (情報提供): provision requests in, provisions out.

The hub brings a provision request with its signed permit (`Provider.receive_request`). The
permit is verified against the hub's pinned certificate, its terms and the permitted list are
checked, and the requester's encryption certificate (in the route) is checked to be the
network's and the permit's. The answer is prepared from a consistent read of the replica (the
records of the person, the information name, the publication window and the query's
conditions), signed and encrypted for the requester alone *outside* any transaction, then
stored with its provision record and put in the outbox in one transaction that checks again
that the 処理通番 was not answered meanwhile. A record flagged 自動応答不可 holds the whole
answer for a staff decision (`middleware.held`); the requester learns only that it is held.
Every refused request is recorded too, with its code.

A person's request for their own information (自己情報提供, `receive_self_information_request`)
comes the same way from マイナポータル, under a permit of the 自己情報提供 procedure: checked
the same, except that instead of a row of the list the requester must be the network's portal
and the information name one this institution provides; the answer is what the catalogue
lets a person see of their records, with the files registered for them
(`middleware.attachments`), sealed for the portal alone, and held like any other when a
record is flagged 自動応答不可.

What the institution provides of an information name it hides from persons (提供側不開示,
``non_disclosed``) is marked so in its records and in the ``Provision`` it sends, so that the
hub and the requester mark theirs too (`withholds`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, bindparam, select
from twisted.logger import Logger

from codes import errors
from codes.catalogue import SELF_INFORMATION_PROCEDURE, Catalogue, DataSet
from codes.errors import RenkeiError
from codes.institution import PORTAL_KIND
from crypto import envelope
from crypto.pki import IssuedCertificates
from crypto.xmlsig import PinnedVerifier, SignatureInvalid, Signer
from middleware import attachments, conditions, held_queue, messages, persons, replica
from middleware.config import InstitutionConfig
from middleware.deferred import deferred
from middleware.hardened_xml import serialize
from middleware.list_sync import PermittedLists
from middleware.network import (
    HUB,
    PROVISION,
    PROVISION_BUNDLE,
    TransientFailure,
    bundles_of,
    decode_answer,
)
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.permit import check_permit_terms
from middleware.queries import HELD, NO_DATA, PROVIDED, REFUSED
from middleware.records import RecordEntry
from middleware.storage import in_slices
from middleware.tables import provision, refused_request

__all__ = ["Provider"]

# The statements of every provision, built once (building one costs several times executing
# it).
_ANSWERS_OF = select(provision.c.transaction_number, provision.c.message_id).where(
    provision.c.transaction_number.in_(bindparam("numbers", expanding=True))
)
_INSERT_PROVISION = provision.insert()


def _line_message_id(message_id: str, number: str) -> str:
    """The identifier under which a refusal of one permit of a bundle is recorded: the same
    for the same request and 処理通番 (the hub's retry records nothing twice)."""
    return str(uuid.uuid5(uuid.UUID(message_id), number))


def _answers_of(connection: Connection, numbers: Sequence[str]) -> dict[str, str]:
    """The request (message id) each of some 処理通番 was answered under, for those that were:
    one statement per `IN_SLICE` of them."""
    answered: dict[str, str] = {}
    for some in in_slices(sorted(set(numbers))):
        for row in connection.execute(_ANSWERS_OF, {"numbers": some}):
            answered[row.transaction_number] = row.message_id
    return answered


def _was_answered(answered: Mapping[str, str], message_id: str, number: str) -> bool:
    """Whether this 処理通番 was answered (of ``answered``, `_answers_of`): True for the hub's
    retry of the same request, PermitReplayed for another request with the same permit."""
    used = answered.get(number)
    if used is None:
        return False
    if used == message_id:
        return True
    raise RenkeiError(errors.PERMIT_REPLAYED, transaction_number=number)


@dataclass
class _Stores:
    """The provisions of a bundle to store: what was answered before (`_answers_of`), and
    each provision added since (answered too, then) with its hold, written by `write` in one
    insert (executemany)."""

    answered: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    holds: list[held_queue.HeldItem] = field(default_factory=list)

    def add(self, message_id: str, row: dict[str, Any], held: held_queue.HeldItem | None) -> None:
        self.answered[row["transaction_number"]] = message_id
        self.rows.append(row)
        if held is not None:
            self.holds.append(held)

    def write(self, connection: Connection) -> None:
        if self.rows:
            connection.execute(_INSERT_PROVISION, self.rows)
        for held in self.holds:  # after their provisions, which they name
            held_queue.hold(connection, held)
        self.rows, self.holds = [], []


@dataclass(frozen=True)
class _Answer:
    """What the replica gives for a permit: the person, the status and the payload."""

    person: str  # 団体内統合宛名番号
    status: str  # provided, no_data or held
    payload: messages.ProvisionPayload


class Provider:
    """The provisions of one intermediate server."""

    log = Logger()

    def __init__(
        self,
        party: Party,
        institution: InstitutionConfig,
        catalogue: Catalogue,
        lists: PermittedLists,
        *,
        ca: x509.Certificate,
        signer: Signer,
        hub_verifier: PinnedVerifier,
    ) -> None:
        self._party = party
        self._database = party.database
        self._institution = institution
        self._code = institution.code
        self._catalogue = catalogue
        self._lists = lists
        self._encryption_certificates = IssuedCertificates(ca)
        self._signer = signer
        self._hub_verifier = hub_verifier

    def withholds(self, information_name: str, asked: bool = False) -> bool:
        """Whether a provision of ``information_name`` is hidden from the person's disclosure:
        the requester asked so (照会側不開示, ``asked``, from the permit) or this institution
        hides that information name (提供側不開示)."""
        return asked or information_name in self._institution.non_disclosed

    @deferred
    async def receive_request(self, asked: messages.ProvisionRequest) -> bytes:
        """情報提供要求: verify the permit, re-check the list, answer through the outbox; the
        acknowledgement."""
        return await self._receive(asked, self_information=False)

    @deferred
    async def receive_self_information_request(
        self, asked: messages.SelfInformationRequest
    ) -> bytes:
        """自己情報提供 asked through マイナポータル: verify the permit, check it is the
        portal's, of the 自己情報提供 procedure and of an information name provided here;
        answer through the outbox; the acknowledgement."""
        return await self._receive(asked, self_information=True)

    async def _receive(
        self,
        asked: messages.ProvisionRequest | messages.SelfInformationRequest,
        *,
        self_information: bool,
    ) -> bytes:
        permit: messages.Permit | None = None
        try:
            try:
                verified = self._hub_verifier.verify(asked.permit_element)
            except SignatureInvalid:
                raise RenkeiError(errors.PERMIT_SIGNATURE_INVALID) from None
            permit = messages.from_element(verified, messages.Permit)
            now = self._party.now()
            check_permit_terms(
                transaction_number=permit.transaction_number,
                provider=permit.provider,
                issued_at=permit.issued_at,
                expires_at=permit.expires_at,
                me=self._code,
                now=now,
            )
            recipient = self._route_certificate(asked.route, permit)
            if self_information:
                self._check_self_information(permit)
            else:
                self._lists.check_current().check(
                    permit.requester,
                    self._code,
                    permit.affair,
                    permit.procedure,
                    permit.information_name,
                    now,
                    delegating_requester=permit.delegating_requester,
                    delegating_provider=permit.delegating_provider,
                )
            outgoing = None
            answer = await self._database.read(
                self._prepare, asked.message_id, permit, now, self_information
            )
            if answer is not None:
                message_id = str(uuid.uuid4())
                # Signing and encryption: CPU work, outside any transaction.
                body = self._answer_body(message_id, permit, answer, recipient)
                outgoing = await self._database.run(
                    self._store, asked.message_id, permit, recipient, answer, message_id, body, now
                )
        except RenkeiError as refusal:
            if refusal.status < 500:
                # 番号法 第23条: a request refused is recorded too, with its code.
                first = await self._database.run(
                    self._record_refused, asked.message_id, permit, refusal, self._party.now()
                )
                if first:
                    self._party.events.provision_refused(
                        permit.transaction_number if permit is not None else None,
                        permit.requester if permit is not None else None,
                        refusal.code,
                    )
            raise
        if outgoing is not None and answer is not None:
            self._party.outbox.send_now(outgoing)
            self._party.events.provision(
                permit.transaction_number,
                answer.status,
                permit.requester,
                permit.information_name,
                permit.procedure,
                now + timedelta(seconds=self._institution.hold_lifetime),
            )
        return messages.encode(
            messages.ProvisionRequestAck(
                message_id=asked.message_id, transaction_number=permit.transaction_number
            )
        )

    @deferred
    async def receive_request_bundle(self, asked: messages.ProvisionRequestBundle) -> bytes:
        """情報提供要求 for the permitted lines of a query bundle (docs/protocol.md §1c): the
        permit bundle verified against the hub's pinned certificate and its terms, route and
        list checked once; then each line answered as a ProvisionRequest under its own permit
        would be (a refused line does not refuse the others), every line read in one
        transaction, signed and encrypted outside any, and stored in one. The answer has a
        line per permit."""
        bundle: messages.PermitBundle | None = None
        now = self._party.now()
        try:
            try:
                verified = self._hub_verifier.verify(asked.permit_element)
            except SignatureInvalid:
                raise RenkeiError(errors.PERMIT_SIGNATURE_INVALID) from None
            bundle = messages.from_element(verified, messages.PermitBundle)
            permits = [bundle.permit_of(line) for line in bundle.lines]
            check_permit_terms(
                transaction_number=permits[0].transaction_number,
                provider=bundle.provider,
                issued_at=bundle.issued_at,
                expires_at=bundle.expires_at,
                me=self._code,
                now=now,
            )
            recipient = self._route_certificate(asked.route, permits[0])
            self._lists.check_current().check(
                bundle.requester,
                self._code,
                bundle.affair,
                bundle.procedure,
                bundle.information_name,
                now,
                delegating_requester=bundle.delegating_requester,
                delegating_provider=bundle.delegating_provider,
            )
        except RenkeiError as refusal:
            if refusal.status < 500:
                # 番号法 第23条: a request refused is recorded too, for each of its permits.
                permits = [] if bundle is None else [bundle.permit_of(x) for x in bundle.lines]
                recorded = await self._database.run(
                    self._record_bundle_refused, asked.message_id, permits, refusal, now
                )
                for number, requester in recorded:
                    self._party.events.provision_refused(number, requester, refusal.code)
            raise
        prepared = await self._database.read(self._prepare_lines, asked.message_id, permits, now)
        answers: dict[str, messages.Provision] = {}
        for permit, answer in zip(permits, prepared, strict=True):
            if isinstance(answer, _Answer):
                # Signing and encryption: CPU work, outside any transaction.
                number = permit.transaction_number
                answers[number] = self._answer(str(uuid.uuid4()), permit, answer, recipient)
        stored, outgoing = await self._database.run(
            self._store_lines, asked.message_id, permits, prepared, answers, recipient, now
        )
        for message in outgoing:
            self._party.outbox.send_now(message)
        lines = []
        given: list[tuple[str, str]] = []  # one business event for them all (bundle's shape)
        for permit, answer, (new, refused, first) in zip(permits, prepared, stored, strict=True):
            number = permit.transaction_number
            if refused is not None:
                if first:
                    self._party.events.provision_refused(number, permit.requester, refused.code)
                lines.append(messages.BundleAnswerLine.refusing(number, refused))
                continue
            if new and isinstance(answer, _Answer) and answer.status != HELD:
                given.append((number, answer.status))
            elif new and isinstance(answer, _Answer):
                self._party.events.provision(
                    number,
                    answer.status,
                    permit.requester,
                    permit.information_name,
                    permit.procedure,
                    now + timedelta(seconds=self._institution.hold_lifetime),
                )
            lines.append(messages.BundleAnswerLine(transaction_number=number))
        self._party.events.provisions_given(
            given, bundle.requester, bundle.information_name, bundle.procedure
        )
        return messages.encode(
            messages.ProvisionRequestBundleAnswer(message_id=asked.message_id, lines=tuple(lines))
        )

    def _prepare_lines(
        self,
        connection: Connection,
        message_id: str,
        permits: list[messages.Permit],
        now: datetime,
    ) -> list[_Answer | RenkeiError | None]:
        """`_prepare` for each permit of a bundle (one shape: one information name), from one
        snapshot and with one read each of the permits answered, the persons and their
        records, whatever their number: its answer, its refusal, or None when it was
        answered."""
        numbers = [permit.transaction_number for permit in permits]
        answered = _answers_of(connection, numbers)
        people = persons.persons_of(connection, [permit.provider_fugo for permit in permits])
        held = replica.records_of_persons(
            connection,
            people.values(),
            permits[0].information_name if permits else "",
            replica.today_in_japan(now),
        )
        prepared: list[_Answer | RenkeiError | None] = []
        for permit in permits:
            try:
                if _was_answered(answered, message_id, permit.transaction_number):
                    prepared.append(None)
                    continue
            except RenkeiError as replayed:
                prepared.append(replayed)
                continue
            person = people.get(permit.provider_fugo)
            if person is None:
                prepared.append(RenkeiError(errors.FUGO_UNKNOWN))
                continue
            assert permit.information_name == permits[0].information_name
            prepared.append(self._answer_of(permit, person, held.get(person, []), (), now))
        return prepared

    def _store_lines(
        self,
        connection: Connection,
        message_id: str,
        permits: list[messages.Permit],
        prepared: list[_Answer | RenkeiError | None],
        answers: dict[str, messages.Provision],
        recipient: x509.Certificate,
        now: datetime,
    ) -> tuple[list[tuple[bool, RenkeiError | None, bool]], list[OutgoingMessage]]:
        """In one transaction, each line of a bundle: its provision stored (and held when it
        is) and recorded, or its refusal recorded; the provisions stored go to the hub
        together, as ProvisionBundles (`bundles_of`). For each line: whether it was stored just
        now, its refusal and whether that was recorded just now; and the messages to send."""
        with self._party.records_together(connection):
            stored: list[tuple[bool, RenkeiError | None, bool]] = []
            provisions: list[messages.Provision] = []
            # What was answered since `_prepare_lines` read it (the hub's retry, at once).
            numbers = [
                permit.transaction_number
                for permit, answer in zip(permits, prepared, strict=True)
                if isinstance(answer, _Answer)
            ]
            batch = _Stores(_answers_of(connection, numbers))
            for permit, answer in zip(permits, prepared, strict=True):
                line_id = _line_message_id(message_id, permit.transaction_number)
                if isinstance(answer, RenkeiError):
                    first = self._record_refused(connection, line_id, permit, answer, now)
                    stored.append((False, answer, first))
                    continue
                if answer is None:
                    stored.append((False, None, False))  # answered before: the hub's retry
                    continue
                try:
                    entry = self._stored(
                        connection, message_id, permit, recipient, answer, now, batch
                    )
                except RenkeiError as refusal:  # answered meanwhile under another request
                    if refusal.status >= 500:
                        raise
                    first = self._record_refused(connection, line_id, permit, refusal, now)
                    stored.append((False, refusal, first))
                    continue
                if entry is None:
                    stored.append((False, None, False))  # answered meanwhile: the hub's retry
                    continue
                # At its turn, among the refusals: the records follow the lines (written
                # together when `records_together` ends).
                self._party.record(connection, now, [entry])
                provisions.append(answers[permit.transaction_number])
                stored.append((True, None, False))
            batch.write(connection)
            outgoing = []
            for group in bundles_of(provisions):
                bundle_id = str(uuid.uuid4())
                body = messages.encode(
                    messages.ProvisionBundle(message_id=bundle_id, provisions=group)
                )
                message = OutgoingMessage(bundle_id, PROVISION_BUNDLE, HUB, bundle_id, body)
                self._party.outbox.enqueue(connection, message)
                outgoing.append(message)
            return stored, outgoing

    def _record_bundle_refused(
        self,
        connection: Connection,
        message_id: str,
        permits: list[messages.Permit],
        refusal: RenkeiError,
        now: datetime,
    ) -> list[tuple[str | None, str | None]]:
        """A bundle refused whole, recorded for each of its permits (once for the request
        when its permit bundle could not be verified); the (処理通番, requester) of each
        refusal recorded just now."""
        if not permits:
            first = self._record_refused(connection, message_id, None, refusal, now)
            return [(None, None)] if first else []
        recorded: list[tuple[str | None, str | None]] = []
        for permit in permits:
            line_id = _line_message_id(message_id, permit.transaction_number)
            if self._record_refused(connection, line_id, permit, refusal, now):
                recorded.append((permit.transaction_number, permit.requester))
        return recorded

    def _check_self_information(self, permit: messages.Permit) -> None:
        """A permit for a person's own information: of the 自己情報提供 procedure, asked by
        the network's portal (the kind the list in force gives it), of an information name
        provided here."""
        if permit.procedure != SELF_INFORMATION_PROCEDURE:
            raise RenkeiError(
                errors.NOT_PERMITTED, code=permit.information_name, procedure=permit.procedure
            )
        listed = self._lists.check_current().institution(permit.requester)
        if listed.kind != PORTAL_KIND:
            raise RenkeiError(errors.NOT_THE_PORTAL, caller=permit.requester)
        if permit.information_name not in self._institution.provides:
            raise RenkeiError(errors.NOT_A_PROVIDER_OF, code=permit.information_name)

    # -- checks ------------------------------------------------------------------------------

    def _route_certificate(
        self, route: messages.Route, permit: messages.Permit
    ) -> x509.Certificate:
        """The requester's encryption certificate, checked to be the network's and the permit's."""
        try:
            certificate, identity = self._encryption_certificates.check(
                route.encryption_certificate
            )
        except Exception:
            raise RenkeiError(errors.PERMIT_MISMATCH) from None
        if (
            route.requester != permit.requester
            or identity.common_name != permit.requester
            or identity.organizational_unit != "encryption"
        ):
            raise RenkeiError(errors.PERMIT_MISMATCH)
        return certificate

    @staticmethod
    def _answered(connection: Connection, message_id: str, number: str) -> bool:
        """Whether this 処理通番 was answered: True for the hub's retry of the same request,
        PermitReplayed for another request with the same permit."""
        return _was_answered(_answers_of(connection, [number]), message_id, number)

    # -- the answer ----------------------------------------------------------------------------

    def _prepare(
        self,
        connection: Connection,
        message_id: str,
        permit: messages.Permit,
        now: datetime,
        self_information: bool = False,
    ) -> _Answer | None:
        """What to answer, from one snapshot of the replica; None when it was answered."""
        number = permit.transaction_number
        if self._answered(connection, message_id, number):
            return None
        person = persons.person_of(connection, permit.provider_fugo)
        records = replica.records_of(
            connection, person, permit.information_name, replica.today_in_japan(now)
        )
        files: tuple[messages.Attachment, ...] = ()
        if self_information:
            files = attachments.attachments_of(connection, person, permit.information_name)
        return self._answer_of(permit, person, records, files, now, self_information)

    def _answer_of(
        self,
        permit: messages.Permit,
        person: str,
        records: list[replica.ReplicaRecord],
        files: tuple[messages.Attachment, ...],
        now: datetime,
        self_information: bool = False,
    ) -> _Answer:
        """What to answer a permit about ``person``, from their records of its information
        name published today (and, for a person's own information, their files)."""
        number = permit.transaction_number
        # Only records whose publication window covers today (JST) and that meet the
        # query's conditions (照会条件, carried in the permit) are provided.
        records = self._records_asked(records, permit)
        held = any(record.suppressed for record in records)
        provided = [
            messages.PayloadRecord(
                data_set=record.data_set,
                record_id=record.record_id,
                items=tuple(sorted(record.items.items())),
            )
            for record in records
        ]
        if self_information:
            # What the catalogue lets a person see of their own records, and their files.
            provided = self._for_person(permit.information_name, provided)
        payload = messages.ProvisionPayload(
            transaction_number=number,
            information_name=permit.information_name,
            provider=self._code,
            requester=permit.requester,
            created_at=now,
            records=tuple(provided),
            attachments=files,
        )
        status = HELD if held else PROVIDED if provided or files else NO_DATA
        return _Answer(person=person, status=status, payload=payload)

    def _for_person(
        self, information_name: str, records: list[messages.PayloadRecord]
    ) -> list[messages.PayloadRecord]:
        """The records as a person may see them (自己情報提供): the data sets and items the
        catalogue keeps from persons left out, a record with nothing left dropped."""
        information = self._catalogue.information_name(information_name)
        shown = []
        for record in records:
            items = information.for_person(record.data_set, dict(record.items))
            if items is not None:
                shown.append(
                    messages.PayloadRecord(
                        data_set=record.data_set, record_id=record.record_id, items=items
                    )
                )
        return shown

    def _records_asked(
        self, records: list[replica.ReplicaRecord], permit: messages.Permit
    ) -> list[replica.ReplicaRecord]:
        """The records that meet the permit's conditions (all of them without conditions)."""
        if not conditions.span_of_conditions(permit.conditions):
            return records
        information = self._catalogue.information_name(permit.information_name)
        data_sets: dict[str, DataSet] = {ds.code: ds for ds in information.data_sets}
        return [
            record
            for record in records
            if conditions.meets(permit.conditions, data_sets.get(record.data_set), record.items)
        ]

    def _answer_body(
        self,
        message_id: str,
        permit: messages.Permit,
        answer: _Answer,
        recipient: x509.Certificate,
    ) -> bytes:
        return messages.encode(self._answer(message_id, permit, answer, recipient))

    def _answer(
        self,
        message_id: str,
        permit: messages.Permit,
        answer: _Answer,
        recipient: x509.Certificate,
    ) -> messages.Provision:
        hidden = self.withholds(permit.information_name)
        if answer.status == HELD:
            # The requester learns that its query is held (保留中), nothing more.
            return messages.Provision(
                message_id=message_id,
                transaction_number=permit.transaction_number,
                status=HELD,
                non_disclosure=hidden,
            )
        return self.sealed(
            message_id, permit.transaction_number, answer.status, answer.payload, recipient
        )

    def sealed_provision(
        self,
        message_id: str,
        number: str,
        status: str,
        payload: messages.ProvisionPayload,
        recipient: x509.Certificate,
    ) -> bytes:
        """`sealed`, encoded."""
        return messages.encode(self.sealed(message_id, number, status, payload, recipient))

    def sealed(
        self,
        message_id: str,
        number: str,
        status: str,
        payload: messages.ProvisionPayload,
        recipient: x509.Certificate,
    ) -> messages.Provision:
        """A Provision carrying ``payload`` signed by us and encrypted for ``recipient``
        (marked 不開示 when this institution hides its information name)."""
        plaintext = serialize(self._signer.sign(messages.to_element(payload)))
        return messages.Provision(
            message_id=message_id,
            transaction_number=number,
            status=status,
            encrypted_payload=envelope.seal(plaintext, recipient),
            non_disclosure=self.withholds(payload.information_name),
        )

    def _store(
        self,
        connection: Connection,
        asked_id: str,
        permit: messages.Permit,
        recipient: x509.Certificate,
        answer: _Answer,
        message_id: str,
        body: bytes,
        now: datetime,
    ) -> OutgoingMessage | None:
        """Store the provision, hold it or queue it, and record it, in one transaction."""
        entry = self._stored(connection, asked_id, permit, recipient, answer, now)
        if entry is None:
            return None  # answered meanwhile (the hub's retry, delivered twice at once)
        return self.queue_provision(connection, now, message_id, body, entry)

    def _stored(
        self,
        connection: Connection,
        asked_id: str,
        permit: messages.Permit,
        recipient: x509.Certificate,
        answer: _Answer,
        now: datetime,
        batch: _Stores | None = None,
    ) -> RecordEntry | None:
        """The provision stored (and held when it is), its record still to be written; None
        when the 処理通番 was answered meanwhile. With ``batch``, what was answered is taken
        from it and the provision (and its hold) is added to it, for the caller to write."""
        number = permit.transaction_number
        if batch is None:
            if self._answered(connection, asked_id, number):
                return None
        elif _was_answered(batch.answered, asked_id, number):
            return None
        values = {
            "transaction_number": number,
            "message_id": asked_id,
            "requester": permit.requester,
            "procedure": permit.procedure,
            "information_name": permit.information_name,
            "integrated_address_number": answer.person,
            "status": answer.status,
            "received_at": now,
            "delegating_requester": permit.delegating_requester,
            "delegating_provider": permit.delegating_provider,
            "non_disclosure": self.withholds(permit.information_name, permit.non_disclosure),
        }
        held = None
        if answer.status == HELD:
            held = held_queue.HeldItem(
                transaction_number=number,
                requester=permit.requester,
                procedure=permit.procedure,
                information_name=permit.information_name,
                integrated_address_number=answer.person,
                payload=serialize(messages.to_element(answer.payload)),
                recipient_certificate=recipient.public_bytes(Encoding.DER),
                permit_expires_at=permit.expires_at,
                held_at=now,
                hold_expires_at=now + timedelta(seconds=self._institution.hold_lifetime),
                state=held_queue.HELD,
                decided_at=None,
                decided_by=None,
                reason=None,
            )
        if batch is None:
            connection.execute(_INSERT_PROVISION, values)
            if held is not None:
                held_queue.hold(connection, held)
        else:
            batch.add(asked_id, values, held)
        return RecordEntry(
            event="provision",
            status=answer.status,
            transaction_number=number,
            requester=permit.requester,
            provider=self._code,
            affair=permit.affair,
            procedure=permit.procedure,
            information_name=permit.information_name,
            person=answer.person,
            non_disclosure=self.withholds(permit.information_name, permit.non_disclosure),
            delegating_requester=permit.delegating_requester,
            delegating_provider=permit.delegating_provider,
        )

    def queue_provision(
        self,
        connection: Connection,
        now: datetime,
        message_id: str,
        body: bytes,
        entry: RecordEntry,
    ) -> OutgoingMessage:
        """Put a Provision for the hub in the outbox and record it, in one transaction."""
        assert entry.transaction_number is not None
        outgoing = OutgoingMessage(message_id, "provision", HUB, entry.transaction_number, body)
        self._party.outbox.enqueue(connection, outgoing)
        self._party.record(connection, now, [entry])
        return outgoing

    @deferred
    async def deliver_provision(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of a provision to the hub."""
        document = await self._party.transport.exchange(HUB, PROVISION, message.body)
        decode_answer(document, messages.ProvisionAck)

    @deferred
    async def deliver_provision_bundle(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of a ProvisionBundle to the hub. A provision the hub refuses
        alone is refused for good, as a single one would be: logged."""
        document = await self._party.transport.exchange(HUB, PROVISION_BUNDLE, message.body)
        answer = decode_answer(document, messages.ProvisionBundleAnswer)
        if answer.message_id != message.message_id:
            raise TransientFailure(f"the hub's answer to {message.message_id} names another")
        for line in answer.lines:
            if line.code is not None:
                self.log.warn(
                    "provision {number} refused by the hub: {code}",
                    number=line.transaction_number,
                    code=line.code,
                )

    # -- refusals ------------------------------------------------------------------------------

    def _record_refused(
        self,
        connection: Connection,
        message_id: str,
        permit: messages.Permit | None,
        refusal: RenkeiError,
        now: datetime,
    ) -> bool:
        """Record a provision request refused, once per request (the hub may send the same
        request again): what the verified permit says, or nothing of an unverified one.
        False when it was recorded before."""
        seen = connection.execute(
            select(refused_request.c.message_id).where(refused_request.c.message_id == message_id)
        ).first()
        if seen is not None:
            return False
        number = permit.transaction_number if permit is not None else None
        connection.execute(
            refused_request.insert().values(
                message_id=message_id,
                transaction_number=number,
                error_code=refusal.code,
                received_at=now,
            )
        )
        asked: dict[str, Any] = {}
        if permit is not None:
            asked = {
                "transaction_number": number,
                "requester": permit.requester,
                "affair": permit.affair,
                "procedure": permit.procedure,
                "information_name": permit.information_name,
                "non_disclosure": self.withholds(permit.information_name, permit.non_disclosure),
                "delegating_requester": permit.delegating_requester,
                "delegating_provider": permit.delegating_provider,
            }
        entry = RecordEntry(
            event="provision", status=REFUSED, provider=self._code, error_code=refusal.code, **asked
        )
        self._party.record(connection, now, [entry])
        return True
