"""情報提供等記録の開示 end to end on the in-memory network: a person sees, on マイナポータル,
the query Shibuya made about them in the hub's records and in Meguro's and Shibuya's own, and
not the transactions marked 不開示, whether the requester asked so (照会側不開示) or the
provider hides what it provides (提供側不開示); every party's records carry the mark."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor

from codes.errors import RenkeiError
from middleware import messages
from middleware.network import RECORD_DISCLOSURE
from middleware.tables import hub_records, node_records
from simulators.back_office import BackOfficeClient
from simulators.portal.person_browser import PersonBrowser
from tests.network import (
    CARE_CERTIFICATION,
    CARE_INFORMATION,
    CARE_INSURANCE,
    HANAKO_INDIVIDUAL_NUMBER,
    HANAKO_MEGURO,
    MEGURO,
    SETAGAYA,
    SHIBUYA,
)

HANAKO_SHIBUYA = "000000000030001"


async def _query(client: BackOfficeClient, **asked: Any) -> str:
    """A query of 花子's care-insurance information, answered; its 処理通番."""
    submitted = await client.submit_query(
        procedure=CARE_CERTIFICATION, information_name=CARE_INFORMATION, **asked
    )
    status = await client.wait_for_result(submitted["query_id"])
    assert status["state"] in ("provided", "no_data"), status
    number: str = status["transaction_number"]
    return number


def _sections(html: str) -> dict[str, str]:
    """Each party's section of the records page, by party."""
    return {
        match.group(1): match.group(2)
        for match in re.finditer(
            r'<section class="party" data-party="([^"]+)">(.*?)</section>', html, re.S
        )
    }


@pytest_twisted.ensureDeferred
async def test_a_person_sees_who_asked_about_them_but_not_what_is_not_disclosed(
    portal_box: Any,
) -> None:
    """Shibuya asks Meguro about 目黒 花子, once plainly and once marked 照会側不開示; Meguro
    asks Shibuya, which hides its care-insurance provisions (提供側不開示). On her records
    page the hub, Meguro and Shibuya each show the plain query (who asked whom, for which
    事務 and information, the outcome) and neither hidden one; each party marked the hidden
    transactions in its own records."""
    config = portal_box.config
    shibuya = BackOfficeClient(reactor, config, config.institution("shibuya"), CARE_INSURANCE)
    meguro = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
    browser = PersonBrowser(reactor, config)
    try:
        await shibuya.register_person(HANAKO_SHIBUYA, HANAKO_INDIVIDUAL_NUMBER)
        seen = await _query(shibuya, integrated_address_number=HANAKO_SHIBUYA, provider=MEGURO)
        asked_hidden = await _query(
            shibuya,
            integrated_address_number=HANAKO_SHIBUYA,
            provider=MEGURO,
            non_disclosure=True,
        )
        provider_hidden = await _query(
            meguro, integrated_address_number=HANAKO_MEGURO, provider=SHIBUYA
        )
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        page = await browser.open("/records")
        assert page.status == 200 and page.error_code is None
    finally:
        await browser.close()
        await shibuya.close()
        await meguro.close()
    sections = _sections(page.html)
    assert set(sections) >= {"hub", MEGURO, SHIBUYA}
    for party in ("hub", MEGURO, SHIBUYA):
        assert f'data-transaction="{seen}"' in sections[party], party
        assert asked_hidden not in sections[party], party
        assert provider_hidden not in sections[party], party
    assert page.shows("渋谷区") and page.shows("目黒区")
    assert page.shows("介護保険法による保険給付の支給又は保険料の徴収に関する事務(要介護認定)")
    assert page.shows("介護保険法における保険給付の支給若しくは保険料の徴収に関する情報")

    def marks(table: Any, number: str) -> Any:
        def read(connection: Any) -> list[bool]:
            rows = connection.execute(
                select(table.c.non_disclosure).where(table.c.transaction_number == number)
            )
            return [bool(row.non_disclosure) for row in rows]

        return read

    # 照会側不開示: every record of the transaction is marked, at every party.
    for database, table in (
        (portal_box.hub.database, hub_records),
        (portal_box.nodes["meguro"].database, node_records),
    ):
        assert set(await database.read(marks(table, asked_hidden))) == {True}
    # 提供側不開示: from the provider's provision on, at the provider, the hub and the requester.
    assert await portal_box.hub.database.read(marks(hub_records, provider_hidden)) == [False, True]
    assert await portal_box.nodes["meguro"].database.read(marks(node_records, provider_hidden)) == [
        False,
        True,
    ]
    assert set(
        await portal_box.nodes["shibuya"].database.read(marks(node_records, provider_hidden))
    ) == {True}
    # Nothing of the person leaks: neither her numbers nor a 符号.
    assert HANAKO_MEGURO not in page.html and HANAKO_SHIBUYA not in page.html


@pytest_twisted.ensureDeferred
async def test_a_person_without_records_somewhere_sees_none_there(portal_box: Any) -> None:
    """碑文谷 一郎, registered at Meguro only and never asked about, sees no record at any
    party, and Setagaya (where he is not registered) answers with none rather than a
    refusal."""
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await browser.sign_in("345678901234")
        page = await browser.open("/records")
    finally:
        await browser.close()
    sections = _sections(page.html)
    assert page.error_code is None
    for party, section in sections.items():
        assert 'class="record"' not in section, party
        assert "記録はありません" in section, party


@pytest_twisted.ensureDeferred
async def test_only_the_portal_may_ask_for_a_persons_records(portal_box: Any) -> None:
    """A node asking the hub for a person's records is refused NotThePortal."""
    asked = messages.RecordDisclosureRequest(message_id=str(uuid.uuid4()), person_fugo="0" * 32)
    with pytest.raises(RenkeiError) as refused:
        await portal_box.hub.dispatch(MEGURO, RECORD_DISCLOSURE, messages.encode(asked), None)
    assert refused.value.code == "NotThePortal"


@pytest_twisted.ensureDeferred
async def test_an_institution_that_cannot_answer_is_shown_with_its_code(portal_box: Any) -> None:
    """With Setagaya off the network, the records page shows the others' records and, for
    Setagaya, that they could not be had (NetworkUnavailable)."""
    portal_box.network.disconnect(SETAGAYA)
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        page = await browser.open("/records")
    finally:
        await browser.close()
    sections = _sections(page.html)
    assert 'data-error-code="NetworkUnavailable"' in sections[SETAGAYA]
    assert "data-error-code" not in sections["hub"] + sections[MEGURO]
