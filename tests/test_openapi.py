"""The back-office API against its OpenAPI 3.1 document: the document is valid, served at
/openapi.json equal to adapters/openapi.json, and real requests and answers conform to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate
from twisted.internet import reactor
from twisted.internet.task import deferLater

from simulators.network import jukinet
from tests.network import (
    HANAKO_MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)

DOCUMENT = Path(__file__).resolve().parent.parent / "adapters" / "openapi.json"
SPEC = json.loads(DOCUMENT.read_text(encoding="utf-8"))
OPENAPI = OpenAPI.from_dict(SPEC)


def test_document_is_valid_openapi_3_1() -> None:
    """adapters/openapi.json is a valid OpenAPI 3.1 document."""
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_every_route_of_the_api_is_documented() -> None:
    """Every route of the back-office API appears in the document, and nothing else."""
    from adapters.back_office_api import BackOfficeApi

    routes = set()
    for rule in BackOfficeApi.app.url_map.iter_rules():
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method.lower(), path))
    documented = {
        (method, path.replace("{number}", "{integrated_address_number}"))
        for path, operations in SPEC["paths"].items()
        for method in operations
    }
    assert {(m, p.replace("{number}", "{integrated_address_number}")) for m, p in routes} == (
        documented
    )


async def exchange(
    client: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    """Send one request, check request and answer against the document; the answer."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    address = client.address
    path_only, _, query = path.partition("?")
    args = dict(part.split("=", 1) for part in query.split("&") if part)
    request = MockRequest(
        address, method.lower(), path_only, args=args, data=data, content_type=content_type
    )
    if raw is None:
        OPENAPI.validate_request(request)
    answer = await client.send(method, path, data, content_type)
    response = MockResponse(
        answer.body,
        status_code=answer.status,
        content_type=answer.content_type.split(";")[0],
    )
    OPENAPI.validate_response(request, response)
    return answer


@pytest_twisted.ensureDeferred
async def test_served_document_equals_the_one_in_docs(box: Any, meguro_care: Any) -> None:
    """GET /openapi.json answers the document shipped with the package."""
    answer = await meguro_care.send("GET", "/openapi.json", None)
    assert answer.status == 200
    assert json.loads(answer.body) == SPEC


@pytest_twisted.ensureDeferred
async def test_person_registration_conforms(box: Any, meguro_care: Any) -> None:
    """Registering a person and reading its state answer as documented."""
    await box.hub.database.run(jukinet.register_resident, "456789012346")
    answer = await exchange(
        meguro_care, "POST", "/persons?wait=10", {"individual_number": "456789012346"}
    )
    assert answer.status == 200
    number = json.loads(answer.body)["integrated_address_number"]
    assert (await exchange(meguro_care, "GET", f"/persons/{number}")).status == 200


@pytest_twisted.ensureDeferred
async def test_replica_record_and_query_conform(box: Any, meguro_care: Any) -> None:
    """A replica record, its deletion, a query and its provided result answer as documented."""
    record = {
        "record_id": "OPENAPI-0001",
        "integrated_address_number": HANAKO_MEGURO,
        "information_name": "TM00000000000004",
        "data_set": "0202",
        "items": {"TK00000402020002": "1"},
    }
    assert (await exchange(meguro_care, "POST", "/replica-records", record)).status == 201
    deleted = await exchange(meguro_care, "DELETE", "/replica-records/OPENAPI-0001")
    assert deleted.status == 204
    submitted = await exchange(
        meguro_care,
        "POST",
        "/queries",
        {
            "integrated_address_number": HANAKO_MEGURO,
            "procedure": PREMIUM_ASSESSMENT,
            "information_name": TAX_INFORMATION,
            "provider": SETAGAYA,
        },
    )
    assert submitted.status == 202, submitted.body.decode()
    query_id = json.loads(submitted.body)["query_id"]
    ended = await exchange(meguro_care, "GET", f"/queries/{query_id}?wait=30")
    assert json.loads(ended.body)["state"] == "provided"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/queries", {"integrated_address_number": "x"}),
        ("GET", "/queries/unknown", None),
        ("GET", "/persons/000000000099999", None),
        ("DELETE", "/replica-records/NOPE", None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refusals_conform(
    box: Any, meguro_care: Any, method: str, path: str, body: Any
) -> None:
    """Refusals are coded JSON errors as documented."""
    raw = None if body is None else json.dumps(body).encode()
    answer = await exchange(meguro_care, method, path, raw=raw)
    assert answer.status >= 400
    assert set(json.loads(answer.body)["error"]) == {"code", "message_en", "message_ja"}


@pytest_twisted.ensureDeferred
async def test_replica_file_and_bulk_query_conform(box: Any, meguro_care: Any) -> None:
    """A 副本 file, a bulk query, its progress and its result file answer as documented."""
    from tests.test_bulk_query import line
    from tests.test_replica_file import entry, replica_document

    document = replica_document(entry("OPENAPI-FILE-1"))
    imported = await exchange(
        meguro_care, "POST", "/replica-files", raw=document, content_type="application/xml"
    )
    assert imported.status == 200 and b"OPENAPI-FILE-1" in imported.body
    accepted = await exchange(
        meguro_care,
        "POST",
        "/bulk-queries",
        raw=(line() + "\r\n").encode(),
        content_type="text/csv",
    )
    assert accepted.status == 202
    bulk_query_id = json.loads(accepted.body)["bulk_query_id"]
    for _ in range(300):
        progress = await exchange(meguro_care, "GET", f"/bulk-queries/{bulk_query_id}")
        if json.loads(progress.body)["state"] == "ended":
            break
        await deferLater(reactor, 0.1, lambda: None)
    result = await exchange(meguro_care, "GET", f"/bulk-queries/{bulk_query_id}/result")
    assert result.status == 200 and result.content_type.startswith("text/csv")


@pytest_twisted.ensureDeferred
async def test_self_information_attachment_and_notices_conform(box: Any, meguro_care: Any) -> None:
    """A self-information attachment, its deletion, a notice, the list of notices and one
    notice's state answer as documented (this box has no マイナポータル: the notice ends
    undeliverable, NoPortalAccount, with its error as documented)."""
    import base64

    registered = await exchange(
        meguro_care,
        "POST",
        "/self-information-attachments",
        {
            "integrated_address_number": HANAKO_MEGURO,
            "information_name": "TM00000000000004",
            "name": "通知書.txt",
            "media_type": "text/plain",
            "content": base64.b64encode("通知書".encode()).decode(),
        },
    )
    assert registered.status == 201
    attachment_id = json.loads(registered.body)["attachment_id"]
    deleted = await exchange(
        meguro_care, "DELETE", f"/self-information-attachments/{attachment_id}"
    )
    assert deleted.status == 204
    sent = await exchange(
        meguro_care,
        "POST",
        "/notices",
        {
            "title": "お知らせ",
            "body": "本文",
            "recipients": [HANAKO_MEGURO],
            "attachments": [
                {"name": "a.pdf", "media_type": "application/pdf", "content": "JVBERg=="}
            ],
        },
    )
    assert sent.status == 202
    notice_id = json.loads(sent.body)["notice_id"]
    for _ in range(100):
        status = await exchange(meguro_care, "GET", f"/notices/{notice_id}")
        if json.loads(status.body)["recipients"][0]["state"] == "undeliverable":
            break
        await deferLater(reactor, 0.1, lambda: None)
    recipient = json.loads(status.body)["recipients"][0]
    assert recipient["error"]["code"] == "NoPortalAccount"
    listed = await exchange(meguro_care, "GET", "/notices")
    assert [n["notice_id"] for n in json.loads(listed.body)["notices"]] == [notice_id]
