"""The twistd service: a network in a box built from one configuration file.

``twistd -n renkei -c twistd.conf`` loads the plugin in ``twisted/plugins/renkei_plugin.py``,
which calls ``make_service``. The box starts the hub first, then every intermediate server
with its back-office API, then (if configured) registers the demo persons and loads the
generated population.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from twisted.application.service import MultiService
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from adapters.back_office_api import BackOfficeApi
from codes.catalogue import default_catalogue
from middleware.config import Config, ConfigError, PopulationConfig, load_config
from middleware.node import IntermediateServer
from simulators.back_office import BackOfficeClient, BackOfficeError
from simulators.network import jukinet
from simulators.network.hub import Hub


class Options(usage.Options):
    """twistd renkei options."""

    optParameters: ClassVar[list[list[str]]] = [
        ["config", "c", "twistd.conf", "The configuration file (INI) describing the network."],
    ]

    def postOptions(self) -> None:
        try:
            self["loaded"] = load_config(Path(self["config"]))
        except ConfigError as failure:
            raise usage.UsageError(str(failure)) from None


class Box(MultiService):
    """The hub (when configured) and the intermediate servers of one configuration."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        catalogue = default_catalogue()
        self.hub = Hub(config, reactor) if config.network is not None else None
        self.nodes = {
            institution.name: IntermediateServer(config, institution, catalogue, reactor)
            for institution in config.institutions
        }
        self.back_offices = {
            name: BackOfficeApi(node, reactor) for name, node in self.nodes.items()
        }
        # The operator console of each node that has ``console_listen``.
        from adapters.console import ConsoleService

        self.consoles = {
            name: ConsoleService(node, reactor)
            for name, node in self.nodes.items()
            if node.institution.console_listen is not None
        }
        # Prometheus metrics of each node that has ``metrics_listen``.
        from adapters.metrics import NodeMetrics

        self.metrics = {
            name: NodeMetrics(node, reactor)
            for name, node in self.nodes.items()
            if node.institution.metrics_listen is not None
        }
        # The watched 副本 folder of each node that has ``replica_inbox``.
        from adapters.care_insurance.replica_file import ReplicaInbox

        self.replica_inboxes = {
            name: ReplicaInbox(node, node.institution.replica_inbox, reactor)
            for name, node in self.nodes.items()
            if node.institution.replica_inbox is not None
        }
        if self.hub is not None:
            self.hub.setServiceParent(self)
        for name, node in self.nodes.items():
            node.setServiceParent(self)
            self.back_offices[name].setServiceParent(self)
            if name in self.consoles:
                self.consoles[name].setServiceParent(self)
            if name in self.metrics:
                self.metrics[name].setServiceParent(self)
            if name in self.replica_inboxes:
                self.replica_inboxes[name].setServiceParent(self)

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

    @inlineCallbacks
    def start(self) -> Any:
        """Start everything in order; fires when all listeners are up. A box that cannot
        start (a port taken, a database unreachable) stops what it had started, then fails."""
        self.running = True
        try:
            for service in list(self):
                yield service.startService()
            if self.config.demo_data is not None:
                yield seed_demo(self, self.config.demo_data)
            if self.config.population is not None:
                yield seed_population(self, self.config.population)
        except Exception:
            yield self.stopService()
            raise
        for node in self.nodes.values():
            self.log.info(
                "{name} ({code}) ready: back-office API at {address}, console at {console}",
                name=node.institution.display_name,
                code=node.code,
                address=node.institution.back_office_address,
                console=node.institution.console_address or "(none)",
            )
        self.log.info(
            "renkei ready; try `.venv/bin/renkei use-case 1 -c {path}` (1 to 4)",
            path=self.config.path,
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        # Stop in reverse order of start: back offices and nodes before the hub.
        self.running = False
        for service in reversed(list(self)):
            # One service failing to stop must not leave the others (and their database
            # threads) running.
            try:
                yield service.stopService()
            except Exception:
                self.log.failure("{service} did not stop cleanly", service=service)


@inlineCallbacks
def seed_demo(box: Box, path: Path) -> Any:
    """Register the demo population: residents at the registry, persons and replica at nodes."""
    demo = json.loads(path.read_text(encoding="utf-8"))
    if box.hub is not None:
        for person in demo["persons"]:
            yield box.hub.database.run(jukinet.register_resident, person["individual_number"])
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
                    yield _retrying(
                        box, client.register_person, number, person["individual_number"]
                    )
            for record in demo["replica_records"].get(name, []):
                try:
                    yield keeper[record["information_name"]].register_replica_record(record)
                except BackOfficeError as refusal:
                    if refusal.code != "RecordIdExists":
                        raise
        finally:
            for client in clients.values():
                yield client.close()
    box.log.info("demo population registered")


@inlineCallbacks
def seed_population(box: Box, population: PopulationConfig) -> Any:
    """Load the generated population (docs/population.md): residents at the registry, then
    each institution's persons and 副本 through its back-office API."""
    from simulators import seeding
    from simulators.population import world

    generated = world(population.size, population.seed)
    if box.hub is not None:
        yield box.hub.database.run(jukinet.register_residents, seeding.residents(generated))
    loads = [
        _load_holdings(box, name, seeding.holdings(node.institution, generated))
        for name, node in box.nodes.items()
    ]
    yield gatherResults(loads, consumeErrors=True)


@inlineCallbacks
def _load_holdings(box: Box, name: str, held: list[Any]) -> Any:
    from simulators import seeding

    if not held:
        return
    institution = box.nodes[name].institution
    stored = yield seeding.register_holdings(box.reactor, box.config, institution, held)
    box.log.info(
        "{name}: {persons} persons and {records} 副本 records loaded",
        name=name,
        persons=len(held),
        records=stored,
    )


@inlineCallbacks
def _retrying(box: Box, call: Any, *args: Any) -> Any:
    for attempt in range(20):
        try:
            result = yield call(*args)
            return result
        except BackOfficeError as refusal:
            if refusal.code != "NetworkUnavailable" or attempt == 19:
                raise
            yield deferLater(box.reactor, 0.5, lambda: None)


def makeService(options: Options) -> Box:
    """The twistd service maker's body."""
    from twisted.internet import reactor

    return Box(options["loaded"], reactor)
