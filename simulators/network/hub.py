"""The hub: a working simulation of the information-linkage network (情報提供ネットワークシステム).

It authenticates institutions by their client certificates, issues 符号 through the 住基ネット
simulator, publishes the signed permitted-query list, checks and records every query,
converts the requester's 符号 into the provider's, signs permits, delivers provision
requests and relays provisions, which it cannot read, back to the requester. Deliveries go
through the hub's own durable outbox. Its ``purge`` job deletes its records and outbox
documents past their retention (middleware/retention.py); with ``[backup]`` its ``backup``
job backs its database up.

マイナポータル is a member too (kind ``portal``): a person's request for their own
information (自己情報提供, `receive_self_information`) goes the way of a query, under the
自己情報提供 procedure instead of a row of the list, and reaches the provider as a
``SelfInformationRequest``; the provision comes back to the portal as to any requester. The
portal asks the hub for a person's provision records too (`disclose`): the hub's own, found by
every 符号 the person has on the network, or an institution's, asked of it under its 符号.
An institution's お知らせ (`receive_notice`) is relayed to the portal under the portal's
符号 of the person; the hub keeps how each stands (sent, delivered, read, undeliverable) and
tells the sender when it asks (`notice_status`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, Update, bindparam, select
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from codes import errors
from codes.catalogue import SELF_INFORMATION_AFFAIR, SELF_INFORMATION_PROCEDURE
from codes.errors import RenkeiError
from crypto.pki import PkiLayout, load_certificate, load_secret_key
from crypto.xmlsig import Signer
from middleware import disclosure, messages
from middleware.backup import PartyDatabase
from middleware.checkpoint import ChainTrust, CheckpointSigner
from middleware.clock import ReactorTime
from middleware.config import (
    Config,
    InstitutionConfig,
    NetworkConfig,
    OutsideMember,
    PortalConfig,
)
from middleware.deferred import deferred
from middleware.hardened_xml import parse_xml, serialize
from middleware.health import Health
from middleware.network import (
    FUGO,
    HUB,
    NOTICE,
    NOTICE_READ,
    NOTICE_STATUS,
    PERMITTED_LIST,
    PROVISION,
    PROVISION_BUNDLE,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
    QUERY,
    QUERY_BUNDLE,
    RECORD_DISCLOSURE,
    RECORDS,
    SELF_INFORMATION,
    SELF_INFORMATION_REQUEST,
    DeliveryRefused,
    TransientFailure,
    Transport,
    bundles_of,
    decode_answer,
)
from middleware.outbox import AfterDelivery, OutgoingMessage
from middleware.party import Party
from middleware.permitted_list import (
    ListedInstitution,
    PermittedList,
    directory,
    latest_version,
    read_delegations,
    read_rules,
    store_version,
)
from middleware.records import RecordEntry, records_of_transaction
from middleware.retention import Purge, party_kinds
from middleware.storage import in_slices
from middleware.tables import (
    hub_checkpoints,
    hub_job_run,
    hub_list_versions,
    hub_notice,
    hub_outbox,
    hub_outbox_owner,
    hub_query,
    hub_record_head,
    hub_records,
)
from simulators.network import jukinet
from simulators.network.fugo import FugoCipher, id_code

__all__ = [
    "COMPLETED",
    "DELIVERED",
    "FAILED",
    "HELD",
    "MIGRATIONS",
    "NOTICE_DELIVERED",
    "NOTICE_READ_STATE",
    "NOTICE_SENT",
    "NOTICE_UNDELIVERABLE",
    "OPEN",
    "PERMITTED",
    "PROVIDED",
    "REFUSED",
    "Hub",
    "Member",
    "party_database",
    "query_values",
    "transaction_number",
]

MIGRATIONS = Path(__file__).parent / "migrations"

# hub_query states
PERMITTED = "permitted"
DELIVERED = "delivered"
PROVIDED = "provided"
COMPLETED = "completed"
REFUSED = "refused"
FAILED = "failed"
HELD = "held"  # the provider holds the provision for a staff decision (保留中)
OPEN = (PERMITTED, DELIVERED, HELD)  # a provision may still arrive

# hub_notice states (お知らせ): 送信済, 配信済, 既読, 配信不可
NOTICE_SENT = "sent"
NOTICE_DELIVERED = "delivered"
NOTICE_READ_STATE = "read"
NOTICE_UNDELIVERABLE = "undeliverable"


# A check of a query before it is permitted: (requester, query, now), RenkeiError to refuse.
_Check = Callable[[str, messages.QueryRequest, datetime], None]


# The statements of every query, built once (building one costs several times executing it);
# an update sets the columns given at execution.
_INSERT_QUERY = hub_query.insert()
_QUERIES_OF_MESSAGES = select(
    hub_query.c.requester_message_id,
    hub_query.c.transaction_number,
    hub_query.c.state,
    hub_query.c.error_code,
).where(hub_query.c.requester_message_id.in_(bindparam("message_ids", expanding=True)))
_IDS_OF_MESSAGES = select(hub_query.c.requester_message_id, hub_query.c.id).where(
    hub_query.c.requester_message_id.in_(bindparam("message_ids", expanding=True))
)
_QUERIES_OF_NUMBERS = select(hub_query).where(
    hub_query.c.transaction_number.in_(bindparam("numbers", expanding=True))
)
_UPDATE_ROW = hub_query.update().where(hub_query.c.id == bindparam("row_id"))


@functools.cache
def _state_update(expecting: bool) -> Update:
    """Sets the columns given at execution on the query ``number`` (in state ``expected``
    when ``expecting``); built once, as it runs twice a flow."""
    update = hub_query.update().where(hub_query.c.transaction_number == bindparam("number"))
    return update.where(hub_query.c.state == bindparam("expected")) if expecting else update


def transaction_number(moment: datetime, row_id: int) -> str:
    """処理通番: the issue date and a sequence, 20 digits (the real format is not public)."""
    return f"{moment:%Y%m%d}{row_id:012d}"


def _known_answer(row: Any) -> tuple[str, RenkeiError | None]:
    """The 処理通番 and refusal (if refused) of a query received before, from its row."""
    number = str(row.transaction_number)
    if row.state == REFUSED and row.error_code in errors.ALL:
        return number, RenkeiError(errors.ALL[row.error_code], transaction_number=number)
    return number, None


def query_values(
    requester: str,
    query: messages.QueryRequest,
    state: str,
    now: datetime,
    permit_expires_at: datetime | None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """The row of a query received, in ``state``, still without its 処理通番."""
    return {
        "requester": requester,
        "requester_message_id": query.message_id,
        "provider": query.provider,
        "affair": query.affair,
        "procedure": query.procedure,
        "information_name": query.information_name,
        "state": state,
        "error_code": error_code,
        "received_at": now,
        "permit_expires_at": permit_expires_at,
        "finished_at": now if state == REFUSED else None,
        "delegating_requester": query.delegating_requester,
        "delegating_provider": query.delegating_provider,
        "non_disclosure": query.non_disclosure,
    }


def _query_entry(
    requester: str,
    query: messages.QueryRequest,
    number: str,
    status: str,
    error_code: str | None = None,
) -> RecordEntry:
    """The hub's record of a query permitted or refused."""
    return RecordEntry(
        event="query",
        status=status,
        transaction_number=number,
        requester=requester,
        provider=query.provider,
        affair=query.affair,
        procedure=query.procedure,
        information_name=query.information_name,
        person=query.requester_fugo,
        error_code=error_code,
        non_disclosure=query.non_disclosure,
        delegating_requester=query.delegating_requester,
        delegating_provider=query.delegating_provider,
    )


def _permit_of(
    requester: str,
    query: messages.QueryRequest,
    number: str,
    provider_fugo: str,
    now: datetime,
    expires_at: datetime,
) -> messages.Permit:
    """The permit of a query permitted under the 処理通番 ``number``."""
    return messages.Permit(
        transaction_number=number,
        requester=requester,
        provider=query.provider,
        affair=query.affair,
        procedure=query.procedure,
        information_name=query.information_name,
        provider_fugo=provider_fugo,
        conditions=query.conditions,
        delegating_requester=query.delegating_requester,
        delegating_provider=query.delegating_provider,
        non_disclosure=query.non_disclosure,
        issued_at=now,
        expires_at=expires_at,
    )


def party_database(network: NetworkConfig) -> PartyDatabase:
    """What backing up or restoring the hub needs of its database."""
    return PartyDatabase(
        name=HUB,
        code=HUB,
        url=network.database,
        migrations=MIGRATIONS,
        records=hub_records,
        head=hub_record_head,
        checkpoints=hub_checkpoints,
        audited=False,
    )


@dataclass(frozen=True)
class Member:
    """An institution connected to the network (マイナポータル is one too)."""

    config: InstitutionConfig | OutsideMember | PortalConfig
    encryption_certificate: bytes  # DER, handed to providers in the route


class Hub(Party):
    """The network as a party: list issuance on top of the party's database, outbox and
    records; its listener is the network link's (`adapters.network_link.hub_listener`),
    which calls `dispatch`."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        transport: Transport,
        clock: ReactorTime | None = None,
    ) -> None:
        assert config.network is not None
        # Wall time and timers (list issuance, outbox retries): the network's one clock.
        super().__init__(
            config,
            reactor,
            name=HUB,
            database=config.network.database,
            migrations=MIGRATIONS,
            outbox=(hub_outbox, hub_outbox_owner),
            records=(hub_records, hub_record_head),
            job_runs=hub_job_run,
            transport=transport,
            clock=clock,
        )
        self._network = config.network
        layout = PkiLayout(config.pki)
        self._signer = Signer(layout.hub_signing().load())
        # What the checkpoints of the hub's chain of records are checked against.
        self.trust = ChainTrust(load_certificate(layout.ca().certificate), HUB)
        self._fugo = FugoCipher(load_secret_key(layout.hub_fugo_key()))
        self._id_code_key = load_secret_key(layout.hub_idcode_key())
        self.members: dict[str, Member] = {}
        for member in config.members:
            certificate = layout.institution_encryption(member.code).certificate
            if isinstance(member, OutsideMember) and not certificate.exists():
                self.log.warn(
                    "outside member {name} ({code}) has no certificates yet: not a member until"
                    " `renkei pki enrol {name}` and a restart of the hub",
                    name=member.name,
                    code=member.code,
                )
                continue
            self.members[member.code] = Member(
                member, load_certificate(certificate).public_bytes(Encoding.DER)
            )
        # マイナポータル: listed in the directory (kind "portal"), routed to like a member.
        self.portal: str | None = None
        if config.portal is not None:
            self.portal = config.portal.code
            self.members[self.portal] = Member(
                config.portal,
                load_certificate(layout.portal_encryption().certificate).public_bytes(Encoding.DER),
            )
        self.permitted_list: PermittedList | None = None
        # The signed document of the list in force, as institutions fetch it.
        self.list_document = b""
        # A new version at half the validity of the last (the first one at start).
        self.jobs.add(
            "list_issue", self._network.list_validity / 2, self.issue_permitted_list, now=False
        )
        kept = config.retention
        self.purge = Purge(
            self,
            party_kinds(
                self.records, hub_checkpoints, hub_outbox, CheckpointSigner(self._signer, HUB), kept
            ),
            batch=kept.batch,
            audited=False,
        )
        self.jobs.add("purge", kept.interval, self.purge.run)
        self.add_backup(party_database(self._network))
        self.health = Health(
            self,
            config.health,
            HUB,
            HUB,
            permitted=lambda: self.permitted_list,
            missing="no permitted-query list issued yet",
        )

    # -- service life ---------------------------------------------------------------------

    @deferred
    async def startService(self) -> None:
        await super().startService()
        await self.jobs.run("list_issue")
        await self.jobs.run("health")  # a first look, once the list is issued

    # -- the permitted-query list ----------------------------------------------------------

    @deferred
    async def issue_permitted_list(self) -> dict[str, int]:
        """Sign and publish a new version of the list from the rules file and the registry;
        reports its version."""
        now = self.now()
        expires_at = now + timedelta(seconds=self._network.list_validity)
        institutions = directory(
            ListedInstitution(m.config.code, m.config.display_name, m.config.kind)
            for m in self.members.values()
        )
        rules = tuple(read_rules(self._network.permitted_list))
        delegations = frozenset(
            read_delegations(self._network.delegations) if self._network.delegations else ()
        )
        latest = await self.database.run(latest_version, hub_list_versions)
        version = 1 if latest is None else latest[0] + 1
        document = messages.PermittedListDocument(
            version=version,
            issued_at=now,
            expires_at=expires_at,
            institutions=tuple(
                messages.InstitutionEntry(code=i.code, name=i.name, kind=i.kind)
                for i in institutions.values()
            ),
            rows=tuple(
                messages.PermittedRow(
                    requester_kind=r.requester_kind,
                    affair=r.affair,
                    procedure=r.procedure,
                    provider_kind=r.provider_kind,
                    information_name=r.information_name,
                    legal_basis=r.legal_basis,
                )
                for r in rules
            ),
            delegations=tuple(
                messages.DelegationEntry(delegator=d.delegator, delegate=d.delegate)
                for d in sorted(delegations, key=lambda d: (d.delegator, d.delegate))
            ),
        )
        signed = serialize(self._signer.sign(messages.to_element(document)))
        await self.database.run(
            store_version, hub_list_versions, version, now, expires_at, signed, now
        )
        self.permitted_list = PermittedList(
            version, now, expires_at, institutions, rules, delegations
        )
        self.list_document = signed
        self.log.info("permitted-query list version {version} issued", version=version)
        return {"version": version}

    def _current_list(self) -> PermittedList:
        if self.permitted_list is None:
            raise RenkeiError(errors.PERMITTED_LIST_MISSING)
        return self.permitted_list

    # -- the network interface ------------------------------------------------------------

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        """What the institutions bring (`middleware.network.NetworkEndpoint`): only members
        may call, each operation answered with its document."""
        if caller not in self.members:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=caller)
        if operation == PERMITTED_LIST:
            return succeed(self.list_document)
        if operation == RECORDS and argument is not None:
            return self.transaction_records(caller, argument)
        if document is None:
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        if operation == FUGO:
            return self.acquire_fugo(caller, messages.decode(document, messages.FugoRequest))
        if operation == QUERY:
            return self.receive_query(caller, messages.decode(document, messages.QueryRequest))
        if operation == QUERY_BUNDLE:
            return self.receive_query_bundle(
                caller, messages.decode(document, messages.QueryBundle)
            )
        if operation == SELF_INFORMATION:
            return self.receive_self_information(
                caller, messages.decode(document, messages.SelfInformationQuery)
            )
        if operation == RECORD_DISCLOSURE:
            return self.disclose(
                caller, messages.decode(document, messages.RecordDisclosureRequest)
            )
        if operation == NOTICE:
            return self.receive_notice(caller, messages.decode(document, messages.Notice))
        if operation == NOTICE_READ:
            return self.receive_notice_read(caller, messages.decode(document, messages.NoticeRead))
        if operation == NOTICE_STATUS:
            return self.notice_status(
                caller, messages.decode(document, messages.NoticeStatusRequest)
            )
        if operation == PROVISION:
            return self.receive_provision(caller, messages.decode(document, messages.Provision))
        if operation == PROVISION_BUNDLE:
            return self.receive_provision_bundle(
                caller, messages.decode(document, messages.ProvisionBundle)
            )
        raise RenkeiError(errors.PAGE_NOT_FOUND)

    @deferred
    async def transaction_records(self, caller: str, number: str) -> bytes:
        """The hub's records of one transaction, for its requester or provider only."""
        rows = await self.database.run(self._records_for_party, caller, number)
        return messages.encode(
            messages.RecordList(
                transaction_number=number,
                records=tuple(
                    messages.NetworkRecord(
                        seq=row["seq"],
                        recorded_at=row["recorded_at"],
                        event=row["event"],
                        status=row["status"],
                        requester=row["requester"],
                        provider=row["provider"],
                        information_name=row["information_name"],
                        error_code=row["error_code"],
                        non_disclosure=bool(row["non_disclosure"]),
                        delegating_requester=row["delegating_requester"],
                        delegating_provider=row["delegating_provider"],
                    )
                    for row in rows
                ),
            )
        )

    def _records_for_party(
        self, connection: Connection, caller: str, number: str
    ) -> list[dict[str, Any]]:
        row = connection.execute(
            select(hub_query.c.requester, hub_query.c.provider).where(
                hub_query.c.transaction_number == number
            )
        ).first()
        if row is None or caller not in (row.requester, row.provider):
            # The same answer for unknown and other parties' transactions.
            raise RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number)
        return records_of_transaction(connection, hub_records, number)

    @deferred
    async def disclose(self, caller: str, asked: messages.RecordDisclosureRequest) -> bytes:
        """情報提供等記録の開示, for マイナポータル only (NotThePortal): the hub's records of
        the person behind the portal's 符号 (every transaction in which a requester used one
        of the person's 符号), or, with an institution, that institution's, asked of it under
        its own 符号 of the person; without the transactions marked 不開示."""
        if caller != self.portal:
            raise RenkeiError(errors.NOT_THE_PORTAL, caller=caller)
        if asked.institution is None:
            person = self._fugo.id_code_of(asked.person_fugo, caller)
            fugos = [self._fugo.issue(person, code) for code in sorted(self.members)]
            records, truncated = await self.database.read(
                disclosure.records_of_persons, hub_records, fugos
            )
            return messages.encode(
                messages.DisclosedRecords(
                    message_id=asked.message_id,
                    party=HUB,
                    records=tuple(records),
                    truncated=truncated,
                )
            )
        institution = asked.institution
        if institution not in self.members or institution == self.portal:
            raise RenkeiError(errors.UNKNOWN_INSTITUTION, code=institution)
        forwarded = messages.RecordDisclosureRequest(
            message_id=asked.message_id,
            person_fugo=self._fugo.convert(asked.person_fugo, caller, institution),
            institution=institution,
        )
        try:
            document = await self.transport.exchange(
                institution, RECORD_DISCLOSURE, messages.encode(forwarded)
            )
            answer = decode_answer(document, messages.DisclosedRecords)
        except DeliveryRefused as refusal:
            raise RenkeiError(errors.ALL.get(refusal.code, errors.INTERNAL)) from None
        except TransientFailure as failure:
            raise RenkeiError(errors.NETWORK_UNAVAILABLE, detail=str(failure)) from None
        if answer.party != institution or answer.message_id != asked.message_id:
            raise RenkeiError(
                errors.NETWORK_UNAVAILABLE, detail=f"{institution} answered for another request"
            )
        return messages.encode(answer)

    @deferred
    async def acquire_fugo(self, requester: str, ask: messages.FugoRequest) -> bytes:
        """符号取得: 個人番号 → 住民票コード (住基ネット) → IDコード → the caller's 符号."""
        resident_code = await self.database.run(jukinet.resident_code_of, ask.individual_number)
        fugo = self._fugo.issue(id_code(resident_code, self._id_code_key), requester)
        return messages.encode(messages.FugoResponse(message_id=ask.message_id, fugo=fugo))

    @deferred
    async def receive_query(self, requester: str, query: messages.QueryRequest) -> bytes:
        """情報照会要求: check the list, convert the 符号, record, permit and route; a refused
        query is recorded too (番号法 第23条: what was asked), and the refusal names its
        処理通番. A retried request gets the first answer again."""
        return await self._accept(requester, query, self._check_listed, PROVISION_REQUEST)

    @deferred
    async def receive_query_bundle(self, requester: str, bundle: messages.QueryBundle) -> bytes:
        """Queries of one shape about several persons (a bulk query's lines) in one message:
        each line handled as the QueryRequest it stands for (`receive_query`), every line in
        one transaction. A refused line is answered with its code and 処理通番 and does not
        refuse the others; a retried bundle gets the first answers again."""
        results = await self.database.run(self._record_query_bundle, requester, bundle, self.now())
        lines = []
        sent: set[str] = set()  # the lines of a bundle for a node share one message
        permitted: list[str] = []  # one business event for them all
        for line, (number, outgoing, refusal, new) in zip(bundle.lines, results, strict=True):
            asked = (number, requester, bundle.provider, bundle.information_name, bundle.procedure)
            if refusal is not None:
                if new:
                    self.events.query_refused(*asked, refusal.code)
                lines.append(
                    messages.QueryBundleAnswerLine.refusing(line.message_id, number, refusal)
                )
                continue
            if outgoing is not None:
                if outgoing.message_id not in sent:
                    sent.add(outgoing.message_id)
                    self.outbox.send_now(outgoing)
                permitted.append(number)
            accepted = messages.QueryBundleAnswerLine(
                message_id=line.message_id, transaction_number=number
            )
            lines.append(accepted)
        self.events.queries_permitted(
            permitted, requester, bundle.provider, bundle.information_name, bundle.procedure
        )
        return messages.encode(
            messages.QueryBundleAnswer(message_id=bundle.message_id, lines=tuple(lines))
        )

    def _record_query_bundle(
        self, connection: Connection, requester: str, bundle: messages.QueryBundle, now: datetime
    ) -> list[tuple[str, OutgoingMessage | None, RenkeiError | None, bool]]:
        """`_record_query` for every line of a bundle, in one transaction. A provider that is a
        node of renkei's gets the new permits as one PermitBundle (the message of each line
        is then that one); an outside member, a ProvisionRequest per permit."""
        with self.records_together(connection):
            if not isinstance(self.members[bundle.provider].config, InstitutionConfig):
                return [
                    self._record_query(
                        connection,
                        requester,
                        bundle.query_of(line),
                        now,
                        self._check_listed,
                        PROVISION_REQUEST,
                    )
                    for line in bundle.lines
                ]
            queries = [bundle.query_of(line) for line in bundle.lines]
            results = self._permit_queries(connection, requester, queries, now, self._check_listed)
            permits = [permit for _, permit, _, _ in results if permit is not None]
            outgoing = None
            if permits:
                first = permits[0]
                bundled = messages.PermitBundle(
                    requester=first.requester,
                    provider=first.provider,
                    affair=first.affair,
                    procedure=first.procedure,
                    information_name=first.information_name,
                    conditions=first.conditions,
                    delegating_requester=first.delegating_requester,
                    delegating_provider=first.delegating_provider,
                    non_disclosure=first.non_disclosure,
                    issued_at=first.issued_at,
                    expires_at=first.expires_at,
                    lines=tuple(
                        messages.PermitBundleLine(
                            transaction_number=p.transaction_number, provider_fugo=p.provider_fugo
                        )
                        for p in permits
                    ),
                )
                # Kept unsigned, as a single permit is: signed when it is sent.
                message_id = str(uuid.uuid4())
                outgoing = OutgoingMessage(
                    message_id,
                    PROVISION_REQUEST_BUNDLE,
                    bundle.provider,
                    message_id,
                    messages.encode(bundled),
                )
                self.outbox.enqueue(connection, outgoing)
            return [
                (number, outgoing if permit is not None else None, refusal, new)
                for number, permit, refusal, new in results
            ]

    def _permit_queries(
        self,
        connection: Connection,
        requester: str,
        queries: Sequence[messages.QueryRequest],
        now: datetime,
        check: _Check,
    ) -> list[tuple[str, messages.Permit | None, RenkeiError | None, bool]]:
        """Some queries, in the caller's transaction: a query received before (the
        requester's retry) gets its first answer; a new one is checked (``check``), its 符号
        converted, given its 処理通番 and recorded, with its permit or its refusal (recorded;
        raised instead when it is not the query's fault). One read of the queries received
        before, one insert of the new ones and one update of their 処理通番, whatever their
        number: for each, its 処理通番, permit, refusal and whether it is new. Their records
        follow their order. A message id met twice is the retry of its first query."""
        known: dict[str, tuple[str, RenkeiError | None]] = {}
        for some in in_slices(sorted({query.message_id for query in queries})):
            for row in connection.execute(_QUERIES_OF_MESSAGES, {"message_ids": some}):
                known[row.requester_message_id] = _known_answer(row)
        expires_at = now + timedelta(seconds=self._network.permit_validity)
        # The new queries: each with its provider's 符号, or its refusal.
        new: list[tuple[messages.QueryRequest, str | None, RenkeiError | None]] = []
        first: set[str] = set()
        for query in queries:
            if query.message_id in known or query.message_id in first:
                continue
            first.add(query.message_id)
            try:
                check(requester, query, now)
                converted = self._fugo.convert(query.requester_fugo, requester, query.provider)
            except RenkeiError as failure:
                if failure.status >= 500:
                    raise  # not a refusal of the query: the requester will send it again
                new.append((query, None, failure))
                continue
            new.append((query, converted, None))
        values = [
            query_values(requester, query, PERMITTED, now, expires_at)
            if refusal is None
            else query_values(requester, query, REFUSED, now, None, refusal.code)
            for query, _, refusal in new
        ]
        # One executemany, then the ids read back by message id (unique): RETURNING in the
        # order of the rows would make SQLite's driver insert them one at a time.
        ids: dict[str, int] = {}
        if values:
            connection.execute(_INSERT_QUERY, values)
            asked = [query.message_id for query, _, _ in new]
            for some in in_slices(asked):
                for inserted in connection.execute(_IDS_OF_MESSAGES, {"message_ids": some}):
                    ids[inserted.requester_message_id] = inserted.id
        row_ids = [ids[query.message_id] for query, _, _ in new]
        numbers = [transaction_number(now, row_id) for row_id in row_ids]
        if numbers:
            connection.execute(
                _UPDATE_ROW,
                [
                    {"row_id": row_id, "transaction_number": number}
                    for row_id, number in zip(row_ids, numbers, strict=True)
                ],
            )
        permitted: dict[str, tuple[str, messages.Permit | None, RenkeiError | None]] = {}
        entries = []
        for (query, fugo, refusal), number in zip(new, numbers, strict=True):
            if refusal is not None:
                code = refusal.code
                entries.append(_query_entry(requester, query, number, REFUSED, code))
                refused = RenkeiError(
                    refusal.kind, **{**refusal.params, "transaction_number": number}
                )
                permitted[query.message_id] = (number, None, refused)
                continue
            assert fugo is not None
            entries.append(_query_entry(requester, query, number, PERMITTED))
            permit = _permit_of(requester, query, number, fugo, now, expires_at)
            permitted[query.message_id] = (number, permit, None)
        self.record(connection, now, entries)
        results: list[tuple[str, messages.Permit | None, RenkeiError | None, bool]] = []
        for query in queries:
            if query.message_id in known:
                known_number, known_refusal = known[query.message_id]
                results.append((known_number, None, known_refusal, False))
                continue
            answer = permitted[query.message_id]
            results.append((*answer, True))
            known[query.message_id] = (answer[0], answer[2])  # met again: a retry
        return results

    @deferred
    async def receive_self_information(
        self, caller: str, asked: messages.SelfInformationQuery
    ) -> bytes:
        """自己情報提供 asked by マイナポータル for the person behind its 符号: the portal's
        only (NotThePortal), of a provider of the information name; then as a query, under
        the 自己情報提供 procedure, its permit sent to the provider as a SelfInformationRequest."""
        if caller != self.portal:
            raise RenkeiError(errors.NOT_THE_PORTAL, caller=caller)
        query = messages.QueryRequest(
            message_id=asked.message_id,
            requester_fugo=asked.person_fugo,
            affair=SELF_INFORMATION_AFFAIR,
            procedure=SELF_INFORMATION_PROCEDURE,
            information_name=asked.information_name,
            provider=asked.provider,
        )
        return await self._accept(caller, query, self._check_provides, SELF_INFORMATION_REQUEST)

    async def _accept(
        self, requester: str, query: messages.QueryRequest, check: _Check, kind: str
    ) -> bytes:
        number, outgoing, refusal, new = await self.database.run(
            self._record_query, requester, query, self.now(), check, kind
        )
        asked = (number, requester, query.provider, query.information_name, query.procedure)
        if refusal is not None:
            if new:
                self.events.query_refused(*asked, refusal.code)
            raise refusal
        if outgoing is not None:
            self.outbox.send_now(outgoing)
            self.events.query_permitted(*asked)
        return messages.encode(
            messages.QueryAccepted(message_id=query.message_id, transaction_number=number)
        )

    def _check_listed(self, requester: str, query: messages.QueryRequest, now: datetime) -> None:
        """A query is permitted by the list in force."""
        self._current_list().check(
            requester,
            query.provider,
            query.affair,
            query.procedure,
            query.information_name,
            now,
            delegating_requester=query.delegating_requester,
            delegating_provider=query.delegating_provider,
        )

    def _check_provides(self, requester: str, query: messages.QueryRequest, now: datetime) -> None:
        """A person may ask for their own information of a member that provides it (the list
        in force names the members)."""
        self._current_list().ensure_current(now)
        self._current_list().institution(query.provider)
        member = self.members.get(query.provider)
        if member is None or query.information_name not in member.config.provides:
            raise RenkeiError(errors.NOT_A_PROVIDER_OF, code=query.information_name)

    def _record_query(
        self,
        connection: Connection,
        requester: str,
        query: messages.QueryRequest,
        now: datetime,
        check: _Check,
        kind: str,
    ) -> tuple[str, OutgoingMessage | None, RenkeiError | None, bool]:
        """In one transaction: the 処理通番, the provision request (``kind``) to send, the
        refusal to answer (returned, not raised, so that the refusal's record is committed)
        and whether the query is new (not a retry of one answered before)."""
        ((number, permit, refusal, new),) = self._permit_queries(
            connection, requester, [query], now, check
        )
        if permit is None:
            return number, None, refusal, new  # a retry (the first answer) or a refusal
        # The outbox keeps the permit unsigned: it is signed when it is sent
        # (`_provision_request`), outside any transaction.
        outgoing = OutgoingMessage(
            str(uuid.uuid4()), kind, query.provider, number, messages.encode(permit)
        )
        self.outbox.enqueue(connection, outgoing)
        return number, outgoing, None, True

    @deferred
    async def receive_provision(self, sender: str, provision: messages.Provision) -> bytes:
        """情報提供 from a provider: relay it, unread, to the requester; the acknowledgement."""
        outgoing = await self.database.run(self._record_provision, sender, provision, self.now())
        if outgoing is not None:
            self.outbox.send_now(outgoing)
            self.events.relayed(
                provision.transaction_number,
                sender,
                outgoing.destination,
                provision.status,
                provision.error_code,
            )
        return messages.encode(
            messages.ProvisionAck(
                message_id=provision.message_id,
                transaction_number=provision.transaction_number,
            )
        )

    @deferred
    async def receive_provision_bundle(
        self, sender: str, bundle: messages.ProvisionBundle
    ) -> bytes:
        """情報提供 of several transactions at once from a node of renkei's: each provision
        relayed, unread, as a single one is (`receive_provision`), all in one transaction;
        those for a node of renkei's go on together, as ProvisionBundles (`bundles_of`). A
        provision refused alone (not this sender's, unknown) does not refuse the others."""
        now = self.now()
        results, outgoing = await self.database.run(
            self._record_provision_bundle, sender, bundle, now
        )
        for message in outgoing:
            self.outbox.send_now(message)
        lines = []
        relayed: dict[str, list[tuple[str, str, str | None]]] = {}
        for provision, (requester, refusal) in zip(bundle.provisions, results, strict=True):
            number = provision.transaction_number
            if refusal is not None:
                lines.append(messages.BundleAnswerLine.refusing(number, refusal))
                continue
            if requester is not None:
                relayed.setdefault(requester, []).append(
                    (number, provision.status, provision.error_code)
                )
            lines.append(messages.BundleAnswerLine(transaction_number=number))
        for requester, answers in relayed.items():  # one business event per requester
            self.events.relayed_together(answers, sender, requester)
        return messages.encode(
            messages.ProvisionBundleAnswer(message_id=bundle.message_id, lines=tuple(lines))
        )

    def _record_provision_bundle(
        self,
        connection: Connection,
        sender: str,
        bundle: messages.ProvisionBundle,
        now: datetime,
    ) -> tuple[list[tuple[str | None, RenkeiError | None]], list[OutgoingMessage]]:
        """Each provision of a bundle relayed (its requester), left (a retry: None) or refused;
        and the messages to send: one ProvisionBundle per requester that is a node of
        renkei's (or more, `bundles_of`), a Provision per provision for any other."""
        with self.records_together(connection):
            results: list[tuple[str | None, RenkeiError | None]] = []
            bundles: dict[str, list[messages.Provision]] = {}
            outgoing: list[OutgoingMessage] = []
            found = self._queries_of_numbers(connection, bundle.provisions)
            updates: list[dict[str, Any]] = []
            for provision in bundle.provisions:
                # Each at its turn: a 処理通番 met again finds its row as changed before.
                row = self._opened(found, sender, provision)
                if isinstance(row, RenkeiError):
                    results.append((None, row))
                    continue
                if row is None:
                    results.append((None, None))
                    continue
                results.append((row.requester, None))
                if isinstance(self.members[row.requester].config, InstitutionConfig):
                    relayed = self._relayed(connection, row, provision, now, updates)
                    bundles.setdefault(row.requester, []).append(relayed)
                else:
                    outgoing.append(self._relay(connection, row, provision, now, updates))
            if updates:
                connection.execute(_UPDATE_ROW, updates)
            for requester, provisions in bundles.items():
                for group in bundles_of(provisions):
                    message_id = str(uuid.uuid4())
                    body = messages.encode(
                        messages.ProvisionBundle(message_id=message_id, provisions=group)
                    )
                    message = OutgoingMessage(
                        message_id, PROVISION_BUNDLE, requester, message_id, body
                    )
                    self.outbox.enqueue(connection, message)
                    outgoing.append(message)
            return results, outgoing

    def _record_provision(
        self,
        connection: Connection,
        sender: str,
        provision: messages.Provision,
        now: datetime,
    ) -> OutgoingMessage | None:
        row = self._open_row(connection, sender, provision)
        if row is None:
            return None  # the provider's retry of a provision already relayed
        return self._relay(connection, row, provision, now)

    @staticmethod
    def _open_row(connection: Connection, sender: str, provision: messages.Provision) -> Any:
        """The query a provision answers, if it still waits for it (None for the provider's
        retry of a provision already relayed); refused when it is not the sender's."""
        row = Hub._opened(Hub._queries_of_numbers(connection, [provision]), sender, provision)
        if isinstance(row, RenkeiError):
            raise row
        return row

    @staticmethod
    def _queries_of_numbers(
        connection: Connection, provisions: Sequence[messages.Provision]
    ) -> dict[str, SimpleNamespace]:
        """The queries some provisions answer, by 処理通番, read in one statement per
        `IN_SLICE` of them (rows to change in place, as `_relayed` does)."""
        found: dict[str, SimpleNamespace] = {}
        numbers = sorted({provision.transaction_number for provision in provisions})
        for some in in_slices(numbers):
            for read in connection.execute(_QUERIES_OF_NUMBERS, {"numbers": some}):
                found[read.transaction_number] = SimpleNamespace(**read._mapping)
        return found

    @staticmethod
    def _opened(
        found: dict[str, SimpleNamespace], sender: str, provision: messages.Provision
    ) -> Any:
        """`_open_row` of a provision, its query taken from ``found`` (`_queries_of_numbers`)
        as it stands now: its row, None, or its refusal."""
        number = provision.transaction_number
        row = found.get(number)
        if row is None:
            return RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number)
        if row.provider != sender:
            return RenkeiError(errors.SENDER_NOT_PARTY, sender=sender, transaction_number=number)
        if row.state not in OPEN or (row.state == HELD and provision.status == HELD):
            return None
        return row

    def _relay(
        self,
        connection: Connection,
        row: Any,
        provision: messages.Provision,
        now: datetime,
        updates: list[dict[str, Any]] | None = None,
    ) -> OutgoingMessage:
        """Queue the provision, unread, for the requester, naming the requester's query (its
        new state written, or added to ``updates``: `_relayed`)."""
        relayed = self._relayed(connection, row, provision, now, updates)
        outgoing = OutgoingMessage(
            relayed.message_id,
            "provision",
            row.requester,
            row.transaction_number,
            messages.encode(relayed),
        )
        self.outbox.enqueue(connection, outgoing)
        return outgoing

    def _relayed(
        self,
        connection: Connection,
        row: Any,
        provision: messages.Provision,
        now: datetime,
        updates: list[dict[str, Any]] | None = None,
    ) -> messages.Provision:
        """The provision as it goes on, unread, to the requester, naming the requester's
        query; the query's new state written (or added to ``updates``, for the caller to
        write with others in one statement) and the record written."""
        error_code = provision.error_code
        state = {"held": HELD, "provided": PROVIDED, "no_data": PROVIDED}.get(
            provision.status, REFUSED
        )
        # 提供側不開示: the provider hides the transaction; so does every later record here.
        non_disclosure = bool(row.non_disclosure) or provision.non_disclosure
        update = {
            "row_id": row.id,
            "state": state,
            "error_code": error_code,
            "non_disclosure": non_disclosure,
        }
        if updates is None:
            connection.execute(_UPDATE_ROW, update)
        else:
            updates.append(update)
            # The row as changed, should its 処理通番 come again in the same bundle.
            row.state, row.error_code, row.non_disclosure = state, error_code, non_disclosure
        relayed = replace(
            provision, message_id=str(uuid.uuid4()), query_message_id=row.requester_message_id
        )
        self.record(
            connection,
            now,
            [
                RecordEntry(
                    event="provision",
                    status=provision.status,
                    transaction_number=row.transaction_number,
                    requester=row.requester,
                    provider=row.provider,
                    affair=row.affair,
                    procedure=row.procedure,
                    information_name=row.information_name,
                    error_code=error_code,
                    non_disclosure=non_disclosure,
                    delegating_requester=row.delegating_requester,
                    delegating_provider=row.delegating_provider,
                )
            ],
        )
        return relayed

    # -- お知らせ -------------------------------------------------------------------------------

    @deferred
    async def receive_notice(self, sender: str, notice: messages.Notice) -> bytes:
        """An institution's notice for a person: numbered, kept and relayed to マイナポータル
        under the portal's 符号 of the person (FugoInvalid for a 符号 not the sender's; the
        portal sends none); the acknowledgement with its number. A retry gets it again."""
        if sender == self.portal:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=sender)
        if self.portal is None:
            raise RenkeiError(errors.NO_PORTAL_ACCOUNT)
        number, outgoing = await self.database.run(self._record_notice, sender, notice, self.now())
        if outgoing is not None:
            self.outbox.send_now(outgoing)
        return messages.encode(
            messages.NoticeAck(message_id=notice.message_id, notice_number=number)
        )

    def _record_notice(
        self, connection: Connection, sender: str, notice: messages.Notice, now: datetime
    ) -> tuple[str, OutgoingMessage | None]:
        known = connection.execute(
            select(hub_notice.c.notice_number).where(
                hub_notice.c.sender == sender,
                hub_notice.c.sender_message_id == notice.message_id,
            )
        ).first()
        if known is not None:
            return str(known.notice_number), None  # a retry: same number, nothing new
        assert self.portal is not None
        recipient = self._fugo.convert(notice.person_fugo, sender, self.portal)
        inserted = connection.execute(
            hub_notice.insert().values(
                sender=sender,
                sender_message_id=notice.message_id,
                recipient=recipient,
                state=NOTICE_SENT,
                received_at=now,
                changed_at=now,
            )
        ).inserted_primary_key
        assert inserted is not None
        number = transaction_number(now, int(inserted[0]))
        connection.execute(
            hub_notice.update()
            .where(hub_notice.c.id == int(inserted[0]))
            .values(notice_number=number)
        )
        message_id = str(uuid.uuid4())
        body = messages.encode(
            replace(
                notice,
                message_id=message_id,
                notice_number=number,
                sender=sender,
                person_fugo=recipient,
            )
        )
        outgoing = OutgoingMessage(message_id, NOTICE, self.portal, number, body)
        self.outbox.enqueue(connection, outgoing)
        return number, outgoing

    @deferred
    async def _deliver_notice(self, message: OutgoingMessage) -> None:
        try:
            document = await self.transport.exchange(message.destination, NOTICE, message.body)
            decode_answer(document, messages.NoticeAck)
        except DeliveryRefused as refusal:
            # The portal cannot deliver it (no account): 配信不可, with its code.
            await self.database.run(
                self._notice_changed, message.reference, NOTICE_UNDELIVERABLE, refusal.code
            )
            raise
        await self.database.run(self._notice_changed, message.reference, NOTICE_DELIVERED)

    def _notice_changed(
        self,
        connection: Connection,
        number: str,
        state: str,
        code: str | None = None,
        at: datetime | None = None,
    ) -> bool:
        """A notice moves on (sent → delivered → read; sent or delivered → undeliverable),
        never back; whether it moved."""
        now = self.now()
        earlier = {
            NOTICE_DELIVERED: (NOTICE_SENT,),
            NOTICE_READ_STATE: (NOTICE_SENT, NOTICE_DELIVERED),
            NOTICE_UNDELIVERABLE: (NOTICE_SENT, NOTICE_DELIVERED),
        }[state]
        times: dict[str, dict[str, Any]] = {
            NOTICE_DELIVERED: {"delivered_at": now},
            NOTICE_READ_STATE: {"read_at": at or now},
            NOTICE_UNDELIVERABLE: {"error_code": code},
        }
        moved = connection.execute(
            hub_notice.update()
            .where(hub_notice.c.notice_number == number, hub_notice.c.state.in_(earlier))
            .values(state=state, changed_at=now, **times[state])
        ).rowcount
        return bool(moved)

    @deferred
    async def receive_notice_read(self, caller: str, read: messages.NoticeRead) -> bytes:
        """マイナポータル says the person read a notice (only the portal: NotThePortal)."""
        if caller != self.portal:
            raise RenkeiError(errors.NOT_THE_PORTAL, caller=caller)
        await self.database.run(self._notice_read, read)
        return messages.encode(
            messages.NoticeAck(message_id=read.message_id, notice_number=read.notice_number)
        )

    def _notice_read(self, connection: Connection, read: messages.NoticeRead) -> None:
        known = connection.execute(
            select(hub_notice.c.id).where(hub_notice.c.notice_number == read.notice_number)
        ).first()
        if known is None:
            raise RenkeiError(errors.UNKNOWN_NOTICE, notice=read.notice_number)
        self._notice_changed(connection, read.notice_number, NOTICE_READ_STATE, at=read.read_at)

    @deferred
    async def notice_status(self, caller: str, asked: messages.NoticeStatusRequest) -> bytes:
        """お知らせ状況確認: how the caller's notices among those asked about stand (another
        institution's are left out, as unknown ones are)."""
        rows = await self.database.read(
            lambda connection: connection.execute(
                select(hub_notice).where(
                    hub_notice.c.notice_number.in_(asked.notice_numbers),
                    hub_notice.c.sender == caller,
                )
            ).all()
        )
        return messages.encode(
            messages.NoticeStatusList(
                message_id=asked.message_id,
                notices=tuple(
                    messages.NoticeState(
                        notice_number=row.notice_number,
                        status=row.state,
                        changed_at=row.changed_at,
                        error_code=row.error_code,
                    )
                    for row in rows
                ),
            )
        )

    # -- deliveries from the outbox ----------------------------------------------------------

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        handlers: dict[str, Callable[[OutgoingMessage], Deferred[Any]]] = {
            PROVISION_REQUEST: self._deliver_provision_request,
            PROVISION_REQUEST_BUNDLE: self._deliver_provision_request_bundle,
            SELF_INFORMATION_REQUEST: self._deliver_provision_request,
            "provision": self._deliver_provision,
            PROVISION_BUNDLE: self._deliver_provision_bundle,
            NOTICE: self._deliver_notice,
        }
        return handlers[message.kind](message)

    def _provision_request(self, message: OutgoingMessage) -> bytes:
        """The ProvisionRequest (or, for マイナポータル, the SelfInformationRequest) of an
        outbox message: the permit it keeps, signed now, and the route to the requester's
        encryption certificate."""
        element = parse_xml(message.body)  # the permit `_record_query` wrote
        requester = element.findtext(f"{{{messages.NS}}}Requester") or ""
        shape = (
            messages.SelfInformationRequest
            if message.kind == SELF_INFORMATION_REQUEST
            else messages.ProvisionRequest
        )
        return messages.encode(
            shape(
                message_id=message.message_id,
                permit_element=self._signer.sign(element),
                route=messages.Route(
                    requester=requester,
                    encryption_certificate=self.members[requester].encryption_certificate,
                ),
            )
        )

    @deferred
    async def _deliver_provision_request(self, message: OutgoingMessage) -> AfterDelivery:
        try:
            document = await self.transport.exchange(
                message.destination, message.kind, self._provision_request(message)
            )
            decode_answer(document, messages.ProvisionRequestAck)
        except DeliveryRefused as refusal:
            # The provider refused: tell the requester, with the provider's code.
            outgoing = await self.database.run(
                self._provider_refused, message.reference, refusal.code, self.now()
            )
            if outgoing is not None:
                self.outbox.send_now(outgoing)
                self.events.relayed(
                    message.reference,
                    message.destination,
                    outgoing.destination,
                    "refused by the provider",
                    refusal.code,
                )
            raise
        return self._after(message.reference, PERMITTED, DELIVERED)

    @deferred
    async def _deliver_provision_request_bundle(self, message: OutgoingMessage) -> AfterDelivery:
        """A PermitBundle of the outbox, signed now and sent with its route; each permit the
        provider refuses is told to the requester as a single refused one is."""
        element = parse_xml(message.body)  # the permit bundle `_record_query_bundle` wrote
        bundle = messages.from_element(element, messages.PermitBundle)
        numbers = [line.transaction_number for line in bundle.lines]
        body = messages.encode(
            messages.ProvisionRequestBundle(
                message_id=message.message_id,
                permit_element=self._signer.sign(element),
                route=messages.Route(
                    requester=bundle.requester,
                    encryption_certificate=self.members[bundle.requester].encryption_certificate,
                ),
            )
        )
        try:
            document = await self.transport.exchange(
                message.destination, PROVISION_REQUEST_BUNDLE, body
            )
            answer = decode_answer(document, messages.ProvisionRequestBundleAnswer)
        except DeliveryRefused as refusal:
            await self._providers_refused(message.destination, [(n, refusal.code) for n in numbers])
            raise
        if (
            answer.message_id != message.message_id
            or [line.transaction_number for line in answer.lines] != numbers
        ):
            raise TransientFailure(f"the answer to {message.message_id} names other permits")
        refused = [(line.transaction_number, line.code) for line in answer.lines if line.code]
        if refused:
            await self._providers_refused(message.destination, refused)
        accepted = [line.transaction_number for line in answer.lines if not line.code]
        return AfterDelivery(
            lambda connection: self._set_states(connection, accepted, PERMITTED, DELIVERED)
        )

    async def _providers_refused(self, provider: str, refused: list[tuple[str, str]]) -> None:
        """Permits the provider refused (処理通番, code), each told to its requester."""
        now = self.now()
        relayed = await self.database.run(
            lambda connection: [
                (number, code, self._provider_refused(connection, number, code, now))
                for number, code in refused
            ]
        )
        for number, code, outgoing in relayed:
            if outgoing is not None:
                self.outbox.send_now(outgoing)
                self.events.relayed(
                    number, provider, outgoing.destination, "refused by the provider", code
                )

    def _set_states(
        self, connection: Connection, numbers: list[str], expected: str | None, state: str
    ) -> None:
        """`_set_state` of several queries (a bundle's), in one executemany."""
        if not numbers:
            return
        finished = {"finished_at": self.now()} if state in (COMPLETED, FAILED) else {}
        expecting = {} if expected is None else {"expected": expected}
        connection.execute(
            _state_update(expected is not None),
            [{"number": number, **expecting, "state": state, **finished} for number in numbers],
        )

    def _provider_refused(
        self, connection: Connection, number: str, code: str, now: datetime
    ) -> OutgoingMessage | None:
        row = connection.execute(
            select(hub_query).where(hub_query.c.transaction_number == number)
        ).first()
        if row is None or row.state not in OPEN:
            return None
        refusal = messages.Provision(
            message_id=str(uuid.uuid4()), transaction_number=number, status="error", error_code=code
        )
        return self._relay(connection, row, refusal, now)

    @deferred
    async def _deliver_provision(self, message: OutgoingMessage) -> AfterDelivery:
        try:
            document = await self.transport.exchange(message.destination, PROVISION, message.body)
            decode_answer(document, messages.ProvisionAck)
        except DeliveryRefused:
            await self.database.run(self._set_state, message.reference, None, FAILED)
            raise
        return self._after(message.reference, PROVIDED, COMPLETED)

    @deferred
    async def _deliver_provision_bundle(self, message: OutgoingMessage) -> AfterDelivery:
        """Provisions relayed together to a node of renkei's: each that the requester takes
        completes its query, each it refuses fails it (as for a single provision)."""
        bundle = messages.decode(message.body, messages.ProvisionBundle)
        numbers = [provision.transaction_number for provision in bundle.provisions]
        try:
            document = await self.transport.exchange(
                message.destination, PROVISION_BUNDLE, message.body
            )
            answer = decode_answer(document, messages.ProvisionBundleAnswer)
        except DeliveryRefused:
            await self.database.run(self._set_states, numbers, None, FAILED)
            raise
        if (
            answer.message_id != message.message_id
            or [line.transaction_number for line in answer.lines] != numbers
        ):
            raise TransientFailure(f"the answer to {message.message_id} names other provisions")
        taken = [line.transaction_number for line in answer.lines if not line.code]
        refused = [line.transaction_number for line in answer.lines if line.code]

        def after(connection: Connection) -> None:
            self._set_states(connection, taken, PROVIDED, COMPLETED)
            self._set_states(connection, refused, None, FAILED)

        return AfterDelivery(after)

    def _after(self, number: str, expected: str | None, state: str) -> AfterDelivery:
        """The query's new state, written with its message's delivery (one transaction)."""
        return AfterDelivery(
            lambda connection: self._set_state(connection, number, expected, state)
        )

    def _set_state(
        self, connection: Connection, number: str, expected: str | None, state: str
    ) -> None:
        self._set_states(connection, [number], expected, state)
