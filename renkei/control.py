"""The control API: one network clock, one set of faults and one capture switch for every
party, in every process; and each party's process stopped, started or killed alone.

A tester moves the network's time (``renkei clock``), injects faults on its links
(``renkei faults``), has every message captured (``/capture``) and stops, starts or kills
a party (``renkei party``) through a small JSON API on loopback (docs/control.md),
authenticated by a token kept in a file (``[control] token``) that only the box's user can
read.

The `Controller` keeps the `NetworkState`: where the clock stands (`ClockState`), the
faults in force and whether the parties capture what they send (each process into a file of
its own, `simulators.capture.CaptureFile`), with a generation number that every change
increases. Each change is written to the state file of the run directory, then pushed to
every member:

- in one process (``--single-process``), the box itself (`LocalMember`);
- under the supervisor, each party's process (`PartyMember`), over a UNIX socket only the
  box's user can open (AMP commands `Adopt` and `Report`). A party's process listens on its
  socket first, then adopts the state file, so a party that starts (or is restarted) while
  the state changes adopts the newest state either way; older generations are ignored.

Each process applies the state to its own clock (`middleware.clock.VirtualClock.adopt`),
fault plan (`simulators.faults.FaultPlan.replace`) and capture; processes of one machine
share real time, so they all tell the same network time. A fault's ``limit`` counts per
process. The parties' lives are the supervisor's (`PartyLife`, renkei/supervisor.py);
with ``--single-process`` there is none, and the API refuses them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from klein import Klein
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.web.server import Request

from adapters.listening import Listener
from codes import errors
from codes.errors import RenkeiError
from middleware.clock import ClockState, VirtualClock, iso
from middleware.config import Config
from middleware.deferred import deferred
from middleware.replica import JST
from simulators.capture import CaptureFile
from simulators.faults import Fault, FaultPlan, Hit

__all__ = [
    "Adopt",
    "ControlApi",
    "Controller",
    "LocalMember",
    "Member",
    "NetworkState",
    "PartyControl",
    "PartyLife",
    "PartyMember",
    "Report",
    "control_listener",
    "control_socket",
    "ensure_token",
    "parse_duration",
    "parse_moment",
    "read_token",
]

STATE_FILE = "network-state.json"
CAPTURE_DIR = "capture"  # in the run directory: a file per process (NAME.jsonl)
PUSH_TIMEOUT = 10.0  # seconds a party's process has to adopt a state
RECENT_HITS = 100  # hits each process reports at most (an AMP value holds 64 KiB)
MAX_CONTROL_BODY = 64 * 1024

_log = Logger(namespace=__name__)


# -- the state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkState:
    """The network's clock, the faults in force on its links and whether the parties
    capture what they send; ``generation`` counts the changes (a process ignores a state
    older than the one it has)."""

    generation: int = 0
    clock: ClockState = field(default_factory=ClockState)
    faults: Mapping[str, Fault] = field(default_factory=dict)
    next_fault: int = 1  # the number of the next fault's name (f1, f2, ...)
    capture: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "clock": {"offset": self.clock.offset, "frozen_at": self.clock.frozen_at},
            "faults": {name: fault.to_json() for name, fault in self.faults.items()},
            "next_fault": self.next_fault,
            "capture": self.capture,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> NetworkState:
        clock = document["clock"]
        return cls(
            generation=int(document["generation"]),
            clock=ClockState(offset=float(clock["offset"]), frozen_at=clock["frozen_at"]),
            faults={name: Fault.from_json(f) for name, f in document["faults"].items()},
            next_fault=int(document["next_fault"]),
            capture=bool(document.get("capture", False)),
        )

    def save(self, path: Path) -> None:
        """Write this state to ``path`` at once (a reader sees the old one or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        written = path.with_suffix(".tmp")
        written.write_text(json.dumps(self.to_json()), encoding="utf-8")
        os.replace(written, path)

    @classmethod
    def load(cls, path: Path) -> NetworkState | None:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None


def _hit_json(party: str, hit: Hit) -> dict[str, Any]:
    return {
        "fault": hit.fault,
        "kind": hit.kind,
        "source": hit.source,
        "destination": hit.destination,
        "operation": hit.operation,
        "message_id": hit.message_id,
        "at": iso(hit.at),
        "process": party,
    }


# -- members: where a state is applied ---------------------------------------------------------


class Member(Protocol):
    """Where the controller's state is applied: one process's parties."""

    def apply(self, state: NetworkState) -> Deferred[int]:
        """Adopt ``state``; fires with the generation now in force there."""
        ...

    def report(self) -> Deferred[dict[str, Any]]:
        """Its parties' clocks (``parties``: name → now, skew) and its faults' hits."""
        ...


class LocalMember:
    """The parties of a box in this process: its clock, its fault plan and its capture file
    (if it has one)."""

    def __init__(
        self,
        clock: VirtualClock,
        plan: FaultPlan,
        parties: Mapping[str, str],
        capture: CaptureFile | None = None,
    ) -> None:
        self._clock = clock
        self._plan = plan
        self._parties = parties  # name → the party's network code ("hub" or an institution's)
        self._capture = capture
        self._generation = -1

    def adopt(self, state: NetworkState) -> int:
        if state.generation > self._generation:
            self._generation = state.generation
            self._clock.adopt(state.clock)
            self._plan.replace(state.faults)
            if self._capture is not None:
                self._capture.on = state.capture
        return self._generation

    def apply(self, state: NetworkState) -> Deferred[int]:
        return succeed(self.adopt(state))

    def describe(self, name: str) -> dict[str, Any]:
        """What this process tells the controller (its report), as the process ``name``."""
        now = self._clock.seconds()
        return {
            "generation": self._generation,
            "parties": {
                party: {"now": now + self._plan.skew_of(code), "skew": self._plan.skew_of(code)}
                for party, code in self._parties.items()
            },
            "hits": {fault: hits for fault, (_, hits) in self._plan.faults().items()},
            "recent": [_hit_json(name, hit) for hit in list(self._plan.hits)[-RECENT_HITS:]],
            "in_flight": self._capture.in_flight if self._capture is not None else 0,
        }

    def report(self) -> Deferred[dict[str, Any]]:
        return succeed(self.describe("box"))


class Adopt(amp.Command):
    """The supervisor's state, for a party's process to adopt."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"state", amp.Unicode())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"generation", amp.Integer())]


class Report(amp.Command):
    """A party's process tells its clock and its faults' hits (JSON)."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"report", amp.Unicode())]


def control_socket(run_dir: Path, party: str) -> Path:
    """The UNIX socket of ``party``'s process for the box whose run directory is
    ``run_dir``: in a folder of the temporary directory only this user may enter (a socket's
    path is limited to about 100 bytes, which a run directory may exceed)."""
    folder = Path(tempfile.gettempdir()) / f"renkei-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    box = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return folder / f"{box}-{party}.sock"


class PartyMember:
    """A party's process under the supervisor, reached on its control socket."""

    def __init__(self, reactor: Any, socket: Path) -> None:
        self._reactor = reactor
        self._socket = socket

    async def _call(self, command: type[amp.Command], **arguments: Any) -> dict[str, Any]:
        endpoint = UNIXClientEndpoint(self._reactor, str(self._socket), timeout=PUSH_TIMEOUT)
        factory = Factory.forProtocol(_QuietAmp)
        factory.noisy = False
        protocol = await endpoint.connect(factory)
        try:
            answer = protocol.callRemote(command, **arguments)
            answer.addTimeout(PUSH_TIMEOUT, self._reactor)
            return dict(await answer)
        finally:
            protocol.transport.loseConnection()

    def apply(self, state: NetworkState) -> Deferred[int]:
        async def adopt() -> int:
            answer = await self._call(Adopt, state=json.dumps(state.to_json()))
            return int(answer["generation"])

        return Deferred.fromCoroutine(adopt())

    def report(self) -> Deferred[dict[str, Any]]:
        async def ask() -> dict[str, Any]:
            answer = await self._call(Report)
            report: dict[str, Any] = json.loads(answer["report"])
            return report

        return Deferred.fromCoroutine(ask())


class _QuietAmp(amp.AMP):
    """AMP without a log line at each connection's start and end: the supervisor opens one
    to every party's process for each request of the control API that reports."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure | None = None) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class _PartyResponder(_QuietAmp):
    def __init__(self, member: LocalMember, name: str) -> None:
        super().__init__()
        self._member = member
        self._name = name

    @Adopt.responder
    def adopt(self, state: str) -> dict[str, int]:
        return {"generation": self._member.adopt(NetworkState.from_json(json.loads(state)))}

    @Report.responder
    def tell(self) -> dict[str, str]:
        return {"report": json.dumps(self._member.describe(self._name))}


class PartyControl(Service):
    """In a party's process under the supervisor: listen on the control socket, then adopt
    the state file (before the party starts), then adopt what the supervisor pushes."""

    def __init__(self, reactor: Any, run_dir: Path, name: str, member: LocalMember) -> None:
        self._reactor = reactor
        self._run_dir = run_dir
        self._name = name
        self._member = member
        self._port: Any = None

    def startService(self) -> None:
        socket = control_socket(self._run_dir, self._name)
        socket.unlink(missing_ok=True)  # left by a predecessor that was killed
        factory = Factory.forProtocol(lambda: _PartyResponder(self._member, self._name))
        factory.noisy = False
        self._port = self._reactor.listenUNIX(str(socket), factory, mode=0o600)
        state = NetworkState.load(self._run_dir / STATE_FILE)
        if state is not None:
            self._member.adopt(state)
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
        return None


# -- the controller ----------------------------------------------------------------------------


class Controller:
    """The network's state and the members it is applied to."""

    def __init__(
        self, reactor: Any, members: Mapping[str, Member], run_dir: Path | None = None
    ) -> None:
        self._reactor = reactor
        self.members = dict(members)
        self._run_dir = run_dir
        self.state = NetworkState()
        if run_dir is not None:
            self.state.save(run_dir / STATE_FILE)  # a new box starts from real time, no faults

    def now(self) -> float:
        """The network time (POSIX seconds)."""
        return self.state.clock.seconds(self.real())

    def real(self) -> float:
        """The real time (POSIX seconds), which every process of the machine shares."""
        return float(self._reactor.seconds())

    @deferred
    async def change(self, state: NetworkState) -> dict[str, str]:
        """Put ``state`` (the next generation) in force everywhere; for each member, whether
        it adopted it (a member that is down adopts it from the state file when it starts)."""
        self.state = replace(state, generation=self.state.generation + 1)
        if self._run_dir is not None:
            self.state.save(self._run_dir / STATE_FILE)
        names = list(self.members)
        outcomes: list[str] = await gatherResults(
            [
                Deferred.fromCoroutine(_outcome(self.members[name].apply(self.state)))
                for name in names
            ]
        )
        reached = dict(zip(names, outcomes, strict=True))
        _log.info(
            "network state {generation}: clock {clock}, faults {faults}; {reached}",
            generation=self.state.generation,
            clock=self.state.clock,
            faults=", ".join(self.state.faults) or "none",
            reached=", ".join(f"{name} {outcome}" for name, outcome in reached.items()),
        )
        return reached

    # -- the clock ----------------------------------------------------------------------------

    def _clock(self, clock: ClockState) -> Deferred[dict[str, str]]:
        return self.change(replace(self.state, clock=clock))

    def freeze(self) -> Deferred[dict[str, str]]:
        if self.state.clock.frozen_at is not None:
            return self._clock(self.state.clock)
        return self._clock(ClockState(offset=self.state.clock.offset, frozen_at=self.now()))

    def resume(self) -> Deferred[dict[str, str]]:
        return self._clock(ClockState(offset=self.now() - self.real()))

    def advance(self, seconds: float) -> Deferred[dict[str, str]]:
        if seconds < 0:
            raise RenkeiError(errors.BAD_REQUEST, detail="the clock is advanced forward only")
        return self.set(self.now() + seconds)

    def set(self, moment: float) -> Deferred[dict[str, str]]:
        offset = moment - self.real()
        frozen = moment if self.state.clock.frozen_at is not None else None
        return self._clock(ClockState(offset=offset, frozen_at=frozen))

    # -- the faults ---------------------------------------------------------------------------

    @deferred
    async def add_fault(self, fault: Fault) -> str:
        name = f"f{self.state.next_fault}"
        faults = {**self.state.faults, name: fault}
        await self.change(replace(self.state, faults=faults, next_fault=self.state.next_fault + 1))
        return name

    def remove_fault(self, name: str) -> Deferred[dict[str, str]]:
        if name not in self.state.faults:
            raise RenkeiError(errors.UNKNOWN_FAULT, name=name)
        faults = {kept: f for kept, f in self.state.faults.items() if kept != name}
        return self.change(replace(self.state, faults=faults))

    def clear_faults(self) -> Deferred[dict[str, str]]:
        return self.change(replace(self.state, faults={}))

    # -- the capture --------------------------------------------------------------------------

    @property
    def capture_directory(self) -> Path | None:
        """Where the parties' processes append what they capture (a file each)."""
        return None if self._run_dir is None else self._run_dir / CAPTURE_DIR

    def capture(self, on: bool) -> Deferred[dict[str, str]]:
        """Have every party capture what it sends (``on``), or not any more."""
        return self.change(replace(self.state, capture=on))

    # -- what the members tell ----------------------------------------------------------------

    @deferred
    async def report(self) -> dict[str, Any]:
        """Every party's clock and every fault's hits, from every member that answers."""
        names = list(self.members)
        reports: list[dict[str, Any] | None] = await gatherResults(
            [Deferred.fromCoroutine(_reported(self.members[name].report())) for name in names]
        )
        parties: dict[str, Any] = {}
        hits = dict.fromkeys(self.state.faults, 0)
        recent: list[dict[str, Any]] = []
        unreachable = []
        in_flight = 0
        for name, report in zip(names, reports, strict=True):
            if report is None:
                unreachable.append(name)
                continue
            parties.update(report["parties"])
            for fault, count in report["hits"].items():
                if fault in hits:
                    hits[fault] += count
            recent += report["recent"]
            in_flight += report.get("in_flight", 0)
        recent.sort(key=lambda hit: hit["at"])
        return {
            "parties": parties,
            "hits": hits,
            "recent": recent,
            "unreachable": unreachable,
            "in_flight": in_flight,
        }


async def _outcome(applying: Deferred[int]) -> str:
    try:
        generation = await applying
    except Exception as failure:
        return f"not reached ({failure.__class__.__name__})"
    return f"at generation {generation}"


async def _reported(asking: Deferred[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        report = await asking
    except Exception:
        return None
    return report


# -- the API -----------------------------------------------------------------------------------


def ensure_token(path: Path) -> str:
    """The control API's token, made (random, readable by this user only) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return read_token(path)


def read_token(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``8d``, ``1h30m``, ``90s``, ``50ms`` or a bare number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise RenkeiError(
            errors.BAD_REQUEST, detail=f"{text!r} is not a duration such as 8d, 1h30m or 50ms"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def parse_moment(text: str) -> float:
    """POSIX seconds of an ISO 8601 time such as ``2027-04-01T09:00+09:00`` (Japan time when
    it names no offset)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RenkeiError(
            errors.BAD_REQUEST, detail=f"{text!r} is not a time such as 2027-04-01T09:00+09:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=JST)
    return moment.timestamp()


def _times(seconds: float) -> dict[str, str]:
    moment = datetime.fromtimestamp(seconds, UTC)
    return {"now": iso(moment), "now_jst": moment.astimezone(JST).isoformat(timespec="seconds")}


class PartyLife(Protocol):
    """Each party's process, stopped, started or killed alone (the supervisor's); each
    answer is the party's view (name, state, pid, ready, ready_since, log)."""

    def parties(self) -> list[dict[str, Any]]:
        """Every party's process."""
        ...

    def stop(self, party: str) -> Deferred[dict[str, Any]]:
        """SIGTERM; not started again until `start`; fires once it has ended."""
        ...

    def start(self, party: str, wait: bool = False) -> Deferred[dict[str, Any]]:
        """Start it; with ``wait``, fires once it is ready."""
        ...

    def kill(self, party: str, wait: bool = False) -> Deferred[dict[str, Any]]:
        """SIGKILL, as a crash (started again as after any death); with ``wait``, fires
        once it is ready again."""
        ...


class ControlApi:
    """The control API's routes (docs/control.md); every request carries the token. Without
    ``parties`` (every party in one process), a party's life is refused."""

    app = Klein()
    log = Logger()

    def __init__(
        self, controller: Controller, token: str, parties: PartyLife | None = None
    ) -> None:
        self.controller = controller
        self._token = token.encode()
        self._parties = parties

    def resource(self) -> Any:
        return self.app.resource()

    def _authorize(self, request: Request) -> None:
        given = request.getHeader(b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token, self._token):
            raise RenkeiError(errors.CONTROL_UNAUTHORIZED)

    def _body(self, request: Request) -> dict[str, Any]:
        assert request.content is not None
        raw = request.content.read(MAX_CONTROL_BODY + 1)
        try:
            document = json.loads(raw or b"{}")
        except ValueError:
            raise RenkeiError(errors.BAD_REQUEST, detail="the body is not JSON") from None
        if not isinstance(document, dict):
            raise RenkeiError(errors.BAD_REQUEST, detail="the body is not a JSON object")
        return document

    @app.handle_errors(Exception)
    def _refusal(self, request: Request, failure: Failure) -> bytes:
        error = failure.value
        if not isinstance(error, RenkeiError):
            if failure.check(KeyError, ValueError, TypeError):
                error = RenkeiError(errors.BAD_REQUEST, detail=str(failure.value))
            else:
                self.log.failure("internal error in the control API", failure)
                error = RenkeiError(errors.INTERNAL)
        body = {"code": error.code, "message_en": error.message_en, "message_ja": error.message_ja}
        return _json(request, {"error": body}, error.status)

    @deferred
    async def _clock_view(self, reached: dict[str, str] | None = None) -> dict[str, Any]:
        state = self.controller.state.clock
        report = await self.controller.report()
        parties = {
            name: {**_times(party["now"]), "skew": party["skew"]}
            for name, party in report["parties"].items()
        }
        view = {
            **_times(self.controller.now()),
            "seconds": self.controller.now(),
            "frozen": state.frozen_at is not None,
            "offset": self.controller.now() - self.controller.real(),
            "generation": self.controller.state.generation,
            "parties": parties,
            "unreachable": report["unreachable"],
        }
        if reached is not None:
            view["reached"] = reached
        return view

    @app.route("/clock", methods=["GET"])
    async def clock(self, request: Request) -> bytes:
        self._authorize(request)
        return _json(request, await self._clock_view())

    @app.route("/clock/<action>", methods=["POST"])
    async def move_clock(self, request: Request, action: str) -> bytes:
        self._authorize(request)
        body = self._body(request)
        if action == "freeze":
            reached = await self.controller.freeze()
        elif action == "resume":
            reached = await self.controller.resume()
        elif action == "advance":
            seconds = body.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                raise RenkeiError(errors.BAD_REQUEST, detail="advance takes seconds (a number)")
            reached = await self.controller.advance(float(seconds))
        elif action == "set" and "offset" in body:
            offset = body["offset"]
            if "at" in body or not isinstance(offset, int | float) or isinstance(offset, bool):
                raise RenkeiError(
                    errors.BAD_REQUEST, detail="set takes at (an ISO 8601 time) or offset (seconds)"
                )
            reached = await self.controller.set(self.controller.real() + float(offset))
        elif action == "set":
            if not isinstance(body.get("at"), str):
                raise RenkeiError(errors.BAD_REQUEST, detail="set takes at (an ISO 8601 time)")
            reached = await self.controller.set(parse_moment(body["at"]))
        else:
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        return _json(request, await self._clock_view(reached))

    @app.route("/faults", methods=["GET"])
    async def faults(self, request: Request) -> bytes:
        self._authorize(request)
        report = await self.controller.report()
        listed = [
            {"name": name, **fault.to_json(), "hits": report["hits"].get(name, 0)}
            for name, fault in self.controller.state.faults.items()
        ]
        return _json(request, {"faults": listed, "unreachable": report["unreachable"]})

    @app.route("/faults", methods=["POST"])
    async def add_fault(self, request: Request) -> bytes:
        self._authorize(request)
        fault = Fault.from_json(self._body(request))
        name = await self.controller.add_fault(fault)
        return _json(request, {"name": name, **fault.to_json()}, 201)

    @app.route("/faults", methods=["DELETE"])
    async def clear_faults(self, request: Request) -> bytes:
        self._authorize(request)
        return _json(request, {"reached": await self.controller.clear_faults()})

    @app.route("/faults/<name>", methods=["DELETE"])
    async def remove_fault(self, request: Request, name: str) -> bytes:
        self._authorize(request)
        return _json(request, {"reached": await self.controller.remove_fault(name)})

    @app.route("/hits", methods=["GET"])
    async def hits(self, request: Request) -> bytes:
        self._authorize(request)
        report = await self.controller.report()
        return _json(request, {"hits": report["recent"], "unreachable": report["unreachable"]})

    @app.route("/capture", methods=["GET", "POST"])
    async def capture(self, request: Request) -> bytes:
        """On or off, where the files are, how many kept exchanges are in flight; a POST
        switches it (``{"on": true}``)."""
        self._authorize(request)
        switched: dict[str, Any] = {}
        if request.method == b"POST":
            on = self._body(request).get("on")
            if not isinstance(on, bool):
                raise RenkeiError(errors.BAD_REQUEST, detail="capture takes on (true or false)")
            switched["reached"] = await self.controller.capture(on)
        report = await self.controller.report()
        directory = self.controller.capture_directory
        return _json(
            request,
            {
                "capture": self.controller.state.capture,
                "directory": None if directory is None else str(directory),
                "in_flight": report["in_flight"],
                "generation": self.controller.state.generation,
                "unreachable": report["unreachable"],
                **switched,
            },
        )

    def _life(self) -> PartyLife:
        if self._parties is None:
            raise RenkeiError(errors.PARTIES_IN_ONE_PROCESS)
        return self._parties

    @app.route("/parties", methods=["GET"])
    def parties(self, request: Request) -> bytes:
        self._authorize(request)
        return _json(request, {"parties": self._life().parties()})

    @app.route("/parties/<name>/<action>", methods=["POST"])
    async def party(self, request: Request, name: str, action: str) -> bytes:
        self._authorize(request)
        life = self._life()
        wait = self._body(request).get("wait", False)
        if not isinstance(wait, bool):
            raise RenkeiError(errors.BAD_REQUEST, detail="wait is true or false")
        if action == "stop":
            view = await life.stop(name)
        elif action == "start":
            view = await life.start(name, wait)
        elif action == "kill":
            view = await life.kill(name, wait)
        else:
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        return _json(request, view)

    @app.route("/", branch=True)
    def unknown(self, request: Request) -> bytes:
        self._authorize(request)
        raise RenkeiError(errors.PAGE_NOT_FOUND)


def _json(request: Request, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(body, ensure_ascii=False).encode()


def control_listener(config: Config, api: ControlApi, reactor: Any) -> Listener:
    """The control API's listener (``[control] listen``: plain HTTP, loopback only)."""
    assert config.control is not None
    return Listener(reactor, config.control.listen, api.resource(), max_body=MAX_CONTROL_BODY)
