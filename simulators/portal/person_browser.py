"""A person's browser on マイナポータル's pages (simulators/portal/web.py).

A `simulators.console_browser.Browser` on the portal's ``web_address`` (HTTPS, the
portal's certificate from the network CA) that signs in as a demo resident with the form the
sign-in page offers for them, as a person picks their own card. Tests and scenarios drive
the portal through it, over the same pages a person reads.
"""

from __future__ import annotations

from typing import Any

from crypto.pki import server_name_of_portal
from middleware.config import Config
from middleware.deferred import deferred
from simulators.console_browser import Browser, ConsolePage, NoSuchForm

__all__ = ["PersonBrowser"]


class PersonBrowser(Browser):
    """One person's browser on the portal of ``config`` (its ``[portal] web_address``)."""

    session_cookie = "myna_portal"

    def __init__(self, reactor: Any, config: Config) -> None:
        if config.portal is None:
            raise LookupError("the configuration has no [portal]")
        super().__init__(reactor, config, config.portal.web_address, server_name_of_portal())

    @deferred
    async def sign_in(self, individual_number: str) -> ConsolePage:
        """Open the sign-in page and sign in with the card (the form) of the demo resident
        with ``individual_number``; the page shown after."""
        page = await self.open("/")
        for form in page.forms:
            if form.action == "/sign-in" and form.value("individual_number") == individual_number:
                return await self.submit_form(form)
        raise NoSuchForm(f"the sign-in page offers no card of {individual_number}")

    @deferred
    async def sign_out(self) -> ConsolePage:
        """Sign out with the form every page offers a signed-in person."""
        return await self.submit("/sign-out")
