"""自己情報提供 end to end on the in-memory network: a person signed in to マイナポータル asks an
institution for their own information through the hub and reads it, decrypted, with the files
registered for them; a DV-protected person's answer waits for the provider's staff; every
party records the exchange."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor
from twisted.internet.task import deferLater

from codes.catalogue import SELF_INFORMATION_PROCEDURE
from codes.errors import RenkeiError
from middleware import messages
from middleware.network import QUERY, SELF_INFORMATION
from middleware.tables import hub_records, node_records, portal_records
from simulators.back_office import BackOfficeClient, BackOfficeError
from simulators.portal.person_browser import PersonBrowser
from tests.network import (
    CARE_INFORMATION,
    CARE_INSURANCE,
    HANAKO_INDIVIDUAL_NUMBER,
    HANAKO_MEGURO,
    MEGURO,
    PORTAL,
    SETAGAYA,
)

TARO_INDIVIDUAL_NUMBER = "234567890121"
TARO_MEGURO = "000000000010002"
HIDDEN_ITEM = "TK00000402010007"  # 区分支給限度基準額: kept from persons in the catalogue
STATEMENT = "介護保険料額決定通知書(令和8年度)\n".encode()
WELFARE_INFORMATION = "TM00000000900001"


async def _back_office(box: Any) -> BackOfficeClient:
    return BackOfficeClient(reactor, box.config, box.config.institution("meguro"), CARE_INSURANCE)


async def _until(browser: PersonBrowser, path: str, states: tuple[str, ...]) -> Any:
    """Reload ``path`` until its state is one of ``states`` (as a person reloads)."""
    for _ in range(100):
        page = await browser.open(path)
        if any(f'data-state="{state}"' in page.html for state in states):
            return page
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"{path} never reached {states}: {page.text[:500]}")


async def _ask(browser: PersonBrowser, provider: str, information_name: str) -> str:
    """Ask with the form of the self-information page; the result page's path."""
    await browser.open("/self-information")
    page = await browser.submit("/self-information", {"asked": f"{provider}:{information_name}"})
    assert page.status == 200, page.text[:500]
    return page.path


@pytest_twisted.ensureDeferred
async def test_a_person_reads_their_own_care_insurance_information_with_its_file(
    portal_box: Any,
) -> None:
    """目黒 花子 asks Meguro for her care-insurance information: it arrives through the hub,
    sealed for the portal, and her page shows its items by name (without the item the
    catalogue keeps from persons) and the statement Meguro registered for her, byte for
    byte; the hub, Meguro and the portal each record it under 自己情報提供."""
    client = await _back_office(portal_box)
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        registered = await client.request(
            "POST",
            "/self-information-attachments",
            {
                "integrated_address_number": HANAKO_MEGURO,
                "information_name": CARE_INFORMATION,
                "name": "保険料額決定通知書.txt",
                "media_type": "text/plain",
                "content": base64.b64encode(STATEMENT).decode(),
            },
        )
        assert uuid.UUID(registered["attachment_id"])
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        path = await _ask(browser, MEGURO, CARE_INFORMATION)
        page = await _until(browser, path, ("provided",))
        assert page.shows("被保険者番号") and page.shows("0001310501")
        assert page.shows("要介護状態区分") and page.shows("認定有効期間終了年月日")
        assert f'data-item="{HIDDEN_ITEM}"' not in page.html
        assert page.shows("区分支給限度基準額") is False
        assert page.shows("保険料額決定通知書.txt")
        status, content_type, body = await browser.fetch(f"{path}/files/0")
        assert (status, content_type, body) == (200, "text/plain", STATEMENT)
        number = page.html.split('id="transaction-number">')[1].split("<")[0]
        assert len(number) == 20
    finally:
        await browser.close()
        await client.close()

    def recorded(table: Any) -> Any:
        def read(connection: Any) -> list[tuple[str, str, str | None, str | None]]:
            rows = connection.execute(
                select(table.c.event, table.c.status, table.c.requester, table.c.procedure)
                .where(table.c.transaction_number == number)
                .order_by(table.c.seq)
            )
            return [(row.event, row.status, row.requester, row.procedure) for row in rows]

        return read

    hub = await portal_box.hub.database.read(recorded(hub_records))
    meguro = await portal_box.nodes["meguro"].database.read(recorded(node_records))
    portal = await portal_box.portal.database.read(recorded(portal_records))
    asked = (PORTAL, SELF_INFORMATION_PROCEDURE)
    assert hub == [("query", "permitted", *asked), ("provision", "provided", *asked)]
    assert meguro == [("provision", "provided", *asked)]
    assert portal == [("query", "accepted", *asked), ("result", "provided", *asked)]


@pytest_twisted.ensureDeferred
async def test_a_dv_protected_persons_own_information_waits_for_the_providers_staff(
    portal_box: Any,
) -> None:
    """世田谷 太郎's record at Meguro is flagged 自動応答不可: his request is held in Meguro's
    queue for review (as 自己情報提供), his page says so, and once an approver approves it
    his information arrives."""
    client = await _back_office(portal_box)
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await client.register_replica_record(
            {
                "record_id": "MEG-KAIGO-DV-0001",
                "integrated_address_number": TARO_MEGURO,
                "information_name": CARE_INFORMATION,
                "data_set": "0101",
                "items": {"TK00000401010001": "0001310502", "TK00000401010003": "2023-04-01"},
                "auto_response_suppressed": True,
            }
        )
        await browser.sign_in(TARO_INDIVIDUAL_NUMBER)
        path = await _ask(browser, MEGURO, CARE_INFORMATION)
        page = await _until(browser, path, ("held",))
        assert page.shows("保留中")
        meguro = portal_box.nodes["meguro"]
        (item,) = await meguro.held.items()
        assert (item.requester, item.procedure) == (PORTAL, SELF_INFORMATION_PROCEDURE)
        await meguro.held.approve(item.transaction_number, "approver")
        page = await _until(browser, path, ("provided",))
        assert page.shows("0001310502")
    finally:
        await browser.close()
        await client.close()


@pytest_twisted.ensureDeferred
async def test_asking_an_institution_for_what_it_does_not_provide_is_refused_and_recorded(
    portal_box: Any,
) -> None:
    """Asking Setagaya for public-assistance information (which it does not provide) is
    refused by the hub with NotAProviderOf: the person's page shows the refusal and its
    処理通番, under which the hub recorded it."""
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        await browser.open("/self-information")
        page = await browser.post(
            "/self-information", {"asked": f"{SETAGAYA}:{WELFARE_INFORMATION}"}
        )
        page = await _until(browser, page.path, ("refused",))
        assert page.error_code == "NotAProviderOf"
        number = page.html.split('id="transaction-number">')[1].split("<")[0]
    finally:
        await browser.close()
    rows = await portal_box.hub.database.read(
        lambda connection: connection.execute(
            select(hub_records.c.event, hub_records.c.status, hub_records.c.error_code).where(
                hub_records.c.transaction_number == number
            )
        ).all()
    )
    assert [tuple(row) for row in rows] == [("query", "refused", "NotAProviderOf")]


@pytest_twisted.ensureDeferred
async def test_only_the_portal_asks_for_a_persons_own_information_and_it_queries_nothing(
    portal_box: Any,
) -> None:
    """A node sending a SelfInformationQuery is refused NotThePortal; the portal sending a
    QueryRequest (no row of the list names its kind) is refused NotPermitted."""
    hub = portal_box.hub
    asked = messages.SelfInformationQuery(
        message_id=str(uuid.uuid4()),
        person_fugo="0" * 32,
        provider=MEGURO,
        information_name=CARE_INFORMATION,
    )
    with pytest.raises(RenkeiError) as refused:
        await hub.dispatch(SETAGAYA, SELF_INFORMATION, messages.encode(asked), None)
    assert refused.value.code == "NotThePortal"
    fugo = await portal_box.portal.acquire_fugo(HANAKO_INDIVIDUAL_NUMBER)
    query = messages.QueryRequest(
        message_id=str(uuid.uuid4()),
        requester_fugo=fugo,
        affair="JM90000000001000",
        procedure="JT90010000000001",
        information_name=CARE_INFORMATION,
        provider=MEGURO,
    )
    with pytest.raises(RenkeiError) as refused:
        await hub.dispatch(PORTAL, QUERY, messages.encode(query), None)
    assert refused.value.code == "NotPermitted"


@pytest_twisted.ensureDeferred
async def test_an_attachment_that_cannot_travel_is_refused_and_nothing_is_kept(
    portal_box: Any,
) -> None:
    """A file of a media type not taken, one too large, and one for an information name the
    system does not keep are refused with their codes."""
    client = await _back_office(portal_box)
    base = {
        "integrated_address_number": HANAKO_MEGURO,
        "information_name": CARE_INFORMATION,
        "name": "a.txt",
        "media_type": "text/plain",
        "content": base64.b64encode(b"x").decode(),
    }
    try:
        for change, code in (
            ({"media_type": "application/zip"}, "AttachmentInvalid"),
            ({"content": base64.b64encode(b"x" * 131_073).decode()}, "AttachmentInvalid"),
            ({"name": "../a.txt"}, "AttachmentInvalid"),
            ({"information_name": "TM00000000000002"}, "SystemNotAuthorized"),
            ({"integrated_address_number": "999999999999999"}, "UnknownPerson"),
        ):
            with pytest.raises(BackOfficeError) as refused:
                await client.request("POST", "/self-information-attachments", base | change)
            assert refused.value.code == code, change
        with pytest.raises(BackOfficeError) as refused:
            await client.request("DELETE", f"/self-information-attachments/{uuid.uuid4()}")
        assert refused.value.code == "UnknownAttachment"
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_person_cannot_open_anothers_request_or_its_files(portal_box: Any) -> None:
    """世田谷 太郎 opening the address of 目黒 花子's request, or of its file, gets
    UnknownSelfInformation (404), as for a request that never existed."""
    hanako = PersonBrowser(reactor, portal_box.config)
    taro = PersonBrowser(reactor, portal_box.config)
    try:
        await hanako.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        path = await _ask(hanako, MEGURO, CARE_INFORMATION)
        await _until(hanako, path, ("provided",))
        await taro.sign_in(TARO_INDIVIDUAL_NUMBER)
        page = await taro.open(path)
        assert (page.status, page.error_code) == (404, "UnknownSelfInformation")
        status, _, _ = await taro.fetch(f"{path}/files/0")
        assert status == 404
        mine = await taro.open("/self-information")
        assert path.rsplit("/", 1)[1] not in mine.html
    finally:
        await hanako.close()
        await taro.close()
