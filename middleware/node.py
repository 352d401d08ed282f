"""The intermediate server (中間サーバー): one institution's node on the network.

It keeps the 符号 store, the replica, the permitted-query list and the provision records;
sends queries to the hub and receives their results (requester side); answers provision
requests with signed payloads encrypted for the requester alone (provider side); and
deletes query results when their retention ends. The back-office API
(adapters/back_office_api.py) calls the public methods below.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, select
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from codes import errors
from codes.catalogue import Catalogue, DataSet
from codes.errors import RenkeiError
from crypto.envelope import open_envelope, seal
from crypto.pki import (
    Credentials,
    PkiLayout,
    identity_of,
    load_certificate,
    load_secret_key,
)
from crypto.xmlsig import CAVerifier, PinnedVerifier, SignatureInvalid, Signer
from middleware import conditions, held_queue, messages, persons, replica
from middleware.audit import SYSTEM, append_audit
from middleware.clock import ReactorTime
from middleware.config import BackOfficeSystem, Config, InstitutionConfig
from middleware.deferred import deferred
from middleware.hardened_xml import parse_xml, serialize
from middleware.network import (
    FUGO,
    HUB,
    PERMITTED_LIST,
    PROVISION,
    PROVISION_REQUEST,
    QUERY,
    RECORDS,
    DeliveryRefused,
    Transport,
    decode_answer,
)
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.permit import check_permit_terms
from middleware.permitted_list import (
    Delegation,
    ListedInstitution,
    PermittedList,
    PermittedRule,
    latest_version,
    store_version,
)
from middleware.queries import (
    ACCEPTED,
    ERROR,
    FINISHED,
    HELD,
    NO_DATA,
    PROVIDED,
    REFUSED,
    SUBMITTED,
    QuerySubmission,
    conditions_json,
)
from middleware.records import RecordEntry, records_of_transaction
from middleware.store import NodeStore
from middleware.tables import (
    node_list_versions,
    node_outbox,
    node_record_head,
    node_records,
    provision,
    query,
    refused_request,
)

MIGRATIONS = Path(__file__).parent / "migrations"
# The audit log's actor for a back-office system (staff names cannot contain ':').
BACK_OFFICE_ACTOR = "back-office:"

PATH_KEYS = (
    "seq",
    "recorded_at",
    "event",
    "status",
    "requester",
    "provider",
    "information_name",
    "error_code",
    "non_disclosure",
    "delegating_requester",
    "delegating_provider",
)


class IntermediateServer(Party):
    """One institution's intermediate server."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        institution: InstitutionConfig,
        catalogue: Catalogue,
        reactor: Any,
        transport: Transport,
        clock: ReactorTime | None = None,
    ) -> None:
        # Wall time and the timers of every job (outbox retries, list refresh, retention and
        # hold sweeps) come from ``clock``: the network's one clock in a box, else the
        # reactor. Request-level waits (a long poll, a registration's wait) are real time.
        super().__init__(
            config,
            reactor,
            database=institution.database,
            migrations=MIGRATIONS,
            outbox=node_outbox,
            records=(node_records, node_record_head),
            transport=transport,
            clock=clock,
        )
        self.institution = institution
        self.code = institution.code
        self.catalogue = catalogue
        self._reactor = reactor
        layout = PkiLayout(config.pki)
        self.ca = load_certificate(layout.ca().certificate)
        self._signer = Signer(layout.institution_signing(self.code).load())
        self._encryption: Credentials = layout.institution_encryption(self.code).load()
        self._hub_verifier = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
        self._payload_verifier = CAVerifier(self.ca)
        # The node's database as adapters see it (one component per domain).
        self.store = NodeStore(self.database, self.code)
        self.permitted_list: PermittedList | None = None
        self._waiters: dict[str, list[Deferred[None]]] = {}
        # Persons whose 符号 is being acquired, with whoever waits for the end.
        self._acquiring: dict[str, list[Deferred[None]]] = {}
        self._person_secret = load_secret_key(layout.institution_person_key(self.code))

    # -- service life ---------------------------------------------------------------------

    @deferred
    async def startService(self) -> None:
        await super().startService()
        stored = await self.database.run(latest_version, node_list_versions)
        if stored is not None:
            self.permitted_list = self._verify_list(stored[1])
        # The first fetch is awaited, so a node started after its hub starts with a list.
        await self._refresh_permitted_list()
        self.every(self.config.list_refresh, self._refresh_permitted_list, now=False)
        self.every(self.config.retention_interval, self.delete_expired_results)
        self.every(self.config.retention_interval, self.expire_held)

    # -- the permitted-query list ----------------------------------------------------------

    @deferred
    async def _refresh_permitted_list(self) -> None:
        try:
            await self.sync_permitted_list()
        except Exception as failure:
            self.log.warn("permitted-query list not refreshed: {failure}", failure=failure)
        if not self._list_in_force():
            # Nothing to work on (no list yet, or only an expired one): try again soon
            # rather than at the next refresh.
            self.clock.callLater(1.0, self._refresh_once_more)

    def _list_in_force(self) -> bool:
        return self.permitted_list is not None and self.now() < self.permitted_list.expires_at

    def _refresh_once_more(self) -> None:
        if self.running and not self._list_in_force():
            self._refresh_permitted_list()

    @deferred
    async def sync_permitted_list(self) -> PermittedList:
        """Fetch the hub's list, verify it, keep the version and use it when newer."""
        document = await self.transport.exchange(HUB, PERMITTED_LIST)
        permitted = self._verify_list(document)
        await self.database.run(
            store_version,
            node_list_versions,
            permitted.version,
            permitted.issued_at,
            permitted.expires_at,
            document,
            self.now(),
        )
        if self.permitted_list is None or permitted.version > self.permitted_list.version:
            self.permitted_list = permitted
        return self.permitted_list

    def _verify_list(self, document: bytes) -> PermittedList:
        element = messages.decode_signed(document, messages.PermittedListDocument)
        try:
            verified = self._hub_verifier.verify(element)
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

    def current_list(self) -> PermittedList:
        """The list in force; refused when none was received or it expired."""
        if self.permitted_list is None:
            raise RenkeiError(errors.PERMITTED_LIST_MISSING)
        self.permitted_list.ensure_current(self.now())
        return self.permitted_list

    # -- persons and replica ---------------------------------------------------------------

    @deferred
    async def register_person(
        self,
        individual_number: str,
        integrated_address_number: str | None,
        wait: float,
        address_number: str | None = None,
    ) -> dict[str, Any]:
        """The integrated-address function: the person gets (or keeps) an integrated address
        number, and this institution's 符号 is acquired through the network in the
        background. Fires with the person's state (``fugo_state`` acquired, pending or
        failed) once the acquisition ended or after ``wait`` seconds.

        The individual number is used for the person key and the acquisition only: it lives
        in memory until the acquisition ends and is never stored. A restart during an
        acquisition leaves the person pending; registering again acquires again. With
        ``address_number``, the person's 宛名番号 is kept too (a bulk-query line may then name
        the person by it).
        """
        key = persons.person_key(self._person_secret, individual_number)
        number, fugo = await self.database.run(
            self._enrol, key, integrated_address_number, address_number, self.now()
        )
        if fugo is None:
            if number not in self._acquiring:
                self._acquiring[number] = []
                self._acquire_fugo(number, individual_number)
            if wait > 0:
                ended: Deferred[None] = Deferred()
                self._acquiring[number].append(ended)
                timer = self._reactor.callLater(wait, _fire, ended)
                await ended
                if timer.active():
                    timer.cancel()
        state = await self.database.run(persons.person_state, number)
        return state

    @staticmethod
    def _enrol(
        connection: Connection,
        key: str,
        proposed: str | None,
        address_number: str | None,
        now: datetime,
    ) -> tuple[str, str | None]:
        number, fugo = persons.enrol(connection, key, proposed, now)
        if address_number is not None:
            persons.link_address_number(connection, address_number, number, now)
        return number, fugo

    @deferred
    async def _acquire_fugo(self, number: str, individual_number: str) -> None:
        try:
            request = messages.FugoRequest(
                message_id=str(uuid.uuid4()), individual_number=individual_number
            )
            document = await self.transport.exchange(HUB, FUGO, messages.encode(request))
            answer = decode_answer(document, messages.FugoResponse)
            await self.database.run(persons.link, number, answer.fugo, self.now())
        except Exception as failure:
            if isinstance(failure, DeliveryRefused):
                code = failure.code if failure.code in errors.ALL else errors.INTERNAL.code
            elif isinstance(failure, RenkeiError):
                code = failure.code
            else:
                code = errors.NETWORK_UNAVAILABLE.code
            self.log.info("符号 of {number} not acquired: {code}", number=number, code=code)
            try:
                await self.database.run(persons.record_failure, number, code)
            except Exception:
                self.log.failure(
                    "could not record the failed acquisition of {number}", number=number
                )
        finally:
            for ended in self._acquiring.pop(number, []):
                _fire(ended)

    def person_state(self, integrated_address_number: str) -> Deferred[dict[str, Any]]:
        """A person's registration state (see persons.person_state)."""
        return self.database.run(persons.person_state, integrated_address_number)

    def audit_back_office_refusal(
        self, system: str, request_line: str, code: str, **detail: Any
    ) -> Deferred[int]:
        """Write a refused back-office request (or refused entries of a file) to the audit
        log: who (the system), what was asked and the code it was refused with."""
        return self.database.run(
            append_audit,
            self.now(),
            f"{BACK_OFFICE_ACTOR}{system}"[:64],
            "back_office_refused",
            request_line,
            {"code": code, **detail},
        )

    def back_office_system(self, name: str) -> BackOfficeSystem:
        """The configured back-office system ``name`` (CertificateNotAuthorized if none)."""
        system = self.institution.system(name)
        if system is None:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=name)
        return system

    def register_replica_record(self, record: replica.ReplicaRecord, system: str) -> Deferred[None]:
        """Validate a replica record against the catalogue and store it, when ``system``
        keeps the 副本 of its information name (else SystemNotAuthorized)."""
        replica.validate(record, self.catalogue, self.institution.provides)
        if record.information_name not in self.back_office_system(system).information_names:
            raise RenkeiError(
                errors.SYSTEM_NOT_AUTHORIZED,
                system=system,
                what=f"the replica of information name {record.information_name}",
                what_ja=f"特定個人情報名{record.information_name}の副本",
            )
        return self.database.run(replica.store, record, self.now())

    def delete_replica_record(self, record_id: str, system: str) -> Deferred[None]:
        """Delete a replica record of an information name ``system`` keeps; any other record
        is UnknownRecord to it, as if it did not exist."""
        names = self.back_office_system(system).information_names
        return self.database.run(replica.delete, record_id, names)

    # -- queries (requester side) -------------------------------------------------------------

    @deferred
    async def submit_query(self, submission: QuerySubmission, system: str) -> str:
        """情報照会 by back-office ``system``: check locally (the system may use the
        procedure's affair, the list permits it), then send to the hub through the outbox;
        the query id. The query belongs to ``system``."""
        self.catalogue.information_name(submission.information_name)
        affair = self.catalogue.procedure(submission.procedure).affair
        if affair not in self.back_office_system(system).affairs:
            raise RenkeiError(
                errors.SYSTEM_NOT_AUTHORIZED,
                system=system,
                what=f"procedure {submission.procedure} (affair {affair})",
                what_ja=f"事務手続{submission.procedure}(事務{affair})",
            )
        self.current_list().check(
            self.code,
            submission.provider,
            affair,
            submission.procedure,
            submission.information_name,
            self.now(),
            delegating_requester=submission.delegating_requester,
            delegating_provider=submission.delegating_provider,
        )
        query_id, outgoing = await self.database.run(
            self._create_query, submission, system, affair, self.now()
        )
        self.outbox.send_now(outgoing)
        return query_id

    def _create_query(
        self,
        connection: Connection,
        submission: QuerySubmission,
        system: str,
        affair: str,
        now: datetime,
    ) -> tuple[str, OutgoingMessage]:
        fugo = persons.fugo_of(connection, submission.integrated_address_number)
        query_id = str(uuid.uuid4())
        connection.execute(
            query.insert().values(
                query_id=query_id,
                system=system,
                integrated_address_number=submission.integrated_address_number,
                affair=affair,
                procedure=submission.procedure,
                information_name=submission.information_name,
                provider=submission.provider,
                conditions=conditions_json(submission.conditions),
                delegating_requester=submission.delegating_requester,
                delegating_provider=submission.delegating_provider,
                non_disclosure=submission.non_disclosure,
                state=SUBMITTED,
                submitted_at=now,
            )
        )
        body = messages.encode(
            messages.QueryRequest(
                message_id=query_id,
                requester_fugo=fugo,
                affair=affair,
                procedure=submission.procedure,
                information_name=submission.information_name,
                provider=submission.provider,
                conditions=submission.conditions,
                delegating_requester=submission.delegating_requester,
                delegating_provider=submission.delegating_provider,
                non_disclosure=submission.non_disclosure,
            )
        )
        outgoing = OutgoingMessage(query_id, "query", HUB, query_id, body)
        self.outbox.enqueue(connection, outgoing)
        return query_id, outgoing

    def _query_record(self, row: Any, event: str, status: str, **extra: Any) -> RecordEntry:
        return RecordEntry(
            event=event,
            status=status,
            transaction_number=extra.pop("transaction_number", row.transaction_number),
            requester=self.code,
            provider=row.provider,
            affair=row.affair,
            procedure=row.procedure,
            information_name=row.information_name,
            person=row.integrated_address_number,
            non_disclosure=bool(row.non_disclosure),
            delegating_requester=row.delegating_requester,
            delegating_provider=row.delegating_provider,
            **extra,
        )

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        handlers: dict[str, Callable[[OutgoingMessage], Deferred[Any]]] = {
            "query": self._deliver_query,
            "provision": self._deliver_provision,
        }
        return handlers[message.kind](message)

    @deferred
    async def _deliver_query(self, message: OutgoingMessage) -> None:
        try:
            document = await self.transport.exchange(HUB, QUERY, message.body)
            accepted = decode_answer(document, messages.QueryAccepted)
        except DeliveryRefused as refusal:
            await self.database.run(
                self._query_refused, message.reference, refusal.code, refusal.transaction_number
            )
            self._query_ended(message.reference)
            raise
        await self.database.run(
            self._query_accepted, message.reference, accepted.transaction_number
        )

    def _query_accepted(self, connection: Connection, query_id: str, number: str) -> None:
        row = connection.execute(select(query).where(query.c.query_id == query_id)).one()
        if row.state != SUBMITTED:
            return
        now = self.now()
        connection.execute(
            query.update()
            .where(query.c.query_id == query_id)
            .values(state=ACCEPTED, transaction_number=number, accepted_at=now)
        )
        self.record(
            connection,
            now,
            [self._query_record(row, "query", ACCEPTED, transaction_number=number)],
        )

    def _query_refused(
        self, connection: Connection, query_id: str, code: str, number: str | None
    ) -> None:
        """The hub refused the query: it ends refused, with the 処理通番 under which the hub
        recorded the refusal (so that the transaction's path shows both records)."""
        row = connection.execute(select(query).where(query.c.query_id == query_id)).one()
        if row.state != SUBMITTED:
            return
        now = self.now()
        connection.execute(
            query.update()
            .where(query.c.query_id == query_id)
            .values(state=REFUSED, error_code=code, completed_at=now, transaction_number=number)
        )
        self.record(
            connection,
            now,
            [self._query_record(row, "query", REFUSED, error_code=code, transaction_number=number)],
        )

    # -- the network endpoint --------------------------------------------------------------

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        """What the network brings (`middleware.network.NetworkEndpoint`): only the hub may
        call a node, with provision requests (provider side) and provisions (requester)."""
        if caller != HUB:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=caller)
        if operation == PROVISION_REQUEST and document is not None:
            return self.receive_provision_request(
                messages.decode(document, messages.ProvisionRequest)
            )
        if operation == PROVISION and document is not None:
            return self.receive_provision(messages.decode(document, messages.Provision))
        raise RenkeiError(errors.PAGE_NOT_FOUND)

    @deferred
    async def receive_provision(self, delivered: messages.Provision) -> bytes:
        """A provision relayed by the hub: decrypt, verify, store once; the acknowledgement."""
        row = await self.database.run(self._query_of_result, delivered)
        if row.state in FINISHED:
            return messages.encode(self._provision_ack(delivered))
        if delivered.status == HELD:
            await self.database.run(self._mark_held, row.query_id, delivered.transaction_number)
            return messages.encode(self._provision_ack(delivered))
        state, result, code = self._open_result(row, delivered)
        await self.database.run(
            self._store_result, row.query_id, delivered.transaction_number, state, result, code
        )
        self._query_ended(row.query_id)
        if code is not None and state == ERROR:
            raise RenkeiError(errors.ALL[code], transaction_number=delivered.transaction_number)
        return messages.encode(self._provision_ack(delivered))

    @staticmethod
    def _provision_ack(delivered: messages.Provision) -> messages.ProvisionAck:
        return messages.ProvisionAck(
            message_id=delivered.message_id, transaction_number=delivered.transaction_number
        )

    def _query_of_result(self, connection: Connection, delivered: messages.Provision) -> Any:
        """The query a relayed provision answers: by our query id, which the hub adds, and
        its 処理通番 (the result may overtake the hub's QueryAccepted answer)."""
        number = delivered.transaction_number
        row = connection.execute(
            select(query).where(query.c.query_id == delivered.query_message_id)
        ).first()
        if row is None or row.transaction_number not in (None, number):
            raise RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number)
        return row

    def _open_result(
        self, row: Any, delivered: messages.Provision
    ) -> tuple[str, bytes | None, str | None]:
        """The query's new state, the verified plaintext and an error code, if any."""
        if delivered.status not in (PROVIDED, NO_DATA):
            return REFUSED, None, delivered.error_code or "Unspecified"
        try:
            if delivered.encrypted_payload is None:
                raise RenkeiError(errors.PAYLOAD_UNREADABLE)
            plaintext = open_envelope(delivered.encrypted_payload, self._encryption)
            payload = self._verify_payload(plaintext, row)
        except RenkeiError as failure:
            self.log.warn(
                "result of {number} refused: {code}",
                number=row.transaction_number,
                code=failure.code,
            )
            return ERROR, None, failure.code
        state = PROVIDED if payload.records else NO_DATA
        return state, plaintext, None

    def _verify_payload(self, plaintext: bytes, row: Any) -> messages.ProvisionPayload:
        number = row.transaction_number
        try:
            element = messages.decode_signed(plaintext, messages.ProvisionPayload)
        except RenkeiError:
            raise RenkeiError(errors.PAYLOAD_UNREADABLE) from None
        try:
            verified, signer = self._payload_verifier.verify(element)
        except SignatureInvalid:
            raise RenkeiError(errors.PAYLOAD_SIGNATURE_INVALID, transaction_number=number) from None
        identity = identity_of(signer)
        payload = messages.from_element(verified, messages.ProvisionPayload)
        if (
            identity.common_name != row.provider
            or identity.organizational_unit != "signing"
            or payload.transaction_number != number
            or payload.provider != row.provider
            or payload.requester != self.code
            or payload.information_name != row.information_name
        ):
            raise RenkeiError(errors.PAYLOAD_SIGNATURE_INVALID, transaction_number=number)
        return payload

    def _mark_held(self, connection: Connection, query_id: str, number: str) -> None:
        row = connection.execute(select(query).where(query.c.query_id == query_id)).one()
        if row.state not in (SUBMITTED, ACCEPTED):
            return  # already held, or the final result overtook this notice
        now = self.now()
        entries = []
        if row.transaction_number is None:
            entries.append(self._query_record(row, "query", ACCEPTED, transaction_number=number))
        connection.execute(
            query.update()
            .where(query.c.query_id == query_id)
            .values(state=HELD, transaction_number=number, accepted_at=row.accepted_at or now)
        )
        entries.append(self._query_record(row, "result", HELD, transaction_number=number))
        self.record(connection, now, entries)

    def _store_result(
        self,
        connection: Connection,
        query_id: str,
        number: str,
        state: str,
        result: bytes | None,
        code: str | None,
    ) -> None:
        row = connection.execute(select(query).where(query.c.query_id == query_id)).one()
        if row.state in FINISHED:
            return  # delivered twice: the first delivery stands
        now = self.now()
        entries = []
        if row.transaction_number is None:
            # The result overtook the hub's QueryAccepted answer: accept here.
            entries.append(self._query_record(row, "query", ACCEPTED, transaction_number=number))
        connection.execute(
            query.update()
            .where(query.c.query_id == query_id)
            .values(
                state=state,
                transaction_number=number,
                accepted_at=row.accepted_at or now,
                result=result,
                error_code=code,
                completed_at=now,
            )
        )
        entries.append(
            self._query_record(row, "result", state, transaction_number=number, error_code=code)
        )
        self.record(connection, now, entries)

    def query_status(self, query_id: str, system: str) -> Deferred[dict[str, Any]]:
        """A query's state, 処理通番, error and, once provided, its decoded result, for the
        system that submitted it (to any other it is UnknownQuery)."""
        return self.database.run(self._query_status, query_id, system)

    @deferred
    async def wait_for_end(self, query_id: str, timeout: float, system: str) -> dict[str, Any]:
        """The query's status once it has ended, or after ``timeout`` seconds (long poll),
        for the system that submitted it (to any other it is UnknownQuery at once).

        Waiters live only in this process: a result stored by another process of the same
        institution is seen when the wait times out.
        """
        ended: Deferred[None] = Deferred()
        # Register before reading, so an end stored meanwhile is not missed.
        self._waiters.setdefault(query_id, []).append(ended)
        timer = self._reactor.callLater(timeout, _fire, ended)
        try:
            status = await self.query_status(query_id, system)
            if status["state"] in FINISHED or timeout <= 0:
                return status
            await ended
            status = await self.query_status(query_id, system)
            return status
        finally:
            if timer.active():
                timer.cancel()
            waiting = self._waiters.get(query_id, [])
            if ended in waiting:
                waiting.remove(ended)
            if not waiting:
                self._waiters.pop(query_id, None)

    def _query_ended(self, query_id: str) -> None:
        for ended in self._waiters.pop(query_id, []):
            _fire(ended)

    def _query_status(self, connection: Connection, query_id: str, system: str) -> dict[str, Any]:
        row = connection.execute(select(query).where(query.c.query_id == query_id)).first()
        if row is None or row.system != system:
            # Another system's query is answered exactly as one that does not exist.
            raise RenkeiError(errors.UNKNOWN_QUERY, query_id=query_id)
        status: dict[str, Any] = {
            "query_id": row.query_id,
            "state": row.state,
            "transaction_number": row.transaction_number,
            "integrated_address_number": row.integrated_address_number,
            "procedure": row.procedure,
            "information_name": row.information_name,
            "provider": row.provider,
            "submitted_at": row.submitted_at.isoformat(),
            "completed_at": row.completed_at.isoformat() if row.completed_at else None,
            "error": None,
            "result": None,
            "result_deleted_at": (
                row.result_deleted_at.isoformat() if row.result_deleted_at else None
            ),
        }
        if row.error_code is not None:
            # A code from another party may be unknown here: show it as it came.
            kind = errors.ALL.get(row.error_code, errors.ErrorKind(row.error_code, 0, "", ""))
            failure = RenkeiError(kind, **_placeholders(row))
            status["error"] = {
                "code": row.error_code,
                "message_en": failure.message_en or row.error_code,
                "message_ja": failure.message_ja or row.error_code,
            }
        if row.result is not None:
            status["result"] = self.describe_payload(bytes(row.result))
        return status

    @deferred
    async def transaction_path(self, number: str) -> list[dict[str, Any]]:
        """The path of one transaction as one timeline: the hub's records (asked of the hub,
        which answers only the transaction's parties) and this node's, by time."""
        own = await self.database.run(records_of_transaction, node_records, number)
        document = await self.transport.exchange(HUB, RECORDS, argument=number)
        answer = decode_answer(document, messages.RecordList)
        path = [
            {
                "party": HUB,
                "seq": record.seq,
                "recorded_at": record.recorded_at,
                "event": record.event,
                "status": record.status,
                "requester": record.requester,
                "provider": record.provider,
                "information_name": record.information_name,
                "error_code": record.error_code,
                "non_disclosure": record.non_disclosure,
                "delegating_requester": record.delegating_requester,
                "delegating_provider": record.delegating_provider,
            }
            for record in answer.records
        ]
        path += [
            {"party": self.institution.name, **{key: row[key] for key in PATH_KEYS}} for row in own
        ]
        return sorted(path, key=lambda entry: (entry["recorded_at"], entry["party"] != HUB))

    def describe_payload(self, plaintext: bytes) -> dict[str, Any]:
        """A verified payload as the back office reads it, with names from the catalogue."""
        payload = messages.from_element(parse_xml(plaintext), messages.ProvisionPayload)
        information = self.catalogue.information_name(payload.information_name)
        records = []
        for record in payload.records:
            data_set = information.data_set(record.data_set)
            records.append(
                {
                    "record_id": record.record_id,
                    "data_set": {"code": data_set.code, "name": data_set.name},
                    "items": [
                        {"code": code, "name": data_set.item(code).name, "value": value}
                        for code, value in record.items
                    ],
                }
            )
        return {
            "information_name": {"code": information.code, "name": information.name},
            "provider": payload.provider,
            "created_at": payload.created_at.isoformat(),
            "records": records,
        }

    # -- provision (provider side) ----------------------------------------------------------

    @deferred
    async def receive_provision_request(self, asked: messages.ProvisionRequest) -> bytes:
        """情報提供要求: verify the permit, re-check the list, answer through the outbox; the
        acknowledgement."""
        permit: messages.Permit | None = None
        try:
            try:
                verified = self._hub_verifier.verify(asked.permit_element)
            except SignatureInvalid:
                raise RenkeiError(errors.PERMIT_SIGNATURE_INVALID) from None
            permit = messages.from_element(verified, messages.Permit)
            now = self.now()
            check_permit_terms(
                transaction_number=permit.transaction_number,
                provider=permit.provider,
                issued_at=permit.issued_at,
                expires_at=permit.expires_at,
                me=self.code,
                now=now,
            )
            recipient = self._route_certificate(asked.route, permit)
            self.current_list().check(
                permit.requester,
                self.code,
                permit.affair,
                permit.procedure,
                permit.information_name,
                now,
                delegating_requester=permit.delegating_requester,
                delegating_provider=permit.delegating_provider,
            )
            outgoing = await self.database.run(
                self._answer_provision_request, asked.message_id, permit, recipient, now
            )
        except RenkeiError as refusal:
            if refusal.status < 500:
                # 番号法 第23条: a request refused is recorded too, with its code.
                await self.database.run(
                    self._record_refused_request, asked.message_id, permit, refusal, self.now()
                )
            raise
        if outgoing is not None:
            self.outbox.send_now(outgoing)
        return messages.encode(
            messages.ProvisionRequestAck(
                message_id=asked.message_id, transaction_number=permit.transaction_number
            )
        )

    def _record_refused_request(
        self,
        connection: Connection,
        message_id: str,
        permit: messages.Permit | None,
        refusal: RenkeiError,
        now: datetime,
    ) -> None:
        """Record a provision request refused, once per request (the hub may send the same
        request again): what the verified permit says, or nothing of an unverified one."""
        seen = connection.execute(
            select(refused_request.c.message_id).where(refused_request.c.message_id == message_id)
        ).first()
        if seen is not None:
            return
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
                "non_disclosure": permit.non_disclosure,
                "delegating_requester": permit.delegating_requester,
                "delegating_provider": permit.delegating_provider,
            }
        entry = RecordEntry(
            event="provision", status=REFUSED, provider=self.code, error_code=refusal.code, **asked
        )
        self.record(connection, now, [entry])

    def _route_certificate(
        self, route: messages.Route, permit: messages.Permit
    ) -> x509.Certificate:
        """The requester's encryption certificate, checked to be the network's and the permit's."""
        try:
            certificate = x509.load_der_x509_certificate(route.encryption_certificate)
            certificate.verify_directly_issued_by(self.ca)
        except Exception:
            raise RenkeiError(errors.PERMIT_MISMATCH) from None
        identity = identity_of(certificate)
        if (
            route.requester != permit.requester
            or identity.common_name != permit.requester
            or identity.organizational_unit != "encryption"
        ):
            raise RenkeiError(errors.PERMIT_MISMATCH)
        return certificate

    def _answer_provision_request(
        self,
        connection: Connection,
        message_id: str,
        permit: messages.Permit,
        recipient: x509.Certificate,
        now: datetime,
    ) -> OutgoingMessage | None:
        number = permit.transaction_number
        used = connection.execute(
            select(provision.c.message_id).where(provision.c.transaction_number == number)
        ).first()
        if used is not None:
            if used.message_id == message_id:
                return None  # the hub's retry of a request already answered
            raise RenkeiError(errors.PERMIT_REPLAYED, transaction_number=number)
        person = persons.person_of(connection, permit.provider_fugo)
        # Only records whose publication window covers today (JST) and that meet the
        # query's conditions (照会条件, carried in the permit) are provided.
        records = self._records_asked(
            replica.records_of(
                connection, person, permit.information_name, replica.today_in_japan(now)
            ),
            permit,
        )
        held = any(record.suppressed for record in records)
        status = HELD if held else PROVIDED if records else NO_DATA
        payload = messages.ProvisionPayload(
            transaction_number=number,
            information_name=permit.information_name,
            provider=self.code,
            requester=permit.requester,
            created_at=now,
            records=tuple(
                messages.PayloadRecord(
                    data_set=record.data_set,
                    record_id=record.record_id,
                    items=tuple(sorted(record.items.items())),
                )
                for record in records
            ),
        )
        connection.execute(
            provision.insert().values(
                transaction_number=number,
                message_id=message_id,
                requester=permit.requester,
                procedure=permit.procedure,
                information_name=permit.information_name,
                integrated_address_number=person,
                status=status,
                received_at=now,
                delegating_requester=permit.delegating_requester,
                delegating_provider=permit.delegating_provider,
                non_disclosure=permit.non_disclosure,
            )
        )
        outgoing_id = str(uuid.uuid4())
        if held:
            held_queue.hold(
                connection,
                held_queue.HeldItem(
                    transaction_number=number,
                    requester=permit.requester,
                    procedure=permit.procedure,
                    information_name=permit.information_name,
                    integrated_address_number=person,
                    payload=serialize(messages.to_element(payload)),
                    recipient_certificate=recipient.public_bytes(Encoding.DER),
                    permit_expires_at=permit.expires_at,
                    held_at=now,
                    hold_expires_at=now + timedelta(seconds=self.institution.hold_lifetime),
                    state=held_queue.HELD,
                    decided_at=None,
                    decided_by=None,
                    reason=None,
                ),
            )
            # The requester learns that its query is held (保留中), nothing more.
            body = messages.encode(
                messages.Provision(message_id=outgoing_id, transaction_number=number, status=HELD)
            )
        else:
            body = self._sealed_provision(outgoing_id, number, status, payload, recipient)
        return self._queue_provision(
            connection,
            now,
            outgoing_id,
            body,
            RecordEntry(
                event="provision",
                status=status,
                transaction_number=number,
                requester=permit.requester,
                provider=self.code,
                affair=permit.affair,
                procedure=permit.procedure,
                information_name=permit.information_name,
                person=person,
                non_disclosure=permit.non_disclosure,
                delegating_requester=permit.delegating_requester,
                delegating_provider=permit.delegating_provider,
            ),
        )

    def _records_asked(
        self, records: list[replica.ReplicaRecord], permit: messages.Permit
    ) -> list[replica.ReplicaRecord]:
        """The records that meet the permit's conditions (all of them without conditions)."""
        if not conditions.span_of_conditions(permit.conditions):
            return records
        information = self.catalogue.information_name(permit.information_name)
        data_sets: dict[str, DataSet] = {ds.code: ds for ds in information.data_sets}
        return [
            record
            for record in records
            if conditions.meets(permit.conditions, data_sets.get(record.data_set), record.items)
        ]

    def _queue_provision(
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
        self.outbox.enqueue(connection, outgoing)
        self.record(connection, now, [entry])
        return outgoing

    def _sealed_provision(
        self,
        message_id: str,
        number: str,
        status: str,
        payload: messages.ProvisionPayload,
        recipient: x509.Certificate,
    ) -> bytes:
        """A Provision carrying ``payload`` signed by us and encrypted for ``recipient``."""
        plaintext = serialize(self._signer.sign(messages.to_element(payload)))
        return messages.encode(
            messages.Provision(
                message_id=message_id,
                transaction_number=number,
                status=status,
                encrypted_payload=seal(plaintext, recipient),
            )
        )

    # -- held provisions (自動応答不可フラグ) --------------------------------------------------

    def held_items(self) -> Deferred[list[held_queue.HeldItem]]:
        """Held provisions waiting for a decision, the soonest to expire first."""
        return self.database.run(held_queue.waiting)

    def expired_holds(self) -> Deferred[list[held_queue.HeldItem]]:
        """The holds that ended undecided most recently (refused with HoldExpired)."""
        return self.database.run(held_queue.expired)

    @deferred
    async def held_content(
        self, number: str, actor: str
    ) -> tuple[held_queue.HeldItem, dict[str, Any]]:
        """A held item and the exact content that would be sent, decoded with item names;
        the view is audited."""
        item = await self.database.run(self._view_held, number, actor)
        return item, self.describe_payload(item.payload)

    def _view_held(self, connection: Connection, number: str, actor: str) -> held_queue.HeldItem:
        item = held_queue.get(connection, number)
        append_audit(connection, self.now(), actor, "view_held_content", number)
        return item

    def set_suppression(
        self, record_id: str, suppressed: bool, actor: str, reason: str
    ) -> Deferred[None]:
        """Change a replica record's auto-response suppression flag (audited, with a reason)."""
        return self.database.run(self._set_suppression, record_id, suppressed, actor, reason)

    def _set_suppression(
        self, connection: Connection, record_id: str, suppressed: bool, actor: str, reason: str
    ) -> None:
        replica.set_suppressed(connection, record_id, suppressed)
        append_audit(
            connection,
            self.now(),
            actor,
            "flag_change",
            record_id,
            {"auto_response_suppressed": suppressed, "reason": reason},
        )

    @deferred
    async def approve_held(self, number: str, actor: str) -> None:
        """Approve a held provision: sign, encrypt and send exactly the held content."""
        outgoing = await self.database.run(
            self._decide_held, number, held_queue.APPROVED, actor, None
        )
        self.outbox.send_now(outgoing)

    @deferred
    async def refuse_held(self, number: str, actor: str, reason: str) -> None:
        """Refuse a held provision: the requester receives 提供不可 (ProvisionRefused)."""
        outgoing = await self.database.run(
            self._decide_held, number, held_queue.REFUSED, actor, reason
        )
        self.outbox.send_now(outgoing)

    @deferred
    async def expire_held(self) -> int:
        """Refuse, with HoldExpired, every held item whose hold ended undecided."""
        numbers = await self.database.run(held_queue.expired_numbers, self.now())
        for number in numbers:
            try:
                outgoing = await self.database.run(
                    self._decide_held, number, held_queue.EXPIRED, SYSTEM, None
                )
            except RenkeiError:
                continue  # decided meanwhile by someone else
            self.outbox.send_now(outgoing)
        return len(numbers)

    def _decide_held(
        self,
        connection: Connection,
        number: str,
        decision: str,
        actor: str,
        reason: str | None,
    ) -> OutgoingMessage:
        now = self.now()
        item = held_queue.decide(connection, number, decision, actor, reason, now)
        action = {"approved": "approve", "refused": "refuse", "expired": "expire"}[decision]
        append_audit(connection, now, actor, action, number, {"reason": reason} if reason else None)
        outgoing_id = str(uuid.uuid4())
        if decision == held_queue.APPROVED:
            payload = messages.from_element(parse_xml(item.payload), messages.ProvisionPayload)
            status = PROVIDED if payload.records else NO_DATA
            body = self._sealed_provision(
                outgoing_id,
                number,
                status,
                payload,
                x509.load_der_x509_certificate(item.recipient_certificate),
            )
            code = None
        else:
            status = REFUSED
            kind = (
                errors.PROVISION_REFUSED if decision == held_queue.REFUSED else errors.HOLD_EXPIRED
            )
            code = kind.code
            body = messages.encode(
                messages.Provision(
                    message_id=outgoing_id,
                    transaction_number=number,
                    status=REFUSED,
                    error_code=code,
                )
            )
        connection.execute(
            provision.update()
            .where(provision.c.transaction_number == number)
            .values(status=status, error_code=code)
        )
        asked = connection.execute(
            select(
                provision.c.non_disclosure,
                provision.c.delegating_requester,
                provision.c.delegating_provider,
            ).where(provision.c.transaction_number == number)
        ).one()
        return self._queue_provision(
            connection,
            now,
            outgoing_id,
            body,
            RecordEntry(
                event="provision",
                status=status,
                transaction_number=number,
                requester=item.requester,
                provider=self.code,
                affair=self.catalogue.procedure(item.procedure).affair,
                procedure=item.procedure,
                information_name=item.information_name,
                person=item.integrated_address_number,
                error_code=code,
                non_disclosure=bool(asked.non_disclosure),
                delegating_requester=asked.delegating_requester,
                delegating_provider=asked.delegating_provider,
            ),
        )

    @deferred
    async def _deliver_provision(self, message: OutgoingMessage) -> None:
        document = await self.transport.exchange(HUB, PROVISION, message.body)
        decode_answer(document, messages.ProvisionAck)

    # -- retention -------------------------------------------------------------------------

    def delete_expired_results(self) -> Deferred[int]:
        """Delete query results whose retention has ended; each deletion is recorded."""
        cutoff = self.now() - timedelta(seconds=self.institution.result_retention)
        return self.database.run(self._delete_results, cutoff, self.now())

    def _delete_results(self, connection: Connection, cutoff: datetime, now: datetime) -> int:
        rows = connection.execute(
            select(query)
            .where(
                query.c.state.in_(FINISHED),
                query.c.completed_at <= cutoff,
                query.c.result_deleted_at.is_(None),
            )
            .limit(1000)
        ).all()
        if not rows:
            return 0
        connection.execute(
            query.update()
            .where(query.c.query_id.in_([row.query_id for row in rows]))
            .values(result=None, result_deleted_at=now)
        )
        self.record(
            connection,
            now,
            [self._query_record(row, "result_deleted", row.state) for row in rows],
        )
        return len(rows)


def _placeholders(row: Any) -> Mapping[str, Any]:
    """Values for an error message template from what a query row knows."""
    return {
        "transaction_number": row.transaction_number,
        "integrated_address_number": row.integrated_address_number,
        "code": row.information_name,
        "procedure": row.procedure,
        "provider": row.provider,
        "query_id": row.query_id,
        "sender": row.provider,
    }


def _fire(ended: Deferred[None]) -> None:
    if not ended.called:
        ended.callback(None)
