"""Forged, expired, replayed and misaddressed permits, wrong certificates and hostile XML:
each is refused with its stable code and changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select

from adapters.network_link import ROUTES, NetworkClient, host_and_port
from crypto.envelope import open_envelope
from crypto.pki import (
    InstitutionEntry,
    PkiLayout,
    init_pki,
    load_certificate,
    server_name_of_hub,
    server_name_of_institution,
)
from crypto.tls import ClientTLSPolicy
from crypto.xmlsig import Signer
from middleware import messages
from middleware.clock import utc_now
from middleware.network import (
    HUB,
    PROVISION,
    PROVISION_REQUEST,
    QUERY,
    DeliveryRefused,
    TransientFailure,
    decode_answer,
)
from middleware.tables import (
    hub_outbox,
    hub_query,
    hub_records,
    node_outbox,
    provision,
    query,
)
from simulators.network.fugo import FugoCipher, id_code
from tests.network import (
    CARE_INSURANCE,
    DEMO_INDIVIDUAL_NUMBERS,
    HANAKO_INDIVIDUAL_NUMBER,
    MEGURO,
    PREMIUM_ASSESSMENT,
    SETAGAYA,
    TAX_INFORMATION,
)

CARE_AFFAIR = "JM90000000001000"


def as_hub(box: Any, pki: Path | None = None) -> NetworkClient:
    """A client presenting the hub's TLS certificate to the nodes."""
    from twisted.internet import reactor

    layout = PkiLayout(pki or box.config.pki)
    policy = ClientTLSPolicy(
        [load_certificate(PkiLayout(box.config.pki).ca().certificate)], layout.hub_tls().load()
    )
    for institution in box.config.institutions:
        host, port = host_and_port(institution.network_address)
        policy.expect(host, port, server_name_of_institution(institution.code))
    return NetworkClient(reactor, policy)


def as_institution(box: Any, code: str, pki: Path | None = None) -> NetworkClient:
    """A client presenting an institution's TLS certificate to the hub."""
    from twisted.internet import reactor

    layout = PkiLayout(pki or box.config.pki)
    policy = ClientTLSPolicy(
        [load_certificate(PkiLayout(box.config.pki).ca().certificate)],
        layout.institution_tls(code).load(),
    )
    host, port = host_and_port(box.config.hub_address)
    policy.expect(host, port, server_name_of_hub())
    return NetworkClient(reactor, policy)


def setagaya_fugo_of_hanako(box: Any) -> str:
    layout = PkiLayout(box.config.pki)
    from simulators.network import jukinet

    resident_code = box.hub.database.run_blocking(
        jukinet.resident_code_of, HANAKO_INDIVIDUAL_NUMBER
    )
    cipher = FugoCipher(layout.hub_fugo_key().read_bytes())
    return cipher.issue(id_code(resident_code, layout.hub_idcode_key().read_bytes()), SETAGAYA)


def provision_request(
    box: Any,
    *,
    signer: Signer | None = None,
    provider: str = SETAGAYA,
    procedure: str = PREMIUM_ASSESSMENT,
    valid_for: timedelta = timedelta(minutes=5),
    number: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """A provision request as the hub would send it, with a permit to taste."""
    layout = PkiLayout(box.config.pki)
    from twisted.internet import reactor

    now = utc_now(reactor)
    permit = messages.Permit(
        transaction_number=number or f"{uuid.uuid4().int % 10**20:020d}",
        requester=MEGURO,
        provider=provider,
        affair=CARE_AFFAIR,
        procedure=procedure,
        information_name=TAX_INFORMATION,
        provider_fugo=setagaya_fugo_of_hanako(box),
        issued_at=min(now, now + valid_for - timedelta(minutes=1)),
        expires_at=now + valid_for,
    )
    signer = signer or Signer(layout.hub_signing().load())
    return messages.encode(
        messages.ProvisionRequest(
            message_id=message_id or str(uuid.uuid4()),
            permit_element=signer.sign(messages.to_element(permit)),
            route=messages.Route(
                requester=MEGURO,
                encryption_certificate=layout.institution_encryption(MEGURO)
                .load()
                .certificate.public_bytes(Encoding.DER),
            ),
        )
    )


async def send(
    box: Any, sender: str, destination: str, operation: str, body: bytes, expected: Any
) -> Any:
    """One message of ``sender`` to ``destination`` over the box's links, as a party would
    send it (in memory, or over mutual TLS with the sender's certificate for a TLS box): the
    decoded answer, or DeliveryRefused / TransientFailure."""
    if box.network is not None:
        document = await box.network.transport(sender).exchange(destination, operation, body)
        return decode_answer(document, expected)
    client = as_hub(box) if sender == HUB else as_institution(box, sender)
    method, path = ROUTES[operation]
    address = (
        box.config.hub_address
        if destination == HUB
        else next(i for i in box.config.institutions if i.code == destination).network_address
    )
    try:
        document = await client.request(method, address + path, body)
    finally:
        await client.close()
    return decode_answer(document, expected)


async def post_to_setagaya(box: Any, body: bytes, sender: str = HUB) -> Any:
    """A provision request sent to Setagaya (by the hub unless told otherwise)."""
    return await send(box, sender, SETAGAYA, PROVISION_REQUEST, body, messages.ProvisionRequestAck)


async def post_query_to_hub(box: Any, body: bytes, sender: str = MEGURO) -> Any:
    """A query request sent to the hub (by Meguro unless told otherwise)."""
    return await send(box, sender, HUB, QUERY, body, messages.QueryAccepted)


def count(database: Any, table: Any) -> int:
    return int(
        database.run_blocking(
            lambda connection: connection.execute(
                select(func.count()).select_from(table)
            ).scalar_one()
        )
    )


async def refused_code(awaitable: Any) -> str:
    with pytest.raises(DeliveryRefused) as refused:
        await awaitable
    return refused.value.code


@pytest_twisted.ensureDeferred
async def test_a_valid_hub_permit_is_answered(box: Any) -> None:
    """The control case: a correctly signed permit for Setagaya is accepted and answered."""
    ack = await post_to_setagaya(box, provision_request(box))
    assert len(ack.transaction_number) == 20
    assert count(box.nodes["setagaya"].database, provision) == 1


@pytest_twisted.ensureDeferred
async def test_provider_refuses_a_permit_signed_by_another_key(box: Any) -> None:
    """A permit signed by anyone but the hub (here Meguro's signing key) is refused."""
    forger = Signer(PkiLayout(box.config.pki).institution_signing(MEGURO).load())
    body = provision_request(box, signer=forger)
    assert await refused_code(post_to_setagaya(box, body)) == "PermitSignatureInvalid"
    assert count(box.nodes["setagaya"].database, provision) == 0
    assert count(box.nodes["setagaya"].database, node_outbox) == 0


@pytest_twisted.ensureDeferred
async def test_provider_refuses_an_expired_permit(box: Any) -> None:
    """A permit whose expiry has passed is refused with PermitExpired."""
    body = provision_request(box, valid_for=timedelta(seconds=-1))
    assert await refused_code(post_to_setagaya(box, body)) == "PermitExpired"
    assert count(box.nodes["setagaya"].database, provision) == 0


@pytest_twisted.ensureDeferred
async def test_provider_refuses_a_replayed_permit(box: Any) -> None:
    """A permit used once is refused when presented again in another request; the hub's
    retry of the same request is acknowledged without a second provision."""
    number = f"{uuid.uuid4().int % 10**20:020d}"
    message_id = str(uuid.uuid4())
    await post_to_setagaya(box, provision_request(box, number=number, message_id=message_id))
    retry = await post_to_setagaya(
        box, provision_request(box, number=number, message_id=message_id)
    )
    assert retry.transaction_number == number
    replay = provision_request(box, number=number)
    assert await refused_code(post_to_setagaya(box, replay)) == "PermitReplayed"
    assert count(box.nodes["setagaya"].database, provision) == 1
    assert count(box.nodes["setagaya"].database, node_outbox) == 1


@pytest_twisted.ensureDeferred
async def test_provider_refuses_a_permit_for_another_provider(box: Any) -> None:
    """A permit addressed to Meguro, delivered to Setagaya, is refused."""
    body = provision_request(box, provider=MEGURO)
    assert await refused_code(post_to_setagaya(box, body)) == "PermitWrongProvider"
    assert count(box.nodes["setagaya"].database, provision) == 0


@pytest_twisted.ensureDeferred
async def test_provider_rechecks_the_list_when_forced_past_requester_and_hub(box: Any) -> None:
    """Even with a genuine hub permit, the provider refuses a query its own copy of the
    list does not permit."""
    body = provision_request(box, procedure="JT90010000000002")  # 要介護認定 → tax: not listed
    assert await refused_code(post_to_setagaya(box, body)) == "NotPermitted"
    assert count(box.nodes["setagaya"].database, provision) == 0


def hub_refusals(box: Any) -> list[tuple[str, str]]:
    """The hub's queries and records of refusals: one (state, code) each, the two agreeing."""
    queries = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(hub_query.c.state, hub_query.c.error_code, hub_query.c.transaction_number)
        ).all()
    )
    records = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(hub_records.c.status, hub_records.c.error_code, hub_records.c.transaction_number)
        ).all()
    )
    assert sorted(map(tuple, queries)) == sorted(map(tuple, records))
    return [(state, code) for state, code, _ in queries]


@pytest_twisted.ensureDeferred
async def test_hub_refuses_a_query_not_on_the_list_when_forced_past_the_requester(
    box: Any,
) -> None:
    """A requester that skips its own list check is stopped by the hub's."""
    from simulators.network import jukinet

    layout = PkiLayout(box.config.pki)
    resident_code = box.hub.database.run_blocking(
        jukinet.resident_code_of, HANAKO_INDIVIDUAL_NUMBER
    )
    fugo = FugoCipher(layout.hub_fugo_key().read_bytes()).issue(
        id_code(resident_code, layout.hub_idcode_key().read_bytes()), MEGURO
    )
    body = messages.encode(
        messages.QueryRequest(
            message_id=str(uuid.uuid4()),
            requester_fugo=fugo,
            affair="JM90000000002000",
            procedure="JT90020000000001",
            information_name=TAX_INFORMATION,
            provider=SETAGAYA,
        )
    )
    code = await refused_code(post_query_to_hub(box, body))
    assert code == "NotPermitted"
    assert hub_refusals(box) == [("refused", "NotPermitted")]
    assert count(box.hub.database, hub_outbox) == 0


@pytest_twisted.ensureDeferred
async def test_hub_refuses_a_fugo_issued_to_another_institution(box: Any) -> None:
    """Meguro cannot present Setagaya's 符号 of a person: the hub refuses the conversion."""
    body = messages.encode(
        messages.QueryRequest(
            message_id=str(uuid.uuid4()),
            requester_fugo=setagaya_fugo_of_hanako(box),
            affair=CARE_AFFAIR,
            procedure=PREMIUM_ASSESSMENT,
            information_name=TAX_INFORMATION,
            provider=SETAGAYA,
        )
    )
    code = await refused_code(post_query_to_hub(box, body))
    assert code == "FugoInvalid"
    assert hub_refusals(box) == [("refused", "FugoInvalid")]
    assert count(box.hub.database, hub_outbox) == 0


@pytest_twisted.ensureDeferred
async def test_only_the_hub_may_send_provision_requests(box: Any) -> None:
    """A node refuses a provision request sent by an institution rather than the hub."""
    code = await refused_code(post_to_setagaya(box, provision_request(box), sender=MEGURO))
    assert code == "CertificateNotAuthorized"
    assert count(box.nodes["setagaya"].database, provision) == 0


@pytest_twisted.ensureDeferred
async def test_client_certificate_from_another_ca_is_refused(tls_box: Any, tmp_path: Path) -> None:
    """An institution certificate issued by another CA cannot even complete the handshake."""
    rogue = tmp_path / "rogue-pki"
    init_pki(rogue, [InstitutionEntry(MEGURO, (CARE_INSURANCE,))])
    client = as_institution(tls_box, MEGURO, pki=rogue)
    try:
        with pytest.raises(TransientFailure):
            await client.get(tls_box.config.hub_address + "/permitted-list")
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_back_office_certificate_of_another_node_is_refused(box: Any) -> None:
    """Setagaya's back-office system cannot use Meguro's back-office API."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient

    layout = PkiLayout(box.config.pki)
    meguro = box.config.institution("meguro")
    # Setagaya's back-office certificate (issued by Setagaya's back-office CA) to Meguro.
    policy = ClientTLSPolicy(
        [load_certificate(layout.ca().certificate)],
        layout.back_office_client(SETAGAYA, "local-tax").load(),
    )
    client = BackOfficeClient(reactor, box.config, meguro, CARE_INSURANCE, policy=policy)
    try:
        with pytest.raises(Exception) as refused:
            await client.query_status("anything")
        assert "unknown ca" in repr(refused.value)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_back_office_system_not_configured_for_the_node_is_refused(box: Any) -> None:
    """A certificate from Meguro's own back-office CA for a system Meguro does not list is
    refused with CertificateNotAuthorized."""
    from twisted.internet import reactor

    from simulators.back_office import BackOfficeClient, BackOfficeError

    init_pki(box.config.pki, [InstitutionEntry(MEGURO, ("unlisted-system",))])
    client = BackOfficeClient(
        reactor, box.config, box.config.institution("meguro"), "unlisted-system"
    )
    try:
        with pytest.raises(BackOfficeError) as refused:
            await client.query_status("anything")
    finally:
        await client.close()
    assert refused.value.status == 403
    assert refused.value.code == "CertificateNotAuthorized"


@pytest_twisted.ensureDeferred
async def test_the_hub_cannot_decrypt_a_relayed_payload(box: Any, meguro_care: Any) -> None:
    """The provision the hub relays is ciphertext to every key the hub holds, and its
    plaintext item values appear nowhere in the hub's database."""
    from tests.test_flow import ask_tax

    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"])
    assert status["state"] == "provided"
    table = box.hub.outbox.table
    body = box.hub.database.run_blocking(
        lambda connection: connection.execute(
            select(table.c.body).where(table.c.kind == "provision")
        ).scalar_one()
    )
    relayed = messages.decode(body, messages.Provision)
    assert relayed.encrypted_payload is not None
    layout = PkiLayout(box.config.pki)
    for credentials in (layout.hub_tls().load(), layout.hub_signing().load()):
        with pytest.raises(Exception) as unreadable:
            open_envelope(relayed.encrypted_payload, credentials)
        assert getattr(unreadable.value, "code", None) == "PayloadUnreadable"
    # The requester's key reads it.
    plaintext = open_envelope(
        relayed.encrypted_payload, layout.institution_encryption(MEGURO).load()
    )
    assert b"84200" in plaintext
    hub_file = Path(box.config.network.database.removeprefix("sqlite:///"))
    for path in hub_file.parent.glob(hub_file.name + "*"):
        assert b"SET-TAX-2026-0001" not in path.read_bytes()


@pytest_twisted.ensureDeferred
async def test_no_node_database_holds_an_individual_number(box: Any, meguro_care: Any) -> None:
    """After registration and a full flow, no node's database file (nor its WAL) contains any
    registered person's individual number."""
    from tests.test_flow import ask_tax

    submitted = await ask_tax(meguro_care)
    await meguro_care.wait_for_result(submitted["query_id"])
    for node in box.nodes.values():
        node_file = Path(node.institution.database.removeprefix("sqlite:///"))
        files = list(node_file.parent.glob(node_file.name + "*"))
        assert files
        for path in files:
            content = path.read_bytes()
            for number in DEMO_INDIVIDUAL_NUMBERS:
                assert number.encode() not in content
                assert number.encode("utf-16-le") not in content


HOSTILE = {
    "entity-expansion": (
        b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<QueryRequest xmlns="urn:renkei:linkage:1">&c;</QueryRequest>',
        "XmlDoctypeForbidden",
    ),
    "external-entity": (
        b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<QueryRequest xmlns="urn:renkei:linkage:1">&x;</QueryRequest>',
        "XmlDoctypeForbidden",
    ),
    # Refused by the listener while the body arrives, before the parser sees it.
    "oversize": (
        b'<QueryRequest xmlns="urn:renkei:linkage:1">' + b"a" * 1_100_000 + b"</QueryRequest>",
        "BodyTooLarge",
    ),
    "deep-nesting": (
        b'<QueryRequest xmlns="urn:renkei:linkage:1">'
        + b"<a>" * 5000
        + b"</a>" * 5000
        + b"</QueryRequest>",
        "XmlTooDeep",
    ),
    "schema-invalid": (
        b'<QueryRequest xmlns="urn:renkei:linkage:1" messageId="x"/>',
        "XmlSchemaInvalid",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest_twisted.ensureDeferred
async def test_hostile_xml_to_the_hub_is_refused_and_stores_nothing(
    tls_box: Any, case: str
) -> None:
    """Hostile documents sent to the hub's listener get their coded error and leave no trace."""
    body, code = HOSTILE[case]
    assert await refused_code(post_query_to_hub(tls_box, body)) == code
    assert count(tls_box.hub.database, hub_query) == 0
    assert count(tls_box.hub.database, hub_outbox) == 0


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest_twisted.ensureDeferred
async def test_hostile_xml_to_a_provider_is_refused_and_stores_nothing(
    tls_box: Any, case: str
) -> None:
    """Hostile documents sent to a node's network listener get their coded error, and the
    node keeps serving."""
    body, code = HOSTILE[case]
    body = body.replace(b"QueryRequest", b"ProvisionRequest")
    assert await refused_code(post_to_setagaya(tls_box, body)) == code
    assert count(tls_box.nodes["setagaya"].database, provision) == 0
    ack = await post_to_setagaya(tls_box, provision_request(tls_box))
    assert ack.transaction_number


@pytest_twisted.ensureDeferred
async def test_requester_refuses_a_result_for_an_unknown_transaction(box: Any) -> None:
    """A provision for a 処理通番 the requester never received is refused and not stored."""
    body = messages.encode(
        messages.Provision(
            message_id=str(uuid.uuid4()),
            transaction_number="20260101000000000999",
            status="provided",
            encrypted_payload=b"x",
        )
    )
    code = await refused_code(send(box, HUB, MEGURO, PROVISION, body, messages.ProvisionAck))
    assert code == "UnknownTransaction"
    assert count(box.nodes["meguro"].database, query) == 0


def test_demo_individual_numbers_are_valid() -> None:
    """The demo population's individual numbers carry valid check digits."""
    from codes.individual_number import validate_individual_number

    for number in DEMO_INDIVIDUAL_NUMBERS:
        validate_individual_number(number)


@pytest_twisted.ensureDeferred
async def test_a_payload_naming_items_the_catalogue_lacks_ends_the_query_in_error(
    box: Any, meguro_care: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider (an outside member, say) whose signed payload names an item the data
    standard layout does not have: the requester refuses it with PayloadInvalid, the query
    ends ``error`` with that code, and its status stays readable (nothing unshowable kept)."""
    from dataclasses import replace

    from tests.test_flow import ask_tax

    provider = box.nodes["setagaya"].provider
    original = provider.sealed

    def with_an_unknown_item(
        message_id: str, number: str, status: str, payload: Any, recipient: Any
    ) -> Any:
        records = tuple(
            replace(record, items=(*record.items, ("TK00000201019999", "1")))
            for record in payload.records
        )
        return original(message_id, number, status, replace(payload, records=records), recipient)

    monkeypatch.setattr(provider, "sealed", with_an_unknown_item)
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
    assert (status["state"], status["error"]["code"]) == ("error", "PayloadInvalid")
    assert "データ標準レイアウト" in status["error"]["message_ja"]
    assert status["result"] is None
    again = await meguro_care.query_status(submitted["query_id"])
    assert again["state"] == "error"
