"""お知らせ end to end on the in-memory network: Meguro's back office sends a notice to two
persons through the hub to マイナポータル; the one with an account receives it and reads it
(with its attachment), the other cannot be reached; Meguro learns how each stands by asking
the hub (お知らせ状況確認) and shows it in its back-office API and its console."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor
from twisted.internet.task import deferLater

from middleware.tables import hub_notice
from simulators.back_office import BackOfficeClient, BackOfficeError
from simulators.portal.person_browser import PersonBrowser
from tests.network import CARE_INSURANCE, HANAKO_INDIVIDUAL_NUMBER, HANAKO_MEGURO, ICHIRO_MEGURO
from tests.test_console import add_users, logged_in

LETTER = "介護保険料の額が決まりました。\n詳しくは添付の通知書をご覧ください。"
NOTICE_FILE = b"%PDF-1.7\n% notice of the premium\n"


async def _hub_states(box: Any) -> dict[str, str]:
    rows = await box.hub.database.read(
        lambda connection: connection.execute(
            select(hub_notice.c.notice_number, hub_notice.c.state)
        ).all()
    )
    return {row.notice_number: row.state for row in rows}


async def _settled(box: Any, count: int) -> None:
    """Wait until the hub has delivered (or failed to deliver) ``count`` notices."""
    for _ in range(100):
        states = await _hub_states(box)
        if len(states) == count and "sent" not in states.values():
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"the hub did not settle: {states}")


def _by_person(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["integrated_address_number"]: r for r in answer["recipients"]}


@pytest_twisted.ensureDeferred
async def test_a_notice_is_read_and_its_sender_sees_it_read_and_the_unreachable_one(
    portal_box: Any,
) -> None:
    """目黒 花子 (who has signed in to the portal) and 碑文谷 一郎 (who never has) get the
    same notice: hers is delivered, she reads it with its PDF, and Meguro's back office, after
    its お知らせ状況確認, sees hers read (既読) and his undeliverable (NoPortalAccount); the
    console shows the same."""
    meguro = portal_box.nodes["meguro"]
    config = portal_box.config
    client = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
    browser = PersonBrowser(reactor, config)
    try:
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        sent = await client.request(
            "POST",
            "/notices",
            {
                "title": "介護保険料額決定のお知らせ",
                "body": LETTER,
                "recipients": [HANAKO_MEGURO, ICHIRO_MEGURO],
                "attachments": [
                    {
                        "name": "保険料額決定通知書.pdf",
                        "media_type": "application/pdf",
                        "content": base64.b64encode(NOTICE_FILE).decode(),
                    }
                ],
            },
        )
        assert {r["state"] for r in sent["recipients"]} <= {"queued", "sent"}
        await _settled(portal_box, 2)
        await meguro.jobs.run("notice_status")
        before = _by_person(await client.request("GET", f"/notices/{sent['notice_id']}"))
        assert before[HANAKO_MEGURO]["state"] == "delivered"
        assert before[ICHIRO_MEGURO]["state"] == "undeliverable"
        assert before[ICHIRO_MEGURO]["error"]["code"] == "NoPortalAccount"
        # Sent, never delivered nor read.
        assert before[ICHIRO_MEGURO]["sent_at"] is not None
        assert before[ICHIRO_MEGURO]["delivered_at"] is None
        assert before[ICHIRO_MEGURO]["read_at"] is None

        home = await browser.open("/")
        assert home.shows("未読 1件")
        listed = await browser.open("/notices")
        assert listed.shows("介護保険料額決定のお知らせ") and listed.shows("目黒区")
        assert 'data-read="no"' in listed.html
        number = before[HANAKO_MEGURO]["notice_number"]
        opened = await browser.open(f"/notices/{number}")
        assert opened.shows("詳しくは添付の通知書をご覧ください。")
        status, content_type, body = await browser.fetch(f"/notices/{number}/files/0")
        assert (status, content_type, body) == (200, "application/pdf", NOTICE_FILE)
        assert 'data-read="yes"' in (await browser.open("/notices")).html

        for _ in range(100):
            if (await _hub_states(portal_box))[number] == "read":
                break
            await deferLater(reactor, 0.1, lambda: None)
        await meguro.jobs.run("notice_status")
        after = _by_person(await client.request("GET", f"/notices/{sent['notice_id']}"))
        assert after[HANAKO_MEGURO]["state"] == "read"
        assert after[HANAKO_MEGURO]["read_at"] is not None
        listed_api = await client.request("GET", "/notices")
        assert [n["notice_id"] for n in listed_api["notices"]] == [sent["notice_id"]]
    finally:
        await browser.close()
        await client.close()

    secrets = await add_users(meguro)
    console = await logged_in(portal_box, "op", secrets["op"])
    code, page, _ = await console.get(f"/notices/{sent['notice_id']}")
    assert code == 200
    assert f'data-person="{HANAKO_MEGURO}" data-state="read"' in page
    assert f'data-person="{ICHIRO_MEGURO}" data-state="undeliverable"' in page
    code, page, _ = await console.get("/notices")
    assert code == 200 and "介護保険料額決定のお知らせ" in page


@pytest_twisted.ensureDeferred
async def test_a_notice_that_cannot_be_sent_is_refused_whole(portal_box: Any) -> None:
    """A notice naming an unknown person, a person twice, or with an empty title is refused
    with its code and nothing is sent; another system's notice is unknown to it."""
    config = portal_box.config
    client = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
    base = {"title": "お知らせ", "body": "本文", "recipients": [HANAKO_MEGURO]}
    try:
        for change, code in (
            ({"recipients": [HANAKO_MEGURO, "999999999999999"]}, "UnknownPerson"),
            ({"recipients": [HANAKO_MEGURO, HANAKO_MEGURO]}, "NoticeInvalid"),
            ({"title": ""}, "BadRequest"),
            ({"title": "二行の\n件名"}, "NoticeInvalid"),
            ({"recipients": []}, "NoticeInvalid"),
        ):
            with pytest.raises(BackOfficeError) as refused:
                await client.request("POST", "/notices", base | change)
            assert refused.value.code == code, change
        assert (await client.request("GET", "/notices"))["notices"] == []
        with pytest.raises(BackOfficeError) as refused:
            await client.request("GET", "/notices/00000000-0000-0000-0000-000000000000")
        assert refused.value.code == "UnknownNotice"
    finally:
        await client.close()
    assert await _hub_states(portal_box) == {}
