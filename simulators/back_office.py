"""A back-office system's client of its intermediate server (REST/JSON over mutual TLS).

Used by the demo, the network in a box's seeding, the tests and the benchmarks: one client
with the behaviour of a real back office (its own client certificate, JSON bodies, polling
for asynchronous results).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from adapters.network_link import host_and_port
from crypto.pki import PkiLayout, load_certificate, server_name_of_institution
from crypto.tls import ClientTLSPolicy, make_http_client
from middleware.config import Config, InstitutionConfig
from middleware.deferred import deferred

__all__ = ["FINISHED", "Answer", "BackOfficeClient", "BackOfficeError"]

FINISHED = ("provided", "no_data", "refused", "error")


class BackOfficeError(Exception):
    """The node refused a request: ``status`` and the coded ``error`` body."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message_en')}")
        self.status = status
        self.error = error

    @property
    def code(self) -> str:
        return str(self.error.get("code"))


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the node."""

    status: int
    content_type: str
    body: bytes


@implementer(IBodyProducer)
class _DeclaredBody:
    """A request body that declares ``length`` bytes and never produces one: the request
    stops after its headers, and only an answer given before the body (a refusal of its
    size) can end it."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._producing: Deferred[None] = Deferred()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        return self._producing

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BackOfficeClient:
    """One back-office system (``system``) talking to its institution's node.

    ``policy`` replaces the TLS policy of the system's own certificate (a client presenting
    another system's certificate); the node's address and name are expected either way.
    """

    def __init__(
        self,
        reactor: Any,
        config: Config,
        institution: InstitutionConfig,
        system: str,
        *,
        policy: ClientTLSPolicy | None = None,
    ) -> None:
        if policy is None:
            layout = PkiLayout(config.pki)
            policy = ClientTLSPolicy(
                [load_certificate(layout.ca().certificate)],
                layout.back_office_client(institution.code, system).load(),
            )
        host, port = host_and_port(institution.back_office_address)
        policy.expect(host, port, server_name_of_institution(institution.code))
        self._reactor = reactor
        self.address = institution.back_office_address  # the node's back-office API
        self._http = make_http_client(reactor, policy, max_per_host=64)

    def close(self) -> Deferred[None]:
        return self._http.close()

    @deferred
    async def send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str = "application/json",
        idempotency_key: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        declared_length: int | None = None,
    ) -> Answer:
        """Send one request as it is (under ``idempotency_key`` when given: the node then
        answers a resend with what it answered first), with the other ``headers`` given;
        the answer (status, type, body). With ``declared_length`` instead of ``data``, the
        request declares a body of that many bytes and sends none of it (a body over a
        limit, refused before it would be needed)."""
        sent = Headers({b"Content-Type": [content_type.encode("ascii")]})
        if idempotency_key is not None:
            sent.setRawHeaders(b"Idempotency-Key", [idempotency_key.encode("ascii")])
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name.encode("ascii"), [value.encode("utf-8")])
        body: bytes | IBodyProducer | None = data
        if declared_length is not None:
            body = IBodyProducer(_DeclaredBody(declared_length))
        response = await self._http.request(method, self.address + path, data=body, headers=sent)
        content = await response.content()
        answer_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        return Answer(response.code, answer_type, content)

    @deferred
    async def request(
        self, method: str, path: str, body: Any = None, idempotency_key: str | None = None
    ) -> Any:
        """Send one JSON request; the decoded JSON answer, or BackOfficeError."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        answer = await self.send(method, path, data, idempotency_key=idempotency_key)
        decoded = json.loads(answer.body) if answer.body else None
        if answer.status >= 400:
            raise BackOfficeError(answer.status, (decoded or {}).get("error", {}))
        return decoded

    @deferred
    async def send_file(
        self, path: str, data: bytes, content_type: str, idempotency_key: str | None = None
    ) -> bytes:
        """POST a file (a 副本 XML file, a bulk-query CSV); the answer's body, or
        BackOfficeError with the coded refusal. A 副本 file refused whole is answered with
        its result file (MSGResult 9, its code in FileError): that body is returned too."""
        answer = await self.send("POST", path, data, content_type, idempotency_key)
        if answer.status >= 400 and not answer.content_type.startswith("application/xml"):
            raise BackOfficeError(answer.status, json.loads(answer.body).get("error", {}))
        return answer.body

    def register_person(
        self,
        integrated_address_number: str | None,
        individual_number: str,
        wait: float = 30,
        address_number: str | None = None,
    ) -> Deferred[Any]:
        """Register a person (proposing ``integrated_address_number``, or letting the node
        allocate one; with the person's 宛名番号 when given) and wait up to ``wait`` seconds
        for the 符号; a failed acquisition raises BackOfficeError with its code."""
        body = {"individual_number": individual_number}
        if integrated_address_number is not None:
            body["integrated_address_number"] = integrated_address_number
        if address_number is not None:
            body["address_number"] = address_number
        return self.request("POST", f"/persons?wait={wait:g}", body)

    def person_state(self, integrated_address_number: str) -> Deferred[Any]:
        return self.request("GET", f"/persons/{integrated_address_number}")

    def register_replica_record(self, record: dict[str, Any]) -> Deferred[Any]:
        return self.request("POST", "/replica-records", record)

    def submit_query(self, idempotency_key: str | None = None, **query: Any) -> Deferred[Any]:
        """情報照会依頼 (``query``: the JSON body's fields), under ``idempotency_key`` if given."""
        return self.request("POST", "/queries", query, idempotency_key)

    def query_status(self, query_id: str, wait: float = 0) -> Deferred[Any]:
        """情報照会結果取得; with ``wait`` the node answers once the query ended or after
        ``wait`` seconds (long poll)."""
        suffix = f"?wait={wait:g}" if wait > 0 else ""
        return self.request("GET", f"/queries/{query_id}{suffix}")

    @deferred
    async def wait_for_result(self, query_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait (long-polling) until a query has ended; its final status."""
        deadline = self._reactor.seconds() + timeout
        while True:
            left = deadline - self._reactor.seconds()
            status = await self.query_status(query_id, wait=max(min(left, 60.0), 0.001))
            if status["state"] in FINISHED:
                return status
            if self._reactor.seconds() >= deadline:
                raise TimeoutError(f"query {query_id} still {status['state']} after {timeout}s")
