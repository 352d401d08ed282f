"""What a scenario acts on: the network in a box the runner started for it in memory
(`BoxTarget`), or a network whose parties run as processes (`RunningTarget`: ``make run``, or
one the runner started for the scenario, renkei/scenarios/processes.py).

A conversation (renkei/scenarios/conversation.py) takes every step through its target: the
faults, the clock, a party's life, a party's own link, the databases it reads records from,
the messages captured. Both targets read the parties' databases the same way
(`read_database`): the records, the hash chains and the 符号 a step needs are read there,
whether the party runs in this process or in another. Staff act in the parties' consoles
(renkei/scenarios/staff.py), which both serve alike. What a target cannot do is said by
`cannot`, and a scenario that needs it is skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from codes.catalogue import Catalogue, default_catalogue
from middleware.clock import ClockState, VirtualClock, utc_now
from middleware.config import Config
from middleware.network import HUB, Transport
from renkei.control import parse_duration, parse_moment
from renkei.scenarios.captured import CapturedLog
from renkei.scenarios.outcomes import StepFailed
from simulators.capture import MessageLog
from simulators.faults import Fault, Hit

__all__ = [
    "BoxTarget",
    "ControlClient",
    "ControlRefused",
    "RunningTarget",
    "SocketsBoxTarget",
    "Target",
    "box_cannot",
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

    async def kill_party(self, party: str) -> None:
        """Kill a party's process as a crash (SIGKILL); fires once its supervisor has
        started it again and it is ready."""

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


KILL_NEEDS = "needs parties in processes of their own (given: {network: processes})"


def box_cannot(kind: str) -> str | None:
    """What a network in a box of the run cannot do (known before it starts): kill a party's
    process."""
    return KILL_NEEDS if kind == "kill" else None


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
        return box_cannot(kind)

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

    async def kill_party(self, party: str) -> None:
        raise NotImplementedError(KILL_NEEDS)

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


# The steps a scenario may take against a network of processes. Staff act through the
# consoles.
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
        "clock",
        "given clock",
        "given network",
        "send",
        "resend",
    }
)
PARTY_STEPS = frozenset({"stop", "start", "kill"})  # with parties in processes of their own
SETTLE = 3.0  # seconds the exchanges in flight at a scenario's end have to end and be kept


class RunningTarget:
    """A network whose parties run as processes, already running (``make run``) or started
    for the scenario (``fresh``): the faults, the clock, the capture and each party's life
    through its control API (docs/control.md), a party's own link made from its PKI, the
    records read from its databases. `begin` and `end` frame a scenario: what it changed
    (faults, the clock, parties it stopped, the capture) is put back at its end."""

    def __init__(self, config: Config, reactor: Any, fresh: bool = False) -> None:
        self.config = config
        self._reactor = reactor
        # The network's clock, as the control API last told it (the time of the calls).
        self.clock = VirtualClock(reactor)
        self._captured = CapturedLog(reactor)
        self.capture: MessageLog = self._captured
        self.catalogue = default_catalogue()
        self.fresh = fresh
        self._control = ControlClient(reactor, config)
        self._processes: list[str] | None = None  # the parties' processes (None: in one)
        self._links: dict[str, Transport] = {}
        self._stopped: set[str] = set()  # the processes the scenario left stopped
        self._clock_found: dict[str, Any] = {}  # the clock's view at the scenario's start
        self._clock_moved = False
        self._capture_found = False
        self._faults: dict[str, str] = {}  # the scenario's faults: name in force → f1, f2...
        self._hits: list[Hit] = []

    async def connect(self) -> None:
        """Learn how the network runs: its parties' processes, or all in one."""
        try:
            listed = await self._control.request("GET", "/parties")
        except ControlRefused as refusal:
            if refusal.code != "PartiesInOneProcess":
                raise
            self._processes = None
        else:
            self._processes = [party["name"] for party in listed["parties"]]

    def cannot(self, kind: str) -> str | None:
        if kind in ("given fresh", "given permitted_list"):
            return None if self.fresh else "needs a network made for the scenario"
        if kind in RUNNING_STEPS:
            return None
        if kind in PARTY_STEPS:
            if self._processes is None:
                return "needs parties in processes of their own (the network runs in one)"
            return None
        if kind == "given population" and self.config.population is not None:
            return None  # the one it loaded: the conversation checks that it is the one named
        if kind == "given population":
            return "needs a network that loaded a generated population ([population])"
        return "needs the network in a box of the run"

    # -- a scenario's frame -------------------------------------------------------------------

    async def begin(self) -> None:
        """The scenario starts: note where the clock stands and have every message captured
        from now."""
        self._clock_found = await self._control.request("GET", "/clock")
        self._mirror(self._clock_found)
        capture = await self._control.request("GET", "/capture")
        self._capture_found = bool(capture["capture"])
        if capture["directory"] is not None:
            self._captured.start(Path(capture["directory"]))
        if not self._capture_found:
            await self._control.request("POST", "/capture", {"on": True})

    async def end(self, calls: list[dict[str, Any]]) -> tuple[MessageLog, list[str]]:
        """The scenario has ended: its faults removed (their hits kept), every message it
        captured read (with the back offices' ``calls``, in one order), the capture as it
        was, the parties it left stopped started again, the clock put back where it stood
        at its start; what could not be done, said."""
        problems: list[str] = []

        async def attempt(what: str, work: Any) -> None:
            try:
                await work
            except Exception as failure:
                problems.append(f"{what}: {failure}")

        await attempt("the faults' hits not read", self._read_hits())
        await attempt("the faults not cleared", self.clear_faults())
        await attempt("the capture not settled", self._settle())
        if not self._capture_found:
            await attempt(
                "the capture not switched off",
                self._control.request("POST", "/capture", {"on": False}),
            )
        log = self._captured.conversation(calls)
        for process in sorted(self._stopped):
            await attempt(f"{process} not started again", self._start_process(process))
        if self._clock_moved:
            await attempt("the clock not put back", self._put_clock_back())
        for link in self._links.values():
            await attempt("a link not closed", link.close())
        return log, problems

    async def _settle(self) -> None:
        """Until no exchange kept by the capture is in flight (at most `SETTLE` seconds)."""
        from twisted.internet.task import deferLater

        waited = 0.0
        while waited < SETTLE:
            if not (await self._control.request("GET", "/capture"))["in_flight"]:
                return
            await deferLater(self._reactor, 0.1, lambda: None)
            waited += 0.1

    async def _read_hits(self) -> None:
        from datetime import datetime

        if not self._faults:
            return
        recent = (await self._control.request("GET", "/hits"))["hits"]
        self._hits = [
            Hit(
                fault=self._faults[hit["fault"]],
                kind=hit["kind"],
                source=hit["source"],
                destination=hit["destination"],
                operation=hit["operation"],
                message_id=hit["message_id"],
                at=datetime.fromisoformat(hit["at"]),
            )
            for hit in recent
            if hit["fault"] in self._faults
        ]

    # -- faults -------------------------------------------------------------------------------

    async def add_fault(self, fault: Fault) -> str:
        name = str((await self._control.request("POST", "/faults", fault.to_json()))["name"])
        self._faults[name] = f"f{len(self._faults) + 1}"
        return name

    async def clear_faults(self) -> None:
        await self._control.request("DELETE", "/faults")

    async def fault_hits(self) -> dict[str, int]:
        listed = await self._control.request("GET", "/faults")
        return {fault["name"]: fault["hits"] for fault in listed["faults"]}

    def hits(self) -> list[Hit]:
        return list(self._hits)

    # -- the clock ----------------------------------------------------------------------------

    def _mirror(self, view: dict[str, Any]) -> datetime:
        """Follow the network's clock as ``view`` (the control API's) tells it; its time."""
        frozen = float(view["seconds"]) if view["frozen"] else None
        self.clock.adopt(ClockState(offset=float(view["offset"]), frozen_at=frozen))
        return utc_now(self.clock)

    async def move_clock(self, change: dict[str, Any]) -> datetime:
        self._clock_moved = True
        if "freeze" in change:
            view = await self._control.request("POST", "/clock/freeze", {})
        elif "resume" in change:
            view = await self._control.request("POST", "/clock/resume", {})
        elif "advance" in change:
            seconds = parse_duration(str(change["advance"]))
            view = await self._control.request("POST", "/clock/advance", {"seconds": seconds})
        else:
            view = await self._control.request("POST", "/clock/set", {"at": change["set"]})
        return self._mirror(view)

    async def _put_clock_back(self) -> None:
        """The clock as the scenario found it: frozen at the same time, or running at the
        same offset from real time."""
        from datetime import UTC

        found = self._clock_found
        if found["frozen"]:
            moment = datetime.fromtimestamp(float(found["seconds"]), UTC).isoformat()
            await self._control.request("POST", "/clock/freeze", {})
            view = await self._control.request("POST", "/clock/set", {"at": moment})
        else:
            await self._control.request("POST", "/clock/resume", {})
            view = await self._control.request("POST", "/clock/set", {"offset": found["offset"]})
        self._mirror(view)

    # -- the parties' lives -------------------------------------------------------------------

    def _processes_of(self, party: str) -> list[str]:
        """The processes of ``party`` (hub, or an institution's name or code)."""
        name = HUB if party == HUB else self.config.member(party).name
        processes = self._processes or []
        return [p for p in processes if p == name or p.startswith(f"{name}.")]

    async def stop_party(self, party: str) -> None:
        for process in self._processes_of(party):
            self._stopped.add(process)
            await self._control.request("POST", f"/parties/{process}/stop", {})

    async def _start_process(self, process: str) -> None:
        view = await self._control.request("POST", f"/parties/{process}/start", {"wait": True})
        self._stopped.discard(process)
        if not view["ready"]:
            raise StepFailed(f"{process} is not ready again (see {view['log']})")

    async def start_party(self, party: str) -> None:
        for process in self._processes_of(party):
            await self._start_process(process)

    async def kill_party(self, party: str) -> None:
        for process in self._processes_of(party):
            view = await self._control.request("POST", f"/parties/{process}/kill", {"wait": True})
            if not view["ready"]:
                raise StepFailed(f"{process} is not ready again after its kill (see {view['log']})")

    # -- a party's own link -------------------------------------------------------------------

    def transport(self, party: str) -> Transport:
        """The mutual-TLS link of the party of code ``party``, made from the network's PKI
        as the party makes its own (renkei/service.py), outside its outbox."""
        from adapters.network_link import hub_transport, institution_transport

        if party not in self._links:
            self._links[party] = (
                hub_transport(self._reactor, self.config)
                if party == HUB
                else institution_transport(
                    self._reactor, self.config, self.config.institution(party)
                )
            )
        return self._links[party]


class ControlRefused(StepFailed):
    """The control API refused a request: its code and messages."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"the control API refused: {code}: {message}")
        self.code = code


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
            raise ControlRefused(error["code"], error["message_en"])
        return document


def party_code(config: Config, party: str) -> str:
    """The code of ``party`` (hub, or an institution's name or code)."""
    if party == HUB:
        return HUB
    return str(config.member(party).code)
