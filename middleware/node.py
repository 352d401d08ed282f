"""The intermediate server (中間サーバー): one institution's node on the network.

A party of the network (`middleware.party.Party`: clock, database, outbox, records, jobs)
made of one part per idea, each in its own module; its periodic jobs (``node.jobs``) are the
list sync (``list_sync``), the purge of what is past its retention (``purge``), the expiry of
holds (``held_expiry``), the お知らせ状況確認 (``notice_status``), the party's outbox poll
(``outbox``) and, when configured, its backup (``backup``):

- `middleware.list_sync.PermittedLists` (``node.lists``): the permitted-query list, kept in
  step with the hub;
- `middleware.requester.Requester` (``node.requester``): queries out, results in (情報照会);
- `middleware.provider.Provider` (``node.provider``): provision requests in, signed payloads
  encrypted for the requester alone out (情報提供);
- `middleware.held.HeldDecisions` (``node.held``): held provisions and the staff decisions;
- `middleware.notices.Notices` (``node.notices``): お知らせ to persons through マイナポータル,
  and how each stands (its job ``notice_status`` asks the hub);
- `middleware.retention.Purge` (``node.purge``): records, audit entries, held contents,
  outbox documents, 副本 file answers and query results deleted when their retention ends;
- `middleware.health.Health` (``node.health``): what is failing, and its changes;
- `middleware.store.NodeStore` (``node.store``): the database as the adapters see it.

The node itself keeps the integrated-address function and the replica registration, takes
what the network brings (`dispatch`) and hands the outbox's messages to the part that sent
them (`deliver`). It never sees an HTTP request: the network link
(adapters/network_link.py) and the back-office API (adapters/back_office_api.py) translate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from crypto.pki import PkiLayout, load_certificate, load_secret_key
from crypto.xmlsig import CAVerifier, PinnedVerifier, Signer
from middleware import attachments, disclosure, messages, persons, replica, retention
from middleware.audit import append_audit
from middleware.backup import PartyDatabase
from middleware.checkpoint import ChainTrust, CheckpointSigner
from middleware.clock import ReactorTime
from middleware.config import Config, InstitutionConfig
from middleware.deferred import deferred, fire
from middleware.health import Health
from middleware.held import HeldDecisions
from middleware.list_sync import JOB as LIST_SYNC
from middleware.list_sync import PermittedLists
from middleware.network import (
    FUGO,
    HUB,
    NOTICE,
    PROVISION,
    PROVISION_BUNDLE,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
    QUERY_BUNDLE,
    RECORD_DISCLOSURE,
    RECORDS,
    SELF_INFORMATION_REQUEST,
    DeliveryRefused,
    Transport,
    decode_answer,
)
from middleware.notices import Notices
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.provider import Provider
from middleware.records import records_of_transaction
from middleware.requester import Requester
from middleware.store import NodeStore
from middleware.tables import (
    node_checkpoints,
    node_job_run,
    node_outbox,
    node_outbox_owner,
    node_record_head,
    node_records,
)

__all__ = ["BACK_OFFICE_ACTOR", "MIGRATIONS", "IntermediateServer", "party_database"]

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


def party_database(institution: InstitutionConfig) -> PartyDatabase:
    """What backing up or restoring an institution's node needs of its database."""
    return PartyDatabase(
        name=institution.name,
        code=institution.code,
        url=institution.database,
        migrations=MIGRATIONS,
        records=node_records,
        head=node_record_head,
        checkpoints=node_checkpoints,
        audited=True,
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
            name=institution.name,
            database=institution.database,
            migrations=MIGRATIONS,
            outbox=(node_outbox, node_outbox_owner),
            records=(node_records, node_record_head),
            job_runs=node_job_run,
            transport=transport,
            clock=clock,
        )
        self.institution = institution
        self.code = institution.code
        self.catalogue = catalogue
        self._reactor = reactor
        layout = PkiLayout(config.pki)
        self.ca = load_certificate(layout.ca().certificate)
        hub_verifier = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
        signer = Signer(layout.institution_signing(self.code).load())
        # What the checkpoints of the node's chains are signed with and checked against.
        self.trust = ChainTrust(self.ca, self.code)
        self.store = NodeStore(self.database, self.code, self.trust)
        self.lists = PermittedLists(self, hub_verifier)
        self.requester = Requester(
            self,
            institution,
            catalogue,
            self.lists,
            encryption=layout.institution_encryption(self.code).load(),
            payload_verifier=CAVerifier(self.ca),
            reactor=reactor,
        )
        self.provider = Provider(
            self,
            institution,
            catalogue,
            self.lists,
            ca=self.ca,
            signer=signer,
            hub_verifier=hub_verifier,
        )
        self.held = HeldDecisions(self, self.code, catalogue, self.provider)
        kept = config.retention
        checkpoints = CheckpointSigner(signer, self.code)
        self.purge = retention.Purge(
            self,
            [
                *retention.party_kinds(
                    self.records, node_checkpoints, node_outbox, checkpoints, kept
                ),
                retention.audit_log(checkpoints, kept.audit_log),
                retention.held_contents(kept.held_contents),
                retention.replica_file_answers(kept.replica_file_answers),
                retention.query_results(self, self.code, kept.query_results),
            ],
            batch=kept.batch,
            audited=True,
        )
        self.jobs.add("purge", kept.interval, self.purge.run)
        self.notices = Notices(self, config.notice_status_interval)
        self.jobs.add("held_expiry", config.retention_interval, self._expire_holds)
        self.add_backup(party_database(institution))
        self.health = Health(
            self,
            config.health,
            institution.name,
            institution.code,
            permitted=lambda: self.lists.current,
            missing="no permitted-query list received from the hub",
            hub_job=LIST_SYNC,
        )
        # Persons whose 符号 is being acquired, with whoever waits for the end.
        self._acquiring: dict[str, list[Deferred[None]]] = {}
        self._person_secret = load_secret_key(layout.institution_person_key(self.code))

    # -- service life ---------------------------------------------------------------------

    @deferred
    async def startService(self) -> None:
        await super().startService()
        await self.lists.start()
        await self.jobs.run("health")  # a first look, once the list is loaded

    async def _expire_holds(self) -> dict[str, int]:
        return {"holds_expired": await self.held.expire()}

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
                timer = self._reactor.callLater(wait, fire, ended)
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
            # The log names no person: the person's state (宛名 in the console) says whose.
            self.log.info("a 符号 was not acquired: {code}", code=code)
            try:
                await self.database.run(persons.record_failure, number, code)
            except Exception:
                self.log.failure("could not record a failed 符号 acquisition")
        finally:
            for ended in self._acquiring.pop(number, []):
                fire(ended)

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

    def register_replica_record(self, record: replica.ReplicaRecord, system: str) -> Deferred[None]:
        """Validate a replica record against the catalogue and store it, when ``system``
        keeps the 副本 of its information name (else SystemNotAuthorized)."""
        replica.validate(record, self.catalogue, self.institution.provides)
        self._keeps(system, record.information_name)
        return self.database.run(replica.store, record, self.now())

    def register_attachment(
        self,
        integrated_address_number: str,
        information_name: str,
        attachment: messages.Attachment,
        system: str,
    ) -> Deferred[str]:
        """Register a file provided with a person's own information of ``information_name``
        (自己情報提供用添付ファイル), by a system that keeps that name's 副本; its id."""
        self._keeps(system, information_name)
        if information_name not in self.institution.provides:
            raise RenkeiError(errors.NOT_A_PROVIDER_OF, code=information_name)
        checked = attachments.validate_attachment(attachment)
        return self.database.run(
            self._store_attachment, system, integrated_address_number, information_name, checked
        )

    def _store_attachment(
        self,
        connection: Connection,
        system: str,
        integrated_address_number: str,
        information_name: str,
        attachment: messages.Attachment,
    ) -> str:
        persons.person_state(connection, integrated_address_number)  # UnknownPerson
        return attachments.store_attachment(
            connection, system, integrated_address_number, information_name, attachment, self.now()
        )

    def delete_attachment(self, attachment_id: str, system: str) -> Deferred[None]:
        """Delete a file the system registered (any other is UnknownAttachment to it)."""
        return self.database.run(attachments.delete_attachment, attachment_id, system)

    def _keeps(self, system: str, information_name: str) -> None:
        """Refuse (SystemNotAuthorized) a system that does not keep ``information_name``."""
        if information_name not in self.institution.back_office_system(system).information_names:
            raise RenkeiError(
                errors.SYSTEM_NOT_AUTHORIZED,
                system=system,
                what=f"the replica of information name {information_name}",
                what_ja=f"特定個人情報名{information_name}の副本",
            )

    def delete_replica_record(self, record_id: str, system: str) -> Deferred[None]:
        """Delete a replica record of an information name ``system`` keeps; any other record
        is UnknownRecord to it, as if it did not exist."""
        names = self.institution.back_office_system(system).information_names
        return self.database.run(replica.delete, record_id, names)

    # -- the network endpoint --------------------------------------------------------------

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        """What the network brings (`middleware.network.NetworkEndpoint`): only the hub may
        call a node, with provision requests and requests for a person's own information
        (provider side) and provisions (requester)."""
        if caller != HUB:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=caller)
        if operation == PROVISION_REQUEST and document is not None:
            return self.provider.receive_request(
                messages.decode(document, messages.ProvisionRequest)
            )
        if operation == PROVISION_REQUEST_BUNDLE and document is not None:
            return self.provider.receive_request_bundle(
                messages.decode(document, messages.ProvisionRequestBundle)
            )
        if operation == SELF_INFORMATION_REQUEST and document is not None:
            return self.provider.receive_self_information_request(
                messages.decode(document, messages.SelfInformationRequest)
            )
        if operation == RECORD_DISCLOSURE and document is not None:
            return self.disclose(messages.decode(document, messages.RecordDisclosureRequest))
        if operation == PROVISION and document is not None:
            return self.requester.receive_provision(messages.decode(document, messages.Provision))
        if operation == PROVISION_BUNDLE and document is not None:
            return self.requester.receive_provision_bundle(
                messages.decode(document, messages.ProvisionBundle)
            )
        raise RenkeiError(errors.PAGE_NOT_FOUND)

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        """Hand a message of the outbox to the part that sent it."""
        handlers: dict[str, Callable[[OutgoingMessage], Deferred[Any]]] = {
            "query": self.requester.deliver_query,
            QUERY_BUNDLE: self.requester.deliver_query_bundle,
            "provision": self.provider.deliver_provision,
            PROVISION_BUNDLE: self.provider.deliver_provision_bundle,
            NOTICE: self.notices.deliver,
        }
        return handlers[message.kind](message)

    # -- the disclosure of a person's records ---------------------------------------------------

    @deferred
    async def disclose(self, asked: messages.RecordDisclosureRequest) -> bytes:
        """情報提供等記録の開示, asked by the hub for マイナポータル: this node's records of the
        person behind our 符号 (none for someone not registered here), without the
        transactions marked 不開示 (照会側 or 提供側)."""
        if asked.institution not in (None, self.code):
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=asked.institution)
        records, truncated = await self.database.read(self._records_of, asked.person_fugo)
        return messages.encode(
            messages.DisclosedRecords(
                message_id=asked.message_id,
                party=self.code,
                records=tuple(records),
                truncated=truncated,
            )
        )

    @staticmethod
    def _records_of(connection: Connection, fugo: str) -> tuple[list[messages.NetworkRecord], bool]:
        try:
            person = persons.person_of(connection, fugo)
        except RenkeiError:
            return [], False  # not a person of this institution: no record of them
        return disclosure.records_of_persons(connection, node_records, [person])

    # -- the records of a transaction ----------------------------------------------------------

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
