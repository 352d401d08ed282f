"""A network in a box of processes of a scenario's own (``renkei scenario run --processes``,
or a scenario with ``given: {network: processes}``).

`ProcessNetwork` starts, on a sandbox configuration in the scenario's work directory
(renkei/sandbox.py: the institutions, rules and demo persons of ``make run``, fresh
databases), ``twistd -n renkei`` as a child process: the supervisor (renkei/supervisor.py),
which runs every party in a process of its own and serves the control API. It is ready once
the supervisor logs "renkei ready"; the scenario then runs against it as against any running
network (`renkei.scenarios.targets.RunningTarget`), and it is stopped after. Its logs stay
in the work directory (``twistd.log``, ``logs/PARTY.log``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from middleware.config import Config
from renkei.supervisor import KILL_TIME, READY_LINE

__all__ = ["START_TIMEOUT", "ProcessNetwork"]

START_TIMEOUT = 180.0  # seconds the supervisor has to say every party is ready
LOOK = 0.1  # seconds between two looks at its log


class _Supervised(ProcessProtocol):
    """The supervisor's process: what it wrote to stderr (a usage error) and its end."""

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.errors = b""

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4096:]

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class ProcessNetwork:
    """``twistd -n renkei -c CONFIG`` in ``directory``: every party of ``config`` in a
    process of its own, supervised."""

    def __init__(self, reactor: Any, config: Config, directory: Path) -> None:
        self._reactor = reactor
        self.config = config
        self.directory = directory
        self.log = directory / "twistd.log"
        self._process: Any = None
        self._supervised = _Supervised()

    async def start(self) -> None:
        """Start the supervisor; fires once every party is ready (fails, the network
        stopped, if it ends or is not ready within `START_TIMEOUT` seconds)."""
        command = [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", "-l", str(self.log)),
            *("renkei", "-c", str(self.config.path), "--log-dir", str(self.directory / "logs")),
        ]
        self._process = self._reactor.spawnProcess(
            self._supervised,
            sys.executable,
            command,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            path=str(self.directory),
        )
        waited = 0.0
        while READY_LINE not in self._logged():
            if self._supervised.ended.called:
                said = self._supervised.errors.decode("utf-8", "replace").strip()
                raise RuntimeError(f"the supervisor ended at its start: {said or self.log}")
            if waited >= START_TIMEOUT:
                await self.stop()
                raise TimeoutError(f"not ready within {START_TIMEOUT:g} s (see {self.log})")
            await deferLater(self._reactor, LOOK, lambda: None)
            waited += LOOK

    def _logged(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def stop(self) -> None:
        """Stop the supervisor (SIGTERM: it stops every party), SIGKILL if it has not ended
        in time; fires once it has ended."""
        if self._process is None or self._supervised.ended.called:
            return
        self._signal("TERM")
        waited = 0.0
        while not self._supervised.ended.called and waited < KILL_TIME + 10:
            await deferLater(self._reactor, LOOK, lambda: None)
            waited += LOOK
        if not self._supervised.ended.called:
            self._signal("KILL")
            await self._supervised.ended

    def _signal(self, name: str) -> None:
        from twisted.internet.error import ProcessExitedAlready

        with contextlib.suppress(ProcessExitedAlready):
            self._process.signalProcess(name)
