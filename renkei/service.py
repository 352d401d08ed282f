"""The twistd service: a network in a box built from one configuration file.

``twistd -n renkei -c twistd.conf`` loads the plugin in ``twisted/plugins/renkei_plugin.py``,
which calls ``makeService``: by default a `renkei.supervisor.Supervisor` that runs every party
in a child process of its own, each of them ``twistd renkei --party NAME``, a `Box` of one
party. ``--single-process`` runs the whole `Box` in one process (for debugging). A box starts
the hub first, then every intermediate server with its back-office API, then マイナポータル
(when ``[portal]`` is configured), then (if configured) registers the demo persons and loads
the generated population.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from adapters.back_office_api import BackOfficeApi, back_office_listener
from adapters.care_insurance.bulk_query import BulkQueries
from adapters.network_link import (
    hub_listener,
    hub_transport,
    institution_listener,
    institution_transport,
    portal_listener,
    portal_transport,
)
from codes.catalogue import default_catalogue
from middleware import process_memory
from middleware.clock import ReactorTime, VirtualClock
from middleware.config import Config, ConfigError, InstitutionConfig, PopulationConfig, load_config
from middleware.deferred import deferred
from middleware.network import HUB, Transport
from middleware.node import IntermediateServer
from simulators.back_office import BackOfficeClient, BackOfficeError
from simulators.capture import Capture, CaptureFile, CapturingTransport
from simulators.faults import FaultPlan, FaultyTransport, SkewedClock
from simulators.in_memory import InMemoryNetwork
from simulators.network import jukinet
from simulators.network.hub import Hub
from simulators.portal.portal import PORTAL, Portal

__all__ = ["Box", "Options", "japan_time_in_logs", "makeService", "seed_demo", "seed_population"]


# A registration the network cannot answer yet is tried again: the hub may still be starting,
# or (parties run apart, --party) not have registered the demo residents yet.
NOT_YET = ("NetworkUnavailable", "UnknownResident")
RETRY_FOR = 60.0  # seconds
LIST_WAIT = 60.0  # seconds a node waits at start for its first permitted-query list


class Options(usage.Options):
    """twistd renkei options. One that is not valid (or a configuration that cannot be used)
    ends twistd with one line, its code and what to do (renkei/failures.py), and status 1."""

    optFlags: ClassVar[list[list[str | None]]] = [
        ["single-process", None, "Run every party in this one process (for debugging)."],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", "twistd.conf", "The configuration file (INI) describing the network."],
        [
            "party",
            "p",
            None,
            "Run one party alone: 'hub', 'portal' (マイナポータル), or an institution's name "
            "(e.g. meguro); the other "
            "parties of the configuration run elsewhere, at their configured addresses. One "
            "of the processes of an institution served by several: NAME.N (e.g. meguro.2).",
        ],
        [
            "run-dir",
            None,
            None,
            "Given by the supervisor to the parties it runs: where the network's state (clock, "
            "faults) is kept; the party follows it and what the control API changes.",
        ],
        [
            "log-dir",
            None,
            None,
            "Where the parties' logs go, one per party (default: var/log beside the "
            "configuration file).",
        ],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as failure:
            # twistd would print every option's help above the error: one line instead.
            from renkei.failures import usage_line

            raise SystemExit(usage_line("twistd renkei", failure)) from None

    def postOptions(self) -> None:
        self["loaded"] = load_config(Path(self["config"]))
        party = self["party"]
        config: Config = self["loaded"]
        if party == HUB and config.network is None:
            raise usage.UsageError("--party hub: the configuration has no [network] section")
        if party == PORTAL and config.portal is None:
            raise usage.UsageError("--party portal: the configuration has no [portal] section")
        self["instance"] = None
        if party not in (None, HUB, PORTAL):
            name, _, instance = party.partition(".")
            processes = {i.name: i.processes for i in config.institutions}
            if name not in processes or (
                instance and not (instance.isdigit() and 1 <= int(instance) <= processes[name])
            ):
                from renkei.supervisor import parties_of

                names = ", ".join(sorted({*parties_of(config), *processes}))
                raise usage.UsageError(f"--party {party}: no such party (one of {names})")
            self["party"], self["instance"] = name, int(instance) if instance else None


class Box(Service):
    """The hub (when configured) and the intermediate servers of one configuration, each
    with its listeners and back-office services, wired over mutual-TLS HTTPS."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        clock: ReactorTime | None = None,
        network: InMemoryNetwork | None = None,
        party: str | None = None,
        faults: FaultPlan | None = None,
        instance: int | None = None,
        capture: Capture | None = None,
        settle_heap: bool = False,
    ) -> None:
        self.config = config
        # Whether to freeze the heap and tune the collector once started (a process of its
        # own: twistd; not a box started inside tests or a scenario runner).
        self.settle_heap = settle_heap
        self.reactor = reactor
        # Which of the processes of an institution served by several this one is (1, 2, ...):
        # only the first loads the demo persons and the population.
        self.instance = instance
        # With ``party``, only that party runs here (``hub`` or an institution's name); the
        # others are reached at their configured addresses.
        self.party = party
        # With ``network``, the parties are linked through it in memory (no network
        # listeners, the same party code); else over mutual-TLS HTTPS as configured.
        self.network = network
        # The network's one clock, given to every party: real time unless moved (tests, and
        # later the control API, freeze, advance or set it).
        self.clock: Any = VirtualClock(reactor) if clock is None else clock
        # The faults injected on the links of the parties of this process (none at first).
        self.faults = FaultPlan(clock=self.clock) if faults is None else faults
        # Where every message the parties send is captured, if anywhere: a scenario's log,
        # or this process's capture file, which the control API switches on and off.
        self.capture = capture
        self.catalogue = default_catalogue()
        self.hub: Hub | None = None
        self.hub_metrics: Any = None
        self.nodes: dict[str, IntermediateServer] = {}
        self.back_offices: dict[str, BackOfficeApi] = {}
        self.consoles: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.replica_inboxes: dict[str, Any] = {}
        # マイナポータル and its web pages, when configured and run here.
        self.portal: Portal | None = None
        self.portal_web: Any = None
        # Each party's services, in the order they start (they stop in the reverse order).
        self.parties: dict[str, list[Service]] = {}
        if config.network is not None and party in (None, HUB):
            self._add(HUB, self._hub_services(config))
        for institution in config.institutions:
            if party in (None, institution.name):
                self._add(institution.name, self._institution_services(institution))
        if config.portal is not None and party in (None, PORTAL):
            self._add(PORTAL, self._portal_services(config))

    def _hub_services(self, config: Config) -> list[Service]:
        if self.network is not None:
            hub = Hub(
                config,
                self.reactor,
                self._faulty(HUB, self.network.transport(HUB)),
                self._party_clock(HUB),
            )
            self.network.connect(HUB, hub)
            services: list[Service] = [hub]
        else:
            transport = self._faulty(HUB, hub_transport(self.reactor, config))
            hub = Hub(config, self.reactor, transport, self._party_clock(HUB))
            services = [hub, hub_listener(self.reactor, config, hub)]
        self.hub = hub
        services = self._alerted(hub.health, hub.clock, "") + services
        assert config.network is not None
        if config.network.health_listen is not None:
            from simulators.network.health import HubMetrics, health_listener

            self.hub_metrics = HubMetrics(hub)
            listener = health_listener(self.hub_metrics, config.network.health_listen, self.reactor)
            services += [self.hub_metrics, listener]
        return services

    def _institution_services(self, institution: InstitutionConfig) -> list[Service]:
        from adapters.care_insurance.replica_file import ReplicaInbox
        from adapters.console import Console, console_listener
        from adapters.metrics import NodeMetrics, metrics_listener

        reactor, name = self.reactor, institution.name
        transport: Transport = self._faulty(
            institution.code,
            self.network.transport(institution.code)
            if self.network is not None
            else institution_transport(reactor, self.config, institution),
        )
        node = IntermediateServer(
            self.config,
            institution,
            self.catalogue,
            reactor,
            transport,
            self._party_clock(institution.code),
        )
        self.nodes[name] = node
        services = [
            *self._alerted(node.health, node.clock, institution.console_address or ""),
            node,
        ]
        if self.network is not None:
            self.network.connect(institution.code, node)
        else:
            services.append(institution_listener(reactor, self.config, institution, node))
        bulk_queries = BulkQueries(node, reactor)
        self.back_offices[name] = BackOfficeApi(node, bulk_queries, reactor)
        services += [bulk_queries, back_office_listener(self.back_offices[name], reactor)]
        if institution.console_listen is not None:
            self.consoles[name] = Console(
                node, institution.console_idle_timeout, fault_notes=self._fault_notes
            )
            services.append(console_listener(self.consoles[name], reactor))
        if institution.metrics_listen is not None:
            self.metrics[name] = NodeMetrics(node)
            services += [self.metrics[name], metrics_listener(self.metrics[name], reactor)]
        if institution.replica_inbox is not None:
            self.replica_inboxes[name] = ReplicaInbox(node, institution.replica_inbox, reactor)
            services.append(self.replica_inboxes[name])
        return services

    def _portal_services(self, config: Config) -> list[Service]:
        from simulators.portal.web import PortalWeb, portal_web_listener

        assert config.portal is not None
        code = config.portal.code
        transport = self._faulty(
            code,
            self.network.transport(code)
            if self.network is not None
            else portal_transport(self.reactor, config),
        )
        portal = Portal(config, self.catalogue, self.reactor, transport, self._party_clock(code))
        self.portal = portal
        services: list[Service] = [
            *self._alerted(portal.health, portal.clock, config.portal.web_address),
            portal,
        ]
        if self.network is not None:
            self.network.connect(code, portal)
        else:
            services.append(portal_listener(self.reactor, config, portal))
        self.portal_web = PortalWeb(portal)
        services.append(portal_web_listener(self.portal_web, self.reactor))
        return services

    def _alerted(self, health: Any, clock: ReactorTime, external_url: str) -> list[Service]:
        """The alert webhook of a party ([alerts]), if any: started before the party, so that
        the changes of its health from its first look on are posted."""
        if self.config.alerts is None:
            return []
        from adapters.alerts import AlertWebhook

        return [
            AlertWebhook(health, self.config.alerts, clock, self.reactor, external_url=external_url)
        ]

    def _fault_notes(self, number: str, message_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The faults that hit the messages of a transaction in this process (consoles)."""
        from middleware.clock import iso

        return [
            {
                "at": iso(hit.at),
                "fault": hit.fault,
                "kind": hit.kind,
                "source": hit.source,
                "destination": hit.destination,
                "operation": hit.operation,
                "message_id": hit.message_id,
            }
            for hit in self.faults.hits_of(number, message_ids)
        ]

    def _party_clock(self, party: str) -> SkewedClock:
        """A party's clock: the network's, skewed when a fault says so."""
        return SkewedClock(self.clock, self.faults, party)

    def _faulty(self, source: str, transport: Transport) -> Transport:
        """A party's transport with the box's faults applied to what it sends (and what it
        sends captured, when the box captures)."""
        faulty = FaultyTransport(transport, source, self.faults, self.reactor)
        if self.capture is None:
            return faulty
        return CapturingTransport(faulty, source, self.capture, self.clock)

    def member(self) -> Any:
        """This process's parties as a member of the control API (renkei/control.py)."""
        from renkei.control import LocalMember

        codes = {
            party if party == HUB or self.instance is None else f"{party}.{self.instance}": (
                self._code_of(party)
            )
            for party in self.parties
        }
        capture = self.capture if isinstance(self.capture, CaptureFile) else None
        return LocalMember(self.clock, self.faults, codes, capture)

    def _code_of(self, party: str) -> str:
        """The name a party goes by on the network: ``hub``, or its institution code."""
        if party == HUB:
            return HUB
        if party == PORTAL and self.config.portal is not None:
            return self.config.portal.code
        return self.config.institution(party).code

    def _add(self, party: str, services: list[Service]) -> None:
        self.parties[party] = services

    async def _start_services(self, services: list[Service]) -> None:
        for service in services:
            await maybeDeferred(service.startService)

    async def _stop_services(self, services: list[Service]) -> None:
        for service in reversed(services):
            # One service failing to stop must not leave the others (and their database
            # threads) running.
            try:
                if service.running:
                    await maybeDeferred(service.stopService)
            except Exception:
                self.log.failure("{service} did not stop cleanly", service=service)

    @deferred
    async def stop_party(self, party: str) -> None:
        """Stop one party (``hub``, ``portal`` or an institution's name) and every service of
        it, its listeners included, as when that party's process dies; the others go on."""
        if self.network is not None:
            self.network.disconnect(self._code_of(party))
        await self._stop_services(self.parties.pop(party))

    @deferred
    async def start_party(
        self, party: str, config: Config | None = None
    ) -> Hub | IntermediateServer | Portal | None:
        """Start a stopped party again, from its configuration (for the hub, ``config`` may
        give another one, e.g. other rules); fires with the new hub, node or portal."""
        if party in self.parties:
            raise ValueError(f"{party} is running")
        if party == HUB:
            services = self._hub_services(config or self.config)
        elif party == PORTAL:
            services = self._portal_services(self.config)
        else:
            services = self._institution_services(self.config.institution(party))
        self._add(party, services)
        await self._start_services(services)
        if party == HUB:
            return self.hub
        return self.portal if party == PORTAL else self.nodes[party]

    def startService(self) -> None:
        # Children start in order and each waits for the previous one's listeners.
        self.running = True
        self.start().addErrback(self._failed_to_start)

    def _failed_to_start(self, failure: Any) -> None:
        self.log.failure("renkei could not start", failure)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    @deferred
    async def start(self) -> None:
        """Start everything in order; fires when all listeners are up. A box that cannot
        start (a port taken, a database unreachable) stops what it had started, then fails."""
        self.running = True
        try:
            for services in list(self.parties.values()):
                await self._start_services(services)
            if self.instance in (None, 1) and self.config.demo_data is not None:
                await seed_demo(self, self.config.demo_data)
            if self.instance in (None, 1) and self.config.population is not None:
                await seed_population(self, self.config.population)
        except Exception:
            await self.stopService()
            raise
        await self._lists_in_force()
        for node in self.nodes.values():
            self.log.info(
                "{name} ({code}) ready: back-office API at {address}, console at {console}",
                name=node.institution.display_name,
                code=node.code,
                address=node.institution.back_office_address,
                console=node.institution.console_address or "(none)",
            )
        if self.portal is not None:
            self.log.info(
                "{name} ready: its pages at {address}",
                name=self.portal.settings.display_name,
                address=self.portal.settings.web_address,
            )
        if self.settle_heap:
            process_memory.settle_heap()
        self.log.info(
            "renkei ready; try `.venv/bin/renkei use-case 1 -c {path}` (1 to 4)",
            path=self.config.path,
        )

    async def _lists_in_force(self) -> None:
        """Wait (up to `LIST_WAIT` seconds) until every node here has a permitted-query list
        in force: a node started apart from its hub gets it a moment after the hub is up,
        and "ready" should mean that it can query."""
        waited = 0.0
        while waited < LIST_WAIT:
            missing = [
                name
                for name, node in self.nodes.items()
                if node.lists.current is None or node.lists.current.expires_at <= node.now()
            ]
            if not missing:
                return
            await deferLater(self.reactor, 0.2, lambda: None)
            waited += 0.2
        self.log.warn("no permitted-query list yet at {names}", names=", ".join(missing))

    @deferred
    async def stopService(self) -> None:
        # Stop in reverse order of start: institutions (the last started first), then the hub.
        self.running = False
        for services in reversed(list(self.parties.values())):
            await self._stop_services(services)


@deferred
async def seed_demo(box: Box, path: Path) -> None:
    """Register the demo population: residents at the registry, persons and replica at nodes."""
    demo = json.loads(path.read_text(encoding="utf-8"))
    if box.hub is not None:
        for person in demo["persons"]:
            await box.hub.database.run(jukinet.register_resident, person["individual_number"])
    for name, node in box.nodes.items():
        # Persons through the first system; each record through the system keeping its 副本.
        clients = {
            system.name: BackOfficeClient(box.reactor, box.config, node.institution, system.name)
            for system in node.institution.systems
        }
        keeper = {
            code: clients[system.name]
            for system in node.institution.systems
            for code in system.information_names
        }
        try:
            client = clients[node.institution.back_office_systems[0]]
            for person in demo["persons"]:
                number = person["registrations"].get(name)
                if number is not None:
                    await _retrying(
                        box, client.register_person, number, person["individual_number"]
                    )
            for record in demo["replica_records"].get(name, []):
                try:
                    await keeper[record["information_name"]].register_replica_record(record)
                except BackOfficeError as refusal:
                    if refusal.code != "RecordIdExists":
                        raise
        finally:
            for client in clients.values():
                await client.close()
    box.log.info("demo population registered")


@deferred
async def seed_population(box: Box, population: PopulationConfig) -> None:
    """Load the generated population (docs/population.md): residents at the registry, then
    each institution's persons and 副本 through its back-office API."""
    from simulators import seeding
    from simulators.population import world

    generated = world(population.size, population.seed)
    if box.hub is not None:
        await box.hub.database.run(jukinet.register_residents, seeding.residents(generated))
    loads = [
        _load_holdings(box, name, seeding.holdings(node.institution, generated))
        for name, node in box.nodes.items()
    ]
    await gatherResults(loads, consumeErrors=True)


@deferred
async def _load_holdings(box: Box, name: str, held: list[Any]) -> None:
    from simulators import seeding

    if not held:
        return
    institution = box.nodes[name].institution
    stored = await seeding.register_holdings(box.reactor, box.config, institution, held)
    box.log.info(
        "{name}: {persons} persons and {records} 副本 records loaded",
        name=name,
        persons=len(held),
        records=stored,
    )


async def _retrying(box: Box, call: Callable[..., Deferred[Any]], *args: Any) -> Any:
    attempts = int(RETRY_FOR / 0.5)
    for attempt in range(attempts):
        try:
            result = await call(*args)
            return result
        except BackOfficeError as refusal:
            if refusal.code not in NOT_YET or attempt == attempts - 1:
                raise
            await deferLater(box.reactor, 0.5, lambda: None)


def japan_time_in_logs() -> None:
    """Stamp this process's log lines (and those of the parties it starts, which inherit its
    environment) with Japan time, the time their readers live in, unless ``TZ`` names
    another zone: Twisted's log observers write the local time."""
    if "TZ" not in os.environ:
        os.environ["TZ"] = "JST-9"  # POSIX: Japan Standard Time, UTC+9, no summer time
        time.tzset()


def makeService(options: Options) -> Service:
    """The twistd service maker's body: one party (``--party``), every party in this process
    (``--single-process``), or every party in a process of its own (the default)."""
    from twisted.application.service import MultiService
    from twisted.internet import reactor

    japan_time_in_logs()

    from renkei.control import (
        CAPTURE_DIR,
        ControlApi,
        Controller,
        PartyControl,
        control_listener,
        ensure_token,
    )
    from renkei.supervisor import Supervisor

    config: Config = options["loaded"]
    var = config.path.parent / "var"
    party, run_dir, instance = options["party"], options["run-dir"], options["instance"]
    if party is not None or options["single-process"]:
        # What this process's parties send is captured while the control API says so, into
        # a file of its own in the run directory.
        name = "box" if party is None else party if instance is None else f"{party}.{instance}"
        capture_dir = (Path(run_dir) if run_dir is not None else var / "run") / CAPTURE_DIR
        capture = CaptureFile(capture_dir / f"{name}.jsonl", reactor)
        box = Box(
            config, reactor, party=party, instance=instance, capture=capture, settle_heap=True
        )
        process = MultiService()
        if party is not None and run_dir is not None:  # a party run by the supervisor
            control = PartyControl(reactor, Path(run_dir), name, box.member())
            control.setServiceParent(process)
        elif party is None and config.control is not None:  # the control API is served here
            controller = Controller(reactor, {"box": box.member()}, var / "run")
            api = ControlApi(controller, ensure_token(config.control.token))
            control_listener(config, api, reactor).setServiceParent(process)
        box.setServiceParent(process)
        return process
    log_dir = options["log-dir"]
    logs = Path(log_dir) if log_dir else var / "log"
    return Supervisor(config, logs, reactor, run_dir=var / "run")
