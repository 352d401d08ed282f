#!/usr/bin/env python3
"""An example vendor back office: a care-insurance system that is not renkei's, asking its
intermediate server for other institutions' information through the back-office API.

Written from the API's OpenAPI document (adapters/openapi.json, which every node serves at
``GET /openapi.json``) only: it imports nothing of the project, just the standard library
(HTTPS with ``ssl`` and ``http.client``) and jsonschema, with which it checks every answer
against the schemas of the document its node serves. It presents its system's client
certificate (from its node's back-office CA) and checks the node's certificate against the
network CA for the node's server name.

- ``query``: submits one query (``POST /queries``, under an Idempotency-Key), then follows
  it (``GET /queries/{id}?wait=``) until it ends, and prints its state and records;
- ``sut``: the back office as the system under test of a scenario (``renkei scenario run
  --sut ACTOR=COMMAND``): it submits the queries the scenario expects of it, which the
  runner tells it in ``RENKEI_SUT_QUERIES``, follows each until it ends and prints each
  status as a JSON line.

Where its node is and which certificate it presents come from its arguments, or from the
environment a scenario runner sets (``RENKEI_BACK_OFFICE_ADDRESS``,
``RENKEI_BACK_OFFICE_SERVER_NAME``, ``RENKEI_CLIENT_CERTIFICATE``, ``RENKEI_CLIENT_KEY``,
``RENKEI_CA``). See README.md next to this file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import jsonschema

FINAL = ("provided", "no_data", "refused", "error")
LONG_POLL = 30  # seconds the node may hold a status request (the API allows up to 60)
JSON_TYPE = "application/json"


class Refused(Exception):
    """The node refused a request with a coded error (docs/protocol.md §12)."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message_en')}")
        self.code = str(error.get("code"))


class Node:
    """The back-office API of one intermediate server, over mutual TLS, its answers checked
    against the OpenAPI document it serves."""

    def __init__(self, address: str, server_name: str, certificate: str, key: str, ca: str) -> None:
        parts = urlsplit(address)
        if parts.scheme != "https" or parts.hostname is None:
            raise ValueError(f"{address!r} is not an https:// address")
        self.host, self.port = parts.hostname, parts.port or 443
        self.server_name = server_name
        self.tls = ssl.create_default_context(cafile=ca)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(certificate, key)
        self.document: dict[str, Any] = {}

    def _request(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        """One request; the JSON answer, or Refused."""
        raw = socket.create_connection((self.host, self.port), timeout=LONG_POLL + 30)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=LONG_POLL + 30)
        # The node is reached at an address but presents its own name: checked here.
        connection.sock = self.tls.wrap_socket(raw, server_hostname=self.server_name)
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = JSON_TYPE
        try:
            connection.request(method, path, body=data, headers=headers)
            answer = connection.getresponse()
            status, content = answer.status, answer.read()
        finally:
            connection.close()
        document: Any = json.loads(content) if content else {}
        if status >= 400:
            self._check(document, "#/components/schemas/Refusal")
            raise Refused(status, document.get("error", {}))
        return document

    def _check(self, document: Any, pointer: str) -> None:
        """``document`` against the schema at ``pointer`` of the OpenAPI document."""
        if not self.document:
            return
        # OpenAPI 3.1 schemas are JSON Schema 2020-12: the document itself is the root that
        # their references point into.
        schema = {"$ref": pointer, "paths": self.document["paths"]}
        schema["components"] = self.document["components"]
        jsonschema.Draft202012Validator(schema).validate(document)

    def load_openapi(self) -> None:
        """The node's OpenAPI document (``GET /openapi.json``), to check answers with."""
        self.document = self._request("GET", "/openapi.json")

    def submit(self, query: dict[str, Any]) -> str:
        """``POST /queries``: the query's id (``submitQuery``)."""
        answer = self._request("POST", "/queries", query, **{"Idempotency-Key": str(uuid.uuid4())})
        accepted = "#/paths/~1queries/post/responses/202/content/application~1json/schema"
        self._check(answer, accepted)
        return str(answer["query_id"])

    def follow(self, query_id: str, seconds: float) -> dict[str, Any]:
        """``GET /queries/{id}?wait=`` until the query ends or ``seconds`` have passed: its
        last status (``queryStatus``)."""
        deadline = time.monotonic() + seconds
        while True:
            wait = max(0, min(LONG_POLL, int(deadline - time.monotonic())))
            status: dict[str, Any] = self._request("GET", f"/queries/{query_id}?wait={wait}")
            self._check(status, "#/components/schemas/QueryStatus")
            if status["state"] in FINAL or time.monotonic() >= deadline:
                return status


def ask(node: Node, query: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Submit ``query`` and follow it: its last status, or its refusal."""
    try:
        return node.follow(node.submit(query), seconds)
    except Refused as refusal:
        return {"state": "not submitted", "error": {"code": refusal.code}}


def show(status: dict[str, Any]) -> None:
    print(f"state: {status['state']}")
    if status.get("transaction_number"):
        print(f"処理通番 (transaction number): {status['transaction_number']}")
    if status.get("error"):
        print(f"error: {status['error']['code']}")
    for record in (status.get("result") or {}).get("records", []):
        print(f"record {record['record_id']} ({record['data_set']['name']})")
        for item in record["items"]:
            print(f"  {item['code']} {item['name']}: {item['value']}")


def main(argv: list[str] | None = None) -> int:
    told = os.environ.get  # what a scenario runner tells a system under test (RENKEI_*)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    for option, variable, what in (
        ("--address", "RENKEI_BACK_OFFICE_ADDRESS", "the node's back-office API (https://…)"),
        ("--server-name", "RENKEI_BACK_OFFICE_SERVER_NAME", "the name in the node's certificate"),
        ("--certificate", "RENKEI_CLIENT_CERTIFICATE", "this system's client certificate"),
        ("--key", "RENKEI_CLIENT_KEY", "its key"),
        ("--ca", "RENKEI_CA", "the network CA, which issued the node's certificate"),
    ):
        parser.add_argument(
            option, default=told(variable), required=told(variable) is None, help=f"{what} "
            f"(default: ${variable})"
        )  # fmt: skip
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to follow a query")
    commands = parser.add_subparsers(dest="command", required=True)
    asking = commands.add_parser("query", help="submit one query and follow it")
    asking.add_argument("--person", required=True, help="統合宛名番号 (integrated address number)")
    asking.add_argument("--procedure", required=True, help="JT code")
    asking.add_argument("--information-name", required=True, help="TM code")
    asking.add_argument("--provider", required=True, help="the provider's institution code")
    asking.add_argument("--fiscal-year", type=int)
    asking.add_argument("--json", action="store_true", help="print the status as JSON")
    testing = commands.add_parser("sut", help="run as a scenario's system under test")
    testing.add_argument(
        "--queries", default=told("RENKEI_SUT_QUERIES", "[]"), help="the queries (JSON)"
    )
    arguments = parser.parse_args(argv)
    node = Node(
        arguments.address, arguments.server_name, arguments.certificate, arguments.key, arguments.ca
    )
    node.load_openapi()
    if arguments.command == "query":
        query: dict[str, Any] = {
            "integrated_address_number": arguments.person,
            "procedure": arguments.procedure,
            "information_name": arguments.information_name,
            "provider": arguments.provider,
        }
        if arguments.fiscal_year is not None:
            query["conditions"] = {"fiscal_year": arguments.fiscal_year}
        status = ask(node, query, arguments.wait)
        if arguments.json:
            print(json.dumps(status, ensure_ascii=False, indent=1))
        else:
            show(status)
        return 0 if status["state"] in FINAL else 1
    ended = True
    for query in json.loads(arguments.queries):
        status = ask(node, query, arguments.wait)
        print(json.dumps({"asked": query, "status": status}, ensure_ascii=False), flush=True)
        ended = ended and status["state"] in FINAL
    return 0 if ended else 1


if __name__ == "__main__":
    sys.exit(main())
