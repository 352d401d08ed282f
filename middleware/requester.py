"""The requester side of an intermediate server (情報照会): queries out, results in.

A back-office system submits a query (`Requester.submit_query`): it is checked here (the
system may use the procedure's affair, the permitted list allows it), stored and sent to the
hub through the outbox in one transaction. The hub's answer gives it a 処理通番 (or refuses
it); the provider's result comes back relayed by the hub (`Requester.receive_provision`):
decrypted with this institution's key and verified outside any transaction, then stored
once. A back office reads its own queries only (`query_status`, `wait_for_end`); what it
reads is `QueryStatus`, which the back-office API presents.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from crypto.envelope import open_envelope
from crypto.pki import Credentials, identity_of
from crypto.xmlsig import CAVerifier, SignatureInvalid
from middleware import messages, persons
from middleware.config import InstitutionConfig
from middleware.deferred import deferred, fire
from middleware.list_sync import PermittedLists
from middleware.network import (
    HUB,
    MAX_BUNDLE_LINES,
    QUERY,
    QUERY_BUNDLE,
    DeliveryRefused,
    TransientFailure,
    decode_answer,
)
from middleware.outbox import AfterDelivery, OutgoingMessage
from middleware.party import Party
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
from middleware.records import RecordEntry
from middleware.storage import in_slices
from middleware.tables import query

__all__ = [
    "LOOK_AGAIN",
    "ProvisionOpener",
    "QueryStatus",
    "Requester",
    "provision_ack",
    "query_record",
    "submission_hash",
    "verify_payload",
]

# The statements of every flow on a query's row, built once (building one costs several times
# executing it); an update sets the columns given at execution.
_QUERY_BY_ID = select(query).where(query.c.query_id == bindparam("by_query_id"))
_UPDATE_QUERY = query.update().where(query.c.query_id == bindparam("by_query_id"))
_INSERT_QUERY = query.insert()
_QUERIES_OF_KEYS = select(query.c.idempotency_key, query.c.query_id, query.c.request_hash).where(
    query.c.system == bindparam("system"),
    query.c.idempotency_key.in_(bindparam("keys", expanding=True)),
)
_QUERIES_BY_IDS = select(query).where(query.c.query_id.in_(bindparam("query_ids", expanding=True)))


@dataclass(frozen=True)
class QueryStatus:
    """A query as its back-office system may read it."""

    query_id: str
    state: str
    transaction_number: str | None
    integrated_address_number: str
    procedure: str
    information_name: str
    provider: str
    submitted_at: datetime
    completed_at: datetime | None
    error_code: str | None
    result: bytes | None  # the verified, signed payload (plaintext), once provided
    result_deleted_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def submission_hash(submission: QuerySubmission) -> str:
    """The SHA-256 of what a submission asks (hex), to tell a resend from another query."""
    asked = asdict(submission) | {"conditions": conditions_json(submission.conditions)}
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def query_record(code: str, row: Any, event: str, status: str, **extra: Any) -> RecordEntry:
    """The provision record of an event of the query ``row`` asked by institution ``code``."""
    return RecordEntry(
        event=event,
        status=status,
        transaction_number=extra.pop("transaction_number", row.transaction_number),
        requester=code,
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


class _QueryRows:
    """Some queries' rows, read in one statement per `IN_SLICE` queries, changed in memory
    as one after the other, and written back with one UPDATE (executemany) per set of
    columns changed: what a bundle's lines do to their queries costs a few statements, not
    two a line."""

    def __init__(self, connection: Connection, query_ids: Sequence[str]) -> None:
        self.rows: dict[str, SimpleNamespace] = {}
        for some in in_slices(sorted(set(query_ids))):
            for row in connection.execute(_QUERIES_BY_IDS, {"query_ids": some}):
                self.rows[row.query_id] = SimpleNamespace(**row._mapping)
        self._changes: dict[str, dict[str, Any]] = {}

    def row(self, query_id: str) -> SimpleNamespace:
        """The query's row as changed so far (KeyError when there is no such query)."""
        return self.rows[query_id]

    def change(self, query_id: str, **values: Any) -> SimpleNamespace:
        """Set columns of the query's row, to be written by `write`; the row as it was."""
        row = self.rows[query_id]
        before = SimpleNamespace(**vars(row))
        for name, value in values.items():
            setattr(row, name, value)
        self._changes.setdefault(query_id, {}).update(values)
        return before

    def write(self, connection: Connection) -> None:
        """Every change made, one UPDATE statement per set of columns changed."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for query_id, values in self._changes.items():
            by_columns.setdefault(tuple(sorted(values)), []).append(
                {"by_query_id": query_id, **values}
            )
        for parameters in by_columns.values():
            connection.execute(_UPDATE_QUERY, parameters)
        self._changes.clear()


LOOK_AGAIN = 1.0  # seconds between two looks of a long poll at its query in the database


class Requester:
    """The queries of one intermediate server."""

    log = Logger()

    def __init__(
        self,
        party: Party,
        institution: InstitutionConfig,
        catalogue: Catalogue,
        lists: PermittedLists,
        *,
        encryption: Credentials,
        payload_verifier: CAVerifier,
        reactor: Any,
    ) -> None:
        self._party = party
        self._database = party.database
        self._institution = institution
        self._code = institution.code
        self._catalogue = catalogue
        self._lists = lists
        self._opener = ProvisionOpener(encryption, payload_verifier, catalogue, self._code)
        # Long polls wait in real time, whatever the party's clock.
        self._reactor = reactor
        self._waiters: dict[str, list[Deferred[None]]] = {}

    # -- submission --------------------------------------------------------------------------

    @deferred
    async def submit_query(
        self, submission: QuerySubmission, system: str, idempotency_key: str | None = None
    ) -> str:
        """情報照会 by back-office ``system``: check locally (the system may use the
        procedure's affair, the list permits it), then send to the hub through the outbox;
        the query id. The query belongs to ``system``.

        Under an ``idempotency_key`` the system has used before, the same submission gives
        the first query's id again and nothing new (a back office resending after a
        connection error); another submission under it is IdempotencyKeyReused."""
        now = self._party.now()
        affair = self._check_submission(submission, system, now)
        create = (self._create_query, submission, system, affair, now, idempotency_key)
        try:
            query_id, outgoing = await self._database.run(*create)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # The same key sent twice at once (PostgreSQL): the other one is stored now.
            query_id, outgoing = await self._database.run(*create)
        if outgoing is not None:
            self._party.outbox.send_now(outgoing)
            self._party.events.query_submitted(
                query_id,
                system,
                submission.provider,
                submission.information_name,
                submission.procedure,
            )
        return query_id

    @deferred
    async def submit_queries(
        self, submissions: Sequence[tuple[QuerySubmission, str | None]], system: str
    ) -> list[str | RenkeiError]:
        """情報照会 of several persons at once by back-office ``system`` (a bulk query's
        lines), each submission with its idempotency key: each checked and stored as
        `submit_query` would, all in one transaction, and those of one shape sent to the hub
        together as QueryBundles of at most `MAX_BUNDLE_LINES` lines. For each submission,
        in order, its query id, or the `RenkeiError` it was refused with (nothing of it
        stored); a failure of the database fails the whole call (nothing stored)."""
        now = self._party.now()
        outcomes: list[str | RenkeiError] = []
        checked: list[tuple[int, QuerySubmission, str, str | None]] = []
        for index, (submission, key) in enumerate(submissions):
            try:
                affair = self._check_submission(submission, system, now)
            except RenkeiError as refusal:
                outcomes.append(refusal)
                continue
            outcomes.append("")  # the query id, once stored
            checked.append((index, submission, affair, key))
        if not checked:
            return outcomes
        create = (self._create_queries, checked, system, now)
        try:
            created, outgoing = await self._database.run(*create)
        except IntegrityError:
            # The same key sent twice at once (PostgreSQL): the other one is stored now.
            created, outgoing = await self._database.run(*create)
        # One business event per shape for all the new queries (each is in the database).
        shapes: Counter[tuple[str, str, str]] = Counter()
        for index, outcome, new in created:
            outcomes[index] = outcome
            if new and isinstance(outcome, str):
                submission = submissions[index][0]
                asked = (submission.provider, submission.information_name, submission.procedure)
                shapes[asked] += 1
        for (provider, information_name, procedure), count in shapes.items():
            self._party.events.queries_submitted(
                count, system, provider, information_name, procedure
            )
        for message in outgoing:
            self._party.outbox.send_now(message)
        return outcomes

    def _check_submission(self, submission: QuerySubmission, system: str, now: datetime) -> str:
        """The affair of a submission once checked here: the back-office system may use the
        procedure's affair and the permitted list in force allows the query."""
        self._catalogue.information_name(submission.information_name)
        affair = self._catalogue.procedure(submission.procedure).affair
        if affair not in self._institution.back_office_system(system).affairs:
            raise RenkeiError(
                errors.SYSTEM_NOT_AUTHORIZED,
                system=system,
                what=f"procedure {submission.procedure} (affair {affair})",
                what_ja=f"事務手続{submission.procedure}(事務{affair})",
            )
        self._lists.check_current().check(
            self._code,
            submission.provider,
            affair,
            submission.procedure,
            submission.information_name,
            now,
            delegating_requester=submission.delegating_requester,
            delegating_provider=submission.delegating_provider,
        )
        return affair

    def _create_queries(
        self,
        connection: Connection,
        checked: Sequence[tuple[int, QuerySubmission, str, str | None]],
        system: str,
        now: datetime,
    ) -> tuple[list[tuple[int, str | RenkeiError, bool]], list[OutgoingMessage]]:
        """In one transaction: each checked submission stored (or the first query under its
        key found, or its refusal), and one QueryBundle in the outbox per shape and per
        `MAX_BUNDLE_LINES` new queries. Each submission's index, outcome and whether it is
        new; the messages to send."""
        created: list[tuple[int, str | RenkeiError, bool]] = []
        # The lines of each shape, with the affair and a submission of that shape.
        shapes: dict[tuple[Any, ...], tuple[str, QuerySubmission, list[messages.QueryBundleLine]]]
        shapes = {}
        stored = self._store_queries(connection, checked, system, now)
        for (index, submission, affair, _), (outcome, fugo) in zip(checked, stored, strict=True):
            created.append((index, outcome, fugo is not None))
            if fugo is not None:
                assert isinstance(outcome, str)
                shape = (
                    affair,
                    submission.procedure,
                    submission.information_name,
                    submission.provider,
                    submission.conditions,
                    submission.delegating_requester,
                    submission.delegating_provider,
                    submission.non_disclosure,
                )
                line = messages.QueryBundleLine(message_id=outcome, requester_fugo=fugo)
                shapes.setdefault(shape, (affair, submission, []))[2].append(line)
        outgoing = []
        for affair, submission, lines in shapes.values():
            for start in range(0, len(lines), MAX_BUNDLE_LINES):
                bundle_id = str(uuid.uuid4())
                body = messages.encode(
                    messages.QueryBundle(
                        message_id=bundle_id,
                        affair=affair,
                        procedure=submission.procedure,
                        information_name=submission.information_name,
                        provider=submission.provider,
                        conditions=submission.conditions,
                        delegating_requester=submission.delegating_requester,
                        delegating_provider=submission.delegating_provider,
                        non_disclosure=submission.non_disclosure,
                        lines=tuple(lines[start : start + MAX_BUNDLE_LINES]),
                    )
                )
                message = OutgoingMessage(bundle_id, QUERY_BUNDLE, HUB, bundle_id, body)
                self._party.outbox.enqueue(connection, message)
                outgoing.append(message)
        return created, outgoing

    def _create_query(
        self,
        connection: Connection,
        submission: QuerySubmission,
        system: str,
        affair: str,
        now: datetime,
        idempotency_key: str | None,
    ) -> tuple[str, OutgoingMessage | None]:
        query_id, fugo = self._store_query(
            connection, submission, system, affair, now, idempotency_key
        )
        if fugo is None:
            return query_id, None
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
        outgoing = OutgoingMessage(query_id, QUERY, HUB, query_id, body)
        self._party.outbox.enqueue(connection, outgoing)
        return query_id, outgoing

    def _store_query(
        self,
        connection: Connection,
        submission: QuerySubmission,
        system: str,
        affair: str,
        now: datetime,
        idempotency_key: str | None,
    ) -> tuple[str, str | None]:
        """The query stored, its id and the person's 符号; the first query's id and None
        when the system sent the same submission under this key before (IdempotencyKeyReused
        for another). Refuses (FugoNotAcquired, UnknownPerson) before writing anything."""
        digest = submission_hash(submission)
        if idempotency_key is not None:
            earlier = connection.execute(
                select(query.c.query_id, query.c.request_hash).where(
                    query.c.system == system, query.c.idempotency_key == idempotency_key
                )
            ).first()
            if earlier is not None:
                if earlier.request_hash != digest:
                    raise RenkeiError(errors.IDEMPOTENCY_KEY_REUSED, key=idempotency_key)
                return str(earlier.query_id), None
        fugo = persons.fugo_of(connection, submission.integrated_address_number)
        query_id = str(uuid.uuid4())
        connection.execute(
            _INSERT_QUERY,
            self._query_row_of(query_id, submission, system, affair, now, idempotency_key, digest),
        )
        return query_id, fugo

    def _store_queries(
        self,
        connection: Connection,
        checked: Sequence[tuple[int, QuerySubmission, str, str | None]],
        system: str,
        now: datetime,
    ) -> list[tuple[str | RenkeiError, str | None]]:
        """`_store_query` for each checked submission (its index, submission, affair and
        idempotency key), in the caller's transaction, with one read of the keys used before,
        one of the 符号 and one insert of every new query, whatever their number: for each,
        its query id and 符号 (None when it was stored before under its key), or its refusal
        (IdempotencyKeyReused, FugoNotAcquired). A key used twice among them is taken as if
        they came one after the other: the first stored, the second its resend (or
        IdempotencyKeyReused)."""
        earlier: dict[str, tuple[str, str]] = {}  # key: (query id, request hash)
        keys = sorted({key for _, _, _, key in checked if key is not None})
        for some in in_slices(keys):
            for row in connection.execute(_QUERIES_OF_KEYS, {"system": system, "keys": some}):
                earlier[row.idempotency_key] = (str(row.query_id), row.request_hash)
        fugos = persons.fugos_of(
            connection,
            (
                submission.integrated_address_number
                for _, submission, _, key in checked
                if key is None or key not in earlier
            ),
        )
        outcomes: list[tuple[str | RenkeiError, str | None]] = []
        rows: list[dict[str, Any]] = []
        for _, submission, affair, key in checked:
            digest = submission_hash(submission)
            if key is not None and key in earlier:
                query_id, first_digest = earlier[key]
                if first_digest != digest:
                    refusal = RenkeiError(errors.IDEMPOTENCY_KEY_REUSED, key=key)
                    outcomes.append((refusal, None))
                else:
                    outcomes.append((query_id, None))
                continue
            number = submission.integrated_address_number
            fugo = fugos.get(number)
            if fugo is None:
                refusal = RenkeiError(errors.FUGO_NOT_ACQUIRED, integrated_address_number=number)
                outcomes.append((refusal, None))
                continue
            query_id = str(uuid.uuid4())
            rows.append(self._query_row_of(query_id, submission, system, affair, now, key, digest))
            if key is not None:
                earlier[key] = (query_id, digest)
            outcomes.append((query_id, fugo))
        if rows:
            connection.execute(_INSERT_QUERY, rows)
        return outcomes

    @staticmethod
    def _query_row_of(
        query_id: str,
        submission: QuerySubmission,
        system: str,
        affair: str,
        now: datetime,
        idempotency_key: str | None,
        digest: str,
    ) -> dict[str, Any]:
        """The row of a new query."""
        return {
            "query_id": query_id,
            "system": system,
            "integrated_address_number": submission.integrated_address_number,
            "affair": affair,
            "procedure": submission.procedure,
            "information_name": submission.information_name,
            "provider": submission.provider,
            "conditions": conditions_json(submission.conditions),
            "delegating_requester": submission.delegating_requester,
            "delegating_provider": submission.delegating_provider,
            "non_disclosure": submission.non_disclosure,
            "state": SUBMITTED,
            "submitted_at": now,
            "idempotency_key": idempotency_key,
            "request_hash": digest,
        }

    def _record(self, row: Any, event: str, status: str, **extra: Any) -> RecordEntry:
        return query_record(self._code, row, event, status, **extra)

    # -- the hub's answer ---------------------------------------------------------------------

    @deferred
    async def deliver_query(self, message: OutgoingMessage) -> AfterDelivery:
        """The outbox's delivery of a query: the hub accepts it (a 処理通番), written with
        the message's delivery, or refuses it."""
        try:
            document = await self._party.transport.exchange(HUB, QUERY, message.body)
            accepted = decode_answer(document, messages.QueryAccepted)
        except DeliveryRefused as refusal:
            refused = await self._database.run(
                self._query_refused, message.reference, refusal.code, refusal.transaction_number
            )
            if refused is not None:
                self._party.events.query_refused_by_network(
                    refusal.transaction_number,
                    refused.query_id,
                    refused.provider,
                    refused.information_name,
                    refusal.code,
                )
            self._query_ended(message.reference)
            raise
        query_id, number = message.reference, accepted.transaction_number
        return AfterDelivery(lambda connection: self._query_accepted(connection, query_id, number))

    @deferred
    async def deliver_query_bundle(self, message: OutgoingMessage) -> None:
        """The outbox's delivery of a QueryBundle: the hub's answer stored for every line (its
        処理通番, or the refusal that ends its query); a bundle the hub refuses whole ends
        every line refused with that code."""
        bundle = messages.decode(message.body, messages.QueryBundle)
        try:
            document = await self._party.transport.exchange(HUB, QUERY_BUNDLE, message.body)
            answer = decode_answer(document, messages.QueryBundleAnswer)
        except DeliveryRefused as refusal:
            every = [
                (line.message_id, refusal.transaction_number, refusal.code) for line in bundle.lines
            ]
            await self._bundle_answered(every)
            raise
        asked = [line.message_id for line in bundle.lines]
        if (
            answer.message_id != bundle.message_id
            or [line.message_id for line in answer.lines] != asked
        ):
            raise TransientFailure(
                f"the hub's answer to query bundle {bundle.message_id} names other lines"
            )
        await self._bundle_answered(
            [(line.message_id, line.transaction_number, line.code) for line in answer.lines]
        )

    async def _bundle_answered(self, lines: Sequence[tuple[str, str | None, str | None]]) -> None:
        """The hub's answers to the lines of a bundle (query id, 処理通番, refusal code)
        stored in one transaction; the refused queries end (their waiters are woken)."""
        refused = await self._database.run(self._lines_answered, lines)
        for row, number, code in refused:
            self._party.events.query_refused_by_network(
                number, row.query_id, row.provider, row.information_name, code
            )
            self._query_ended(row.query_id)

    def _lines_answered(
        self, connection: Connection, lines: Sequence[tuple[str, str | None, str | None]]
    ) -> list[tuple[Any, str | None, str]]:
        """`_hub_answered` for each line, in the caller's transaction: the queries read in one
        statement, written in one UPDATE per kind of answer, recorded in one append."""
        rows = _QueryRows(connection, [query_id for query_id, _, _ in lines])
        with self._party.records_together(connection):
            refused = []
            for query_id, number, code in lines:
                if code is None and number is not None:
                    self._hub_answered(connection, rows, query_id, number, ACCEPTED)
                elif code is not None:
                    row = self._hub_answered(connection, rows, query_id, number, REFUSED, code)
                    if row is not None:
                        refused.append((row, number, code))
            rows.write(connection)
            return refused

    def _query_accepted(self, connection: Connection, query_id: str, number: str) -> None:
        rows = _QueryRows(connection, [query_id])
        self._hub_answered(connection, rows, query_id, number, ACCEPTED)
        rows.write(connection)

    def _query_refused(
        self, connection: Connection, query_id: str, code: str, number: str | None
    ) -> Any:
        """The hub refused the query: it ends refused, with the 処理通番 under which the hub
        recorded the refusal (so that the transaction's path shows both records); the
        query's row, or None when it had ended already."""
        rows = _QueryRows(connection, [query_id])
        row = self._hub_answered(connection, rows, query_id, number, REFUSED, code)
        rows.write(connection)
        return row

    def _hub_answered(
        self,
        connection: Connection,
        rows: _QueryRows,
        query_id: str,
        number: str | None,
        state: str,
        code: str | None = None,
    ) -> Any:
        """A submitted query (of ``rows``) accepted (its 処理通番) or refused (its code) by
        the hub, and recorded; a query past ``submitted`` (its result came first) is left as
        it is. The query's row as it was, or None when it was left."""
        row = rows.row(query_id)
        if row.state != SUBMITTED:
            return None
        now = self._party.now()
        ended = {"error_code": code, "completed_at": now} if state == REFUSED else {}
        accepted = {"accepted_at": now} if state == ACCEPTED else {}
        before = rows.change(query_id, state=state, transaction_number=number, **ended, **accepted)
        extra = {"error_code": code} if code is not None else {}
        self._party.record(
            connection,
            now,
            [self._record(before, "query", state, transaction_number=number, **extra)],
        )
        return before

    # -- the result ------------------------------------------------------------------------

    @deferred
    async def receive_provision(self, delivered: messages.Provision) -> bytes:
        """A provision relayed by the hub: decrypt, verify, store once; the acknowledgement."""
        row = await self._database.read(self._query_of_result, delivered)
        if row.state in FINISHED:
            return messages.encode(provision_ack(delivered))
        number = delivered.transaction_number
        hidden = delivered.non_disclosure  # 提供側不開示: the provider hides the transaction
        if delivered.status == HELD:
            if await self._database.run(
                self._end_one, self._mark_held, row.query_id, number, hidden
            ):
                self._party.events.query_ended(
                    number, row.query_id, HELD, row.provider, row.information_name
                )
            return messages.encode(provision_ack(delivered))
        # Decryption and verification are CPU work outside any transaction.
        state, result, code = self._open_result(row, delivered)
        stored = await self._database.run(
            self._end_one, self._store_result, row.query_id, number, state, result, code, hidden
        )
        if stored:
            self._party.events.query_ended(
                number, row.query_id, state, row.provider, row.information_name, code
            )
        self._query_ended(row.query_id)
        if code is not None and state == ERROR:
            raise RenkeiError(errors.ALL[code], transaction_number=delivered.transaction_number)
        return messages.encode(provision_ack(delivered))

    @deferred
    async def receive_provision_bundle(self, bundle: messages.ProvisionBundle) -> bytes:
        """Provisions relayed together by the hub: each decrypted, verified and stored once as
        a single one is (`receive_provision`), the queries read in one transaction and the
        results stored in one; the answer has a line per provision (a refusal of one, its
        code: an unknown transaction, a payload refused)."""
        rows = await self._database.read(self._queries_of_results, bundle.provisions)
        work: list[tuple[Any, messages.Provision, str, bytes | None, str | None]] = []
        codes: dict[str, str] = {}
        for delivered, row in zip(bundle.provisions, rows, strict=True):
            if isinstance(row, RenkeiError):
                codes[delivered.transaction_number] = row.code
            elif row.state not in FINISHED:
                # Decryption and verification are CPU work outside any transaction.
                state, result, code = (
                    (HELD, None, None)
                    if delivered.status == HELD
                    else self._open_result(row, delivered)
                )
                work.append((row, delivered, state, result, code))
        stored = await self._database.run(self._store_results, work)
        # The queries that ended provided or with no data: one business event per provider
        # and information name (each is in the records); any other end, one each.
        given: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for (row, delivered, state, _, code), new in zip(work, stored, strict=True):
            number = delivered.transaction_number
            if new and state in (PROVIDED, NO_DATA):
                given.setdefault((row.provider, row.information_name), []).append((number, state))
            elif new:
                self._party.events.query_ended(
                    number, row.query_id, state, row.provider, row.information_name, code
                )
            if state != HELD:
                self._query_ended(row.query_id)
            if code is not None and state == ERROR:
                codes[number] = code
        for (provider, information_name), ended in given.items():
            self._party.events.queries_ended(ended, provider, information_name)
        lines = []
        for delivered in bundle.provisions:
            number = delivered.transaction_number
            code = codes.get(number)
            if code is None:
                lines.append(messages.BundleAnswerLine(transaction_number=number))
                continue
            refusal = RenkeiError(errors.ALL[code], transaction_number=number)
            lines.append(messages.BundleAnswerLine.refusing(number, refusal))
        return messages.encode(
            messages.ProvisionBundleAnswer(message_id=bundle.message_id, lines=tuple(lines))
        )

    def _queries_of_results(
        self, connection: Connection, provisions: Sequence[messages.Provision]
    ) -> list[Any]:
        """The query of each provision (`_query_of_result`), or its refusal: every query read
        in one statement."""
        asked = [delivered.query_message_id or "" for delivered in provisions]
        rows = _QueryRows(connection, asked)
        found: list[Any] = []
        for delivered, query_id in zip(provisions, asked, strict=True):
            number = delivered.transaction_number
            row = rows.rows.get(query_id)
            if row is None or row.transaction_number not in (None, number):
                found.append(RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number))
            else:
                found.append(row)
        return found

    def _store_results(
        self,
        connection: Connection,
        work: Sequence[tuple[Any, messages.Provision, str, bytes | None, str | None]],
    ) -> list[bool]:
        """Each provision's end (held, or its result) stored and recorded, in one
        transaction: the queries read in one statement, written in one UPDATE per kind of
        end, recorded in one append; whether each was new."""
        rows = _QueryRows(connection, [row.query_id for row, _, _, _, _ in work])
        with self._party.records_together(connection):
            stored = []
            for row, delivered, state, result, code in work:
                number, hidden = delivered.transaction_number, delivered.non_disclosure
                if state == HELD:
                    stored.append(self._mark_held(connection, rows, row.query_id, number, hidden))
                else:
                    stored.append(
                        self._store_result(
                            connection, rows, row.query_id, number, state, result, code, hidden
                        )
                    )
            rows.write(connection)
            return stored

    def _query_of_result(self, connection: Connection, delivered: messages.Provision) -> Any:
        """The query a relayed provision answers: by our query id, which the hub adds, and
        its 処理通番 (the result may overtake the hub's QueryAccepted answer)."""
        (found,) = self._queries_of_results(connection, [delivered])
        if isinstance(found, RenkeiError):
            raise found
        return found

    def _open_result(
        self, row: Any, delivered: messages.Provision
    ) -> tuple[str, bytes | None, str | None]:
        """The query's new state, the verified plaintext and an error code, if any."""
        return self._opener.open(
            delivered, provider=row.provider, information_name=row.information_name
        )

    def _end_one(self, connection: Connection, end: Any, query_id: str, *args: Any) -> bool:
        """``end`` (`_mark_held`, `_store_result`) of one query, in the caller's transaction."""
        rows = _QueryRows(connection, [query_id])
        stored = bool(end(connection, rows, query_id, *args))
        rows.write(connection)
        return stored

    @staticmethod
    def _hidden(rows: _QueryRows, query_id: str, non_disclosure: bool) -> Any:
        """The query's row, marked 不開示 first when the provider hides the transaction (its
        records from now on are marked too)."""
        if non_disclosure:
            rows.change(query_id, non_disclosure=True)
        return rows.row(query_id)

    def _mark_held(
        self,
        connection: Connection,
        rows: _QueryRows,
        query_id: str,
        number: str,
        non_disclosure: bool = False,
    ) -> bool:
        """The query (of ``rows``) held by its provider; False when it was already (or has
        ended)."""
        row = self._hidden(rows, query_id, non_disclosure)
        if row.state not in (SUBMITTED, ACCEPTED):
            return False  # already held, or the final result overtook this notice
        now = self._party.now()
        entries = []
        if row.transaction_number is None:
            entries.append(self._record(row, "query", ACCEPTED, transaction_number=number))
        entries.append(self._record(row, "result", HELD, transaction_number=number))
        rows.change(
            query_id, state=HELD, transaction_number=number, accepted_at=row.accepted_at or now
        )
        self._party.record(connection, now, entries)
        return True

    def _store_result(
        self,
        connection: Connection,
        rows: _QueryRows,
        query_id: str,
        number: str,
        state: str,
        result: bytes | None,
        code: str | None,
        non_disclosure: bool = False,
    ) -> bool:
        """The query's (of ``rows``) result stored and recorded; False when it had one
        (delivered twice: the first delivery stands)."""
        if rows.row(query_id).state in FINISHED:
            return False
        row = self._hidden(rows, query_id, non_disclosure)
        now = self._party.now()
        entries = []
        if row.transaction_number is None:
            # The result overtook the hub's QueryAccepted answer: accept here.
            entries.append(self._record(row, "query", ACCEPTED, transaction_number=number))
        entries.append(
            self._record(row, "result", state, transaction_number=number, error_code=code)
        )
        rows.change(
            query_id,
            state=state,
            transaction_number=number,
            accepted_at=row.accepted_at or now,
            result=result,
            error_code=code,
            completed_at=now,
        )
        self._party.record(connection, now, entries)
        return True

    # -- what a back office reads -------------------------------------------------------------

    def query_status(self, query_id: str, system: str) -> Deferred[QueryStatus]:
        """A query's state, 処理通番, error and, once provided, its verified payload, for the
        system that submitted it (to any other it is UnknownQuery)."""
        return self._database.read(_query_status, query_id, system)

    @deferred
    async def wait_for_end(self, query_id: str, timeout: float, system: str) -> QueryStatus:
        """The query's status once it has ended, or after ``timeout`` seconds (long poll),
        for the system that submitted it (to any other it is UnknownQuery at once).

        An end stored by this process wakes the wait at once; one stored by another process
        of the same institution (several processes share its database) is seen at the next
        look, every `LOOK_AGAIN` seconds.
        """
        deadline = self._reactor.seconds() + timeout
        while True:
            ended: Deferred[None] = Deferred()
            # Register before reading, so an end stored meanwhile is not missed.
            self._waiters.setdefault(query_id, []).append(ended)
            timer = self._reactor.callLater(
                max(0.0, min(LOOK_AGAIN, deadline - self._reactor.seconds())), fire, ended
            )
            try:
                status = await self.query_status(query_id, system)
                if status.finished or self._reactor.seconds() >= deadline:
                    return status
                await ended
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
            fire(ended)


_log = Logger(namespace=__name__)


@dataclass(frozen=True)
class ProvisionOpener:
    """What opens the provisions the hub relays to one requester (a node, or マイナポータル):
    its encryption key, the network CA's verifier, the catalogue and its own code."""

    encryption: Credentials
    verifier: CAVerifier
    catalogue: Catalogue
    requester: str

    def open(
        self, delivered: messages.Provision, *, provider: str, information_name: str
    ) -> tuple[str, bytes | None, str | None]:
        """The new state of what was asked of ``provider`` about ``information_name``, the
        verified plaintext and an error code, if any.

        A refusal (``refused``, ``error``) gives its code. A payload is decrypted with the
        requester's key (any failure: PayloadUnreadable), its signature verified up to the
        network CA with a signing certificate of ``provider`` and its terms checked against
        what was asked (PayloadSignatureInvalid), and every data set and item it names must be
        the catalogue's (PayloadInvalid: it could not be shown); ``provided`` when it has
        records or attachments, else ``no_data``."""
        number = delivered.transaction_number
        if delivered.status not in (PROVIDED, NO_DATA):
            return REFUSED, None, delivered.error_code or "Unspecified"
        try:
            if delivered.encrypted_payload is None:
                raise RenkeiError(errors.PAYLOAD_UNREADABLE)
            plaintext = open_envelope(delivered.encrypted_payload, self.encryption)
            payload = verify_payload(
                plaintext,
                self.verifier,
                self.catalogue,
                transaction_number=number,
                requester=self.requester,
                provider=provider,
                information_name=information_name,
            )
        except RenkeiError as failure:
            _log.warn("result of {number} refused: {code}", number=number, code=failure.code)
            return ERROR, None, failure.code
        state = PROVIDED if payload.records or payload.attachments else NO_DATA
        return state, plaintext, None


def verify_payload(
    plaintext: bytes,
    verifier: CAVerifier,
    catalogue: Catalogue,
    *,
    transaction_number: str,
    requester: str,
    provider: str,
    information_name: str,
) -> messages.ProvisionPayload:
    """A decrypted payload once its signature is the provider's and it is what was asked,
    every code in it the catalogue's (see `ProvisionOpener.open`)."""
    number = transaction_number
    try:
        element = messages.decode_signed(plaintext, messages.ProvisionPayload)
    except RenkeiError:
        raise RenkeiError(errors.PAYLOAD_UNREADABLE) from None
    try:
        verified, signer = verifier.verify(element)
    except SignatureInvalid:
        raise RenkeiError(errors.PAYLOAD_SIGNATURE_INVALID, transaction_number=number) from None
    identity = identity_of(signer)
    payload = messages.from_element(verified, messages.ProvisionPayload)
    if (
        identity.common_name != provider
        or identity.organizational_unit != "signing"
        or payload.transaction_number != number
        or payload.provider != provider
        or payload.requester != requester
        or payload.information_name != information_name
    ):
        raise RenkeiError(errors.PAYLOAD_SIGNATURE_INVALID, transaction_number=number)
    # What the requester shows is named by the catalogue: a payload naming data sets or items
    # it does not have is refused, not stored (it could never be shown).
    information = catalogue.information_name(payload.information_name)
    try:
        for record in payload.records:
            data_set = information.data_set(record.data_set)
            for code, _ in record.items:
                data_set.item(code)
    except RenkeiError as failure:
        _log.warn("payload of {number} refused: {detail}", number=number, detail=failure.message_en)
        raise RenkeiError(errors.PAYLOAD_INVALID, transaction_number=number) from None
    return payload


def provision_ack(delivered: messages.Provision) -> messages.ProvisionAck:
    """The acknowledgement of a provision relayed by the hub."""
    return messages.ProvisionAck(
        message_id=delivered.message_id, transaction_number=delivered.transaction_number
    )


def _query_status(connection: Connection, query_id: str, system: str) -> QueryStatus:
    row = connection.execute(_QUERY_BY_ID, {"by_query_id": query_id}).first()
    if row is None or row.system != system:
        # Another system's query is answered exactly as one that does not exist.
        raise RenkeiError(errors.UNKNOWN_QUERY, query_id=query_id)
    return QueryStatus(
        query_id=row.query_id,
        state=row.state,
        transaction_number=row.transaction_number,
        integrated_address_number=row.integrated_address_number,
        procedure=row.procedure,
        information_name=row.information_name,
        provider=row.provider,
        submitted_at=row.submitted_at,
        completed_at=row.completed_at,
        error_code=row.error_code,
        result=bytes(row.result) if row.result is not None else None,
        result_deleted_at=row.result_deleted_at,
    )
