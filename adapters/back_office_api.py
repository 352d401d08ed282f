"""The back-office REST/JSON API of an intermediate server.

Back-office systems (the care-insurance system through the common linkage platform) reach
their node over mutual TLS with a client certificate issued by the node's back-office CA;
the certificate's name must be one of the systems configured for the node, so unknown
systems are refused. Every refusal is JSON with a stable code and two messages.
See docs/protocol.md ("Back-office API").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from klein import Klein
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from adapters.care_insurance.bulk_query import BulkQueries
from adapters.care_insurance.replica_file import ImportResult, run_import
from adapters.listening import Listener
from adapters.payload_view import describe_payload
from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from codes.individual_number import validate_individual_number
from codes.institution import validate_institution_code
from codes.typed import validate_information_name_code, validate_procedure_code
from crypto.pki import PkiLayout, load_certificate
from crypto.tls import RevocationList, peer_identity, server_options
from middleware import attachments, messages, replica
from middleware.node import IntermediateServer
from middleware.notices import NoticeDraft, NoticeStatus
from middleware.process_memory import release_free_memory
from middleware.queries import QuerySubmission
from middleware.requester import QueryStatus

__all__ = [
    "INTEGRATED_ADDRESS_NUMBER_LENGTH",
    "MAX_BODY",
    "MAX_FILE_BODY",
    "MAX_WAIT",
    "NOTICES_LISTED",
    "OPENAPI_DOCUMENT",
    "BackOfficeApi",
    "back_office_listener",
    "notice_answer",
    "validate_address_number",
    "validate_integrated_address_number",
]

T = TypeVar("T")

MAX_BODY = 1_048_576
OPENAPI_DOCUMENT = Path(__file__).resolve().with_name("openapi.json")
MAX_FILE_BODY = 64 * 1_048_576  # a 副本 file or a bulk-query file
INTEGRATED_ADDRESS_NUMBER_LENGTH = 15


def _json(request: Request, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(body, ensure_ascii=False).encode()


def _error_body(error: RenkeiError) -> dict[str, Any]:
    return {
        "error": {
            "code": error.code,
            "message_en": error.message_en,
            "message_ja": error.message_ja,
        }
    }


def _json_refusal(error: RenkeiError) -> tuple[bytes, bytes]:
    """A refusal the listener makes itself (a body over the limit), as this API's JSON."""
    return b"application/json; charset=utf-8", json.dumps(
        _error_body(error), ensure_ascii=False
    ).encode()


def _read_body(request: Request, limit: int) -> bytes:
    content = request.content
    assert content is not None
    raw = content.read(limit + 1)
    if len(raw) > limit:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"body larger than {limit} bytes")
    return raw


def _read_json(request: Request) -> dict[str, Any]:
    raw = _read_body(request, MAX_BODY)
    try:
        body = json.loads(raw)
    except ValueError:
        raise RenkeiError(errors.BAD_REQUEST, detail="body is not JSON") from None
    if not isinstance(body, dict):
        raise RenkeiError(errors.BAD_REQUEST, detail="body is not a JSON object")
    return body


def _text(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"{name} must be a non-empty string")
    return value


def back_office_listener(api: BackOfficeApi, reactor: Any) -> Listener:
    """The listener of a node's back-office API: mutual TLS with the node's own back-office
    CA (only its systems' certificates, not revoked), bodies up to a file's size, refusals
    in JSON."""
    node = api.node
    layout = PkiLayout(node.config.pki)
    ca = load_certificate(layout.back_office_ca(node.code).certificate)
    options = server_options(
        layout.institution_tls(node.code).load(),
        [ca],
        RevocationList([(layout.back_office_crl(node.code), ca)]),
    )
    return Listener(
        reactor,
        node.institution.back_office_listen,
        api.app.resource(),
        options,
        max_body=MAX_FILE_BODY,
        render_refusal=_json_refusal,
        shared=node.institution.processes > 1,
    )


def validate_integrated_address_number(value: str) -> str:
    """団体内統合宛名番号: up to 15 digits (the bulk-query file's field width)."""
    if not value.isascii() or not value.isdigit() or len(value) > INTEGRATED_ADDRESS_NUMBER_LENGTH:
        raise RenkeiError(
            errors.INVALID_CODE, value=value, what="integrated address number (団体内統合宛名番号)"
        )
    return value


def validate_address_number(value: str) -> str:
    """宛名番号: up to 15 digits (the bulk-query file's field width)."""
    if not value.isascii() or not value.isdigit() or len(value) > INTEGRATED_ADDRESS_NUMBER_LENGTH:
        raise RenkeiError(errors.INVALID_CODE, value=value, what="address number (宛名番号)")
    return value


class BackOfficeApi:
    """The back-office API of one node: its routes, served by `back_office_listener`."""

    log = Logger()
    app = Klein()

    def __init__(self, node: IntermediateServer, bulk_queries: BulkQueries, reactor: Any) -> None:
        self.node = node
        self.bulk_queries = bulk_queries
        self._reactor = reactor
        self._systems = set(node.institution.back_office_systems)
        self._files = DeferredLock()

    def _authorize(self, request: Request) -> str:
        identity = peer_identity(request)
        if (
            identity.organizational_unit != "back-office"
            or identity.organization != self.node.code
            or identity.common_name not in self._systems
        ):
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=identity.common_name)
        return identity.common_name

    @app.handle_errors(Exception)
    async def _refusal(self, request: Request, failure: Failure) -> bytes:
        """Every refusal is coded JSON; every refusal of a request (4xx) is audited."""
        error = failure.value
        if not isinstance(error, RenkeiError):
            self.log.failure("internal error in the back-office API", failure)
            error = RenkeiError(errors.INTERNAL)
        if error.status < 500:
            try:
                await self.node.audit_back_office_refusal(
                    _caller_name(request), _request_line(request), error.code
                )
            except Exception:
                self.log.failure("the refusal of a back-office request was not audited")
        return _json(request, _error_body(error), error.status)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: Request) -> bytes:
        """This API's OpenAPI 3.1 document (adapters/openapi.json)."""
        self._authorize(request)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        return OPENAPI_DOCUMENT.read_bytes()

    @app.route("/persons", methods=["POST"])
    async def register_person(self, request: Request) -> bytes:
        """The integrated-address function: individual number in, integrated address number
        out (a proposed one is kept); the 符号 is acquired in the background. With
        ``?wait=N`` the answer waits up to N seconds for the acquisition to end."""
        self._authorize(request)
        wait = _wait_seconds(request)
        body = _read_json(request)
        individual_number = validate_individual_number(_text(body, "individual_number"))
        proposed = _text(body, "integrated_address_number", required=False)
        address_number = _text(body, "address_number", required=False)
        state = await self.node.register_person(
            individual_number,
            validate_integrated_address_number(proposed) if proposed else None,
            wait,
            validate_address_number(address_number) if address_number else None,
        )
        return _person_answer(request, state)

    @app.route("/persons/<number>", methods=["GET"])
    async def person_state(self, request: Request, number: str) -> bytes:
        """A person's registration: whether this institution's 符号 is acquired."""
        self._authorize(request)
        state = await self.node.person_state(validate_integrated_address_number(number))
        return _person_answer(request, state)

    @app.route("/replica-records", methods=["POST"])
    async def register_replica_record(self, request: Request) -> bytes:
        """Register one replica record of an information name the system keeps, validated
        against the catalogue."""
        system = self._authorize(request)
        body = _read_json(request)
        items = body.get("items")
        if not isinstance(items, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in items.items()
        ):
            raise RenkeiError(errors.BAD_REQUEST, detail="items must map item codes to strings")
        suppressed = body.get("auto_response_suppressed", False)
        if not isinstance(suppressed, bool):
            raise RenkeiError(
                errors.BAD_REQUEST, detail="auto_response_suppressed must be a boolean"
            )
        record = replica.ReplicaRecord(
            record_id=_text(body, "record_id"),
            integrated_address_number=validate_integrated_address_number(
                _text(body, "integrated_address_number")
            ),
            information_name=validate_information_name_code(_text(body, "information_name")),
            data_set=_text(body, "data_set"),
            items=items,
            suppressed=suppressed,
        )
        await self.node.register_replica_record(record, system)
        return _json(request, {"record_id": record.record_id}, 201)

    @app.route("/replica-records/<record_id>", methods=["DELETE"])
    async def delete_replica_record(self, request: Request, record_id: str) -> bytes:
        """Delete one replica record of an information name the system keeps."""
        system = self._authorize(request)
        await self.node.delete_replica_record(record_id, system)
        request.setResponseCode(204)
        return b""

    @app.route("/self-information-attachments", methods=["POST"])
    async def register_attachment(self, request: Request) -> bytes:
        """自己情報提供用添付ファイル: a file provided with a person's own information of an
        information name the system keeps (through マイナポータル)."""
        system = self._authorize(request)
        body = _read_json(request)
        attachment = messages.Attachment(
            name=_text(body, "name"),
            media_type=_text(body, "media_type"),
            content=attachments.decode_content(body.get("content")),
        )
        attachment_id = await self.node.register_attachment(
            validate_integrated_address_number(_text(body, "integrated_address_number")),
            validate_information_name_code(_text(body, "information_name")),
            attachment,
            system,
        )
        return _json(request, {"attachment_id": attachment_id}, 201)

    @app.route("/self-information-attachments/<attachment_id>", methods=["DELETE"])
    async def delete_attachment(self, request: Request, attachment_id: str) -> bytes:
        """Delete a file the system registered."""
        system = self._authorize(request)
        await self.node.delete_attachment(attachment_id, system)
        request.setResponseCode(204)
        return b""

    @app.route("/notices", methods=["POST"])
    async def send_notice(self, request: Request) -> bytes:
        """お知らせ: a notice (title, body, attachments) to one person or a list of them,
        sent through the network to マイナポータル; how it stands for each."""
        system = self._authorize(request)
        body = _read_json(request)
        recipients = body.get("recipients")
        if not isinstance(recipients, list) or not all(isinstance(n, str) for n in recipients):
            raise RenkeiError(
                errors.BAD_REQUEST, detail="recipients must be a list of integrated address numbers"
            )
        files = body.get("attachments", [])
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise RenkeiError(errors.BAD_REQUEST, detail="attachments must be a list of objects")
        draft = NoticeDraft(
            title=_text(body, "title"),
            body=_text(body, "body"),
            recipients=tuple(validate_integrated_address_number(n) for n in recipients),
            attachments=tuple(
                messages.Attachment(
                    name=_text(f, "name"),
                    media_type=_text(f, "media_type"),
                    content=attachments.decode_content(f.get("content")),
                )
                for f in files
            ),
        )
        notice_id = await self.node.notices.send(draft, system)
        status = await self.node.notices.status(notice_id, system)
        return _json(request, notice_answer(status), 202)

    @app.route("/notices", methods=["GET"])
    async def notices(self, request: Request) -> bytes:
        """The system's newest notices and how each stands for each person."""
        system = self._authorize(request)
        found = await self.node.notices.recent(system, NOTICES_LISTED)
        return _json(request, {"notices": [notice_answer(status) for status in found]})

    @app.route("/notices/<notice_id>", methods=["GET"])
    async def notice_status(self, request: Request, notice_id: str) -> bytes:
        """How a notice of the system stands for each person: 送信待ち (queued), 送信済 (sent),
        配信済 (delivered), 既読 (read) or 配信不可 (undeliverable, with why); another system's
        is unknown to it."""
        system = self._authorize(request)
        status = await self.node.notices.status(notice_id, system)
        return _json(request, notice_answer(status))

    @app.route("/replica-files", methods=["POST"])
    async def post_replica_file(self, request: Request) -> bytes:
        """A 副本 registration and deletion file (XML); answers with its result file, with
        the status of its refusal (4xx) when the file was refused whole. Under an
        Idempotency-Key, the same file posted again gets the same answer, imported once."""
        system = self._authorize(request)
        key = idempotency_key(request)

        async def answer(request: Request) -> tuple[int, bytes, ImportResult | None]:
            body = _read_body(request, MAX_FILE_BODY)
            digest = hashlib.sha256(body).hexdigest()
            if key is not None:
                kept = await self.node.store.replica.file_answer(system, key, digest)
                if kept is not None:
                    return kept[0], kept[1], None
            result, document = await run_import(self.node, body, self._reactor, system)
            status = 200 if result.file_error is None else result.file_error.status
            if key is not None:
                await self.node.store.replica.keep_file_answer(
                    system, key, digest, (status, document), self.node.now()
                )
            return status, document, result

        status, document, result = await self._one_file_at_a_time(answer, request)
        unauthorized = (
            0
            if result is None
            else sum(
                1
                for entry in result.entries
                if entry.error is not None and entry.error.code == errors.SYSTEM_NOT_AUTHORIZED.code
            )
        )
        if result is not None and unauthorized:
            await self.node.audit_back_office_refusal(
                system,
                _request_line(request),
                errors.SYSTEM_NOT_AUTHORIZED.code,
                entries=unauthorized,
                reception_number=result.header.reception_number,
            )
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/xml; charset=utf-8")
        return document

    @app.route("/bulk-queries", methods=["POST"])
    async def post_bulk_query(self, request: Request) -> bytes:
        """A bulk-query file (the 18-field CSV, UTF-8 or Shift_JIS): accepted, then run."""
        system = self._authorize(request)
        key = idempotency_key(request)
        accepted = await self._one_file_at_a_time(
            lambda request: self.bulk_queries.submit(
                _read_body(request, MAX_FILE_BODY), system, idempotency_key=key
            ),
            request,
        )
        return _json(request, accepted, 202)

    async def _one_file_at_a_time(
        self, work: Callable[[Request], Awaitable[T]], request: Request
    ) -> T:
        """Read and process one posted file at a time, then give the memory back.

        A 64 MiB file and what is read from it take a few hundred megabytes while they are
        processed: files posted together wait for each other instead of adding up."""
        await self._files.acquire()
        try:
            outcome = await work(request)
        finally:
            self._files.release()
            await deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), release_free_memory
            )
        return outcome

    @app.route("/bulk-queries/<bulk_query_id>", methods=["GET"])
    async def bulk_query_progress(self, request: Request, bulk_query_id: str) -> bytes:
        """A bulk query's progress: lines ended so far, by state."""
        system = self._authorize(request)
        progress = await self._own_bulk_query(bulk_query_id, system)
        return _json(request, progress)

    @app.route("/bulk-queries/<bulk_query_id>/result", methods=["GET"])
    async def bulk_query_result(self, request: Request, bulk_query_id: str) -> bytes:
        """The result file of an ended bulk query (CSV, in the encoding of the input)."""
        system = self._authorize(request)
        await self._own_bulk_query(bulk_query_id, system)
        content, content_type = await self.bulk_queries.result_file(bulk_query_id)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return content

    async def _own_bulk_query(self, bulk_query_id: str, system: str) -> dict[str, Any]:
        """A bulk query's progress, for the system that posted it only (to any other it is
        unknown)."""
        progress = await self.bulk_queries.progress(bulk_query_id)
        if progress["system"] != system:
            raise RenkeiError(errors.UNKNOWN_BULK_QUERY, bulk_query_id=bulk_query_id)
        return progress

    @app.route("/queries", methods=["POST"])
    async def submit_query(self, request: Request) -> bytes:
        """情報照会依頼: accepted for asynchronous processing; poll GET /queries/<id>. The
        procedure's affair must be one the system may query under."""
        system = self._authorize(request)
        body = _read_json(request)
        conditions = body.get("conditions")
        submission = QuerySubmission(
            integrated_address_number=validate_integrated_address_number(
                _text(body, "integrated_address_number")
            ),
            procedure=validate_procedure_code(_text(body, "procedure")),
            information_name=validate_information_name_code(_text(body, "information_name")),
            provider=validate_institution_code(_text(body, "provider")),
            conditions=None if conditions is None else _conditions(conditions),
            delegating_requester=_institution(body, "delegating_requester"),
            delegating_provider=_institution(body, "delegating_provider"),
            non_disclosure=_flag(body, "non_disclosure"),
        )
        query_id = await self.node.requester.submit_query(
            submission, system, idempotency_key(request)
        )
        return _json(request, {"query_id": query_id, "state": "submitted"}, 202)

    @app.route("/queries/<query_id>", methods=["GET"])
    async def query_status(self, request: Request, query_id: str) -> bytes:
        """情報照会結果取得: the state and, once provided, the decoded result. With
        ``?wait=N`` (at most 60) the answer waits up to N seconds for the query to end.
        Only the system that submitted the query may read it: to any other it is unknown."""
        system = self._authorize(request)
        wait = _wait_seconds(request)
        requester = self.node.requester
        if wait > 0:
            status = await requester.wait_for_end(query_id, wait, system)
        else:
            status = await requester.query_status(query_id, system)
        return _json(request, query_answer(status, self.node.catalogue))


MAX_WAIT = 60.0
NOTICES_LISTED = 100  # the newest notices GET /notices gives


def _time(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def notice_answer(status: NoticeStatus) -> dict[str, Any]:
    """A notice as ``GET /notices/<id>`` answers it: its content, and for each person how it
    stands, with the error's messages when it could not be delivered."""
    recipients = []
    for recipient in status.recipients:
        error = None
        if recipient.error_code is not None:
            kind = errors.ALL.get(
                recipient.error_code, errors.ErrorKind(recipient.error_code, 0, "", "")
            )
            failure = RenkeiError(kind)
            error = {
                "code": recipient.error_code,
                "message_en": failure.message_en or recipient.error_code,
                "message_ja": failure.message_ja or recipient.error_code,
            }
        recipients.append(
            {
                "integrated_address_number": recipient.integrated_address_number,
                "state": recipient.state,
                "notice_number": recipient.notice_number,
                "error": error,
                "changed_at": _time(recipient.changed_at),
                "sent_at": _time(recipient.sent_at),
                "delivered_at": _time(recipient.delivered_at),
                "read_at": _time(recipient.read_at),
            }
        )
    return {
        "notice_id": status.notice_id,
        "title": status.title,
        "body": status.body,
        "created_at": status.created_at.isoformat(),
        "attachments": [
            {"name": name, "media_type": media_type, "size": size}
            for name, media_type, size in status.attachments
        ],
        "recipients": recipients,
    }


def query_answer(status: QueryStatus, catalogue: Catalogue) -> dict[str, Any]:
    """A query as ``GET /queries/<id>`` answers it: the error with both messages and the
    result with the names of its codes."""
    answer: dict[str, Any] = {
        "query_id": status.query_id,
        "state": status.state,
        "transaction_number": status.transaction_number,
        "integrated_address_number": status.integrated_address_number,
        "procedure": status.procedure,
        "information_name": status.information_name,
        "provider": status.provider,
        "submitted_at": status.submitted_at.isoformat(),
        "completed_at": status.completed_at.isoformat() if status.completed_at else None,
        "error": None,
        "result": None,
        "result_deleted_at": (
            status.result_deleted_at.isoformat() if status.result_deleted_at else None
        ),
    }
    if status.error_code is not None:
        # A code from another party may be unknown here: show it as it came.
        code = status.error_code
        kind = errors.ALL.get(code, errors.ErrorKind(code, 0, "", ""))
        failure = RenkeiError(
            kind,
            transaction_number=status.transaction_number,
            integrated_address_number=status.integrated_address_number,
            code=status.information_name,
            procedure=status.procedure,
            provider=status.provider,
            query_id=status.query_id,
            sender=status.provider,
        )
        answer["error"] = {
            "code": code,
            "message_en": failure.message_en or code,
            "message_ja": failure.message_ja or code,
        }
    if status.result is not None:
        answer["result"] = describe_payload(catalogue, status.result)
    return answer


def _caller_name(request: Request) -> str:
    """The back-office system (client certificate CN) a request came from."""
    try:
        return peer_identity(request).common_name
    except RenkeiError:
        return "(no certificate)"


def _request_line(request: Request) -> str:
    """The method and path of a request (no query string), for the audit log."""
    method = (request.method or b"").decode("ascii", "replace")
    path = (request.path or b"").decode("utf-8", "replace")
    return f"{method} {path}"[:200]


def _person_answer(request: Request, state: dict[str, Any]) -> bytes:
    """200 once the 符号 is acquired, 202 while pending; a failed acquisition is answered
    with its error (the person stays registered; registering again retries)."""
    if state["fugo_state"] == "failed":
        raise RenkeiError(errors.ALL.get(state["error"], errors.INTERNAL))
    return _json(request, state, 200 if state["fugo_state"] == "acquired" else 202)


# An Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): a structured-field string
# or a bare token of visible ASCII, as Stripe takes it.
_IDEMPOTENCY_KEY = re.compile(r"[!#-\[\]-~]{1,64}")


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (1–64 visible ASCII characters), or None."""
    raw = request.getHeader("idempotency-key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise RenkeiError(
            errors.BAD_REQUEST,
            detail="Idempotency-Key must be 1 to 64 visible ASCII characters",
        )
    return key


def _wait_seconds(request: Request) -> float:
    args: dict[bytes, list[bytes]] = request.args or {}
    raw = args.get(b"wait", [b"0"])[0]
    try:
        wait = float(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RenkeiError(errors.BAD_REQUEST, detail="wait must be a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"wait must be between 0 and {MAX_WAIT:g}")
    return wait


def _institution(body: dict[str, Any], name: str) -> str | None:
    """An optional institution code of the body (委任元)."""
    value = body.get(name)
    return None if value is None else validate_institution_code(_text(body, name))


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RenkeiError(errors.BAD_REQUEST, detail=f"{name} must be a boolean")
    return value


def _conditions(value: Any) -> messages.QueryConditions:
    """照会条件 from a query's JSON: ``fiscal_year`` (an integer YYYY), ``period_start`` and
    ``period_end`` (dates YYYY-MM-DD, the end not before the start); any may be left out."""
    if not isinstance(value, dict):
        raise RenkeiError(errors.BAD_REQUEST, detail="conditions must be an object")
    unknown = set(value) - {"fiscal_year", "period_start", "period_end"}
    if unknown:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"unknown conditions {sorted(unknown)}")
    fiscal_year = value.get("fiscal_year")
    if fiscal_year is not None and (
        isinstance(fiscal_year, bool)
        or not isinstance(fiscal_year, int)
        or not 1000 <= fiscal_year <= 9999
    ):
        raise RenkeiError(
            errors.BAD_REQUEST, detail="conditions: fiscal_year must be an integer YYYY"
        )
    conditions = messages.QueryConditions(
        fiscal_year=fiscal_year,
        period_start=_date(value.get("period_start"), "period_start"),
        period_end=_date(value.get("period_end"), "period_end"),
    )
    start, end = conditions.period_start, conditions.period_end
    if start is not None and end is not None and end < start:
        raise RenkeiError(
            errors.BAD_REQUEST, detail="conditions: period_end is before period_start"
        )
    return conditions


def _date(value: Any, name: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise RenkeiError(errors.BAD_REQUEST, detail=f"conditions: {name} must be a date YYYY-MM-DD")
