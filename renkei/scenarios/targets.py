"""What a scenario acts on: the network in a box the runner started for it (`BoxTarget`), or a
network that runs already (`RunningTarget`, ``make run``).

A conversation (renkei/scenarios/conversation.py) takes every step through its target: the
faults, the clock, a party's life, a party's own link, the databases it reads records from.
Both targets read the parties' databases the same way (`read_database`): the records, the
hash chains and the 符号 a step needs are read there, whether the party runs in this process
or in another. Staff act in the parties' consoles (renkei/scenarios/staff.py), which both
serve alike. What a target cannot do is said by `cannot`, and a scenario that needs it is
skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from codes.catalogue import Catalogue, default_catalogue
from middleware.clock import utc_now
from middleware.config import Config
from middleware.network import HUB, Transport
from renkei.control import parse_duration, parse_moment
from renkei.scenarios.outcomes import StepFailed
from simulators.capture import MessageLog
from simulators.faults import Fault, Hit

__all__ = [
    "BoxTarget",
    "ControlClient",
    "RunningTarget",
    "SocketsBoxTarget",
    "Target",
    "party_code",
    "read_database",
]


class Target(Protocol):
    """A network a scenario runs against."""

    config: Config
    clock: Any  # the network's clock, as `middleware.clock.utc_now` reads it
    capture: MessageLog  # every message the parties sent, as they sent it (when captured)
    catalogue: Catalogue
    fresh: bool  # its databases were made for this scenario (nothing of an earlier run)

    def cannot(self, kind: str) -> str | None:
        """Why this target cannot take a step of ``kind`` (or a ``given`` entry named
        ``given KEY``), or None when it can."""

    async def add_fault(self, fault: Fault) -> str:
        """Put ``fault`` in force; its name there."""

    async def clear_faults(self) -> None:
        """No fault in force any more."""

    async def fault_hits(self) -> dict[str, int]:
        """How many messages each fault in force has hit, by its name."""

    def hits(self) -> list[Hit]:
        """Every fault's hits, for the report."""

    async def move_clock(self, change: dict[str, Any]) -> datetime:
        """Freeze, resume, advance or set the network's clock (a ``clock`` step's
        argument); the network's time then."""

    async def stop_party(self, party: str) -> None:
        """Stop a party as when its process dies."""

    async def start_party(self, party: str) -> None:
        """Start a stopped party again."""

    def transport(self, party: str) -> Transport:
        """The link of the party of code ``party``, outside its outbox."""


async def read_database(
    reactor: Any, url: str, function: Callable[..., Any], *arguments: Any, write: bool = False
) -> Any:
    """``function(connection, *arguments)`` in a read transaction of the database at ``url``
    (a party's; opened for the call, so a stopped party's database can be read too), or in
    a write transaction with ``write`` (what the network's own registry is given: residents
    at the hub)."""
    from middleware.storage import Database

    database = Database(reactor, url, threads=1)
    database.start()
    try:
        if write:
            return await database.run(function, *arguments)
        return await database.read(function, *arguments)
    finally:
        database.stop()


class BoxTarget:
    """The network in a box the runner started for one scenario (renkei/service.py), in
    memory (`SocketsBoxTarget`: over loopback mutual TLS): every step can be taken."""

    def __init__(self, box: Any) -> None:
        self._box = box
        self.config: Config = box.config
        self.clock = box.clock
        self.capture: MessageLog = box.capture
        self.catalogue: Catalogue = box.catalogue
        self.fresh = True

    def cannot(self, kind: str) -> str | None:
        return None

    async def add_fault(self, fault: Fault) -> str:
        return str(self._box.faults.add(fault))

    async def clear_faults(self) -> None:
        self._box.faults.clear()

    async def fault_hits(self) -> dict[str, int]:
        return {name: hits for name, (_, hits) in self._box.faults.faults().items()}

    def hits(self) -> list[Hit]:
        return list(self._box.faults.hits)

    async def move_clock(self, change: dict[str, Any]) -> datetime:
        clock = self._box.clock
        if "freeze" in change:
            clock.freeze()
        elif "resume" in change:
            clock.resume()
        elif "advance" in change:
            clock.advance(parse_duration(str(change["advance"])))
        else:
            clock.set(parse_moment(change["set"]))
        return utc_now(clock)

    async def stop_party(self, party: str) -> None:
        await self._box.stop_party(party)

    async def start_party(self, party: str) -> None:
        await self._box.start_party(party)

    def transport(self, party: str) -> Transport:
        transport: Transport = self._box.network.transport(party)
        return transport

    async def close(self) -> None:
        """Let go of what the target opened for the scenario (nothing, in memory)."""


class SocketsBoxTarget(BoxTarget):
    """The network in a box the runner started for one scenario over loopback mutual TLS
    (``given: {network: sockets}``): every listener and client real, as ``twistd renkei
    --single-process`` runs them; the box still captures every message and applies the
    faults (it wraps each party's transport). A party's own link (``send``, ``resend``) is a
    mutual-TLS client of its own with the party's certificate, outside its outbox."""

    def __init__(self, box: Any) -> None:
        super().__init__(box)
        self._links: dict[str, Any] = {}

    def transport(self, party: str) -> Transport:
        from adapters.network_link import hub_transport, institution_transport

        if party not in self._links:
            reactor, config = self._box.reactor, self.config
            self._links[party] = (
                hub_transport(reactor, config)
                if party == HUB
                else institution_transport(reactor, config, config.institution(party))
            )
        link: Transport = self._links[party]
        return link

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()


# The steps a scenario may take against a running network (the others need the network in a
# box of the run: its clock, its parties' lives, its links). Staff act through the consoles.
RUNNING_STEPS = frozenset(
    {
        "query",
        "wait",
        "expect",
        "faults",
        "bulk_query",
        "record",
        "sleep",
        "decide",
        "console",
        "register",
        "load",
        "call",
        "given residents",
    }
)


class RunningTarget:
    """A network that runs already (``make run``): faults through its control API
    (docs/control.md), records from its databases; nothing captured."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.clock = reactor
        self.capture = MessageLog()
        self.catalogue = default_catalogue()
        self.fresh = False
        self._control = ControlClient(reactor, config)

    def cannot(self, kind: str) -> str | None:
        if kind in RUNNING_STEPS:
            return None
        if kind == "given population" and self.config.population is not None:
            return None  # the one it loaded: the conversation checks that it is the one named
        if kind == "given population":
            return "needs a network that loaded a generated population ([population])"
        return "needs the network in a box of the run"

    async def add_fault(self, fault: Fault) -> str:
        return str((await self._control.request("POST", "/faults", fault.to_json()))["name"])

    async def clear_faults(self) -> None:
        await self._control.request("DELETE", "/faults")

    async def fault_hits(self) -> dict[str, int]:
        listed = await self._control.request("GET", "/faults")
        return {fault["name"]: fault["hits"] for fault in listed["faults"]}

    def hits(self) -> list[Hit]:
        return []

    async def move_clock(self, change: dict[str, Any]) -> datetime:
        raise NotImplementedError("the clock of a running network")

    async def stop_party(self, party: str) -> None:
        raise NotImplementedError("stopping a party of a running network")

    async def start_party(self, party: str) -> None:
        raise NotImplementedError("starting a party of a running network")

    def transport(self, party: str) -> Transport:
        raise NotImplementedError("a party's own link in a running network")


class ControlClient:
    """A running network's control API (docs/control.md), with its token."""

    def __init__(self, reactor: Any, config: Config) -> None:
        from renkei.control import read_token

        if config.control is None:
            raise LookupError(f"{config.path} has no [control] section (docs/control.md)")
        self._address = config.control.address
        self._token = read_token(config.control.token)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        import json

        import treq
        from twisted.web.http_headers import Headers

        answer = await treq.request(
            method,
            self._address + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=Headers({"Authorization": [f"Bearer {self._token}"]}),
        )
        document = json.loads(await answer.content())
        if answer.code >= 400:
            error = document["error"]
            raise StepFailed(f"the control API refused: {error['code']}: {error['message_en']}")
        return document


def party_code(config: Config, party: str) -> str:
    """The code of ``party`` (hub, or an institution's name or code)."""
    if party == HUB:
        return HUB
    return str(config.member(party).code)
