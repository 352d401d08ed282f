"""マイナポータル as a party of the network: a demo resident signs in through its pages, the
portal resolving them through 住基ネット into its own 符号 and keeping no individual number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor

from middleware.persons import fugo_of
from middleware.tables import portal_account
from simulators.portal.person_browser import PersonBrowser
from tests.network import HANAKO_INDIVIDUAL_NUMBER, HANAKO_MEGURO, PORTAL


@pytest_twisted.ensureDeferred
async def test_a_demo_resident_signs_in_and_the_portal_keeps_only_its_fugo(
    portal_box: Any,
) -> None:
    """Signing in as 目黒 花子 opens her account under the portal's own 符号 of her (the one
    the hub issues the portal for her individual number), and her menu shows her name."""
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        page = await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        assert page.status == 200 and page.error_code is None
        assert page.shows("目黒 花子 さんのマイナポータル")
        assert browser.has_session
    finally:
        await browser.close()
    rows = await portal_box.portal.database.read(
        lambda connection: connection.execute(select(portal_account)).all()
    )
    assert [row.display_name for row in rows] == ["目黒 花子"]
    hub_fugo = await portal_box.portal.acquire_fugo(HANAKO_INDIVIDUAL_NUMBER)
    assert rows[0].fugo == hub_fugo
    # The portal's 符号 is its own: not the one Meguro holds for her.
    meguro_fugo = await portal_box.nodes["meguro"].database.read(fugo_of, HANAKO_MEGURO)
    assert meguro_fugo != hub_fugo
    database = Path(portal_box.config.portal.database.removeprefix("sqlite:///"))
    assert HANAKO_INDIVIDUAL_NUMBER.encode() not in database.read_bytes()
    assert portal_box.portal.code == PORTAL


@pytest_twisted.ensureDeferred
async def test_a_number_the_portal_holds_no_card_of_is_refused_and_opens_nothing(
    portal_box: Any,
) -> None:
    """Signing in with an individual number that is not one of the portal's demo residents
    is refused with PortalSignInFailed (401), and no account or session is made."""
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await browser.open("/")
        page = await browser.post("/sign-in", {"individual_number": "456789012347"})
        assert page.status == 401
        assert page.error_code == "PortalSignInFailed"
        assert not browser.has_session
        menu = await browser.open("/")
        assert menu.form("/sign-in") is not None
    finally:
        await browser.close()
    rows = await portal_box.portal.database.read(
        lambda connection: connection.execute(select(portal_account)).all()
    )
    assert rows == []


@pytest_twisted.ensureDeferred
async def test_signing_out_ends_the_session(portal_box: Any) -> None:
    """After signing out, the old session cookie opens nothing: a form of the signed-in
    person is refused with SessionExpired."""
    browser = PersonBrowser(reactor, portal_box.config)
    try:
        await browser.sign_in(HANAKO_INDIVIDUAL_NUMBER)
        csrf = browser.csrf_token
        page = await browser.sign_out()
        assert page.form("/sign-in") is not None
        assert not browser.has_session
        again = await browser.post("/sign-out", {"csrf_token": csrf})
        assert again.status == 401 and again.error_code == "SessionExpired"
    finally:
        await browser.close()
