"""マイナポータル as a party of the network: it acts for persons who sign in to it.

A party like the hub and the intermediate servers (`middleware.party.Party`: its clock, its
database, its outbox, its chain of provision records and its jobs), with its own
certificates and an (emulated) institution code, by which the hub knows it and lists it in
the permitted-query list's directory (kind ``portal``). Its web pages (`simulators.portal.web`)
call it for the person signed in; it never sees an HTTP request. Its parts:
`simulators.portal.self_information.SelfInformation` (``portal.self_information``: a
person's requests for their own information, 自己情報提供) and
`simulators.portal.disclosure.Disclosure` (``portal.disclosure``: their provision records at
every party, 情報提供等記録の開示) and `simulators.portal.notices.Mailbox` (``portal.notices``:
the notices institutions send them, お知らせ).

A person signs in as one of the demo residents the portal holds (`simulators.portal.accounts`):
the portal resolves their individual number through the network's 住基ネット into its own
符号 of them (the hub's 符号 acquisition, as for any member), opens their account at the first
sign-in and keeps only that 符号. Everything it then asks for the person goes to the hub
under that 符号; the hub converts it for the institution asked, as for any query.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from codes import errors
from codes.catalogue import Catalogue
from codes.errors import RenkeiError
from crypto.pki import PkiLayout, load_certificate
from crypto.xmlsig import CAVerifier, PinnedVerifier, Signer
from middleware import messages
from middleware.checkpoint import CheckpointSigner
from middleware.clock import ReactorTime
from middleware.config import Config, PortalConfig
from middleware.deferred import deferred
from middleware.health import Health
from middleware.list_sync import JOB as LIST_SYNC
from middleware.list_sync import PermittedLists
from middleware.network import (
    FUGO,
    HUB,
    NOTICE,
    PROVISION,
    DeliveryRefused,
    TransientFailure,
    Transport,
    decode_answer,
)
from middleware.outbox import OutgoingMessage
from middleware.party import Party
from middleware.permitted_list import ListedInstitution
from middleware.requester import ProvisionOpener
from middleware.retention import Purge, party_kinds
from middleware.tables import (
    portal_checkpoints,
    portal_job_run,
    portal_list_versions,
    portal_outbox,
    portal_outbox_owner,
    portal_record_head,
    portal_records,
)
from simulators.portal import accounts, notices, self_information
from simulators.portal.accounts import Resident, Session
from simulators.portal.disclosure import Disclosure
from simulators.portal.notices import Mailbox
from simulators.portal.self_information import SelfInformation

__all__ = ["MIGRATIONS", "PORTAL", "Portal"]

MIGRATIONS = Path(__file__).parent / "migrations"
PORTAL = "portal"
"""The portal's name as a party of a box (its section, its process, its log)."""


class Portal(Party):
    """The マイナポータル simulator: persons' accounts and what it asks the network for them."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        catalogue: Catalogue,
        reactor: Any,
        transport: Transport,
        clock: ReactorTime | None = None,
    ) -> None:
        assert config.portal is not None
        settings: PortalConfig = config.portal
        super().__init__(
            config,
            reactor,
            name=PORTAL,
            database=settings.database,
            migrations=MIGRATIONS,
            outbox=(portal_outbox, portal_outbox_owner),
            records=(portal_records, portal_record_head),
            job_runs=portal_job_run,
            transport=transport,
            clock=clock,
        )
        self.settings = settings
        self.code = settings.code
        self.catalogue = catalogue
        self.residents: tuple[Resident, ...] = accounts.load_residents(settings.residents)
        self.session_idle = timedelta(seconds=settings.session_idle)
        layout = PkiLayout(config.pki)
        self.ca = load_certificate(layout.ca().certificate)
        hub_verifier = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
        # The network's directory (who is who, which kind) comes with the permitted-query list.
        self.lists = PermittedLists(self, hub_verifier, portal_list_versions)
        self.self_information = SelfInformation(
            self,
            ProvisionOpener(
                layout.portal_encryption().load(), CAVerifier(self.ca), catalogue, settings.code
            ),
        )
        self.disclosure = Disclosure(self, self.institutions)
        self.notices = Mailbox(self)
        # Its records and outbox documents past their retention, as at the hub.
        kept = config.retention
        checkpoints = CheckpointSigner(Signer(layout.portal_signing().load()), settings.code)
        self.purge = Purge(
            self,
            party_kinds(self.records, portal_checkpoints, portal_outbox, checkpoints, kept),
            batch=kept.batch,
            audited=False,
        )
        self.jobs.add("purge", kept.interval, self.purge.run)
        self.health = Health(
            self,
            config.health,
            PORTAL,
            settings.code,
            permitted=lambda: self.lists.current,
            missing="no permitted-query list (the network's directory) received from the hub",
            hub_job=LIST_SYNC,
        )

    # -- service life ---------------------------------------------------------------------

    @deferred
    async def startService(self) -> None:
        await super().startService()
        await self.lists.start()
        await self.jobs.run("health")

    # -- the network's directory ------------------------------------------------------------

    def institutions(self) -> list[ListedInstitution]:
        """The institutions of the network (not the portal), by code, from the list's
        directory; none before the first list arrives."""
        listed = self.lists.current
        if listed is None:
            return []
        return sorted(
            (entry for entry in listed.institutions.values() if entry.code != self.code),
            key=lambda entry: entry.code,
        )

    def offers(self) -> list[tuple[ListedInstitution, list[str]]]:
        """What a person may ask for: each institution of the network with the information
        names its kind provides under the list in force (the list's rows say which kind
        provides what), in the catalogue's order."""
        listed = self.lists.current
        if listed is None:
            return []
        known: list[str] = [name.code for name in self.catalogue.information_names]
        offered = []
        for entry in self.institutions():
            names = {
                rule.information_name for rule in listed.rules if rule.provider_kind == entry.kind
            }
            if names:
                offered.append((entry, [code for code in known if code in names]))
        return offered

    def institution_name(self, code: str | None) -> str:
        """An institution's name as the directory gives it (its code when unknown)."""
        if code is None:
            return ""
        if code == self.code:
            return self.settings.display_name
        listed = self.lists.current
        entry = listed.institutions.get(code) if listed is not None else None
        return entry.name if entry is not None else code

    # -- signing in -------------------------------------------------------------------------

    def resident(self, individual_number: str) -> Resident:
        """The demo resident with this individual number (PortalSignInFailed otherwise)."""
        for resident in self.residents:
            if resident.individual_number == individual_number:
                return resident
        raise RenkeiError(errors.PORTAL_SIGN_IN_FAILED)

    @deferred
    async def sign_in(self, individual_number: str) -> str:
        """Sign a demo resident in: their individual number resolved through 住基ネット into
        the portal's 符号 of them, their account opened at the first sign-in; the new
        session's token."""
        resident = self.resident(individual_number)
        fugo = await self.acquire_fugo(resident.individual_number)
        now = self.now()
        await self.database.run(accounts.open_account, fugo, resident.name, now)
        token = await self.database.run(accounts.start_session, fugo, now)
        self.log.info("{name} signed in", name=resident.name)
        return token

    @deferred
    async def acquire_fugo(self, individual_number: str) -> str:
        """The portal's 符号 of a person, from the hub (個人番号 → 住民票コード → 符号): as an
        institution acquires its own, the number used and dropped."""
        request = messages.FugoRequest(
            message_id=str(uuid.uuid4()), individual_number=individual_number
        )
        try:
            document = await self.transport.exchange(HUB, FUGO, messages.encode(request))
        except DeliveryRefused as refusal:
            raise RenkeiError(errors.ALL.get(refusal.code, errors.INTERNAL)) from None
        except TransientFailure as failure:
            raise RenkeiError(errors.NETWORK_UNAVAILABLE, detail=str(failure)) from None
        return decode_answer(document, messages.FugoResponse).fugo

    def resume(self, token: str | None) -> Deferred[Session]:
        """The session of a cookie's token (SessionExpired when it has none or it ended)."""
        return self.database.run(accounts.resume_session, token, self.now(), self.session_idle)

    def sign_out(self, token: str) -> Deferred[None]:
        """End a session."""
        return self.database.run(accounts.end_session, token)

    # -- the network endpoint ------------------------------------------------------------------

    def dispatch(
        self, caller: str, operation: str, document: bytes | None, argument: str | None
    ) -> Deferred[bytes]:
        """What the network brings (`middleware.network.NetworkEndpoint`): only the hub may
        call the portal."""
        if caller != HUB:
            raise RenkeiError(errors.CERTIFICATE_NOT_AUTHORIZED, subject=caller)
        handlers: dict[str, Callable[[bytes], Deferred[bytes]]] = {
            PROVISION: lambda document: self.self_information.receive_provision(
                messages.decode(document, messages.Provision)
            ),
            NOTICE: lambda document: self.notices.receive(
                messages.decode(document, messages.Notice)
            ),
        }
        handler = handlers.get(operation)
        if handler is None or document is None:
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        return handler(document)

    def deliver(self, message: OutgoingMessage) -> Deferred[Any]:
        """Hand a message of the outbox to what sends it."""
        handlers: dict[str, Callable[[OutgoingMessage], Deferred[Any]]] = {
            self_information.KIND: self.self_information.deliver,
            notices.KIND: self.notices.deliver,
        }
        return handlers[message.kind](message)
