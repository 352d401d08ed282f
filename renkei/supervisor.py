"""The network in a box as processes: every party in a child process of its own, supervised.

`Supervisor` runs ``twistd -n renkei -c CONFIG --party NAME`` for the hub and for each
institution (Twisted's ``ProcessMonitor``), each with its own log (``LOG_DIR/NAME.log``).
A party that dies is started again, at once if it had run for a while, else after a delay
that doubles up to `MAX_RESTART_DELAY`; each start, end and readiness is logged here. The
box is ready ("renkei ready") once every party has said so in its own log; stopping the
supervisor stops every party (SIGTERM, then SIGKILL after `KILL_TIME`) and waits for them.

The supervisor also serves the control API (``[control]``, renkei/control.py): the network's
clock, faults and capture, pushed to every party's process, which each follows from its start
(``--run-dir``); and each party's life (`Supervisor` is the API's `PartyLife`): a party
stopped through it (SIGTERM) stays stopped until it is started through it; one killed
(SIGKILL) is started again like after any death.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor

from codes import errors
from codes.errors import RenkeiError
from middleware.config import Config
from middleware.deferred import deferred
from middleware.network import HUB
from middleware.replica import JST

__all__ = [
    "KILL_TIME",
    "MAX_RESTART_DELAY",
    "READY_LINE",
    "READY_WAIT",
    "Supervisor",
    "parties_of",
]

READY_LINE = "renkei ready"  # what a party's box logs once it has started
MAX_RESTART_DELAY = 30  # seconds, for a party that keeps dying at once
KILL_TIME = 10  # seconds between SIGTERM and SIGKILL when stopping a party
WATCH_INTERVAL = 0.2  # seconds between two looks at the parties' logs
READY_WAIT = 120.0  # seconds a caller of the control API may wait for a party to be ready


def parties_of(config: Config) -> list[str]:
    """The processes of a configuration's parties, the hub first and マイナポータル
    (``portal``, when configured) last: an institution served by several processes
    (``processes``) is NAME.1, NAME.2, ..."""
    names = [HUB] if config.network is not None else []
    for institution in config.institutions:
        if institution.processes == 1:
            names.append(institution.name)
        else:
            names += [f"{institution.name}.{n}" for n in range(1, institution.processes + 1)]
    if config.portal is not None:
        names.append(config.portal.name)
    return names


class _Monitor(ProcessMonitor):
    """A ProcessMonitor that tells its supervisor when a party starts and ends."""

    def __init__(self, supervisor: Supervisor, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        self._supervisor = supervisor

    def startProcess(self, name: str) -> None:
        already = name in self.protocols
        super().startProcess(name)
        if not already and name in self.protocols:
            self._supervisor.started(name, self.protocols[name])

    def _monitoredProcessExited(self, name: str, failure: Failure | None = None) -> None:
        super()._monitoredProcessExited(name, failure)
        if name in self._supervisor.stopped:  # stopped through the control API: left down
            self.cancel_restart(name)
        self._supervisor.ended(name, failure)

    def cancel_restart(self, name: str) -> None:
        """Forget the restart of ``name`` planned after its death, if any."""
        restart: Any = self.restart.pop(name, None)
        if restart is not None and restart.active():
            restart.cancel()


class Supervisor(Service):
    """Every party of ``config`` in a child process of its own."""

    log = Logger()

    def __init__(self, config: Config, log_dir: Path, reactor: Any, run_dir: Path) -> None:
        from renkei.control import ControlApi, Controller, PartyMember, control_socket

        super().__init__()
        self.config = config
        self.log_dir = log_dir
        self.run_dir = run_dir
        self.controller = Controller(
            reactor,
            {
                party: PartyMember(reactor, control_socket(run_dir, party))
                for party in parties_of(config)
            },
            run_dir,
        )
        self._control: Any = None
        if config.control is not None:
            from renkei.control import control_listener, ensure_token

            api = ControlApi(self.controller, ensure_token(config.control.token), parties=self)
            self._control = control_listener(config, api, reactor)
        self._reactor = reactor
        self.monitor = _Monitor(self, reactor)
        self.monitor.maxRestartDelay = MAX_RESTART_DELAY
        self.monitor.killTime = KILL_TIME
        self._offsets: dict[str, int] = {}  # where each party's log stood at its start
        self._ready: set[str] = set()
        self._ready_since: dict[str, float] = {}  # real time each party said it was ready
        # The parties stopped through the control API: not started again until started there.
        self.stopped: set[str] = set()
        # Who waits for a party to be ready, or to end (the control API's callers).
        self._waiting: dict[tuple[str, str], list[Deferred[None]]] = {}
        self._announced = False
        self._watch = LoopingCall(self._look)
        self._watch.clock = reactor
        for party in parties_of(config):
            self.monitor.addProcess(party, self.command(party), env=dict(os.environ))

    def command(self, party: str) -> list[str]:
        """The command line of one party's process."""
        return [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", "-l", str(self.log_path(party))),
            *("renkei", "-c", str(self.config.path), "--party", party),
            *("--run-dir", str(self.run_dir)),
        ]

    def log_path(self, party: str) -> Path:
        return self.log_dir / f"{party}.log"

    # -- what the monitor tells ----------------------------------------------------------------

    def started(self, party: str, protocol: Any) -> None:
        log = self.log_path(party)
        self._offsets[party] = log.stat().st_size if log.exists() else 0
        self._ready.discard(party)
        pid = getattr(protocol.transport, "pid", None)
        self.log.info("started {party} (pid {pid}), log {log}", party=party, pid=pid, log=log)

    def ended(self, party: str, failure: Failure | None) -> None:
        self._ready.discard(party)
        self._ready_since.pop(party, None)
        self._offsets.pop(party, None)  # its log says "ready" for the run that ended
        reason = failure.getErrorMessage() if failure is not None else "exited"
        if party in self.stopped:
            self.log.info("{party} stopped through the control API ({reason})", party=party,
                          reason=reason)  # fmt: skip
        elif self.running:
            self.log.warn("{party} ended ({reason}); starting it again", party=party, reason=reason)
        else:
            self.log.info("{party} stopped ({reason})", party=party, reason=reason)
        self._notify(party, "ended")

    def _notify(self, party: str, event: str) -> None:
        for waiting in self._waiting.pop((party, event), []):
            if not waiting.called:  # not given up (timed out) meanwhile
                waiting.callback(None)

    async def _until(self, party: str, event: str) -> None:
        """Until ``party`` is ready (``event`` "ready") or its process has ended ("ended")."""
        waiting: Deferred[None] = Deferred()
        self._waiting.setdefault((party, event), []).append(waiting)
        await waiting

    def _look(self) -> None:
        """Note the parties that logged their readiness since their last start."""
        for party, offset in list(self._offsets.items()):
            if party in self._ready:
                continue
            try:
                with self.log_path(party).open("rb") as log:
                    log.seek(offset)
                    text = log.read().decode("utf-8", "replace")
            except OSError:
                continue
            if READY_LINE in text:
                self._ready.add(party)
                self._ready_since[party] = float(self._reactor.seconds())
                if self._announced:
                    self.log.info("{party} ready again", party=party)
                self._notify(party, "ready")
        if not self._announced and self._ready >= set(parties_of(self.config)):
            self._announced = True
            self.log.info(
                "renkei ready: {parties} in processes of their own; logs in {logs}; try "
                "`.venv/bin/renkei use-case 1 -c {path}` (1 to 4)",
                parties=", ".join(parties_of(self.config)),
                logs=self.log_dir,
                path=self.config.path,
            )

    # -- life ----------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.monitor.startService()
        self._watch.start(WATCH_INTERVAL, now=False)
        if self._control is not None:
            self._control.startService().addErrback(self._control_failed)

    def _control_failed(self, failure: Failure) -> None:
        self.log.failure("the control API could not start; stopping", failure)
        self._reactor.stop()

    @deferred
    async def stopService(self) -> None:
        super().stopService()
        if self._control is not None and self._control.running:
            await self._control.stopService()
        if self._watch.running:
            self._watch.stop()
        self.monitor.stopService()
        waited = 0.0
        while self.monitor.protocols and waited < KILL_TIME + 5:
            await deferLater(self._reactor, 0.1, lambda: None)
            waited += 0.1

    # -- each party's life, through the control API (renkei.control.PartyLife) ---------------

    def _known(self, party: str) -> None:
        if party not in parties_of(self.config):
            raise RenkeiError(
                errors.UNKNOWN_PARTY, name=party, parties=", ".join(parties_of(self.config))
            )

    def _state(self, party: str) -> str:
        if party in self.monitor.protocols:
            return "running"
        return "stopped" if party in self.stopped else "restarting"

    def party(self, party: str) -> dict[str, Any]:
        """What the control API tells of one party's process: ``state`` (running, stopped
        through the API, or restarting after a death), ``pid``, whether it is ``ready`` and
        since when (Japan time), its log."""
        protocol = self.monitor.protocols.get(party)
        pid = getattr(protocol.transport, "pid", None) if protocol is not None else None
        since = self._ready_since.get(party)
        return {
            "name": party,
            "state": self._state(party),
            "pid": pid,
            "ready": party in self._ready,
            "ready_since": None
            if since is None
            else datetime.fromtimestamp(since, JST).isoformat(timespec="seconds"),
            "log": str(self.log_path(party)),
        }

    def parties(self) -> list[dict[str, Any]]:
        """Every party's process, the hub first."""
        return [self.party(party) for party in parties_of(self.config)]

    async def _ready_or_not(self, party: str) -> None:
        """Wait until ``party`` is ready (at most `READY_WAIT` seconds; the caller then sees
        it is not)."""
        if party in self._ready:
            return
        waiting = Deferred.fromCoroutine(self._until(party, "ready"))
        waiting.addTimeout(READY_WAIT, self._reactor)
        with contextlib.suppress(TimeoutError):
            await waiting

    @deferred
    async def stop(self, party: str) -> dict[str, Any]:
        """Stop ``party``'s process (SIGTERM, SIGKILL after `KILL_TIME`) and leave it stopped
        until `start`; fires once it has ended."""
        self._known(party)
        self.stopped.add(party)
        self.monitor.cancel_restart(party)
        if party in self.monitor.protocols:
            ended = Deferred.fromCoroutine(self._until(party, "ended"))
            self.log.info("stopping {party} (control API)", party=party)
            self.monitor.stopProcess(party)
            await ended
        return self.party(party)

    @deferred
    async def start(self, party: str, wait: bool = False) -> dict[str, Any]:
        """Start ``party``'s process (stopped through the API, or waiting to be started again
        after a death); with ``wait``, fires once it is ready."""
        self._known(party)
        self.stopped.discard(party)
        if party not in self.monitor.protocols:
            self.monitor.cancel_restart(party)
            self.log.info("starting {party} (control API)", party=party)
            self.monitor.startProcess(party)
        if wait:
            await self._ready_or_not(party)
        return self.party(party)

    @deferred
    async def kill(self, party: str, wait: bool = False) -> dict[str, Any]:
        """SIGKILL to ``party``'s process, as a crash: it is started again as after any
        death; with ``wait``, fires once it is ready again."""
        self._known(party)
        protocol = self.monitor.protocols.get(party)
        if protocol is None:
            raise RenkeiError(errors.PARTY_NOT_RUNNING, name=party, state=self._state(party))
        process: Any = protocol.transport
        ended = Deferred.fromCoroutine(self._until(party, "ended"))
        self.log.info("killing {party} (control API)", party=party)
        process.signalProcess("KILL")
        await ended
        if wait:  # started again at once (it had run for a while) or after its delay
            await self._ready_or_not(party)
        return self.party(party)
